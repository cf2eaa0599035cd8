//! `check --report`: three real clients (`examples/token_client`: per request, read once, and a
//! re-read every 3 s) against `emulate` with 2-second tokens; the JSON report judges each, and the
//! HTML report renders one timeline per client in headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`; where it is missing that part says it skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Emulator, BIN};
use serde_json::Value;

/// How long each client runs: with 2 s tokens (a rotation every 1.6 s) about 7 rotations, and
/// three re-reads of the periodic client.
const CLIENT_SECONDS: u64 = 11;

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Runs the three clients at once until they stop by themselves.
fn run_clients(emulator: &Emulator) {
    let client = common::example_binary("token_client");
    let hostport = emulator.url.trim_start_matches("https://");
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    let modes: [&[&str]; 3] = [
        &["--reload", "per-request"],
        &["--reload", "never"],
        &["--reload", "periodic", "--reload-period-ms", "3000"],
    ];
    let children: Vec<_> = modes
        .iter()
        .map(|mode| {
            Command::new(&client)
                .args(*mode)
                .args(["--interval-ms", "200", "--duration-secs"])
                .arg(CLIENT_SECONDS.to_string())
                .arg("--credentials-dir")
                .arg(&emulator.dir)
                .env("KUBERNETES_SERVICE_HOST", host)
                .env("KUBERNETES_SERVICE_PORT", port)
                .output()
        })
        .collect();
    for (child, mode) in children.into_iter().zip(modes) {
        let output = child.expect("run token_client");
        // Every request of every client succeeds: a late client is late, not rejected.
        assert!(output.status.success(), "{mode:?}: {}", text(&output));
    }
}

#[test]
fn report_judges_each_client_and_renders_one_timeline_per_client() {
    let root = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(root.path(), &["--expiration-seconds", "2"]);
    run_clients(&emulator);

    let report_dir = root.path().join("out");
    std::fs::create_dir(&report_dir).expect("report dir");
    let check = Command::new(BIN)
        .args(["check", "--server", &emulator.url, "--ca"])
        .arg(emulator.dir.join("ca.crt"))
        .arg("--token-file")
        .arg(&emulator.admin_token_file)
        .args(["--max-reload-delay", "1s", "--report"])
        .arg(report_dir.join("reload.html"))
        .output()
        .expect("run check");
    let said = text(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(said.contains("2 of 3 clients broke the bounds"), "{said}");
    assert!(
        said.contains("advice for system:serviceaccount:default:default (emulated-pod, token-client/periodic): it reloaded"),
        "{said}"
    );
    assert!(said.contains("fixed period of about"), "{said}");

    let json = std::fs::read_to_string(report_dir.join("reload.json")).expect("reload.json");
    let report: Value = serde_json::from_str(&json).expect("report JSON");
    assert_eq!(report["within_bounds"], false);
    let clients = report["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 3, "{json}");
    let client = |agent: &str| -> &Value {
        clients
            .iter()
            .find(|c| c["user_agent"] == agent)
            .unwrap_or_else(|| panic!("no client {agent}: {json}"))
    };

    let good = client("token-client/per-request");
    assert_eq!(good["within_bounds"], true, "{good}");
    assert_eq!(good["advice"], Value::Null);
    let rotations = good["timeline"]["rotations"].as_array().expect("rotations");
    let tokens = good["timeline"]["tokens"].as_array().expect("tokens");
    assert!(rotations.len() >= 4, "{good}");
    assert!(tokens.len() >= 4, "{good}");
    assert!(good["reloads"].as_u64().unwrap() >= 3, "{good}");
    // Each rotation on its timeline replaced a token it presented, by the next one it presented.
    let jtis: Vec<&str> = tokens.iter().filter_map(|t| t["jti"].as_str()).collect();
    for pair in jtis.windows(2) {
        assert!(
            rotations
                .iter()
                .any(|r| r["old_jti"] == pair[0] && r["new_jti"] == pair[1]),
            "no rotation from {} to {}: {good}",
            pair[0],
            pair[1]
        );
    }
    assert!(good["median_reload_delay_seconds"].as_f64().unwrap() <= 1.0);

    let read_once = client("token-client/read-once");
    assert_eq!(read_once["within_bounds"], false);
    assert_eq!(read_once["distinct_tokens"], 1);
    assert_eq!(read_once["reloads"], 0);
    assert_eq!(read_once["advice"]["kind"], "reads_once", "{read_once}");
    assert!(
        read_once["broken"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["bound"] == "reload_delay"),
        "{read_once}"
    );

    let periodic = client("token-client/periodic");
    assert_eq!(periodic["within_bounds"], false, "{periodic}");
    assert!(periodic["reloads"].as_u64().unwrap() >= 2, "{periodic}");
    assert_eq!(periodic["advice"]["kind"], "fixed_period", "{periodic}");
    let period = periodic["advice"]["period_seconds"].as_u64().unwrap();
    assert!((2..=4).contains(&period), "{periodic}");
    let median = periodic["median_reload_delay_seconds"].as_f64().unwrap();
    let worst = periodic["worst_reload_delay_seconds"].as_f64().unwrap();
    assert!(
        median > 0.0 && median <= worst && worst <= 3.5,
        "{periodic}"
    );

    let html = report_dir.join("reload.html");
    let page = std::fs::read_to_string(&html).expect("reload.html");
    assert_eq!(page.matches("<svg class=\"timeline\"").count(), 3);
    render_in_chromium(&html, 3);
}

/// Chromium to render with: `PROJECTED_TOKEN_TEST_CHROMIUM`, else `chromium` on PATH.
fn chromium() -> Result<PathBuf, String> {
    let candidate = std::env::var_os("PROJECTED_TOKEN_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"));
    match Command::new(&candidate).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(candidate),
        Ok(out) => Err(format!(
            "{} --version failed: {}",
            candidate.display(),
            text(&out)
        )),
        Err(e) => Err(format!(
            "{} cannot run ({e}); install Debian's chromium (.ci/run does)",
            candidate.display()
        )),
    }
}

