//! End-to-end tests of `emulate`: the real binary, real files, real signals.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    assert_consistent_layout, plant_fifo, plant_link, replace_entry, wait_for_file,
    write_signing_key, Running,
};
use projected_token::issuer::verify::verify_signature;
use projected_token::token::decode;
use rustix::process::Signal;

const STARTUP: Duration = Duration::from_secs(30);
/// Bound of a wait for something the emulator does by itself once running.
const WAIT: Duration = Duration::from_secs(15);

#[test]
fn default_volume_layout_modes_and_clean_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("serviceaccount");
    let dir_arg = dir.to_str().unwrap();
    let mut emulate = Running::spawn(&["emulate", "--dir", dir_arg, "--key-algorithm", "es256"]);
    emulate.wait_for_log("token rotated", STARTUP);

    let ts_dir = assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
    for name in ["ca.crt", "namespace", "token"] {
        let mode = std::fs::metadata(ts_dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644, "{name} mode follows defaultMode 420");
    }
    assert_eq!(std::fs::read(dir.join("namespace")).unwrap(), b"default");
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    assert!(
        !token.ends_with('\n'),
        "token is written exactly, no newline"
    );
    let decoded = decode(&token).unwrap();
    let claims = &decoded.claims;
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "emulated-pod");
    // The default volume asks for 3607 s: the extension gives a year and a warnafter.
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 31_536_000);
    assert_eq!(
        claims["kubernetes.io"]["warnafter"].as_i64().unwrap(),
        iat + 3607
    );

    // The summary names the pod and its random uids; the token never appears in any output.
    let summary: Vec<String> = emulate.stdout.try_iter().collect();
    let summary = summary.join("\n");
    assert!(summary.contains("default/emulated-pod (uid "), "{summary}");
    assert!(!summary.contains(&token));

    emulate.signal(Signal::TERM);
    let status = emulate.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let logs: Vec<String> = emulate.stderr.try_iter().collect();
    assert!(
        logs.iter().all(|l| !l.contains(&token)),
        "a log line holds the token"
    );
    assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
}

#[test]
fn pod_manifest_volumes_with_item_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("app.yaml"), "level: debug").unwrap();
    let pod = tmp.path().join("pod.yaml");
    std::fs::write(
        &pod,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  uid: 0b1c2d3e-0000-4000-8000-000000000001
  labels: {app: web, tier: front}
spec:
  serviceAccountName: web
  containers: [{name: app, image: app}]
  volumes:
  - name: kube-api-access-q2x7z
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}
  - name: vault
    projected:
      defaultMode: 0440
      sources:
      - serviceAccountToken: {path: vault-token, audience: vault, expirationSeconds: 600}
      - configMap: {name: app-config, items: [{key: app.yaml, path: conf/app.yaml, mode: 0600}]}
      - downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
"#,
    )
    .unwrap();
    let out = tmp.path().join("volumes");
    let config_arg = format!("app-config={}", config.display());
    let emulate = Running::spawn(&[
        "emulate",
        "--dir",
        out.to_str().unwrap(),
        "--pod",
        pod.to_str().unwrap(),
        "--configmap",
        &config_arg,
        "--key-algorithm",
        "es256",
    ]);
    emulate.wait_for_log("token rotated", STARTUP);
    emulate.wait_for_log("token rotated", STARTUP);

    let api = out.join("kube-api-access-q2x7z");
    assert_consistent_layout(&api, &["ca.crt", "namespace", "token"]);
    assert_eq!(std::fs::read(api.join("namespace")).unwrap(), b"shop");

    let vault = out.join("vault");
    let ts = assert_consistent_layout(&vault, &["conf", "labels", "vault-token"]);
    let mode = |p: &str| std::fs::metadata(ts.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("vault-token"), 0o440);
    assert_eq!(mode("labels"), 0o440);
    assert_eq!(mode("conf/app.yaml"), 0o600);
    assert_eq!(
        std::fs::read(vault.join("conf/app.yaml")).unwrap(),
        b"level: debug"
    );
    assert_eq!(
        std::fs::read_to_string(vault.join("labels")).unwrap(),
        "app=\"web\"\ntier=\"front\""
    );
    let token = decode(&std::fs::read_to_string(vault.join("vault-token")).unwrap()).unwrap();
    assert_eq!(token.claims["aud"], serde_json::json!(["vault"]));
    assert_eq!(token.claims["sub"], "system:serviceaccount:shop:web");
    assert_eq!(
        token.claims["kubernetes.io"]["pod"]["uid"],
        "0b1c2d3e-0000-4000-8000-000000000001"
    );
    // A 600 s token is not extended: no warnafter, exp = iat + 600.
    assert!(token.claims["kubernetes.io"].get("warnafter").is_none());
    let iat = token.claims["iat"].as_i64().unwrap();
    assert_eq!(token.claims["exp"].as_i64().unwrap(), iat + 600);
}

