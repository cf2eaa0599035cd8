//! The container image, the static binary and the docker-compose examples.
//!
//! The static binaries come from `scripts/build-static.sh` (`.ci/run` runs it before the tests);
//! Docker tests need a Docker Engine that answers, and the compose end-to-end test
//! `docker-compose`. Where one is missing the test prints `SKIPPED:` with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::wait_until_every;

/// How often a wait asks docker again.
const DOCKER_POLL: Duration = Duration::from_millis(200);

const IMAGE: &str = "projected-token:latest";
/// Where the image has the binary (the compose health checks name it: no PATH lookup needed).
const BINARY_IN_IMAGE: &str = "/usr/local/bin/projected-token";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn static_binary() -> PathBuf {
    repo()
        .join("target/image/rootfs")
        .join(BINARY_IN_IMAGE.trim_start_matches('/'))
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Why tests of the static binary cannot run here, if they cannot.
fn static_binary_missing() -> Option<String> {
    let binary = static_binary();
    (!binary.exists()).then(|| {
        format!(
            "{} is missing; run scripts/build-static.sh first (.ci/run does)",
            binary.display()
        )
    })
}

/// Why Docker tests cannot run here, if they cannot.
fn docker_missing() -> Option<String> {
    if let Some(why) = static_binary_missing() {
        return Some(why);
    }
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Some(format!("no docker client: {e}")),
        Ok(out) if !out.status.success() => {
            Some(format!("no Docker Engine answers: {}", text(&out).trim()))
        }
        Ok(_) => None,
    }
}

/// Builds both images once per test process (scripts/build-image.sh, static build skipped).
fn images() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out =
                run(Command::new(repo().join("scripts/build-image.sh"))
                    .env("SKIP_STATIC_BUILD", "1"));
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            }
        })
        .clone()
}

#[test]
fn release_binary_is_static() {
    if let Some(why) = static_binary_missing() {
        println!("SKIPPED: {why}");
        return;
    }
    let binary = static_binary();
    let out = run(Command::new("ldd").arg(&binary));
    let said = text(&out);
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "ldd {}: {said}",
        binary.display()
    );
    // And it runs with no environment at all, as in a scratch image.
    let out = run(Command::new(&binary).arg("--version").env_clear());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with("projected-token "), "{}", text(&out));
}

/// Removes a container at the end of a test, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn image_runs_version_and_emulate_as_non_root() {
    if let Some(why) = docker_missing() {
        println!("SKIPPED: {why}");
        return;
    }
    images().expect("images build");

    let config = run(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{index .Config.Labels \"org.opencontainers.image.title\"}}|{{.Size}}",
        IMAGE,
    ]));
    let config = text(&config);
    let fields: Vec<&str> = config.trim().split('|').collect();
    assert_eq!(
        fields[..3],
        ["65532:65532", "[\"projected-token\"]", "projected-token"],
        "{config}"
    );
    let size: u64 = fields[3].parse().expect("image size");
    let binary = std::fs::metadata(static_binary()).unwrap().len();
    assert!(
        size < binary + 64 * 1024,
        "the image is the binary and two directories: {size} bytes for a {binary}-byte binary"
    );

    let version =
        run(Command::new("docker").args(["run", "--rm", "--network", "none", IMAGE, "--version"]));
    assert!(version.status.success(), "{}", text(&version));
    assert_eq!(
        text(&version).trim(),
        format!("projected-token {}", env!("CARGO_PKG_VERSION"))
    );

    let name = format!("projected-token-test-{}", std::process::id());
    let container = Container(name.clone());
    let started = run(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        &container.0,
        "--network",
        "none",
        IMAGE,
        "emulate",
        "--dir",
        "/projected",
        "--expiration-seconds",
        "2",
        "--key-algorithm",
        "es256",
    ]));
    assert!(started.status.success(), "{}", text(&started));
    // Two rotations at least, then the token explains itself inside the container.
    let inspected = wait_until_every(
        "a rotated token in the container",
        Duration::from_secs(30),
        DOCKER_POLL,
        || {
            let logs = text(&run(Command::new("docker").args(["logs", &name])));
            if logs.matches("rotated").count() < 2 {
                return None;
            }
            let out = run(Command::new("docker").args([
                "exec",
                &name,
                "projected-token",
                "inspect",
                "/projected/token",
            ]));
            out.status.success().then(|| text(&out))
        },
    );
    assert!(
        inspected.contains("system:serviceaccount:default:default"),
        "{inspected}"
    );
    // The compose health check's command, by its absolute path (no shell, no PATH lookup).
    let probed = run(Command::new("docker").args([
        "exec",
        &name,
        BINARY_IN_IMAGE,
        "probe",
        "--dir",
        "/projected",
    ]));
    assert!(probed.status.success(), "{}", text(&probed));
    assert!(
        text(&probed).starts_with("/projected: ready"),
        "{}",
        text(&probed)
    );
    let id = run(Command::new("docker").args(["exec", &name, "projected-token", "--version"]));
    assert!(id.status.success());
    let stat = run(Command::new("docker").args(["top", &name]));
    assert!(
        text(&stat).contains("65532"),
        "runs as 65532: {}",
        text(&stat)
    );
}

