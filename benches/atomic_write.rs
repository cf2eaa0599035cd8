//! Cost of one token rotation through the atomic writer: a 3-file projected volume whose token
//! alternates between two values, so every iteration builds, publishes and retires a version.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use projected_token::projection::{
    AtomicWriter, FileProjection, Payload, WriteOutcome, WriterOptions,
};

fn file(data: Vec<u8>, mode: u32) -> FileProjection {
    FileProjection {
        data: data.into(),
        mode,
        fs_user: None,
    }
}

/// `token` ~1 KB (a typical bound JWT), `ca.crt` ~1.2 KB, `namespace` 7 bytes.
fn payload(token_fill: u8) -> Payload {
    let mut token = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIn0.".to_vec();
    token.resize(1024, token_fill);
    let mut ca = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    ca.resize(1200 - 26, b'A');
    ca.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
    Payload::from([
        ("token".to_owned(), file(token, 0o644)),
        ("ca.crt".to_owned(), file(ca, 0o644)),
        ("namespace".to_owned(), file(b"default".to_vec(), 0o644)),
    ])
}

fn rotation(c: &mut Criterion) {
    let payloads = [payload(b'a'), payload(b'b')];
    let mut group = c.benchmark_group("atomic_write");
    for (name, fsync) in [("rotation_fsync", true), ("rotation_no_fsync", false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = AtomicWriter::new(
            dir.path(),
            WriterOptions {
                fsync,
                fs_group: None,
            },
        );
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                let outcome = writer.write(black_box(&payloads[next])).expect("write");
                // Alternating contents: every iteration must be a real rotation.
                assert!(matches!(outcome, WriteOutcome::Written { .. }));
                next ^= 1;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rotation);
criterion_main!(benches);
