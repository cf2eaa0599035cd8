//! A client process sees its own projected volume at the in-cluster path, side by side with
//! another, while the path stays as it was for everyone else.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use projected_token::conformance::in_cluster_mount::{InClusterMount, IN_CLUSTER_DIR};
use projected_token::projection::{AtomicWriter, FileProjection, Payload, WriterOptions};

/// A kubelet-layout volume in `dir` whose token reads `token`.
fn volume(dir: &Path, token: &str) {
    let mut payload: Payload = BTreeMap::new();
    for (name, text) in [("token", token), ("namespace", "default")] {
        payload.insert(
            name.to_owned(),
            FileProjection {
                data: text.as_bytes().into(),
                mode: 0o644,
                fs_user: None,
            },
        );
    }
    std::fs::create_dir_all(dir).expect("volume dir");
    AtomicWriter::new(dir, WriterOptions::default())
        .write(&payload)
        .expect("write the volume");
}

fn host_view() -> Option<String> {
    std::fs::read_to_string(Path::new(IN_CLUSTER_DIR).join("token")).ok()
}

#[test]
fn two_clients_each_read_their_own_volume_at_the_in_cluster_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let before = host_view();
    let mut children = Vec::new();
    for name in ["first", "second"] {
        let dir = tmp.path().join(name);
        volume(&dir, &format!("token-of-{name}"));
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "cat {IN_CLUSTER_DIR}/token; echo; ls {IN_CLUSTER_DIR}; sleep 1; cat {IN_CLUSTER_DIR}/token"
        ));
        InClusterMount::new(&dir)
            .expect("prepared")
            .apply(&mut command);
        match command.stdout(std::process::Stdio::piped()).spawn() {
            Ok(child) => children.push((name, child)),
            Err(e) => {
                // Not root and no unprivileged user namespaces: the runner falls back there.
                println!("SKIPPED: no mount namespace for a child here: {e}");
                return;
            }
        }
    }
    for (name, child) in children {
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success(), "{name}: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = text.lines().collect();
        let token = format!("token-of-{name}");
        assert_eq!(lines.first(), Some(&token.as_str()), "{text}");
        assert_eq!(lines.last(), Some(&token.as_str()), "{text}");
        assert!(
            lines.contains(&"namespace"),
            "the volume's other files: {text}"
        );
    }
    assert_eq!(
        host_view(),
        before,
        "the host's in-cluster path is untouched"
    );
}

#[test]
fn a_missing_volume_is_named() {
    let err = InClusterMount::new(Path::new("/nonexistent/volume")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/volume"), "{err}");
}
