//! `conformance`: each selected scenario gets its own in-process emulator (`emulate::run_until`)
//! and pod, the client command runs once per scenario with that pod's volume, the scenario's
//! plan (`conformance::scenarios`) is carried out through the emulator's controls, and the
//! ledger's usage of the pod is judged (`conformance::verdict`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::json;

use super::api_client::ApiClient;
use super::emulate::InProcess;
use super::kubeconfig_out;
use super::shared::CommandError;
use crate::apiserver::controls::{OUTAGE_PATH, ROTATE_KEY_PATH, ROTATE_TOKENS_PATH};
use crate::apiserver::usage::{ClientUsage, UsageReport};
use crate::cli::{ApiConnectionArgs, Cli, Command, ConformanceArgs, OutputFormat};
use crate::conformance::client::{Client, Launch};
use crate::conformance::in_cluster_mount::IN_CLUSTER_DIR;
use crate::conformance::junit::{render as render_junit, Case};
use crate::conformance::scenarios::{list_text, plan, Action, Plan, Scenario};
use crate::conformance::verdict::{judge, Limits, Observed, Verdict};

/// How often the runner looks at the client and the ledger.
const POLL: Duration = Duration::from_millis(200);
/// How long an emulator may take to serve and write its first token.
const EMULATOR_READY: Duration = Duration::from_secs(30);
/// How long a client has to stop after SIGTERM.
const CLIENT_STOP_GRACE: Duration = Duration::from_secs(2);
/// Usage reports of one pod are small; the cap keeps a wrong answer from filling memory.
const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;
/// Lines of the client's log shown when it fails.
const LOG_TAIL_LINES: usize = 10;
const NAMESPACE: &str = "default";

pub async fn run(args: ConformanceArgs) -> Result<(), CommandError> {
    if args.list {
        print!("{}", list_text(args.max_reload_delay));
        return Ok(());
    }
    let scenarios = selected(&args.scenario)?;
    if args.command.is_empty() {
        return Err(CommandError::usage(
            "no client command: give one after `--`, e.g. `projected-token conformance -- python my_client.py`",
        ));
    }
    std::fs::create_dir_all(&args.log_dir)
        .map_err(|e| CommandError::usage(format!("--log-dir {}: {e}", args.log_dir.display())))?;
    let limits = Limits {
        max_reload_delay: args.max_reload_delay,
        max_stale: args.max_stale,
    };
    println!(
        "running {} scenario(s) {} with --max-reload-delay {}s; client logs in {}",
        scenarios.len(),
        if args.sequential {
            "one by one"
        } else {
            "side by side"
        },
        args.max_reload_delay.as_secs(),
        args.log_dir.display()
    );
    let mut results = Vec::new();
    if args.sequential {
        for scenario in scenarios {
            results.push(run_scenario(scenario, limits, &args.command, &args.log_dir).await);
        }
    } else {
        let tasks: Vec<_> = scenarios
            .into_iter()
            .map(|scenario| {
                let command = args.command.clone();
                let log_dir = args.log_dir.clone();
                tokio::spawn(
                    async move { run_scenario(scenario, limits, &command, &log_dir).await },
                )
            })
            .collect();
        for task in tasks {
            results.push(task.await.map_err(|e| {
                CommandError::failure(format!("a scenario's task ended abnormally: {e}"))
            })?);
        }
    }
    let verdicts: Vec<Verdict> = results.iter().map(|r| r.verdict.clone()).collect();
    print!("{}", table(&verdicts));
    if let Some(path) = &args.json {
        write_output("--json", path, json_text(&args, &results))?;
    }
    if let Some(path) = &args.junit {
        write_output("--junit", path, junit_text(&results))?;
    }
    if verdicts.iter().all(|r| r.passed) {
        Ok(())
    } else {
        Err(CommandError::failure(format!(
            "{} of {} scenarios failed",
            verdicts.iter().filter(|r| !r.passed).count(),
            verdicts.len()
        )))
    }
}

/// The scenarios `--scenario` names, or the default ones.
fn selected(names: &[String]) -> Result<Vec<Scenario>, CommandError> {
    if names.is_empty() {
        return Ok(Scenario::ALL
            .into_iter()
            .filter(|s| s.runs_by_default())
            .collect());
    }
    let mut chosen = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let scenario = Scenario::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            CommandError::usage(format!(
                "--scenario {name:?}: no such scenario; known: {}",
                known.join(", ")
            ))
        })?;
        if scenario == Scenario::CaRotation {
            return Err(CommandError::usage(
                "--scenario ca-rotation: not available yet (it needs a CA rotation control in the emulator)",
            ));
        }
        if !chosen.contains(&scenario) {
            chosen.push(scenario);
        }
    }
    Ok(chosen)
}