#[test]
fn given_ca_is_projected_as_ca_crt_and_bad_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = projected_token::tls::CertificateAuthority::generate("test CA").unwrap();
    let (cert, key) = (tmp.path().join("ca.crt"), tmp.path().join("ca.key"));
    std::fs::write(&cert, ca.cert_pem()).unwrap();
    std::fs::write(&key, ca.issuer().key().serialize_pem()).unwrap();
    let dir = tmp.path().join("sa");
    let (dir_arg, cert_arg, key_arg) = (
        dir.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let emulate = Running::spawn(&[
        "emulate",
        "--dir",
        dir_arg,
        "--ca-cert",
        cert_arg,
        "--ca-key",
        key_arg,
        "--key-algorithm",
        "es256",
    ]);
    emulate.wait_for_log("token rotated", STARTUP);
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        ca.cert_pem()
    );
    drop(emulate);

    // A certificate where the signing key belongs: exit 2, the flag named, nothing written.
    let other = tmp.path().join("other");
    let output = std::process::Command::new(common::BIN)
        .args([
            "emulate",
            "--dir",
            other.to_str().unwrap(),
            "--signing-key",
            cert_arg,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--signing-key"), "{stderr}");
    assert!(!other.join("token").exists());
}

#[test]
fn bad_pod_manifest_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let pod = tmp.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - name: v\n    projected:\n      sources:\n      - downwardAPI: {items: [{path: ip, fieldRef: {fieldPath: status.podIP}}]}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let output = std::process::Command::new(common::BIN)
        .args([
            "emulate",
            "--dir",
            out.to_str().unwrap(),
            "--pod",
            pod.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "spec.volumes[0].projected.sources[0].downwardAPI.items[0].fieldRef.fieldPath"
        ) && stderr.contains("status.podIP"),
        "{stderr}"
    );
    assert!(!out.join("v").join("..data").exists(), "nothing written");
}