/// A compose file as JSON, after the YAML parser.
fn compose_file(name: &str) -> serde_json::Value {
    let path = repo().join("examples/docker-compose").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every `--flag` of a service's command is one the subcommand has.
fn assert_real_flags(service: &serde_json::Value) {
    let args: Vec<&str> = service["command"]
        .as_array()
        .expect("command as a list")
        .iter()
        .map(|a| a.as_str().expect("string arguments"))
        .collect();
    assert_real_subcommand_flags(&args);
}

/// `args` is a subcommand and flags it has.
fn assert_real_subcommand_flags(args: &[&str]) {
    let help = run(Command::new(common::BIN).args([args[0], "--help"]));
    assert!(help.status.success(), "`{}` is not a subcommand", args[0]);
    let help = text(&help);
    for arg in &args[1..] {
        if !arg.starts_with("--") {
            continue; // a value
        }
        let flag = arg.split('=').next().unwrap_or(arg);
        assert!(
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}\n"))
                || help.contains(&format!("{flag} <")),
            "{flag} is not a flag of `{}`",
            args[0]
        );
    }
}

/// A writer's health check is `probe --dir` of the volume it writes, run by absolute path (no
/// shell in the image), and the app waits for it.
fn assert_app_waits_for_a_healthy_writer(file: &str, compose: &serde_json::Value, writer: &str) {
    let check = &compose["services"][writer]["healthcheck"];
    let test: Vec<&str> = check["test"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: {writer} has a healthcheck test list"))
        .iter()
        .map(|a| a.as_str().expect("string arguments"))
        .collect();
    assert_eq!(
        test[..3],
        ["CMD", BINARY_IN_IMAGE, "probe"],
        "{file}: {writer}'s healthcheck"
    );
    assert_real_subcommand_flags(&test[2..]);
    assert!(
        test.windows(2).any(|w| w == ["--dir", "/projected"]),
        "{file}: {test:?}"
    );
    for field in ["interval", "timeout", "retries", "start_period"] {
        assert!(
            !check[field].is_null(),
            "{file}: {writer}'s healthcheck sets {field}"
        );
    }
    assert_eq!(
        compose["services"]["app"]["depends_on"][writer]["condition"], "service_healthy",
        "{file}: the app starts once {writer} is healthy"
    );
}

#[test]
fn compose_files_validate() {
    const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    for (file, writer_name) in [
        ("docker-compose.yaml", "emulator"),
        ("docker-compose.cluster.yaml", "sidecar"),
    ] {
        let compose = compose_file(file);
        let services = &compose["services"];
        let writer = &services[writer_name];
        assert_real_flags(writer);
        assert!(
            writer["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "serviceaccount:/projected"),
            "{file}: the writer projects into the volume root"
        );
        let app = &services["app"];
        assert!(
            app["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == &serde_json::Value::from(format!("serviceaccount:{MOUNT}:ro"))),
            "{file}: the app mounts the volume where in-cluster clients look"
        );
        assert!(
            app["environment"]["KUBERNETES_SERVICE_HOST"].is_string(),
            "{file}"
        );
        assert!(
            app["environment"]["KUBERNETES_SERVICE_PORT"].is_string(),
            "{file}"
        );
        assert!(compose["volumes"]["serviceaccount"].is_object(), "{file}");
        assert_app_waits_for_a_healthy_writer(file, &compose, writer_name);
    }
    let emulated = compose_file("docker-compose.yaml");
    // The API is published for `ctl`/`check` on the host, on its loopback only.
    let ports = emulated["services"]["emulator"]["ports"]
        .as_array()
        .expect("the emulator publishes its port");
    assert!(!ports.is_empty());
    for port in ports {
        let port = port.as_str().expect("short syntax");
        assert!(port.starts_with("127.0.0.1:"), "{port} is loopback only");
        assert!(port.ends_with(":6443"), "{port} is the API's");
    }
    assert_eq!(
        emulated["services"]["app"]["environment"]["KUBERNETES_SERVICE_HOST"],
        "emulator"
    );
    let command = emulated["services"]["emulator"]["command"].to_string();
    assert!(command.contains("--san=emulator"), "{command}");

    // Compose's own schema check, where docker-compose is installed (it needs no daemon).
    let Ok(version) = Command::new("docker-compose").arg("version").output() else {
        println!("SKIPPED: docker-compose config (docker-compose is not installed); the structural checks above ran");
        return;
    };
    assert!(version.status.success());
    for file in ["docker-compose.yaml", "docker-compose.cluster.yaml"] {
        let out = run(Command::new("docker-compose")
            .args([
                "-f",
                &format!("examples/docker-compose/{file}"),
                "config",
                "-q",
            ])
            .current_dir(repo())
            .env("KUBECONFIG_FILE", "/dev/null")
            .env("KUBERNETES_SERVICE_HOST", "api.example.com"));
        assert!(out.status.success(), "{file}: {}", text(&out));
    }
    // The cluster variant names what it needs.
    let out = run(Command::new("docker-compose")
        .args([
            "-f",
            "examples/docker-compose/docker-compose.cluster.yaml",
            "config",
            "-q",
        ])
        .current_dir(repo())
        .env_remove("KUBECONFIG_FILE")
        .env("KUBERNETES_SERVICE_HOST", "api.example.com"));
    assert!(!out.status.success());
    assert!(text(&out).contains("KUBECONFIG_FILE"), "{}", text(&out));
}

/// `docker-compose down -v` of a project, however the test ends.
struct Project {
    name: String,
    /// The host's loopback port the emulator's API is published on (`API_PORT`).
    api_port: u16,
    /// A compose file merged over the example (`-f`), for what only the test changes.
    overrides: Option<PathBuf>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .args([
                "-p",
                &self.name,
                "-f",
                "examples/docker-compose/docker-compose.yaml",
            ])
            .args(
                self.overrides
                    .iter()
                    .flat_map(|file| [Path::new("-f"), file.as_path()]),
            )
            .args(args)
            .current_dir(repo())
            .env("TOKEN_LIFETIME", "3")
            .env("API_PORT", self.api_port.to_string());
        command
    }

    /// The id of a service's container.
    fn container(&self, service: &str) -> String {
        let out = run(&mut self.compose(&["ps", "-q", service]));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!id.is_empty(), "no {service} container: {}", text(&out));
        id
    }

    /// `docker inspect -f FORMAT` of a service's container.
    fn inspect(&self, service: &str, format: &str) -> String {
        let out =
            run(Command::new("docker").args(["inspect", "-f", format, &self.container(service)]));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn leftovers(&self) -> String {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let mut found = String::new();
        for kind in [["ps", "-aq"], ["volume", "ls"], ["network", "ls"]] {
            let out = run(Command::new("docker")
                .args(kind)
                .args(["-q", "--filter", &label]));
            found.push_str(String::from_utf8_lossy(&out.stdout).trim());
        }
        found
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"]).output();
    }
}

/// A loopback port free right now (Docker binds it a moment later).
fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

#[test]
fn compose_up_app_authenticates_in_cluster_and_check_passes() {
    if let Some(why) = docker_missing() {
        println!("SKIPPED: {why}");
        return;
    }
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        println!("SKIPPED: docker-compose is not installed");
        return;
    }
    images().expect("images build");
    // The emulator starts on 2% of a core, as on a slow or busy machine: its first token takes
    // seconds instead of milliseconds, so an app started before it is written surely fails (it
    // exits 2 without ca.crt, and `restart: on-failure` starts it again: without the health
    // check, the app restarted at every run).
    let scratch = tempfile::tempdir().expect("temp dir");
    let slow_start = scratch.path().join("slow-start.yaml");
    std::fs::write(&slow_start, "services:\n  emulator:\n    cpus: 0.02\n").expect("override");
    let project = Project {
        name: format!("projected-token-test-{}", std::process::id()),
        api_port: free_loopback_port(),
        overrides: Some(slow_start),
    };
    // Returns once the emulator's health check passed and the app was started after it.
    let up = run(&mut project.compose(&["up", "-d"]));
    assert!(up.status.success(), "{}", text(&up));
    // The app never exited: it found ca.crt and token at its first read.
    let app_state = "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}";
    let started = project.inspect("app", app_state);
    let early_logs = text(&run(&mut project.compose(&["logs", "--no-color", "app"])));
    assert_eq!(started, "0 running 0", "the app at start: {early_logs}");
    assert_eq!(
        project.inspect("emulator", "{{.State.Health.Status}}"),
        "healthy"
    );
    // The rest at full speed.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let full_speed = run(Command::new("docker").args([
        "update",
        "--cpus",
        &cores.to_string(),
        &project.container("emulator"),
    ]));
    assert!(full_speed.status.success(), "{}", text(&full_speed));

    // The app's requests succeed with a few rotated tokens: ~2.4 s per rotation.
    let logs = wait_until_every(
        "the app using three tokens",
        Duration::from_secs(60),
        DOCKER_POLL,
        || {
            let emulator = text(&run(&mut project.compose(&[
                "logs",
                "--no-color",
                "emulator",
            ])));
            let app = text(&run(&mut project.compose(&["logs", "--no-color", "app"])));
            (emulator.matches("rotated").count() >= 3
                && app
                    .matches("ok system:serviceaccount:default:default")
                    .count()
                    >= 10)
                .then_some(app)
        },
    );
    assert!(!logs.contains("failed:"), "{logs}");
    // Its only exit message (`token-client: ...`) is never printed while it runs.
    assert!(!logs.contains("token-client:"), "{logs}");
    assert_eq!(
        project.inspect("app", app_state),
        "0 running 0",
        "the app later"
    );

    let check = run(&mut project.compose(&[
        "exec",
        "-T",
        "emulator",
        "projected-token",
        "check",
        "--server",
        "https://127.0.0.1:6443",
        "--ca",
        "/projected/ca.crt",
        "--token-file",
        "/tmp/admin-token",
        "--max-reload-delay",
        "1s",
        "--output",
        "json",
    ]));
    let report = text(&check);
    assert!(check.status.success(), "{report}");
    let report: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&check.stdout))
        .unwrap_or_else(|e| panic!("check --output json: {e}: {report}"));
    assert_eq!(report["within_bounds"], true);
    assert_eq!(report["clients"], 1, "the app is the one client");

    // From the host, as the compose file's comment says: the CA and the admin token copied out,
    // the published port, the certificate verified for localhost and 127.0.0.1.
    let host = tempfile::tempdir().expect("temp dir");
    let emulator = project.container("emulator");
    let ca = host.path().join("ca.crt");
    let token = host.path().join("admin.token");
    for (from, to, follow) in [
        ("/projected/ca.crt", &ca, true),
        ("/tmp/admin-token", &token, false),
    ] {
        let mut cp = Command::new("docker");
        cp.arg("cp");
        if follow {
            cp.arg("-L");
        }
        let out = run(cp.arg(format!("{emulator}:{from}")).arg(to));
        assert!(out.status.success(), "docker cp {from}: {}", text(&out));
    }
    let connection = |server: &str| {
        [
            "--server".to_owned(),
            server.to_owned(),
            "--ca".to_owned(),
            ca.display().to_string(),
            "--token-file".to_owned(),
            token.display().to_string(),
        ]
    };
    let status = run(Command::new(common::BIN)
        .args(["ctl", "status"])
        .args(connection(&format!(
            "https://localhost:{}",
            project.api_port
        ))));
    assert!(
        status.status.success(),
        "ctl status from the host: {}",
        text(&status)
    );
    let check = run(Command::new(common::BIN)
        .args(["check", "--max-reload-delay", "1s"])
        .args(connection(&format!(
            "https://127.0.0.1:{}",
            project.api_port
        ))));
    assert!(
        check.status.success(),
        "check from the host: {}",
        text(&check)
    );

    let down = run(&mut project.compose(&["down", "-v"]));
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(project.leftovers(), "", "down leaves nothing");
}