/// One scenario's verdict, how long it took, and where its client's log is.
#[derive(Debug, Clone, serde::Serialize)]
struct ScenarioResult {
    #[serde(flatten)]
    verdict: Verdict,
    seconds: f64,
    log: PathBuf,
}

fn write_output(flag: &str, path: &Path, text: String) -> Result<(), CommandError> {
    std::fs::write(path, text)
        .map_err(|e| CommandError::failure(format!("{flag} {}: {e}", path.display())))
}

fn json_text(args: &ConformanceArgs, results: &[ScenarioResult]) -> String {
    let document = json!({
        "max_reload_delay_seconds": args.max_reload_delay.as_secs_f64(),
        "max_stale": args.max_stale,
        "passed": results.iter().all(|r| r.verdict.passed),
        "scenarios": results,
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

fn junit_text(results: &[ScenarioResult]) -> String {
    let cases: Vec<Case> = results
        .iter()
        .map(|r| Case {
            name: r.verdict.scenario.to_owned(),
            passed: r.verdict.passed,
            seconds: r.seconds,
            failures: r.verdict.failures.clone(),
            output: format!(
                "{}client log: {}\n",
                serde_json::to_string(&r.verdict.figures)
                    .map(|f| format!("figures: {f}\n"))
                    .unwrap_or_default(),
                r.log.display()
            ),
        })
        .collect();
    render_junit("projected-token conformance", &cases)
}

/// The text table of all results.
fn table(results: &[Verdict]) -> String {
    let mut out = String::from("\nSCENARIO         RESULT  RELOAD   401s  STALE  DETAILS\n");
    for result in results {
        let reload = result
            .figures
            .worst_reload_delay_seconds
            .map_or("-".to_owned(), |s| format!("{s:.1}s"));
        out.push_str(&format!(
            "{:<16} {:<7} {:<8} {:<5} {:<6} {}\n",
            result.scenario,
            if result.passed { "PASS" } else { "FAIL" },
            reload,
            result.figures.rejected_uses,
            result.figures.stale_uses,
            result.failures.join("; ")
        ));
    }
    out
}

/// A failure before the client could be judged.
fn failed(scenario: Scenario, reason: String) -> Verdict {
    Verdict {
        scenario: scenario.name(),
        passed: false,
        failures: vec![reason],
        figures: Default::default(),
    }
}

/// One scenario from start to verdict; its line is printed as soon as it is known.
async fn run_scenario(
    scenario: Scenario,
    limits: Limits,
    command: &[std::ffi::OsString],
    log_dir: &Path,
) -> ScenarioResult {
    let started = std::time::Instant::now();
    let verdict = match run_one(scenario, limits, command, log_dir).await {
        Ok(verdict) => verdict,
        Err(reason) => failed(scenario, reason),
    };
    let status = if verdict.passed { "PASS" } else { "FAIL" };
    println!(
        "{status} {}{}",
        verdict.scenario,
        if verdict.failures.is_empty() {
            String::new()
        } else {
            format!(": {}", verdict.failures.join("; "))
        }
    );
    ScenarioResult {
        verdict,
        seconds: started.elapsed().as_secs_f64(),
        log: log_dir.join(format!("{}.log", scenario.name())),
    }
}

/// The in-process emulator of one scenario.
struct ScenarioEmulator {
    running: InProcess,
    api: ApiClient,
    _dir: tempfile::TempDir,
}

impl ScenarioEmulator {
    async fn start(plan: &Plan, pod: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let volume = dir.path().join("serviceaccount");
        let lifetime = (plan.lifetime.as_secs() + i64::from(plan.lifetime.subsec_nanos() > 0))
            .max(1)
            .to_string();
        let mut argv: Vec<String> = [
            "projected-token",
            "emulate",
            "--listen=127.0.0.1:0",
            "--ephemeral",
            "--key-algorithm=es256",
            "--namespace",
            NAMESPACE,
            "--pod-name",
            pod,
        ]
        .map(str::to_owned)
        .into();
        argv.push(format!("--dir={}", volume.display()));
        argv.push(format!("--expiration-seconds={lifetime}"));
        argv.push(format!("--extend-token-expiration={}", plan.extended));
        if plan.first_token_age.is_positive() {
            argv.push(format!(
                "--first-token-age={}ms",
                plan.first_token_age.as_millis()
            ));
        }
        let args = match clap::Parser::try_parse_from(&argv).map(|cli: Cli| cli.command) {
            Ok(Command::Emulate(args)) => *args,
            Ok(_) => return Err("internal: not emulate".into()),
            Err(e) => return Err(format!("emulator flags: {e}")),
        };
        let running = InProcess::start(args, EMULATOR_READY)
            .await
            .map_err(|e| format!("the scenario's emulator did not start: {}", e.message))?;
        let ready = &running.ready;
        let server = ready
            .api_urls
            .first()
            .and_then(|u| u.parse().ok())
            .ok_or("the emulator serves no URL")?;
        let api = ApiClient::connect(&ApiConnectionArgs {
            server,
            ca: volume.join("ca.crt"),
            token_file: ready.admin_token_file.clone(),
            output: OutputFormat::Text,
        })
        .await
        .map_err(|e| e.message)?;
        Ok(Self {
            running,
            api,
            _dir: dir,
        })
    }

    fn volume(&self) -> &Path {
        self.running
            .ready
            .volume_dirs
            .first()
            .map_or(Path::new(""), PathBuf::as_path)
    }

    /// The pod's clients in the ledger now (none while the API is unreachable).
    async fn clients(&self, pod: &str) -> Vec<ClientUsage> {
        match self
            .api
            .get::<UsageReport>("/debug/token-usage", "a usage report", MAX_REPORT_BYTES)
            .await
        {
            Ok(report) => report
                .clients
                .into_iter()
                .filter(|c| c.pod.as_deref() == Some(pod))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn act(&self, action: Action, pod: &str) -> Result<(), String> {
        let (path, body) = match action {
            Action::RotateTokens => (
                ROTATE_TOKENS_PATH,
                json!({"namespace": NAMESPACE, "pod": pod}),
            ),
            Action::RotateKey {
                grace,
                rotate_tokens,
            } => (
                ROTATE_KEY_PATH,
                json!({"gracePeriodSeconds": grace.as_secs(), "rotateTokens": rotate_tokens}),
            ),
            Action::ServiceUnavailable { duration } => (
                OUTAGE_PATH,
                json!({"mode": "ServiceUnavailable", "durationSeconds": duration.as_secs().max(1)}),
            ),
            Action::RefuseConnections { duration } => {
                // The previous outage ends now if its timer has not yet.
                let _ = self.api.call(Method::DELETE, OUTAGE_PATH, None).await;
                (
                    OUTAGE_PATH,
                    json!({"mode": "RefuseConnections", "durationSeconds": duration.as_secs().max(1)}),
                )
            }
            Action::RotateCa { .. } => return Err("CA rotation is not available yet".into()),
        };
        self.api
            .call(Method::POST, path, Some(&body))
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    async fn shutdown(self) {
        let _ = self.running.stop().await;
    }
}

/// One scenario with its own emulator, stopped whatever the outcome.
async fn run_one(
    scenario: Scenario,
    limits: Limits,
    command: &[std::ffi::OsString],
    log_dir: &Path,
) -> Result<Verdict, String> {
    let plan = plan(scenario, limits.max_reload_delay);
    let pod = format!("conformance-{}", scenario.name());
    let emulator = ScenarioEmulator::start(&plan, &pod).await?;
    let result = drive(&emulator, &plan, &pod, limits, command, log_dir).await;
    emulator.shutdown().await;
    result
}

/// Starts the client, waits for its first request, carries out the plan, and judges.
async fn drive(
    emulator: &ScenarioEmulator,
    plan: &Plan,
    pod: &str,
    limits: Limits,
    command: &[std::ffi::OsString],
    log_dir: &Path,
) -> Result<Verdict, String> {
    let url = emulator
        .running
        .ready
        .api_urls
        .first()
        .cloned()
        .unwrap_or_default();
    let api: SocketAddr = url
        .trim_start_matches("https://")
        .parse()
        .map_err(|e| format!("the emulator's URL {url}: {e}"))?;
    let volume = emulator.volume().to_owned();
    let kubeconfig = volume
        .parent()
        .map_or_else(|| PathBuf::from("kubeconfig"), |p| p.join("kubeconfig"));
    let ca_pem =
        std::fs::read_to_string(volume.join("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?;
    let log = log_dir.join(format!("{}.log", plan.scenario.name()));
    // The client where in-cluster clients look: in its own mount namespace, else the volume
    // itself for clients that take KUBECONFIG.
    let mut token_path = Path::new(IN_CLUSTER_DIR).join("token");
    let launch = |kubeconfig: &Path, mount: bool| -> Result<Client, String> {
        Client::spawn(&Launch {
            command,
            api,
            volume_dir: &volume,
            kubeconfig,
            log: &log,
            mount_in_cluster: mount,
        })
        .map_err(|e| e.to_string())
    };
    write_kubeconfig(&kubeconfig, &url, &ca_pem, &token_path)?;
    let mut client = match launch(&kubeconfig, true) {
        Ok(client) => client,
        Err(mount_error) => {
            token_path = volume.join("token");
            write_kubeconfig(&kubeconfig, &url, &ca_pem, &token_path)?;
            tracing::warn!(error = %mount_error, "no private mount namespace: the client gets KUBECONFIG only");
            launch(&kubeconfig, false)?
        }
    };
    let outcome = carry_out(emulator, plan, pod, &mut client).await;
    let tail = client.log_tail(LOG_TAIL_LINES);
    let exited = client.exited();
    client.stop(CLIENT_STOP_GRACE).await;
    let (resume_from, first_use_after_resume) = match outcome {
        Ok(resume) => resume,
        Err(reason) => return Err(format!("{reason}; the client's last output:\n{tail}")),
    };
    if let Some(status) = exited {
        return Err(format!(
            "the client exited ({status}) before the scenario ended; its last output:\n{tail}"
        ));
    }
    let clients = emulator.clients(pod).await;
    Ok(judge(
        plan.scenario,
        &limits,
        &Observed {
            clients: &clients,
            resume_from,
            first_use_after_resume,
        },
    ))
}

fn write_kubeconfig(path: &Path, url: &str, ca_pem: &str, token: &Path) -> Result<(), String> {
    let yaml = kubeconfig_out::render(url, ca_pem, token)?;
    std::fs::write(path, yaml).map_err(|e| format!("kubeconfig {}: {e}", path.display()))
}

/// When the API recovered and the first request after it, for the scenarios that interrupt it.
type Resumption = (Option<Timestamp>, Option<Timestamp>);

/// Waits for the client's first request, then runs the plan's steps at their times and
/// watches until the end. A client that exits, or never reaches the API, ends it early.
async fn carry_out(
    emulator: &ScenarioEmulator,
    plan: &Plan,
    pod: &str,
    client: &mut Client,
) -> Result<Resumption, String> {
    let started = tokio::time::Instant::now();
    let first_use = loop {
        if client.exited().is_some() {
            return Err("the client exited before its first request".into());
        }
        let clients = emulator.clients(pod).await;
        if clients.iter().any(|c| c.counts.uses > 0) {
            break tokio::time::Instant::now();
        }
        let waited = SignedDuration::try_from(started.elapsed()).unwrap_or(SignedDuration::MAX);
        if waited > plan.first_use_timeout {
            return Err(format!(
                "the client never reached the API with its token within {}s: check that it uses \
                 KUBERNETES_SERVICE_HOST/PORT (or KUBECONFIG), the projected ca.crt and token",
                plan.first_use_timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let at =
        |offset: SignedDuration| first_use + Duration::try_from(offset).unwrap_or(Duration::ZERO);
    let mut resume_from: Option<Timestamp> = None;
    let mut first_after: Option<Timestamp> = None;
    let mut steps = plan.steps.iter().peekable();
    let end = at(plan.ends_after_first_use);
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        if let Some(step) = steps.peek() {
            if now >= at(step.after_first_use) {
                emulator.act(step.action, pod).await?;
                if let Action::ServiceUnavailable { duration }
                | Action::RefuseConnections { duration } = step.action
                {
                    resume_from = Some(Timestamp::now() + duration);
                    first_after = None;
                }
                steps.next();
                continue;
            }
        }
        if client.exited().is_some() {
            return Ok((resume_from, first_after));
        }
        if let (Some(from), None) = (resume_from, first_after) {
            if Timestamp::now() >= from {
                let clients = emulator.clients(pod).await;
                first_after = clients
                    .iter()
                    .flat_map(|c| c.recent_uses.iter())
                    .filter(|u| u.at >= from && u.rejected.is_none())
                    .map(|u| u.at)
                    .min();
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok((resume_from, first_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_chosen_by_name_once_each() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let chosen = selected(&names(&["outage", "rotation", "outage"])).expect("known");
        assert_eq!(chosen, [Scenario::Outage, Scenario::Rotation]);
        let all = selected(&[]).expect("defaults");
        assert_eq!(all.len(), 5);
        let err = selected(&names(&["rotations"])).unwrap_err();
        assert!(
            err.message.contains("known: rotation, key-rotation"),
            "{}",
            err.message
        );
        assert_eq!(selected(&names(&["ca-rotation"])).unwrap_err().exit_code, 2);
    }
}
