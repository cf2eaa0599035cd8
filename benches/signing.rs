//! Minting cost against the bare signature it contains: `signing/{rs256,es256}_mint` is a full
//! `Issuer::mint` of a pod-bound token, `signing/{rs256,es256}_raw` the aws-lc-rs signature alone
//! over a message of the same length with the same cached key pair. mint/raw near 1 means the
//! JWS assembly (claims, JSON, base64, uuid) costs next to nothing.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::Timestamp;
use projected_token::issuer::{
    BoundKind, BoundObject, Issuer, IssuerConfig, KeyAlgorithm, ServiceAccountRef, SigningKey,
    TokenRequestSpec, DEFAULT_ISSUER,
};
use projected_token::token::ObjectRef;

fn signing(c: &mut Criterion) {
    let mut group = c.benchmark_group("signing");
    let service_account = ServiceAccountRef {
        namespace: "team-a".into(),
        name: "builder".into(),
        uid: "3f8a6c1e-2b7d-4e90-9c51-0d6f4b2a7e13".into(),
    };
    let spec = TokenRequestSpec {
        audiences: Vec::new(),
        expiration_seconds: Some(3607),
        bound_object: Some(BoundObject {
            kind: BoundKind::Pod,
            name: "builder-7c9f8d6b5-x2k4q".into(),
            uid: "9b1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f".into(),
            node: Some(ObjectRef::new(
                "worker-1",
                "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c",
            )),
        }),
    };
    let now = Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH);

    for (name, algorithm) in [
        ("rs256", KeyAlgorithm::Rs256),
        ("es256", KeyAlgorithm::Es256),
    ] {
        let key = Arc::new(SigningKey::generate(algorithm).unwrap());
        let issuer = Issuer::new(IssuerConfig::new(DEFAULT_ISSUER), key.clone());
        let request = issuer.config.validate(&spec).unwrap();

        let sample = issuer.mint(&service_account, &request, now).unwrap().token;
        let signed_len = sample.rfind('.').unwrap_or(sample.len());
        let message = vec![b'a'; signed_len];

        group.bench_function(format!("{name}_mint"), |b| {
            b.iter(|| {
                issuer
                    .mint(black_box(&service_account), black_box(&request), now)
                    .unwrap()
            })
        });
        group.bench_function(format!("{name}_raw"), |b| {
            b.iter(|| key.sign_raw(black_box(&message)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
