//! End-to-end tests of `emulate --pods`: one process projecting the volumes of many pods, each
//! with its own pod-bound tokens and schedule; and the errors bad manifest sets give.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_consistent_layout, Running, BIN, SERVE_STARTUP};
use projected_token::token::decode;
use rustix::process::Signal;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(90);

/// A pod with the kube-api-access volume (token, ca.crt, namespace); `uid` may be empty.
fn pod_yaml(namespace: &str, name: &str, uid: &str) -> String {
    let uid = if uid.is_empty() {
        String::new()
    } else {
        format!("\n  uid: {uid}")
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}{uid}
spec:
  serviceAccountName: sa-{name}
  nodeName: node-1
  containers: [{{name: app, image: app}}]
  volumes:
  - name: kube-api-access-x1
    projected:
      defaultMode: 0644
      sources:
      - serviceAccountToken: {{path: token, expirationSeconds: 3607}}
      - configMap: {{name: kube-root-ca.crt, items: [{{key: ca.crt, path: ca.crt}}]}}
      - downwardAPI: {{items: [{{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}]}}
"
    )
}

fn uid_of(index: usize) -> String {
    format!("00000000-0000-4000-8000-{index:012}")
}

/// 200 pods: 150 one per file (every other with a uid), 1 as JSON, 49 in one multi-document
/// file together with a pod that has no projected volume; plus files `--pods` ignores.
fn write_pods(dir: &Path) -> BTreeMap<(String, String), Option<String>> {
    std::fs::create_dir_all(dir).unwrap();
    let mut pods = BTreeMap::new();
    for i in 0..150 {
        let (namespace, name) = (format!("team-{}", i % 3), format!("app-{i:03}"));
        let uid = if i % 2 == 0 { uid_of(i) } else { String::new() };
        std::fs::write(
            dir.join(format!("{name}.yaml")),
            pod_yaml(&namespace, &name, &uid),
        )
        .unwrap();
        pods.insert((namespace, name), (!uid.is_empty()).then_some(uid));
    }
    let json = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "json-pod", "namespace": "team-0"},
        "spec": {"containers": [{"name": "app"}], "volumes": [{"name": "kube-api-access-x1",
            "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]}
    });
    std::fs::write(dir.join("json-pod.json"), json.to_string()).unwrap();
    pods.insert(("team-0".into(), "json-pod".into()), None);
    let mut multi = String::new();
    for i in 0..49 {
        let name = format!("batch-{i:02}");
        multi.push_str(&pod_yaml("batch", &name, &uid_of(1000 + i)));
        multi.push_str("---\n");
        pods.insert(("batch".into(), name), Some(uid_of(1000 + i)));
    }
    // automountServiceAccountToken: false: nothing to project, skipped with a warning.
    multi.push_str("apiVersion: v1\nkind: Pod\nmetadata: {name: no-token, namespace: batch}\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: app}]\n");
    std::fs::write(dir.join("batch.yml"), multi).unwrap();
    std::fs::write(dir.join("README.txt"), "not a manifest").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "{not: [yaml").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub").join("ignored.yaml"), "{not: [yaml").unwrap();
    pods
}

fn payload(token: &str) -> Value {
    Value::Object(decode(token).unwrap().claims)
}

/// Every `..data_tmp` under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().unwrap();
            if name == "..data_tmp" {
                found.push(entry.path());
            } else if kind.is_dir() && !name.starts_with("..") {
                stack.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn many_pods_each_get_their_own_bound_tokens_and_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("pods");
    let pods = write_pods(&manifests);
    let out = tmp.path().join("out");
    let (ca, admin) = (tmp.path().join("ca.crt"), tmp.path().join("admin.token"));
    let mut emulate = Running::spawn(&[
        "--log-format",
        "json",
        "emulate",
        "--dir",
        out.to_str().unwrap(),
        "--pods",
        manifests.to_str().unwrap(),
        "--expiration-seconds",
        "3",
        "--key-algorithm",
        "es256",
        "--no-fsync",
        "--ca-out",
        ca.to_str().unwrap(),
        "--admin-token-file",
        admin.to_str().unwrap(),
    ]);
    let summary = emulate.wait_for_stdout("admin token file: ", SERVE_STARTUP);
    let summary = summary.join("\n");
    assert!(summary.contains("pods:            200 from "), "{summary}");
    assert!(summary.contains("(152 file(s); 1 skipped"), "{summary}");
    let url = summary
        .lines()
        .find_map(|l| l.strip_prefix("serving https API on "))
        .expect("URL")
        .to_owned();

    // Every volume: its first write and then two rotations, each with its lateness.
    let mut writes: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut skipped_warning = None;
    let mut lateness_logged = 0;
    let deadline = Instant::now() + PATIENCE;
    while writes.len() < pods.len() || writes.values().any(|&n| n < 3) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = emulate.stderr.recv_timeout(left).unwrap_or_else(|_| {
            let short: Vec<_> = writes.iter().filter(|(_, n)| **n < 3).take(5).collect();
            panic!(
                "not every volume rotated twice in time: {} volumes seen, e.g. {short:?}",
                writes.len()
            )
        });
        let event: Value = serde_json::from_str(&line).expect("JSON log line");
        let fields = &event["fields"];
        match fields["message"].as_str() {
            Some("token rotated") => {
                let dir = PathBuf::from(fields["dir"].as_str().unwrap());
                let count = writes.entry(dir).or_default();
                assert_eq!(
                    fields.get("late_ms").is_some(),
                    *count > 0,
                    "late_ms on rotations only: {line}"
                );
                lateness_logged += usize::from(*count > 0);
                *count += 1;
            }
            Some(message) if message.starts_with("skipped") => skipped_warning = Some(line),
            _ => {}
        }
    }
    assert!(lateness_logged >= 2 * pods.len());
    let warning = skipped_warning.expect("a warning for the pod without a projected volume");
    assert!(
        warning.contains("batch.yml document 50") && warning.contains("batch/no-token"),
        "{warning}"
    );
    assert!(!out.join("batch").join("no-token").exists());

    // `ctl` finds each of the pods.
    let ctl = |args: &[&str]| {
        assert_cmd::Command::new(BIN)
            .arg("ctl")
            .args(args)
            .env("PROJECTED_TOKEN_SERVER", &url)
            .env("PROJECTED_TOKEN_CA", &ca)
            .env("PROJECTED_TOKEN_TOKEN_FILE", &admin)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap()
    };
    let rotated = ctl(&[
        "rotate",
        "--pod",
        "batch-07",
        "--namespace",
        "batch",
        "-o",
        "json",
    ]);
    assert!(rotated.status.success(), "{rotated:?}");
    let answer: Value = serde_json::from_slice(&rotated.stdout).unwrap();
    let volumes = answer["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{answer}");
    assert_eq!(
        volumes[0]["dir"],
        out.join("batch/batch-07/kube-api-access-x1")
            .display()
            .to_string()
    );
    let ghost = ctl(&["rotate", "--pod", "ghost", "--namespace", "batch"]);
    assert!(!ghost.status.success());
    let message = String::from_utf8_lossy(&ghost.stderr);
    assert!(message.contains("and 190 more"), "{message}");
    let status = ctl(&["status", "-o", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["projector"]["pods"].as_array().unwrap().len(), 200);

    emulate.signal(Signal::TERM);
    let exit = emulate.wait_exit(Duration::from_secs(20));
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");

    let mut jtis = BTreeSet::new();
    for ((namespace, name), uid) in &pods {
        let dir = out.join(namespace).join(name).join("kube-api-access-x1");
        assert!(writes[&dir] >= 3, "{}", dir.display());
        assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("namespace")).unwrap(),
            *namespace
        );
        let claims = payload(&std::fs::read_to_string(dir.join("token")).unwrap());
        let bound = &claims["kubernetes.io"];
        assert_eq!(bound["pod"]["name"], name.as_str(), "{}", dir.display());
        assert_eq!(bound["namespace"], namespace.as_str());
        let pod_uid = bound["pod"]["uid"].as_str().unwrap();
        match uid {
            Some(uid) => assert_eq!(pod_uid, uid),
            None => assert_eq!(pod_uid.len(), 36, "a generated uid: {pod_uid}"),
        }
        if name != "json-pod" {
            assert_eq!(
                claims["sub"],
                format!("system:serviceaccount:{namespace}:sa-{name}")
            );
            assert_eq!(bound["node"]["name"], "node-1");
        }
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        leftovers(&out),
        Vec::<PathBuf>::new(),
        "leftover ..data_tmp"
    );
}