/// Opens the page from its file in headless Chromium and reads back what the page's own check
/// measured: how many timelines were laid out with bars, and the bars and rotation lines drawn.
fn render_in_chromium(html: &Path, clients: usize) {
    let chromium = match chromium() {
        Ok(path) => path,
        Err(why) => {
            println!("SKIPPED: rendering the HTML report in Chromium: {why}");
            return;
        }
    };
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let mut command = Command::new(&chromium);
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .env("HOME", profile.path());
    // Chromium's sandbox refuses to run as root (CI runs as root).
    if rustix::process::geteuid().is_root() {
        command.arg("--no-sandbox");
    }
    let output = common::output_within(&mut command, Duration::from_secs(60));
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "chromium: {}", text(&output));
    assert!(
        dom.contains(&format!("data-timelines-rendered=\"{clients}\"")),
        "the page's check did not find {clients} drawn timelines: {}",
        dom.lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no <body> in the DOM")
    );
    let drawn = |attribute: &str| -> Vec<u64> {
        dom.match_indices(&format!("{attribute}=\""))
            .filter_map(|(at, found)| {
                let rest = &dom[at + found.len()..];
                rest.split('"').next().and_then(|n| n.parse().ok())
            })
            .collect()
    };
    let bars = drawn("data-rendered-bars");
    let rotations = drawn("data-rendered-rotations");
    assert_eq!(bars.len(), clients, "{bars:?}");
    assert!(bars.iter().all(|&n| n >= 1), "{bars:?}");
    // The per-request and periodic clients' timelines show several rotations each.
    assert!(
        rotations.iter().filter(|&&n| n >= 3).count() >= 2,
        "{rotations:?}"
    );
}
