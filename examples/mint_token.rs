//! Mint a bound service account token with the library, as kube-apiserver would for the default
//! `kube-api-access` volume, and print its explanation.
//!
//! Run with: `cargo run --example mint_token`

use std::sync::Arc;

use projected_token::issuer::{
    BoundKind, BoundObject, Issuer, IssuerConfig, KeyAlgorithm, ServiceAccountRef, SigningKey,
    TokenRequestSpec, DEFAULT_ISSUER,
};
use projected_token::token::{decode, explain};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = SigningKey::generate(KeyAlgorithm::Rs256)?;
    let issuer = Issuer::new(IssuerConfig::new(DEFAULT_ISSUER), Arc::new(key));
    // What the kubelet asks for the default volume: 3607 s, no audience, bound to the pod.
    let request = issuer.config.validate(&TokenRequestSpec {
        audiences: vec![],
        expiration_seconds: Some(3607),
        bound_object: Some(BoundObject {
            kind: BoundKind::Pod,
            name: "web-0".into(),
            uid: "3f7e1c2a-5b6d-4e8f-9a0b-1c2d3e4f5a6b".into(),
            node: None,
        }),
    })?;
    let service_account = ServiceAccountRef {
        namespace: "shop".into(),
        name: "web".into(),
        uid: "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f".into(),
    };
    let now = jiff::Timestamp::now();
    let issued = issuer.mint(&service_account, &request, now)?;
    println!(
        "status.expirationTimestamp: {}",
        issued.expiration_timestamp
    );
    let inspection = explain::explain(&decode(&issued.token)?, now);
    print!("{}", explain::render_text(&inspection));
    Ok(())
}