/// Runs `emulate --pods PATH` (ES256, no API) expecting it to fail at start: its stderr.
fn refused(pods: &Path, dir: &Path) -> String {
    let output = Command::new(BIN)
        .args(["emulate", "--no-serve", "--key-algorithm", "es256", "--dir"])
        .arg(dir)
        .arg("--pods")
        .arg(pods)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!dir.exists(), "nothing is written: {}", dir.display());
    stderr
}

#[test]
fn bad_manifest_sets_are_refused_naming_the_file_and_document() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let set = |name: &str, files: &[(&str, String)]| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        dir
    };
    let good = pod_yaml("shop", "web", "");

    let dir = set(
        "broken",
        &[
            ("a.yaml", good.clone()),
            (
                "b.yaml",
                format!("{}---\nmetadata: [unclosed\n", pod_yaml("shop", "db", "")),
            ),
        ],
    );
    let err = refused(&dir, &out);
    assert!(
        err.contains("b.yaml: document 2: not a Pod manifest"),
        "{err}"
    );

    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {}\n  template: {spec: {containers: []}}\n";
    let dir = set("kinds", &[("all.yaml", format!("{good}---\n{deployment}"))]);
    let err = refused(&dir, &out);
    assert!(
        err.contains("all.yaml: document 2: is a apps/v1 Deployment, not a Pod"),
        "{err}"
    );

    let dir = set(
        "twice",
        &[("a.yaml", good.clone()), ("b.yaml", good.clone())],
    );
    let err = refused(&dir, &out);
    assert!(
        err.contains("b.yaml document 1: pod shop/web is also defined in")
            && err.contains("a.yaml document 1"),
        "{err}"
    );

    let uid = uid_of(7);
    let dir = set(
        "same-uid",
        &[
            ("a.yaml", pod_yaml("shop", "web", &uid)),
            ("b.yaml", pod_yaml("shop", "db", &uid)),
        ],
    );
    let err = refused(&dir, &out);
    assert!(err.contains("b.yaml document 1: metadata.uid"), "{err}");

    let dir = set("bad-name", &[("a.yaml", pod_yaml("shop", "Web_0", ""))]);
    let err = refused(&dir, &out);
    assert!(
        err.contains("a.yaml document 1: metadata.name \"Web_0\""),
        "{err}"
    );

    let dir = set("empty", &[("notes.txt", "no manifests".to_owned())]);
    let err = refused(&dir, &out);
    assert!(err.contains("no *.yaml, *.yml or *.json file"), "{err}");

    let none =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec: {containers: [{name: c}]}\n";
    let dir = set("no-volumes", &[("a.yaml", none.to_owned())]);
    let err = refused(&dir, &out);
    assert!(err.contains("no pod with a projected volume"), "{err}");

    let err = refused(&tmp.path().join("missing"), &out);
    assert!(err.contains("--pods ") && err.contains("missing"), "{err}");

    // A single (multi-document) file works as well as a directory; --pods and --pod exclude
    // each other, and the single-pod identity flags make no sense with it.
    let file = tmp.path().join("kinds").join("all.yaml");
    for other in [["--pod", file.to_str().unwrap()], ["--pod-name", "x"]] {
        let output = Command::new(BIN)
            .args(["emulate", "--dir"])
            .arg(&out)
            .arg("--pods")
            .arg(&file)
            .args(other)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}

