//! `sidecar` against the emulator (`serve`) on loopback, measured on the real release binary:
//! process start until the first token is on disk (the long-running mode, like
//! `emulate_start_to_first_token`), and the wall time of `--once` (an init container) until it
//! exits 0, with one token and with a pod of 100 projected volumes. The shipped binary
//! (`target/dist/projected-token`, as last built by `cargo build --profile dist --bin
//! projected-token`) is measured too when it exists, under `dist/...`; the emulator is always the
//! release binary.
//!
//! One `serve` (generated ES256 key) answers every run; the kubeconfig uses its admin token and
//! CA, as `tests/sidecar.rs` does. Files are fsynced, as by default. The 100-volume runs create
//! about 500 inodes each (directories, files, symlinks): the file system's inode allocation, not
//! the sidecar's CPU, dominates them (ext4 here).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

const BIN: &str = env!("CARGO_BIN_EXE_projected-token");
/// Volumes of the pod manifest in the 100-token runs.
const VOLUMES: usize = 100;

/// A `serve` process, killed on drop, and a kubeconfig that reaches it as its admin.
struct Emulator {
    child: Child,
    kubeconfig: PathBuf,
    pod: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => panic!("tempdir: {err}"),
    }
}

fn write(path: &Path, text: &str) {
    if let Err(err) = std::fs::write(path, text) {
        panic!("write {}: {err}", path.display());
    }
}

fn start_emulator() -> Emulator {
    let dir = tempdir();
    let ca = dir.path().join("ca.crt");
    let admin = dir.path().join("admin-token");
    let mut child = match Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--key-algorithm", "es256"])
        .arg("--ca-out")
        .arg(&ca)
        .arg("--admin-token-file")
        .arg(&admin)
        .env("PROJECTED_TOKEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => panic!("spawn serve: {err}"),
    };
    // It prints its URLs, then the admin token file once it is ready; nothing after that.
    let Some(stdout) = child.stdout.take() else {
        panic!("serve: no stdout")
    };
    let mut url = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = match line {
            Ok(line) => line,
            Err(err) => panic!("serve stdout: {err}"),
        };
        if let Some(rest) = line.strip_prefix("serving https API on ") {
            url.get_or_insert_with(|| rest.to_owned());
        }
        if line.starts_with("admin token file: ") {
            break;
        }
    }
    // Drained to the end, so a later line never meets a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let Some(url) = url else {
        let _ = child.kill();
        panic!("serve printed no URL")
    };
    let kubeconfig = dir.path().join("kubeconfig");
    write(
        &kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: bench\ncontexts:\n- name: bench\n  context: {{cluster: emulator, user: admin}}\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\n    certificate-authority: {ca:?}\nusers:\n- name: admin\n  user:\n    tokenFile: {admin:?}\n",
        ),
    );
    let pod = dir.path().join("pod.yaml");
    let mut manifest = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bench, namespace: default, uid: 0b6c2d7e-5a1f-4c3b-9d8e-7f6a5b4c3d2e}\nspec:\n  serviceAccountName: default\n  containers: [{name: app, image: app}]\n  volumes:\n",
    );
    for v in 0..VOLUMES {
        manifest.push_str(&format!(
            "  - name: vol{v}\n    projected:\n      sources:\n      - serviceAccountToken: {{path: token, audience: aud{v}, expirationSeconds: 3600}}\n"
        ));
    }
    write(&pod, &manifest);
    Emulator {
        child,
        kubeconfig,
        pod,
        dir,
    }
}

impl Emulator {
    /// `BIN sidecar --kubeconfig ... --dir TARGET ARGS`, silent.
    fn sidecar(&self, bin: &Path, target: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command
            .arg("sidecar")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--dir")
            .arg(target)
            .args(args)
            .env("PROJECTED_TOKEN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn target(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = match tempfile::tempdir_in(self.dir.path()) {
            Ok(dir) => dir,
            Err(err) => panic!("tempdir: {err}"),
        };
        let target = dir.path().join("sa");
        (dir, target)
    }
}

const ONE_TOKEN: [&str; 6] = [
    "--service-account",
    "default",
    "--audience",
    "bench",
    "--expiration-seconds",
    "3600",
];

/// Start of the long-running sidecar until `token` is on disk; the sidecar is then stopped.
fn time_to_first_token(emulator: &Emulator, bin: &Path) -> Duration {
    let (_dir, target) = emulator.target();
    let token = target.join("token");
    let started = Instant::now();
    let mut child = match emulator.sidecar(bin, &target, &ONE_TOKEN).spawn() {
        Ok(child) => child,
        Err(err) => panic!("spawn sidecar: {err}"),
    };
    // Polling with a short sleep is fine here: it bounds the measurement error at ~0.1 ms.
    while !token.exists() {
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

/// `sidecar --once ARGS` from start to a successful exit.
fn time_once(emulator: &Emulator, bin: &Path, args: &[&str]) -> Duration {
    let (_dir, target) = emulator.target();
    let started = Instant::now();
    let status = match emulator.sidecar(bin, &target, args).arg("--once").status() {
        Ok(status) => status,
        Err(err) => panic!("run sidecar --once: {err}"),
    };
    let elapsed = started.elapsed();
    assert!(status.success(), "sidecar --once: {status}");
    elapsed
}

/// The release binary, and the dist one when it was built.
fn binaries() -> Vec<(&'static str, PathBuf)> {
    let mut binaries = vec![("release", PathBuf::from(BIN))];
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dist/projected-token");
    if dist.is_file() {
        binaries.push(("dist", dist));
    }
    binaries
}

fn sidecar(c: &mut Criterion) {
    let emulator = start_emulator();
    let pod_arg = emulator.pod.to_string_lossy().into_owned();
    let binaries = binaries();

    // Each run is a process or two (tens of milliseconds with the teardown): the same number of
    // runs per sample, and time enough for them.
    let mut group = c.benchmark_group("sidecar_start_to_first_token");
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(20);
    for (label, bin) in &binaries {
        group.bench_function(format!("{label}/one_token"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| time_to_first_token(&emulator, bin))
                    .sum()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sidecar_once");
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(20);
    for (label, bin) in &binaries {
        group.bench_function(format!("{label}/one_token"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| time_once(&emulator, bin, &ONE_TOKEN))
                    .sum()
            })
        });
    }
    // Hundreds of milliseconds each (100 volumes written and fsynced).
    group.measurement_time(Duration::from_secs(15));
    group.sample_size(10);
    for (label, bin) in &binaries {
        group.bench_function(format!("{label}/100_volumes"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| time_once(&emulator, bin, &["--pod", &pod_arg]))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sidecar);
criterion_main!(benches);