/// What kube-apiserver refuses when the pod is created is refused before anything runs: exit 2,
/// naming the pod's field (it was accepted, or failed later with exit 1 naming a TokenRequest
/// field), nothing written.
#[test]
fn pod_manifests_are_checked_as_the_api_server_checks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let token = "- serviceAccountToken: {path: token}";
    let cases = [
        (
            format!("{token}\n      - configMap: {{name: kube-root-ca.crt, items: [{{key: ca.crt, path: token}}]}}"),
            "spec.volumes[0].projected.sources[1].configMap.items[0].path: \"token\": conflicting duplicate paths \
             (also written by spec.volumes[0].projected.sources[0].serviceAccountToken.path)",
        ),
        (
            format!("{token}\n      - configMap: {{name: kube-root-ca.crt, items: [{{key: ca.crt, path: ca.crt, mode: \"0400\"}}]}}"),
            "spec.volumes[0].projected.sources[1].configMap.items[0].mode: \"0400\" is a string, but the \
             API server's schema says integer: write 0400 unquoted (YAML octal) or its decimal 256",
        ),
        (
            "- serviceAccountToken: {path: token, expirationSeconds: 60}".to_owned(),
            "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: 60: may not \
             specify a duration less than 10 minutes",
        ),
        (
            "- serviceAccountToken: {path: \"to\\0ken\"}".to_owned(),
            "spec.volumes[0].projected.sources[0].serviceAccountToken.path: invalid path: must not \
             contain a NUL byte",
        ),
    ];
    let run = |pod: &Path| {
        common::output_within(
            std::process::Command::new(common::BIN)
                .args(["emulate", "--no-serve", "--key-algorithm", "es256", "--dir"])
                .arg(&out)
                .arg("--pod")
                .arg(pod),
            Duration::from_secs(30),
        )
    };
    for (sources, expected) in cases {
        let pod = tmp.path().join("pod.yaml");
        std::fs::write(
            &pod,
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: c}}]\n  volumes:\n  - name: v\n    projected:\n      sources:\n      {sources}\n"),
        )
        .unwrap();
        let output = run(&pod);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{sources}: {stderr}");
        assert!(stderr.contains(expected), "{sources}: {stderr}");
        assert!(!out.exists(), "nothing written for {sources}");
    }

    // A file larger than any manifest is refused before it is read.
    let huge = tmp.path().join("huge.yaml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(8 * 1024 * 1024 + 1)
        .unwrap();
    let output = run(&huge);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "huge.yaml: 8388609 bytes (8.0 MiB) is more than a manifest file may hold (8 MiB)"
        ),
        "{stderr}"
    );
}