/// A Pod whose 30 volumes each project 30 config maps of 30 items, written with aliases: 27,000
/// items out of some 400 bytes; two of them are more than `--pod`'s YAML budget.
fn alias_bomb(name: &str) -> String {
    let aliases = |alias: &str| vec![alias; 30].join(",");
    format!(
        "kind: Pod\nmetadata: {{name: {name}}}\nk: &k {{key: k, path: k}}\na: &a [{}]\n\
         s: &s {{configMap: {{name: c, items: *a}}}}\nb: &b [{}]\n\
         v: &v {{name: v, projected: {{sources: *b}}}}\nspec: {{volumes: [{}]}}\n",
        aliases("*k"),
        aliases("*s"),
        aliases("*v")
    )
}

/// `--pods` reads no more than `--pod` would per file (the same YAML budget, over the whole file
/// however many documents it holds; at most 8 MiB), and at most 128 MiB in all: refused naming
/// the file, before anything is planned or written.
#[test]
fn manifests_beyond_the_memory_bounds_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let bombs = tmp.path().join("bombs");
    std::fs::create_dir(&bombs).unwrap();
    std::fs::write(bombs.join("a.yaml"), pod_yaml("shop", "web", "")).unwrap();
    std::fs::write(
        bombs.join("b.yaml"),
        format!("{}---\n{}", alias_bomb("x"), alias_bomb("y")),
    )
    .unwrap();
    let err = refused(&bombs, &out);
    assert!(
        err.contains("b.yaml: over the YAML limits of one manifest file (--pod's: 250,000 nodes"),
        "{err}"
    );

    // Sparse files: sizes without the bytes.
    let sized = |dir: &Path, name: &str, len: u64| {
        std::fs::create_dir_all(dir).unwrap();
        let file = std::fs::File::create(dir.join(name)).unwrap();
        file.set_len(len).unwrap();
    };
    const MIB: u64 = 1024 * 1024;
    let large = tmp.path().join("large");
    std::fs::create_dir(&large).unwrap();
    std::fs::write(large.join("a.yaml"), pod_yaml("shop", "web", "")).unwrap();
    sized(&large, "all.yaml", 8 * MIB + 1);
    let err = refused(&large, &out);
    assert!(
        err.contains("all.yaml: 8388609 bytes (8.0 MiB) is more than a manifest file may hold (8 MiB): split it"),
        "{err}"
    );

    let many = tmp.path().join("many");
    for i in 0..17 {
        sized(&many, &format!("{i:02}.yaml"), 8 * MIB);
    }
    let err = refused(&many, &out);
    assert!(
        err.contains(
            "the manifests hold 142606336 bytes (136.0 MiB), more than --pods reads (128 MiB)"
        ),
        "{err}"
    );
}

