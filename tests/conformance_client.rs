//! The client under test as the conformance runner starts it: an in-cluster environment, its
//! volume at the in-cluster path, its output in a log, its whole process group stopped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use projected_token::conformance::client::{Client, Launch};
use projected_token::projection::{AtomicWriter, FileProjection, Payload, WriterOptions};

fn volume(dir: &Path) {
    let mut payload: Payload = BTreeMap::new();
    payload.insert(
        "namespace".to_owned(),
        FileProjection {
            data: b"conformance"[..].into(),
            mode: 0o644,
            fs_user: None,
        },
    );
    std::fs::create_dir_all(dir).expect("volume dir");
    AtomicWriter::new(dir, WriterOptions::default())
        .write(&payload)
        .expect("write the volume");
}

fn shell(script: &str) -> Vec<OsString> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[tokio::test]
async fn a_client_that_exits_early_leaves_its_code_and_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("volume");
    volume(&dir);
    let log = tmp.path().join("client.log");
    let kubeconfig = tmp.path().join("kubeconfig");
    let command = shell(
        "echo host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT config=$KUBECONFIG; \
         cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; echo gone >&2; exit 3",
    );
    let launch = Launch {
        command: &command,
        api: "127.0.0.1:16443".parse().expect("addr"),
        volume_dir: &dir,
        kubeconfig: &kubeconfig,
        log: &log,
        mount_in_cluster: true,
    };
    let mut client = match Client::spawn(&launch) {
        Ok(client) => client,
        Err(e) => {
            println!("SKIPPED: no mount namespace for a child here: {e}");
            return;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = client.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the client did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(3));
    let tail = client.log_tail(3);
    assert_eq!(
        tail,
        format!(
            "host=127.0.0.1 port=16443 config={}\nconformance\ngone",
            kubeconfig.display()
        )
    );
    assert_eq!(client.log_tail(1), "gone");
}

#[tokio::test]
async fn stopping_a_client_stops_what_it_started() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("volume");
    volume(&dir);
    let pid_file = tmp.path().join("background.pid");
    let command = shell(&format!(
        "trap '' TERM; sleep 300 & echo $! > {}; wait",
        pid_file.display()
    ));
    let launch = Launch {
        command: &command,
        api: "127.0.0.1:16443".parse().expect("addr"),
        volume_dir: &dir,
        kubeconfig: &tmp.path().join("kubeconfig"),
        log: &tmp.path().join("client.log"),
        mount_in_cluster: false,
    };
    let mut client = Client::spawn(&launch).expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let background: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(client.exited().is_none(), "{}", client.log_tail(5));
        assert!(Instant::now() < deadline, "no background pid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The shell and its sleep ignore SIGTERM: the grace period ends, SIGKILL takes the group.
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        client.stop(Duration::from_millis(300)),
    )
    .await
    .expect("stopped in time");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.and_then(|s| s.signal()), Some(9), "{status:?}");
    let pid = rustix::process::Pid::from_raw(background).expect("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Dead: no such process, or a zombie (whether anything reaps orphans here is not ours to say).
    let alive = || {
        rustix::process::test_kill_process(pid).is_ok()
            && std::fs::read_to_string(format!("/proc/{background}/stat"))
                .map(|stat| {
                    !stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
    };
    while alive() {
        assert!(Instant::now() < deadline, "the background sleep survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