/// Readers hammer `token` (and the other files) while the emulator rotates 2-second tokens:
/// every read must be a whole token that verifies with the issuer's key.
#[test]
fn readers_never_see_a_torn_token() {
    const ROTATIONS: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    let jwks = write_signing_key(&key);
    let dir = tmp.path().join("sa");
    let emulate = Running::spawn(&[
        "emulate",
        "--dir",
        dir.to_str().unwrap(),
        "--signing-key",
        key.to_str().unwrap(),
        "--expiration-seconds",
        "2",
        "--no-fsync",
    ]);
    wait_for_file(&dir.join("token"), STARTUP);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, reads, seen, jwks, dir) = (
                stop.clone(),
                reads.clone(),
                seen.clone(),
                jwks.clone(),
                dir.clone(),
            );
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Ordering::Relaxed) {
                    let token = std::fs::read_to_string(dir.join("token"))
                        .map_err(|e| format!("read failed: {e}"))?;
                    if token.is_empty() {
                        return Err("empty token read".into());
                    }
                    verify_signature(&token, &jwks)
                        .map_err(|e| format!("torn or foreign token: {e}"))?;
                    let namespace = std::fs::read(dir.join("namespace"))
                        .map_err(|e| format!("namespace: {e}"))?;
                    if namespace != b"default" {
                        return Err("namespace file changed".into());
                    }
                    let jti = decode(&token).map_err(|e| e.to_string())?.claims["jti"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().insert(jti);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();

    // Each rotation logs one line; count them against a generous bound (2 s tokens refresh
    // at about 1.6 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rotations = 0;
    while rotations < ROTATIONS + 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = emulate
            .stderr
            .recv_timeout(left)
            .expect("rotations kept coming");
        if line.contains("token rotated") {
            rotations += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap().unwrap();
    }
    let reads = reads.load(Ordering::Relaxed);
    let distinct = seen.lock().unwrap().len();
    assert!(reads >= 1000, "only {reads} reads");
    // Readers saw most of the rotated tokens (each lives about 1.6 s).
    assert!(
        distinct >= ROTATIONS,
        "readers saw {distinct} distinct tokens"
    );
    assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
}

/// SIGKILL the emulator at random moments while it rotates 1-second tokens in 12 volumes (so a
/// good share of the moments fall inside a write); each restart must leave every volume
/// consistent with no orphans, and exit cleanly on SIGTERM.
#[test]
fn sigkill_during_rotations_then_restart_is_consistent() {
    const KILLS: usize = 50;
    const VOLUMES: usize = 12;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    write_signing_key(&key);
    let mut manifest = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: crashy, namespace: default, uid: 7a0c1f9e-1111-4222-8333-944455556666}\nspec:\n  containers: [{name: c}]\n  volumes:\n",
    );
    for v in 0..VOLUMES {
        manifest.push_str(&format!(
            "  - name: vol{v}\n    projected:\n      sources:\n      - serviceAccountToken: {{path: token, expirationSeconds: 3607}}\n      - configMap: {{name: kube-root-ca.crt, items: [{{key: ca.crt, path: ca.crt}}]}}\n      - downwardAPI: {{items: [{{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}]}}\n"
        ));
    }
    let pod = tmp.path().join("pod.yaml");
    std::fs::write(&pod, manifest).unwrap();
    let dir = tmp.path().join("volumes");
    let args = |lifetime: &str| -> Vec<String> {
        [
            "emulate",
            "--dir",
            dir.to_str().unwrap(),
            "--pod",
            pod.to_str().unwrap(),
            "--signing-key",
            key.to_str().unwrap(),
            "--expiration-seconds",
            lifetime,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (fast, slow) = (args("1"), args("3600"));
    let fast: Vec<&str> = fast.iter().map(String::as_str).collect();
    let slow: Vec<&str> = slow.iter().map(String::as_str).collect();
    let mut previous_tokens = vec![String::new(); VOLUMES];
    let mut rounds_with_leftovers = 0;
    for round in 0..KILLS {
        let victim = Running::spawn(&fast);
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..1500)));
        victim.signal(Signal::KILL);
        drop(victim);

        // The restart recovers, writes fresh tokens, and is then checked while idle (its next
        // rotation is 48 minutes away).
        let mut restarted = Running::spawn(&slow);
        let mut cleaned = false;
        let mut written = 0;
        let deadline = Instant::now() + STARTUP;
        while written < VOLUMES {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = restarted
                .stderr
                .recv_timeout(left)
                .expect("restart wrote every volume");
            cleaned |= line.contains("cleaned leftovers");
            written += usize::from(line.contains("token rotated"));
        }
        rounds_with_leftovers += usize::from(cleaned);
        for (v, previous) in previous_tokens.iter_mut().enumerate() {
            let volume = dir.join(format!("vol{v}"));
            assert_consistent_layout(&volume, &["ca.crt", "namespace", "token"]);
            let token = std::fs::read_to_string(volume.join("token")).unwrap();
            assert_ne!(
                &token, previous,
                "round {round}: restart wrote a new token in vol{v}"
            );
            decode(&token).unwrap();
            *previous = token;
        }
        restarted.signal(Signal::TERM);
        assert!(
            restarted.wait_exit(Duration::from_secs(10)).success(),
            "round {round}"
        );
    }
    // Not asserted (the moments are random), but shown so a run says what it exercised.
    println!("{rounds_with_leftovers} of {KILLS} restarts cleaned up a write cut short by SIGKILL");
}

/// On tmpfs (as the kubelet's projected volumes are) the writer skips fsync and says so once;
/// elsewhere it keeps fsync on.
#[test]
fn volumes_on_tmpfs_are_written_without_fsync() {
    let shm = Path::new("/dev/shm");
    if !projected_token::projection::is_memory_backed(shm) {
        eprintln!("SKIPPED: /dev/shm is not tmpfs here");
        return;
    }
    let in_memory = tempfile::tempdir_in(shm).unwrap();
    let on_disk = tempfile::tempdir().unwrap();
    for (root, memory) in [(in_memory.path(), true), (on_disk.path(), false)] {
        if !memory && projected_token::projection::is_memory_backed(root) {
            eprintln!("SKIPPED the on-disk half: {} is tmpfs too", root.display());
            continue;
        }
        let dir = root.join("serviceaccount");
        let mut emulate = Running::spawn(&[
            "emulate",
            "--dir",
            dir.to_str().unwrap(),
            "--key-algorithm",
            "es256",
            "--no-serve",
        ]);
        let deadline = Instant::now() + STARTUP;
        let mut logs = Vec::new();
        while !logs.iter().any(|l: &String| l.contains("token rotated")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match emulate.stderr.recv_timeout(left) {
                Ok(line) => logs.push(line),
                Err(_) => panic!("no rotation within {STARTUP:?}: {logs:?}"),
            }
        }
        assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
        emulate.signal(Signal::TERM);
        assert!(emulate.wait_exit(Duration::from_secs(10)).success());
        let said = logs.iter().any(|l| l.contains("written without fsync"));
        assert_eq!(said, memory, "{}: {logs:?}", root.display());
    }
}