#[test]
fn a_single_multi_document_file_and_the_env_var() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pods.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---\n{}",
            pod_yaml("a", "one", ""),
            pod_yaml("b", "two", "")
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut emulate = Running::spawn_with_env(
        &[
            "emulate",
            "--no-serve",
            "--key-algorithm",
            "es256",
            "--dir",
            out.to_str().unwrap(),
        ],
        &[("PROJECTED_TOKEN_PODS", file.to_str().unwrap())],
    );
    emulate.wait_for_log("initial projection done", SERVE_STARTUP);
    for (namespace, name) in [("a", "one"), ("b", "two")] {
        let dir = out.join(namespace).join(name).join("kube-api-access-x1");
        assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
        let claims = payload(&std::fs::read_to_string(dir.join("token")).unwrap());
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], name);
    }
    emulate.signal(Signal::TERM);
    assert!(emulate.wait_exit(Duration::from_secs(20)).success());
}

/// SIGTERM while the first tokens of 1,000 pods are still being written (with fsync): exit 0 at
/// once, writes in progress finished, nothing half-written.
#[test]
fn sigterm_during_the_first_projection_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("pods");
    std::fs::create_dir(&manifests).unwrap();
    let mut all = String::new();
    for i in 0..1000 {
        all.push_str(&pod_yaml("load", &format!("p-{i:04}"), ""));
        all.push_str("---\n");
    }
    std::fs::write(manifests.join("all.yaml"), all).unwrap();
    let out = tmp.path().join("out");
    let mut emulate = Running::spawn(&[
        "emulate",
        "--no-serve",
        "--key-algorithm",
        "es256",
        "--dir",
        out.to_str().unwrap(),
        "--pods",
        manifests.to_str().unwrap(),
    ]);
    emulate.wait_for_log("prepared the volume directories", SERVE_STARTUP);
    emulate.signal(Signal::TERM);
    let exit = emulate.wait_exit(Duration::from_secs(20));
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");
    let finished = emulate.stderr_so_far().contains("initial projection done");
    let mut written = 0;
    for i in 0..1000 {
        let dir = out
            .join("load")
            .join(format!("p-{i:04}"))
            .join("kube-api-access-x1");
        if dir.join("..data").exists() {
            assert_consistent_layout(&dir, &["ca.crt", "namespace", "token"]);
            written += 1;
        }
    }
    assert_eq!(
        leftovers(&out),
        Vec::<PathBuf>::new(),
        "leftover ..data_tmp"
    );
    // Not asserted (it depends on the disk), but shown: how far the projection had come.
    println!("{written} of 1000 volumes written before SIGTERM (finished: {finished})");
}
