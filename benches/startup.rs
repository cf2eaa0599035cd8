//! `emulate` start to first token on disk, measured on the real release binary.
//!
//! Three variants: with a signing key given (`--signing-key`, RS256), with a generated ES256 key,
//! and with a generated RS256 key (RSA-2048 key generation dominates that one).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use projected_token::issuer::{KeyAlgorithm, SigningKey};

const BIN: &str = env!("CARGO_BIN_EXE_projected-token");

fn time_to_first_token(extra: &[&str]) -> Duration {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => panic!("tempdir: {err}"),
    };
    let target = dir.path().join("sa");
    let token = target.join("token");
    let started = Instant::now();
    let mut child = match Command::new(BIN)
        .arg("emulate")
        .arg("--dir")
        .arg(&target)
        .args(extra)
        .env("PROJECTED_TOKEN_LOG", "warn")
        .env("PROJECTED_TOKEN_LISTEN", "127.0.0.1:0")
        // Killed below, so it cannot remove a default admin token file: keep it in the temp dir.
        .env(
            "PROJECTED_TOKEN_ADMIN_TOKEN_FILE",
            dir.path().join("admin.token"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => panic!("spawn: {err}"),
    };
    // Polling with a short sleep is fine here: it bounds the measurement error at ~0.1 ms.
    while !Path::new(&token).exists() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("no token within 10 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn startup(c: &mut Criterion) {
    let key_dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => panic!("tempdir: {err}"),
    };
    let key_path = key_dir.path().join("rs256.pem");
    let key = match SigningKey::generate(KeyAlgorithm::Rs256) {
        Ok(key) => key,
        Err(err) => panic!("key: {err}"),
    };
    if let Err(err) = std::fs::write(&key_path, key.private_key_pem()) {
        panic!("write key: {err}");
    }
    let key_arg = key_path.to_string_lossy().into_owned();

    let mut group = c.benchmark_group("emulate_start_to_first_token");
    group.sample_size(20);
    group.bench_function("rs256_key_given", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| time_to_first_token(&["--signing-key", &key_arg]))
                .sum()
        })
    });
    group.bench_function("es256_generated", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| time_to_first_token(&["--key-algorithm", "es256"]))
                .sum()
        })
    });
    group.bench_function("rs256_generated", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_to_first_token(&[])).sum())
    });
    group.finish();
}

criterion_group!(benches, startup);
criterion_main!(benches);