/// GET `url` over HTTPS trusting only `ca_pem`: the body.
fn https_get(url: &str, ca_pem: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let reply = common::https_client(ca_pem, &[])
            .get(url)
            .send()
            .await
            .expect("GET");
        reply.text().await.expect("body")
    })
}

/// The value of the one metric line that contains every needle.
fn metric_with(page: &str, needles: &[&str]) -> Option<f64> {
    page.lines()
        .find(|line| !line.starts_with('#') && needles.iter().all(|n| line.contains(n)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// A payload link someone points at a foreign file, or a FIFO put in its place, while emulate
/// runs is put back at once (the foreign file is never written); a link pointed elsewhere before
/// start is put back at start. Each repair is logged with what was found and counted in
/// `projected_token_repairs_total`.
#[test]
fn tampered_links_are_put_back_logged_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let ours = |dir: &Path, name: &str| {
        std::fs::read_link(dir.join(name)).ok() == Some(format!("..data/{name}").into())
    };
    // Counted just after the log line: polled.
    let counted_once = |url: &str, dir: &Path, path: &str, found: &str| {
        let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        let path = format!("path=\"{path}\"");
        let found = format!("found=\"{found}\"");
        common::wait_until(&format!("{path} {found} counted once"), WAIT, || {
            let page = https_get(&format!("{url}/metrics"), &ca);
            let count = metric_with(&page, &["projected_token_repairs_total", &path, &found]);
            (count == Some(1.0)).then_some(())
        });
    };

    let mut emulator = common::Emulator::start(tmp.path(), &[]);
    let dir = emulator.dir.clone();
    let token = std::fs::read(dir.join("token")).unwrap();
    replace_entry(&dir, "token", plant_link(&victim));
    common::wait_until("token put back", WAIT, || ours(&dir, "token").then_some(()));
    let line = emulator.process.wait_for_log("repaired an entry", WAIT);
    assert!(line.contains("path=token"), "{line}");
    assert!(
        line.contains(&format!("found=a symlink to {:?}", victim)),
        "{line}"
    );
    replace_entry(&dir, "ca.crt", plant_fifo);
    common::wait_until("ca.crt put back", WAIT, || {
        ours(&dir, "ca.crt").then_some(())
    });
    let line = emulator.process.wait_for_log("repaired an entry", WAIT);
    assert!(line.contains("path=ca.crt found=a FIFO"), "{line}");
    assert_eq!(
        std::fs::read(dir.join("token")).unwrap(),
        token,
        "the same token"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
    counted_once(&emulator.url, &dir, "token", "symlink");
    counted_once(&emulator.url, &dir, "ca.crt", "fifo");
    emulator.process.signal(Signal::TERM);
    assert!(emulator.process.wait_exit(WAIT).success());

    // Pointed elsewhere while nothing runs: put back by the first write.
    replace_entry(&dir, "token", plant_link(&victim));
    let emulator = common::Emulator::start(tmp.path(), &[]);
    common::wait_until("token put back at start", WAIT, || {
        ours(&dir, "token").then_some(())
    });
    let line = emulator.process.wait_for_log("repaired an entry", WAIT);
    assert!(line.contains("path=token"), "{line}");
    counted_once(&emulator.url, &dir, "token", "symlink");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
}
