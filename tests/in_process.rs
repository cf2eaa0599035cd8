//! `emulate` run in-process (`commands::emulate::run_until`), as the conformance runner and test
//! suites run it: it says where it is once it serves and every volume holds its token, prints
//! nothing, several run side by side on free ports, and a shutdown removes what the run owned.

mod common;

use clap::Parser as _;
use projected_token::cli::{Cli, Command};
use projected_token::commands::emulate::InProcess;

/// Starts `emulate ARGS` in this process and waits until it is ready.
async fn start(args: &[&str]) -> InProcess {
    let mut argv = vec!["projected-token", "emulate"];
    argv.extend_from_slice(args);
    let Command::Emulate(emulate) = Cli::try_parse_from(argv).expect("flags").command else {
        panic!("not emulate");
    };
    InProcess::start(*emulate, common::EMULATE_READY)
        .await
        .expect("ready in time")
}

/// Stops it, in time and cleanly.
async fn stop(emulator: InProcess) {
    let result = tokio::time::timeout(std::time::Duration::from_secs(20), emulator.stop())
        .await
        .expect("stops in time");
    assert!(result.is_ok(), "{:?}", result.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_emulators_run_side_by_side_and_stop_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut running = Vec::new();
    for n in 0..2 {
        let dir = tmp.path().join(format!("sa-{n}"));
        let dir_arg = format!("--dir={}", dir.display());
        let args = [
            dir_arg.as_str(),
            "--listen=127.0.0.1:0",
            "--ephemeral",
            "--key-algorithm=es256",
        ];
        let emulator = start(&args).await;
        let ready = &emulator.ready;
        assert_eq!(ready.volume_dirs, std::slice::from_ref(&dir));
        assert_eq!(ready.api_urls.len(), 1, "{ready:?}");
        // Ready means written: the token is there, and it authenticates at this emulator.
        let token = std::fs::read_to_string(dir.join("token")).expect("token on disk when ready");
        let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
        let client = common::https_client(&ca, &[]);
        let reply = common::send(
            &client,
            reqwest::Method::POST,
            &format!(
                "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                ready.api_urls[0]
            ),
            Some(token.trim()),
            Some("application/json"),
            Some(
                br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.to_vec(),
            ),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let admin = ready.admin_token_file.clone().expect("an admin token file");
        assert!(admin.exists(), "{}", admin.display());
        running.push((emulator, admin));
    }
    assert_ne!(
        running[0].0.ready.api_urls, running[1].0.ready.api_urls,
        "each on its own port"
    );
    for (emulator, admin) in running {
        stop(emulator).await;
        // --ephemeral: the run's private directory goes with it.
        assert!(!admin.exists(), "{} left behind", admin.display());
    }
}

/// `--first-token-age`: the first token is minted as if issued earlier, so the kubelet's first
/// refresh comes that much sooner (here about 1 s after the start instead of 8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_first_token_is_refreshed_early() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sa");
    let dir_arg = format!("--dir={}", dir.display());
    let emulator = start(&[
        dir_arg.as_str(),
        "--no-serve",
        "--ephemeral",
        "--key-algorithm=es256",
        "--expiration-seconds=10",
        "--first-token-age=7s",
    ])
    .await;
    let started = jiff::Timestamp::now();
    let first = std::fs::read_to_string(dir.join("token")).expect("token");
    let claims = projected_token::token::decode(first.trim()).expect("a JWT");
    let iat = claims.numeric_claim("iat").expect("iat");
    let age = started.as_second() - iat;
    assert!((6..=9).contains(&age), "issued {age} s before the start");
    // Refreshed at 80 % of its 10 s, less up to 10 % jitter: 0 to 1 s from the start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let second = loop {
        let now = std::fs::read_to_string(dir.join("token")).expect("token");
        if now != first {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not refreshed within 6 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let claims = projected_token::token::decode(second.trim()).expect("a JWT");
    let fresh = jiff::Timestamp::now().as_second() - claims.numeric_claim("iat").expect("iat");
    assert!(
        (0..=2).contains(&fresh),
        "the second version is fresh: {fresh} s old"
    );
    stop(emulator).await;
}
