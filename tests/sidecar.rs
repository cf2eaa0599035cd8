//! End-to-end tests of `sidecar`: the real binary against the emulator (`emulate`, `serve`) and
//! against a scripted HTTPS server that answers TokenRequests with faults; real files in temporary
//! directories, real signals, real HTTP to the health endpoint.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{assert_consistent_layout, start_serve, wait_until, ApiServer, Running};
use projected_token::issuer::{KeyAlgorithm, SigningKey, DEFAULT_ISSUER};
use projected_token::projection::{AtomicWriter, FileProjection, Payload, WriterOptions};
use projected_token::token::decode;
use rustix::process::Signal;

/// How long a process may take to start and write its first tokens.
const STARTUP: Duration = Duration::from_secs(30);
/// Bound of every other wait for something the sidecar does by itself.
const WAIT: Duration = Duration::from_secs(15);
/// The retry bounds given to sidecars in the fault tests.
const BACKOFF: [&str; 4] = ["--backoff-initial", "100ms", "--backoff-cap", "1s"];
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// Scheduling slack on top of the backoff cap (two shared cores, a debug build).
const SLACK: Duration = Duration::from_secs(3);
/// The sidecar's own per-request time limit (`source::client::REQUEST_TIMEOUT`).
const SIDECAR_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// What the flag-defined volume holds.
const FLAG_VOLUME: [&str; 3] = ["ca.crt", "namespace", "token"];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Waits until `dir` holds one version directory: a new version is readable from its swap, and
/// the previous one is removed a moment later (after an fsync), so a layout checked as soon as
/// the new token reads may still show it.
fn wait_for_one_version(dir: &Path) {
    wait_until("the previous version removed", WAIT, || {
        let versions = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|entry| entry.ok())
            .filter(|entry| common::is_timestamp_dir_name(&entry.file_name().to_string_lossy()))
            .count();
        (versions == 1).then_some(())
    });
}

fn arg(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_owned()
}

fn read_token(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("token")).ok()
}

fn jti(token: &str) -> String {
    decode(token)
        .expect("a JWT")
        .string_claim("jti")
        .expect("jti claim")
        .to_owned()
}

/// Waits until `dir/token` holds a token other than `old` and returns it.
fn wait_for_new_token(dir: &Path, old: Option<&str>, timeout: Duration) -> String {
    wait_until(
        &format!("a new token in {}", dir.display()),
        timeout,
        || read_token(dir).filter(|t| Some(t.as_str()) != old && !t.is_empty()),
    )
}

/// GET over plain HTTP/1.0 (the sidecar's health endpoint): status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The value of one series (`name{labels}`) in a Prometheus text page; 0 when absent.
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

fn failures(reason: &str) -> String {
    format!(
        "projected_token_refresh_failures_total{{volume=\"token\",path=\"token\",reason=\"{reason}\"}}"
    )
}

const SUCCESSES: &str = "projected_token_refresh_successes_total{volume=\"token\",path=\"token\"}";

/// A kubeconfig with one context (`namespace` optional) whose user is `user` (a YAML mapping).
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    namespace: Option<&str>,
) -> String {
    let namespace = namespace
        .map(|n| format!(", namespace: {n}"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\ncontexts:\n- name: test\n  context: {{cluster: c, user: u{namespace}}}\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {ca:?}\nusers:\n- name: u\n  user: {user}\n",
        ca = arg(ca)
    );
    std::fs::write(path, text).expect("write kubeconfig");
    arg(path)
}

/// A `serve` emulator standing in for a cluster's API, and a kubeconfig that uses its admin
/// token: what a sidecar is pointed at.
struct ClusterApi {
    api: ApiServer,
    kubeconfig: String,
    ca_file: PathBuf,
}

fn start_cluster_api(root: &Path) -> ClusterApi {
    let api = start_serve(root, &["--key-algorithm", "es256"]);
    let ca_file = root.join("emulator-ca.crt");
    std::fs::write(&ca_file, &api.ca_pem).expect("write CA");
    let kubeconfig = write_kubeconfig(
        &root.join("admin.kubeconfig"),
        &api.url,
        &ca_file,
        &format!("{{token: {:?}}}", api.admin_token),
        None,
    );
    ClusterApi {
        api,
        kubeconfig,
        ca_file,
    }
}

/// A pod manifest with `volumes` projected volumes `vol0..`, each a token, the CA and namespace.
fn write_pod_manifest(path: &Path, volumes: usize) -> String {
    let mut manifest = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: crashy, namespace: default, uid: 7a0c1f9e-1111-4222-8333-944455556666}\nspec:\n  serviceAccountName: default\n  containers: [{name: c, image: c}]\n  volumes:\n",
    );
    for v in 0..volumes {
        manifest.push_str(&format!(
            "  - name: vol{v}\n    projected:\n      sources:\n      - serviceAccountToken: {{path: token, expirationSeconds: 3607}}\n      - configMap: {{name: kube-root-ca.crt, items: [{{key: ca.crt, path: ca.crt}}]}}\n      - downwardAPI: {{items: [{{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}]}}\n"
        ));
    }
    std::fs::write(path, manifest).expect("write pod manifest");
    arg(path)
}

/// A `sidecar` process, its health endpoint (with `--metrics-listen`), and every line it printed
/// that the test has read so far. Killed on drop.
struct Sidecar {
    process: Running,
    health: Option<SocketAddr>,
    lines: Vec<String>,
}

impl Sidecar {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut full = vec!["sidecar"];
        full.extend_from_slice(args);
        let process = Running::spawn_with_env(&full, env);
        let mut sidecar = Self {
            process,
            health: None,
            lines: Vec::new(),
        };
        if args.contains(&"--metrics-listen") {
            let seen = sidecar
                .process
                .wait_for_stdout("serving health and metrics on http://", STARTUP);
            let addr = seen
                .last()
                .and_then(|line| line.rsplit("http://").next())
                .and_then(|addr| addr.trim().parse().ok())
                .expect("health address");
            sidecar.lines.extend(seen);
            sidecar.health = Some(addr);
        }
        sidecar
    }

    /// Moves every line printed so far into `lines`.
    fn collect(&mut self) {
        self.lines.extend(self.process.stdout.try_iter());
        self.lines.extend(self.process.stderr.try_iter());
    }

    /// Waits for a stderr line containing `needle` (lines before it are kept too).
    fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.process.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    self.collect();
                    panic!(
                        "no log line with {needle:?} within {timeout:?}; saw:\n{}",
                        self.lines.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for `count` more "token rotated" lines.
    fn wait_for_rotations(&mut self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for _ in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_for_log("token rotated", left);
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.health.expect("started with --metrics-listen"), path)
    }

    fn metrics(&self) -> String {
        let (status, page) = self.get("/metrics");
        assert_eq!(status, 200, "{page}");
        page
    }

    fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    /// Waits for the exit, then reads the rest of the output (until both pipes close).
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = self.process.wait_exit(timeout);
        let deadline = Instant::now() + Duration::from_secs(10);
        for stream in [&self.process.stdout, &self.process.stderr] {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match stream.recv_timeout(left) {
                    Ok(line) => self.lines.push(line),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        panic!("output still open 10 s after exit")
                    }
                }
            }
        }
        status
    }
}

/// Runs `projected-token sidecar ARGS` to its end (bounded): exit code, stdout and stderr.
fn run_sidecar_to_end(args: &[&str]) -> (Option<i32>, String) {
    let mut sidecar = Sidecar::start(args, &[]);
    let status = sidecar.wait_exit(STARTUP);
    (status.code(), sidecar.lines.join("\n"))
}

/// Runs a helper command (mount, umount) with a time limit.
fn run_command(command: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{command:?}: {status}: {}", stderr.trim()))
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{command:?} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process in its own process group; the whole group is killed on drop.
struct GroupGuard(Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A thread that reads `dir/token` every 10 ms until dropped, and reports every read that failed
/// or differed from `expected`.
struct TokenWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl TokenWatch {
    fn start(dir: &Path, expected: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            let (mut reads, mut problems) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match read_token(&dir) {
                    Some(token) if token == expected => {}
                    Some(token) => problems.push(format!("token changed to jti {}", jti(&token))),
                    None => problems.push("token unreadable".to_owned()),
                }
                reads += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (reads, problems)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread: how many reads it made, and what went wrong.
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("watch thread"))
            .unwrap_or_default()
    }
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// True when `line` holds something shaped like a JWT: `eyJ` base64url, a dot, more base64url.
fn holds_jwt(line: &str) -> bool {
    let is_jwt_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    line.match_indices("eyJ").any(|(start, _)| {
        let candidate: String = line[start..]
            .chars()
            .take_while(|&c| is_jwt_char(c))
            .collect();
        candidate
            .split_once('.')
            .is_some_and(|(header, rest)| header.len() > 10 && rest.len() > 2)
    })
}

/// A random credential shaped like the emulator's admin token (43 base64url characters).
fn random_credential() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(43)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A scripted TokenRequest server over HTTPS
// ---------------------------------------------------------------------------------------------

/// One scripted answer to a TokenRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// 201 with a fresh token as asked (audiences, lifetime, binding).
    Good,
    /// A `metav1.Status` failure, with `Retry-After: seconds` when given.
    Status { code: u16, retry_after: Option<u64> },
    /// 201 with a body cut off mid-JSON.
    Malformed,
    /// 201 with a token issued two hours ago for one hour.
    Expired,
    /// Reads the request and never answers.
    Hang,
}

impl Reply {
    fn status(code: u16) -> Self {
        Self::Status {
            code,
            retry_after: None,
        }
    }

    fn throttled(code: u16, seconds: u64) -> Self {
        Self::Status {
            code,
            retry_after: Some(seconds),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status {
                retry_after: Some(seconds),
                ..
            } => Some(Duration::from_secs(*seconds)),
            _ => None,
        }
    }
}

/// A request the server received, and what it answered.
#[derive(Debug, Clone)]
struct Served {
    at: Instant,
    reply: Reply,
    authorization: Option<String>,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    /// Answer when the queue is empty.
    fallback: Option<Reply>,
    served: Vec<Served>,
    /// Every token the server sent (good or expired).
    issued: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    key: Arc<SigningKey>,
}

/// An HTTPS server on 127.0.0.1 that answers every request from a script. It can be stopped (the
/// port then refuses connections) and started again on the same port.
struct FaultServer {
    shared: Shared,
    addr: SocketAddr,
    certificate: (String, String),
    ca_pem: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultServer {
    /// Serves with a certificate signed by a CA of its own (`ca_pem`).
    fn start(fallback: Reply) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = projected_token::tls::CertificateAuthority::generate("fault server CA")
            .expect("generate CA");
        let certificate = ca
            .serving_certificate(&["127.0.0.1".into()])
            .expect("serving certificate");
        Self::start_with(fallback, certificate, ca.cert_pem().to_owned())
    }

    /// Serves with a self-signed CA:TRUE certificate for 127.0.0.1, which is also `ca_pem`: as a
    /// small dev cluster does that hands out its one certificate as the CA.
    fn start_as_its_own_ca(fallback: Reply) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self::start_with(fallback, (cert.pem(), key.serialize_pem()), cert.pem())
    }

    fn start_with(fallback: Reply, certificate: (String, String), ca_pem: String) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let mut server = Self {
            shared: Shared {
                script: Arc::new(Mutex::new(Script {
                    fallback: Some(fallback),
                    ..Script::default()
                })),
                key: Arc::new(SigningKey::generate(KeyAlgorithm::Es256).expect("key")),
            },
            addr,
            certificate,
            ca_pem,
            runtime: None,
        };
        server.serve(listener);
        server
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(self.shared.clone());
        let (cert, key) = self.certificate.clone();
        runtime.block_on(async move {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
                cert.into_bytes(),
                key.into_bytes(),
            )
            .await
            .expect("TLS configuration");
            listener.set_nonblocking(true).expect("nonblocking");
            let server = axum_server::from_tcp_rustls(listener, tls).expect("server");
            tokio::spawn(async move {
                let _ = server.serve(app.into_make_service()).await;
            });
        });
        self.runtime = Some(runtime);
    }

    /// Closes the port and every connection: clients get "connection refused".
    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }

    /// Serves again on the same port.
    fn restart(&mut self) {
        let addr = self.addr;
        let listener = wait_until(&format!("bind {addr} again"), WAIT, || {
            std::net::TcpListener::bind(addr).ok()
        });
        self.serve(listener);
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.shared.script.lock().expect("script lock")
    }

    fn push(&self, replies: &[Reply]) {
        self.script().queue.extend(replies.iter().cloned());
    }

    fn set_fallback(&self, reply: Reply) {
        self.script().fallback = Some(reply);
    }

    fn served(&self) -> Vec<Served> {
        self.script().served.clone()
    }

    fn issued(&self) -> Vec<String> {
        self.script().issued.clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Asked once by a sidecar after a 403: not part of the script.
    if uri.path() == "/version" {
        let version = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0"}"#;
        return ([(header::CONTENT_TYPE, "application/json")], version).into_response();
    }
    let reply = {
        let mut script = shared.script.lock().expect("script lock");
        let reply = match script.queue.pop_front() {
            Some(reply) => reply,
            None => script.fallback.clone().unwrap_or(Reply::status(500)),
        };
        script.served.push(Served {
            at: Instant::now(),
            reply: reply.clone(),
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        reply
    };
    let json = |code: u16, value: serde_json::Value| {
        (
            StatusCode::from_u16(code).expect("status code"),
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    match reply {
        Reply::Good | Reply::Expired => {
            let at = match reply {
                Reply::Good => jiff::Timestamp::now(),
                _ => jiff::Timestamp::now() - jiff::SignedDuration::from_secs(7200),
            };
            let (answer, token) = token_answer(&shared.key, uri.path(), &body, at);
            shared
                .script
                .lock()
                .expect("script lock")
                .issued
                .push(token);
            json(201, answer)
        }
        Reply::Status { code, retry_after } => {
            let reason = match code {
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                422 => "Invalid",
                429 => "TooManyRequests",
                503 => "ServiceUnavailable",
                _ => "InternalError",
            };
            let mut response = json(
                code,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("scripted {code}"), "reason": reason, "code": code,
                }),
            );
            if let Some(seconds) = retry_after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    seconds.to_string().parse().expect("header value"),
                );
            }
            response
        }
        Reply::Malformed => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"kind":"TokenRequest","status":{"token":"#,
        )
            .into_response(),
        Reply::Hang => std::future::pending().await,
    }
}

/// A TokenRequest answer for the request at `path` with `body`, minted at `at` for the lifetime
/// asked (3600 s for an expired one), and the token.
fn token_answer(
    key: &Arc<SigningKey>,
    path: &str,
    body: &[u8],
    at: jiff::Timestamp,
) -> (serde_json::Value, String) {
    // /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token
    let parts: Vec<&str> = path.split('/').collect();
    let (namespace, name) = (parts.get(4).copied(), parts.get(6).copied());
    let (namespace, name) = (namespace.unwrap_or("default"), name.unwrap_or("default"));
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let spec = &request["spec"];
    let audiences: Vec<&str> = spec["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .filter(|a: &Vec<&str>| !a.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_ISSUER]);
    let expired = at < jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
    let seconds = if expired {
        3600
    } else {
        spec["expirationSeconds"].as_i64().unwrap_or(3600)
    };
    let bound = spec["boundObjectRef"]["name"]
        .as_str()
        .map(|pod| common::pod_binding(pod, spec["boundObjectRef"]["uid"].as_str().unwrap_or("")));
    let issued = common::TokenSpec::for_service_account(
        namespace,
        name,
        "5e2b8a4c-0000-4000-8000-000000000042",
    )
    .audiences(&audiences)
    .lifetime(seconds)
    .bound_to(bound)
    .issued_at(at)
    .mint(key);
    let expiration = jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", issued.expiration_timestamp)
        .expect("format time");
    let answer = serde_json::json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"audiences": audiences, "expirationSeconds": seconds},
        "status": {"token": issued.token, "expirationTimestamp": expiration},
    });
    (answer, issued.token)
}

/// A plain HTTP server that records the JSON bodies POSTed to it (rotation hooks).
struct HookReceiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl HookReceiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = bodies.clone();
        let app = axum::Router::new().route(
            "/rotated",
            axum::routing::post(move |body: Bytes| {
                let recorded = recorded.clone();
                async move {
                    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    recorded.lock().expect("lock").push(value);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let addr = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("address");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            addr
        });
        Self {
            addr,
            bodies,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/rotated", self.addr)
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("lock").clone()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. End to end against the emulator
// ---------------------------------------------------------------------------------------------

/// `line` without ANSI colour sequences (`ESC [ ... m`), which the text log format prints.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The jti of every "token rotated" line.
fn rotated_jtis(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| strip_ansi(l))
        .filter(|l| l.contains("token rotated"))
        .filter_map(|l| {
            let rest = l.split_once("jti=")?.1.trim_start_matches('"');
            Some(rest.split(['"', ' ']).next()?.to_owned())
        })
        .collect()
}

/// In-cluster configuration: `emulate` projects the sidecar's own credentials (rotating every
/// ~2.4 s) and serves the API; the sidecar asks it for a vault token bound to the emulated pod,
/// and keeps doing so with whichever of its own tokens is current.
#[test]
fn in_cluster_against_emulate_follows_its_own_rotating_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let credentials = tmp.path().join("serviceaccount");
    let out = tmp.path().join("vault");
    let audit = tmp.path().join("audit.log");
    let emulate = Running::spawn(&[
        "emulate",
        "--dir",
        &arg(&credentials),
        "--expiration-seconds",
        "3",
        "--allow-any-token-request",
        "--service-account",
        "vault-client",
        "--key-algorithm",
        "es256",
        "--audit-log",
        &arg(&audit),
    ]);
    let url = emulate
        .wait_for_stdout("serving https API on ", STARTUP)
        .last()
        .and_then(|l| l.strip_prefix("serving https API on "))
        .map(str::to_owned)
        .expect("URL");
    let port = reqwest::Url::parse(&url)
        .unwrap()
        .port()
        .unwrap()
        .to_string();
    common::wait_for_file(&credentials.join("token"), STARTUP);

    let mut sidecar = Sidecar::start(
        &[
            "--dir",
            &arg(&out),
            "--credentials-dir",
            &arg(&credentials),
            "--service-account",
            "vault-client",
            "--audience",
            "vault",
            "--expiration-seconds",
            "600",
            "--bound-pod-name",
            "emulated-pod",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
        ],
    );
    sidecar.wait_for_rotations(1, STARTUP);

    assert_consistent_layout(&out, &FLAG_VOLUME);
    assert_eq!(
        std::fs::read(out.join("ca.crt")).unwrap(),
        std::fs::read(credentials.join("ca.crt")).unwrap(),
        "ca.crt is the emulator's CA"
    );
    assert_eq!(std::fs::read(out.join("namespace")).unwrap(), b"default");
    let first = read_token(&out).unwrap();
    let claims = decode(&first).unwrap();
    assert_eq!(
        claims.string_claim("sub"),
        Some("system:serviceaccount:default:vault-client")
    );
    assert_eq!(claims.audiences(), vec!["vault".to_owned()]);
    let pod = &claims.kubernetes_claim().unwrap()["pod"];
    assert_eq!(pod["name"], "emulated-pod");
    let own = decode(&read_token(&credentials).unwrap()).unwrap();
    assert_eq!(
        pod["uid"],
        own.kubernetes_claim().unwrap()["pod"]["uid"],
        "bound to the emulated pod the emulator knows"
    );
    // Asked for 600 s; the emulator's --expiration-seconds compresses TokenRequest tokens too.
    assert_eq!(
        claims.numeric_claim("exp").unwrap() - claims.numeric_claim("iat").unwrap(),
        3
    );
    // The status board is updated right after the rotation is logged.
    wait_until("readyz ok", WAIT, || {
        let (status, body) = sidecar.get("/readyz");
        (status == 200 && body.contains("[+] token/token ok (until ")).then_some(())
    });

    // Refresh on SIGHUP again and again while the emulator rotates the sidecar's own token,
    // until the sidecar has authenticated with at least three of its own tokens.
    let sidecar_requests = |audit: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit JSON"))
            .filter(|e| {
                e["userAgent"]
                    .as_str()
                    .is_some_and(|ua| ua.starts_with("projected-token/"))
                    && e["objectRef"]["subresource"] == "token"
            })
            .collect()
    };
    let caller_ids = |events: &[serde_json::Value]| -> BTreeSet<String> {
        events
            .iter()
            .filter_map(|e| {
                e["user"]["extra"]["authentication.kubernetes.io/credential-id"][0]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    let mut ours = vec![jti(&first)];
    let deadline = Instant::now() + Duration::from_secs(60);
    while ours.len() < 4 || caller_ids(&sidecar_requests(&audit)).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the sidecar did not use three of its own tokens within 60 s: {:?}",
            caller_ids(&sidecar_requests(&audit))
        );
        let before = read_token(&out).unwrap();
        sidecar.signal(Signal::HUP);
        let after = wait_for_new_token(&out, Some(&before), WAIT);
        ours.push(jti(&after));
        std::thread::sleep(Duration::from_millis(800));
    }

    let events = sidecar_requests(&audit);
    for event in &events {
        assert_eq!(event["responseStatus"]["code"], 201, "{event}");
        assert_eq!(
            event["user"]["username"],
            "system:serviceaccount:default:vault-client"
        );
    }
    // Every credential the sidecar used is one the emulator projected into its directory.
    let projected: BTreeSet<String> = rotated_jtis(&emulate.stderr.try_iter().collect::<Vec<_>>())
        .into_iter()
        .map(|j| format!("JTI={j}"))
        .collect();
    let used = caller_ids(&events);
    assert!(used.len() >= 3, "{used:?}");
    assert!(
        used.is_subset(&projected),
        "used {used:?}, projected {projected:?}"
    );
    // Every token we saw on disk is one the emulator issued to the sidecar.
    let issued: BTreeSet<String> = events
        .iter()
        .filter_map(|e| {
            e["annotations"]["authentication.kubernetes.io/issued-credential-id"].as_str()
        })
        .map(str::to_owned)
        .collect();
    for jti in &ours {
        assert!(issued.contains(&format!("JTI={jti}")), "{jti} not issued");
    }
    assert_eq!(ours.iter().collect::<BTreeSet<_>>().len(), ours.len());
    assert_eq!(sidecar.get("/readyz").0, 200);
    // The 3 s tokens also rotate by themselves between the SIGHUPs.
    assert!(
        metric(&sidecar.metrics(), SUCCESSES) >= ours.len() as f64,
        "a successful request per token at least"
    );

    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());
    assert_consistent_layout(&out, &FLAG_VOLUME);
    let credential = read_token(&credentials).unwrap();
    for line in &sidecar.lines {
        assert!(!line.contains(&credential) && !holds_jwt(line), "{line}");
        // notify's INFO noise about watches of removed `..<timestamp>` directories is filtered.
        assert!(!line.contains("watch descriptor"), "{line}");
    }
}

/// Kubeconfig with `token:` and with `tokenFile:`: `--once` writes the volume and exits 0; a
/// credential without permission gets a 403, a non-zero exit and the RBAC hint.
#[test]
fn kubeconfig_once_with_token_token_file_and_forbidden() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let api = &emulator.api;
    let admin_file = tmp.path().join("admin-token");
    std::fs::write(&admin_file, format!("{}\n", api.admin_token)).unwrap();
    let with_file = write_kubeconfig(
        &tmp.path().join("file.kubeconfig"),
        &api.url,
        &emulator.ca_file,
        &format!("{{tokenFile: {:?}}}", arg(&admin_file)),
        Some("team-a"),
    );
    for (name, kubeconfig, namespace) in [
        ("token", emulator.kubeconfig.as_str(), "default"),
        ("tokenFile", with_file.as_str(), "team-a"),
    ] {
        let out = tmp.path().join(format!("out-{name}"));
        let (code, output) = run_sidecar_to_end(&[
            "--once",
            "--kubeconfig",
            kubeconfig,
            "--dir",
            &arg(&out),
            "--service-account",
            "app",
            "--audience",
            "vault",
            "--expiration-seconds",
            "600",
        ]);
        assert_eq!(code, Some(0), "{name}: {output}");
        assert_consistent_layout(&out, &FLAG_VOLUME);
        assert_eq!(
            std::fs::read_to_string(out.join("ca.crt")).unwrap(),
            api.ca_pem,
            "{name}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("namespace")).unwrap(),
            namespace,
            "{name}: the context's namespace, else default"
        );
        let token = decode(&read_token(&out).unwrap()).unwrap();
        assert_eq!(
            token.string_claim("sub"),
            Some(format!("system:serviceaccount:{namespace}:app").as_str())
        );
        assert_eq!(token.audiences(), vec!["vault".to_owned()]);
        assert!(
            !output.contains(&api.admin_token),
            "{name}: admin token in output"
        );
    }

    // A service account token may not create tokens on `serve`: 403.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let weak = rt.block_on(api.issue("default", "nobody", serde_json::json!({})));
    let forbidden = write_kubeconfig(
        &tmp.path().join("weak.kubeconfig"),
        &api.url,
        &emulator.ca_file,
        &format!("{{token: {weak:?}}}"),
        None,
    );
    let out = tmp.path().join("out-forbidden");
    let (code, output) = run_sidecar_to_end(&[
        "--once",
        "--kubeconfig",
        &forbidden,
        "--dir",
        &arg(&out),
        "--service-account",
        "app",
    ]);
    assert_eq!(code, Some(1), "{output}");
    // The server is the emulator: its own fixes, not RBAC's.
    for needle in [
        "403 Forbidden",
        "the server is the projected-token emulator",
        "its admin credential (the token in its --admin-token-file",
        "--allow-any-token-request",
    ] {
        assert!(output.contains(needle), "missing {needle:?} in:\n{output}");
    }
    assert!(read_token(&out).is_none(), "nothing written on failure");
    assert!(!output.contains(&weak), "the credential leaked:\n{output}");
}

/// Kubeconfig with an exec credential plugin: the plugin runs (once for a fresh token) with the
/// kubeconfig's env and `KUBERNETES_EXEC_INFO`, its token authenticates; a failing plugin's
/// message reaches the error, and nothing is written.
#[test]
fn kubeconfig_once_with_an_exec_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let api = &emulator.api;
    let admin_file = tmp.path().join("admin-token");
    std::fs::write(&admin_file, &api.admin_token).unwrap();
    let runs = tmp.path().join("runs");
    let plugin = tmp.path().join("plugin.sh");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho \"$KUBERNETES_EXEC_INFO\" >> {runs:?}\n\
             [ \"$PLUGIN_MODE\" = ok ] || {{ echo 'please log in first' >&2; exit 4; }}\n\
             printf '{{\"kind\":\"ExecCredential\",\"apiVersion\":\"client.authentication.k8s.io/v1\",\"status\":{{\"token\":\"%s\",\"expirationTimestamp\":\"2099-01-01T00:00:00Z\"}}}}' \"$(cat {admin:?})\"\n",
            runs = arg(&runs),
            admin = arg(&admin_file),
        ),
    )
    .unwrap();
    let exec_user = |mode: &str| {
        format!(
            "{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [{:?}], env: [{{name: PLUGIN_MODE, value: {mode}}}], provideClusterInfo: true, interactiveMode: Never}}}}",
            arg(&plugin)
        )
    };
    let good = write_kubeconfig(
        &tmp.path().join("exec.kubeconfig"),
        &api.url,
        &emulator.ca_file,
        &exec_user("ok"),
        None,
    );
    let out = tmp.path().join("out-exec");
    let (code, output) = run_sidecar_to_end(&[
        "--once",
        "--kubeconfig",
        &good,
        "--dir",
        &arg(&out),
        "--service-account",
        "app",
    ]);
    assert_eq!(code, Some(0), "{output}");
    assert_consistent_layout(&out, &FLAG_VOLUME);
    let token = decode(&read_token(&out).unwrap()).unwrap();
    assert_eq!(
        token.string_claim("sub"),
        Some("system:serviceaccount:default:app")
    );
    let infos = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(infos.lines().count(), 1, "one run for one fresh token");
    let info: serde_json::Value = serde_json::from_str(infos.trim()).unwrap();
    assert_eq!(info["kind"], "ExecCredential");
    assert_eq!(info["spec"]["interactive"], false);
    assert_eq!(info["spec"]["cluster"]["server"], api.url.as_str());
    assert!(!output.contains(&api.admin_token), "token in output");

    let failing = write_kubeconfig(
        &tmp.path().join("failing.kubeconfig"),
        &api.url,
        &emulator.ca_file,
        &exec_user("broken"),
        None,
    );
    let out = tmp.path().join("out-failing");
    let (code, output) = run_sidecar_to_end(&[
        "--once",
        "--kubeconfig",
        &failing,
        "--dir",
        &arg(&out),
        "--service-account",
        "app",
    ]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("please log in first"), "{output}");
    assert!(read_token(&out).is_none(), "nothing written on failure");
}

/// Kubeconfig with a client certificate (`serve --admin-client-cert-out`), as files and as
/// `*-data`: `--once` authenticates by certificate alone, writes the volume and exits 0.
#[test]
fn kubeconfig_once_with_client_certificate_files_and_data() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("admin-cert");
    let api = start_serve(
        tmp.path(),
        &[
            "--key-algorithm",
            "es256",
            "--admin-client-cert-out",
            &arg(&certs),
        ],
    );
    let ca_file = tmp.path().join("emulator-ca.crt");
    std::fs::write(&ca_file, &api.ca_pem).unwrap();
    let (cert, key) = (certs.join("admin.crt"), certs.join("admin.key"));
    let b64 = |path: &Path| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
    };
    let users = [
        (
            "files",
            format!(
                "{{client-certificate: {:?}, client-key: {:?}}}",
                arg(&cert),
                arg(&key)
            ),
        ),
        (
            "data",
            format!(
                "{{client-certificate-data: {}, client-key-data: {}}}",
                b64(&cert),
                b64(&key)
            ),
        ),
    ];
    for (name, user) in users {
        let kubeconfig = write_kubeconfig(
            &tmp.path().join(format!("{name}.kubeconfig")),
            &api.url,
            &ca_file,
            &user,
            None,
        );
        let out = tmp.path().join(format!("out-{name}"));
        let (code, output) = run_sidecar_to_end(&[
            "--once",
            "--kubeconfig",
            &kubeconfig,
            "--dir",
            &arg(&out),
            "--service-account",
            "app",
            "--audience",
            "vault",
        ]);
        assert_eq!(code, Some(0), "{name}: {output}");
        assert_consistent_layout(&out, &FLAG_VOLUME);
        let token = decode(&read_token(&out).unwrap()).unwrap();
        assert_eq!(
            token.string_claim("sub"),
            Some("system:serviceaccount:default:app"),
            "{name}"
        );
        assert_eq!(token.audiences(), vec!["vault".to_owned()], "{name}");
        let key_pem = std::fs::read_to_string(&key).unwrap();
        let key_body = key_pem.lines().nth(1).unwrap_or_default();
        assert!(
            !output.contains(key_body),
            "{name}: the key leaked:\n{output}"
        );
    }
}

/// `--pod`: every projected volume of the manifest into its own sub-directory, with the tokens
/// asked for and the downward API file.
#[test]
fn pod_manifest_volumes_into_sub_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let pod = tmp.path().join("pod.yaml");
    std::fs::write(
        &pod,
        r#"apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, uid: 0b1c2d3e-0000-4000-8000-000000000001}
spec:
  serviceAccountName: web
  containers: [{name: app, image: app}]
  volumes:
  - name: vault
    projected:
      sources:
      - serviceAccountToken: {path: vault-token, audience: vault, expirationSeconds: 600}
  - name: api
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
"#,
    )
    .unwrap();
    let out = tmp.path().join("volumes");
    let (code, output) = run_sidecar_to_end(&[
        "--once",
        "--kubeconfig",
        &emulator.kubeconfig,
        "--dir",
        &arg(&out),
        "--pod",
        &arg(&pod),
    ]);
    assert_eq!(code, Some(0), "{output}");
    let mut entries: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["api", "vault"]);

    let vault = out.join("vault");
    assert_consistent_layout(&vault, &["vault-token"]);
    let token = decode(&std::fs::read_to_string(vault.join("vault-token")).unwrap()).unwrap();
    assert_eq!(token.audiences(), vec!["vault".to_owned()]);
    assert_eq!(
        token.string_claim("sub"),
        Some("system:serviceaccount:shop:web")
    );
    assert_eq!(
        token.kubernetes_claim().unwrap()["pod"]["uid"],
        "0b1c2d3e-0000-4000-8000-000000000001"
    );
    let iat = token.numeric_claim("iat").unwrap();
    assert_eq!(token.numeric_claim("exp").unwrap() - iat, 600);

    let api = out.join("api");
    assert_consistent_layout(&api, &["name", "token"]);
    assert_eq!(std::fs::read(api.join("name")).unwrap(), b"web-0");
    let token = decode(&read_token(&api).unwrap()).unwrap();
    assert_eq!(token.audiences(), vec![DEFAULT_ISSUER.to_owned()]);
    assert_eq!(
        token.kubernetes_claim().unwrap()["pod"]["name"],
        "web-0",
        "bound to the manifest's pod"
    );
    // 3607 s bound to a pod: extended as by kube-apiserver, with a warnafter.
    let iat = token.numeric_claim("iat").unwrap();
    assert_eq!(token.warn_after(), Some(iat + 3607));
}

// ---------------------------------------------------------------------------------------------
// 2. Fault injection
// ---------------------------------------------------------------------------------------------

/// Starts a sidecar against `server` through a kubeconfig with `credential`; flag volume in
/// `out`, health endpoint on, fast backoff.
fn sidecar_against(
    root: &Path,
    server: &FaultServer,
    credential: &str,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Sidecar {
    let ca = root.join("fault-ca.crt");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let kubeconfig = write_kubeconfig(
        &root.join("fault.kubeconfig"),
        &server.url(),
        &ca,
        &format!("{{token: {credential:?}}}"),
        None,
    );
    let out = arg(out);
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.as_str(),
        "--dir",
        out.as_str(),
        "--service-account",
        "app",
        "--audience",
        "vault",
        "--expiration-seconds",
        "600",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(&BACKOFF);
    args.extend_from_slice(extra);
    Sidecar::start(&args, env)
}

/// Every fault a TokenRequest can meet, one after another: the token on disk never changes,
/// retries keep to the backoff and to Retry-After, health and metrics say what happened, and the
/// first good answer after the outage is written.
#[test]
fn faults_keep_the_old_token_retry_within_bounds_and_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let credential = random_credential();
    let mut server = FaultServer::start(Reply::status(403));
    let out = tmp.path().join("out");
    let mut sidecar = sidecar_against(tmp.path(), &server, &credential, &out, &[], &[]);

    // No permission yet: not ready, and readyz says why.
    let body = wait_until("readyz naming the 403", WAIT, || {
        let (status, body) = sidecar.get("/readyz");
        (status == 503 && body.contains("last error")).then_some(body)
    });
    for needle in [
        "[-] token/token not ready: no token written yet; last error: token request failed: 403 Forbidden: scripted 403",
        "RoleBinding",
        "readyz check failed",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    assert!(read_token(&out).is_none());
    assert_eq!(sidecar.get("/healthz"), (200, "ok".to_owned()));

    // Permission granted: the next retry writes the token.
    server.set_fallback(Reply::Good);
    let original = wait_for_new_token(&out, None, WAIT);
    let data_dir = std::fs::read_link(out.join("..data")).unwrap();
    wait_until("readyz ok", WAIT, || {
        (sidecar.get("/readyz").0 == 200).then_some(())
    });
    let first_fault = server.served().len();

    // The faults, in order, then 500s until the server goes away.
    let faults = [
        Reply::status(500),
        Reply::throttled(503, 2),
        Reply::throttled(429, 1),
        Reply::status(403),
        Reply::status(404),
        Reply::status(422),
        Reply::Malformed,
        Reply::Expired,
        Reply::Hang,
    ];
    server.push(&faults);
    server.set_fallback(Reply::status(500));
    let watch = TokenWatch::start(&out, original.clone());
    sidecar.signal(Signal::HUP);

    // While a request hangs the endpoint still answers, and the old token is still good.
    wait_until("the hanging request", Duration::from_secs(20), || {
        server
            .served()
            .iter()
            .any(|s| s.reply == Reply::Hang)
            .then_some(())
    });
    assert_eq!(sidecar.get("/healthz").0, 200);
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("[+] token/token ok (until "), "{body}");
    wait_until(
        "a retry after the hanging request",
        SIDECAR_REQUEST_TIMEOUT + BACKOFF_CAP + SLACK + WAIT,
        || (server.served().last()?.reply == Reply::status(500)).then_some(()),
    );

    // Connection refused.
    server.stop();
    let served = server.served();
    let refused_from = metric(&sidecar.metrics(), &failures("unavailable"));
    wait_until("two refused retries", WAIT, || {
        (metric(&sidecar.metrics(), &failures("unavailable")) >= refused_from + 2.0).then_some(())
    });
    sidecar.wait_for_log("Connection refused", WAIT);

    let (reads, problems) = watch.finish();
    assert!(reads > 100, "only {reads} reads");
    assert!(
        problems.is_empty(),
        "the token on disk changed: {problems:?}"
    );
    assert_eq!(
        std::fs::read_link(out.join("..data")).unwrap(),
        data_dir,
        "no version was published during the faults"
    );
    assert_consistent_layout(&out, &FLAG_VOLUME);

    // Every scripted fault was asked for once, in order, with our credential.
    let faulted: Vec<&Served> = served[first_fault..].iter().collect();
    let replies: Vec<Reply> = faulted.iter().map(|s| s.reply.clone()).collect();
    assert_eq!(replies[..faults.len()], faults, "{replies:?}");
    assert!(faulted.len() > faults.len(), "a retry after the hang");
    for served in &served {
        assert_eq!(
            served.authorization.as_deref(),
            Some(format!("Bearer {credential}").as_str())
        );
    }
    // Retry timing: never before Retry-After; otherwise within the cap (plus slack); after the
    // hang, not before the request timeout.
    for pair in faulted.windows(2) {
        let (fault, gap) = (&pair[0].reply, pair[1].at - pair[0].at);
        let (least, most) = match (fault, fault.retry_after()) {
            (Reply::Hang, _) => (
                SIDECAR_REQUEST_TIMEOUT - Duration::from_secs(1),
                SIDECAR_REQUEST_TIMEOUT + BACKOFF_CAP + SLACK,
            ),
            (_, Some(floor)) => (floor, floor.max(BACKOFF_CAP) + SLACK),
            (_, None) => (Duration::ZERO, BACKOFF_CAP + SLACK),
        };
        println!("retry after {fault:?}: {gap:?}");
        assert!(
            least <= gap && gap <= most,
            "retry after {fault:?} came {gap:?} later, outside [{least:?}, {most:?}]"
        );
    }

    // Health and metrics: still ready (the old token is unexpired), failures counted by reason.
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 200, "{body}");
    let page = sidecar.metrics();
    assert_eq!(metric(&page, &failures("throttled")), 2.0, "{page}");
    assert_eq!(metric(&page, &failures("rejected")), 1.0, "{page}");
    // 500, 403, 404, malformed, expired, hang, a 500 after it, two refused; and the first 403s.
    assert!(metric(&page, &failures("unavailable")) >= 10.0, "{page}");
    assert_eq!(metric(&page, SUCCESSES), 1.0, "{page}");
    assert_eq!(
        metric(
            &page,
            "projected_token_ready{volume=\"token\",path=\"token\"}"
        ),
        1.0
    );
    assert!(
        page.contains(
            "projected_token_last_error_timestamp_seconds{volume=\"token\",path=\"token\"}"
        ),
        "{page}"
    );

    // The outage ends: the next retry gets a good answer and writes it.
    server.set_fallback(Reply::Good);
    server.restart();
    let recovered = wait_for_new_token(&out, Some(&original), WAIT);
    assert_eq!(
        decode(&recovered).unwrap().audiences(),
        vec!["vault".to_owned()]
    );
    wait_for_one_version(&out);
    assert_consistent_layout(&out, &FLAG_VOLUME);
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(metric(&sidecar.metrics(), SUCCESSES), 2.0);

    // The log said what each failure was.
    sidecar.collect();
    let log = sidecar.lines.join("\n");
    for needle in [
        "retry after 2s",
        "503: scripted 503",
        "500: scripted 500",
        "404 Not Found",
        "422: scripted 422",
        "the answer is not a TokenRequest",
        "is already past",
        "timed out",
    ] {
        assert!(log.contains(needle), "no log line with {needle:?}:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Crashes and shutdowns during rotations
// ---------------------------------------------------------------------------------------------

/// Sends SIGHUP every few milliseconds for a random while (each one refreshes every token).
fn hangup_burst(sidecar: &Sidecar, max: Duration) {
    let until = Instant::now() + Duration::from_millis(fastrand::u64(20..max.as_millis() as u64));
    while Instant::now() < until {
        sidecar.signal(Signal::HUP);
        std::thread::sleep(Duration::from_millis(fastrand::u64(2..15)));
    }
}

/// SIGKILL the sidecar in the middle of SIGHUP-forced rotations of 4 volumes, again and again:
/// every restart leaves each volume consistent (no orphans), and readers never fail.
#[test]
fn sigkill_during_rotations_then_restart_is_consistent() {
    const ROUNDS: usize = 12;
    const VOLUMES: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let pod = write_pod_manifest(&tmp.path().join("pod.yaml"), VOLUMES);
    let out = tmp.path().join("volumes");
    let args = [
        "--kubeconfig",
        emulator.kubeconfig.as_str(),
        "--dir",
        &arg(&out),
        "--pod",
        &pod,
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut current = Sidecar::start(&args, &[]);
    current.wait_for_rotations(VOLUMES, STARTUP);

    // Readers go through the user-visible names the whole time, across kills and restarts.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, out) = (stop.clone(), out.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for v in 0..VOLUMES {
                    let dir = out.join(format!("vol{v}"));
                    let token = std::fs::read_to_string(dir.join("token"))
                        .map_err(|e| format!("vol{v}/token: {e}"))?;
                    decode(&token).map_err(|e| format!("vol{v}/token torn: {e}"))?;
                    let namespace = std::fs::read(dir.join("namespace"))
                        .map_err(|e| format!("vol{v}/namespace: {e}"))?;
                    if namespace != b"default" {
                        return Err(format!("vol{v}/namespace: {namespace:?}"));
                    }
                    reads += 1;
                }
            }
            Ok(reads)
        })
    };

    let mut previous = vec![String::new(); VOLUMES];
    let mut cleaned_rounds = 0;
    for round in 0..ROUNDS {
        hangup_burst(&current, Duration::from_millis(600));
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..20)));
        current.signal(Signal::KILL);
        drop(current);

        let mut restarted = Sidecar::start(&args, &[]);
        restarted.wait_for_rotations(VOLUMES, STARTUP);
        cleaned_rounds += usize::from(
            restarted
                .lines
                .iter()
                .any(|l| l.contains("cleaned leftovers")),
        );
        for (v, previous) in previous.iter_mut().enumerate() {
            let dir = out.join(format!("vol{v}"));
            assert_consistent_layout(&dir, &FLAG_VOLUME);
            let token = read_token(&dir).unwrap();
            assert_ne!(&token, previous, "round {round}: vol{v} has a new token");
            *previous = token;
        }
        current = restarted;
    }
    current.signal(Signal::TERM);
    assert!(current.wait_exit(WAIT).success());
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap().unwrap();
    assert!(reads > 0);
    // Not asserted (the moments are random), but shown so a run says what it exercised.
    println!("{cleaned_rounds} of {ROUNDS} restarts cleaned up a write cut short by SIGKILL");
}

/// SIGTERM right after a burst of SIGHUPs (so usually during a write): exit 0, every volume
/// consistent, no staging link or version directory left behind.
#[test]
fn sigterm_during_rotations_exits_zero_and_leaves_no_temporaries() {
    const ROUNDS: usize = 8;
    const VOLUMES: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let pod = write_pod_manifest(&tmp.path().join("pod.yaml"), VOLUMES);
    for round in 0..ROUNDS {
        let out = tmp.path().join(format!("round{round}"));
        let mut sidecar = Sidecar::start(
            &[
                "--kubeconfig",
                &emulator.kubeconfig,
                "--dir",
                &arg(&out),
                "--pod",
                &pod,
            ],
            &[],
        );
        sidecar.wait_for_rotations(VOLUMES, STARTUP);
        hangup_burst(&sidecar, Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..10)));
        sidecar.signal(Signal::TERM);
        let status = sidecar.wait_exit(WAIT + SIDECAR_REQUEST_TIMEOUT);
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {}",
            sidecar.lines.join("\n")
        );
        assert!(
            sidecar.lines.iter().any(|l| l.contains("stopped")),
            "round {round}: no clean stop logged"
        );
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected: Vec<String> = (0..VOLUMES).map(|v| format!("vol{v}")).collect();
        assert_eq!(names, expected, "round {round}");
        for v in 0..VOLUMES {
            assert_consistent_layout(&out.join(format!("vol{v}")), &FLAG_VOLUME);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Disk full
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted for one test; unmounted on drop.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".to_owned());
        }
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        run_command(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path),
            WAIT,
        )?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if run_command(Command::new("umount").arg(&self.0), WAIT).is_err() {
            let _ = run_command(Command::new("umount").arg("-l").arg(&self.0), WAIT);
        }
    }
}

/// On a full disk the refreshed token cannot be written: the old one stays readable, the
/// failure is counted as `write`, and once there is room again the new token is written.
#[test]
fn disk_full_keeps_the_old_token_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    let mount = match TmpfsMount::mount(&small, "64k") {
        Ok(mount) => mount,
        Err(why) => {
            println!("SKIPPED disk_full: {why}");
            eprintln!("SKIPPED disk_full: {why}");
            return;
        }
    };
    let emulator = start_cluster_api(tmp.path());
    let out = small.join("vol");
    let mut args = vec![
        "--kubeconfig",
        emulator.kubeconfig.as_str(),
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(&BACKOFF);
    let out_arg = arg(&out);
    args.extend_from_slice(&["--dir", &out_arg]);
    let mut sidecar = Sidecar::start(&args, &[]);
    sidecar.wait_for_rotations(1, STARTUP);
    let original = read_token(&out).unwrap();
    let data_dir = std::fs::read_link(out.join("..data")).unwrap();

    // Fill the file system to the last byte.
    let filler = small.join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        let full = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.raw_os_error(), Some(28), "ENOSPC expected: {full}");
        let mut byte = 1;
        while byte > 0 {
            byte = file.write(&[0]).unwrap_or(0);
        }
    }
    let watch = TokenWatch::start(&out, original.clone());
    sidecar.signal(Signal::HUP);
    wait_until("a write failure in the metrics", WAIT, || {
        (metric(&sidecar.metrics(), &failures("write")) >= 1.0).then_some(())
    });
    sidecar.wait_for_log("No space left on device", WAIT);
    // Each retry of the write follows a backoff and a fresh token request: never more failed
    // writes than requests (the self-healing watcher must not retry failed writes at once).
    std::thread::sleep(Duration::from_secs(1));
    let page = sidecar.metrics();
    let (written, requested) = (metric(&page, &failures("write")), metric(&page, SUCCESSES));
    assert!(
        written < requested,
        "{written} failed writes for {requested} token requests: retried without backoff"
    );
    // The old token is unexpired: still ready (readyz names errors only when not ready).
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("[+] token/token ok") && !body.contains("last error"),
        "{body}"
    );
    let (reads, problems) = watch.finish();
    assert!(reads > 0);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(std::fs::read_link(out.join("..data")).unwrap(), data_dir);

    // Room again: the next retry writes a new token.
    std::fs::remove_file(&filler).unwrap();
    let fresh = wait_for_new_token(&out, Some(&original), WAIT);
    decode(&fresh).unwrap();
    assert_consistent_layout(&out, &FLAG_VOLUME);
    assert_eq!(sidecar.get("/readyz").0, 200);

    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());
    drop(sidecar);
    drop(mount);
}

// ---------------------------------------------------------------------------------------------
// 5. Hooks
// ---------------------------------------------------------------------------------------------

/// Signal, exec and HTTP hooks each run exactly once per rotation, in order; a failing exec hook
/// neither stops the later hooks nor the next rotation.
#[test]
fn hooks_run_once_per_rotation_and_a_failing_hook_does_not_stop_rotations() {
    const ROTATIONS: usize = 4; // the first write and three SIGHUPs
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let receiver = HookReceiver::start();

    // The application: counts the SIGHUPs it gets.
    let pid_file = tmp.path().join("app.pid");
    let hups = tmp.path().join("hups");
    let app = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap 'echo hup >> {hups}' HUP; echo $$ > {pid}.tmp && mv {pid}.tmp {pid}; while :; do sleep 0.05; done",
            hups = arg(&hups),
            pid = arg(&pid_file)
        ))
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _app = GroupGuard(app);
    common::wait_for_file(&pid_file, WAIT);

    let exec_log = tmp.path().join("exec.log");
    let script = tmp.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$PROJECTED_TOKEN_JTI $PROJECTED_TOKEN_PATH\" >> {}\n",
            arg(&exec_log)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = tmp.path().join("out");
    let lines = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let counts = || {
        (
            lines(&hups).len(),
            lines(&exec_log).len(),
            receiver.bodies().len(),
        )
    };
    let mut sidecar = Sidecar::start(
        &[
            "--kubeconfig",
            &emulator.kubeconfig,
            "--dir",
            &arg(&out),
            "--metrics-listen",
            "127.0.0.1:0",
            "--on-rotate-signal",
            "HUP",
            "--signal-pid-file",
            &arg(&pid_file),
            "--on-rotate-exec",
            &arg(&script),
            "--on-rotate-http",
            &receiver.url(),
        ],
        &[],
    );
    let mut tokens = Vec::new();
    for rotation in 1..=ROTATIONS {
        if rotation > 1 {
            sidecar.signal(Signal::HUP);
        }
        let token = wait_for_new_token(&out, tokens.last().map(String::as_str), STARTUP);
        wait_until(&format!("every hook of rotation {rotation}"), WAIT, || {
            (counts() == (rotation, rotation, rotation)).then_some(())
        });
        tokens.push(token);
    }
    // No late duplicates.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counts(), (ROTATIONS, ROTATIONS, ROTATIONS));

    let jtis: Vec<String> = tokens.iter().map(|t| jti(t)).collect();
    let token_path = arg(&out.join("token"));
    let exec_lines: Vec<String> = lines(&exec_log);
    let expected: Vec<String> = jtis.iter().map(|j| format!("{j} {token_path}")).collect();
    assert_eq!(exec_lines, expected, "exec hook environment, per rotation");
    let bodies = receiver.bodies();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(body["new_jti"], jtis[i].as_str(), "{body}");
        assert_eq!(body["volume"], "token");
        let old = if i == 0 {
            serde_json::Value::Null
        } else {
            jtis[i - 1].as_str().into()
        };
        assert_eq!(body["old_jti"], old, "{body}");
        let text = body.to_string();
        assert!(tokens.iter().all(|t| !text.contains(t.as_str())), "{text}");
    }
    let page = sidecar.metrics();
    for kind in ["signal", "exec", "http"] {
        assert_eq!(
            metric(
                &page,
                &format!("projected_token_hook_failures_total{{kind=\"{kind}\"}}")
            ),
            0.0,
            "{page}"
        );
    }
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());

    // `false` as the exec hook: it fails every time, the HTTP hook after it still runs, and
    // rotations go on.
    let mut failing = Sidecar::start(
        &[
            "--kubeconfig",
            &emulator.kubeconfig,
            "--dir",
            &arg(&out),
            "--metrics-listen",
            "127.0.0.1:0",
            "--on-rotate-exec",
            "false",
            "--on-rotate-http",
            &receiver.url(),
        ],
        &[],
    );
    let mut last = tokens.last().cloned();
    for rotation in 1..=3 {
        if rotation > 1 {
            failing.signal(Signal::HUP);
        }
        let token = wait_for_new_token(&out, last.as_deref(), STARTUP);
        wait_until(
            &format!("the HTTP hook of rotation {rotation}"),
            WAIT,
            || (receiver.bodies().len() == ROTATIONS + rotation).then_some(()),
        );
        last = Some(token);
    }
    assert_eq!(
        metric(
            &failing.metrics(),
            "projected_token_hook_failures_total{kind=\"exec\"}"
        ),
        3.0
    );
    failing.wait_for_log("rotation hook failed", WAIT);
    failing.signal(Signal::TERM);
    assert!(failing.wait_exit(WAIT).success());
}

// ---------------------------------------------------------------------------------------------
// 6. No token in any log line
// ---------------------------------------------------------------------------------------------

/// At trace level, through rotations, faults and a hook that prints the token, no output line
/// holds a token, the credential, or anything shaped like a JWT.
#[test]
fn no_log_line_at_trace_level_contains_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let credential = random_credential();
    let server = FaultServer::start(Reply::Good);
    let out = tmp.path().join("out");
    let cat = format!("cat {}", arg(&out.join("token")));
    let mut sidecar = sidecar_against(
        tmp.path(),
        &server,
        &credential,
        &out,
        &["--on-rotate-exec", &cat],
        &[("PROJECTED_TOKEN_LOG", "trace")],
    );
    let mut on_disk = vec![wait_for_new_token(&out, None, STARTUP)];
    for faults in [
        vec![
            Reply::status(500),
            Reply::Malformed,
            Reply::Expired,
            Reply::status(403),
            Reply::throttled(429, 1),
        ],
        vec![],
        vec![Reply::status(401), Reply::status(404)],
    ] {
        server.push(&faults);
        sidecar.signal(Signal::HUP);
        on_disk.push(wait_for_new_token(
            &out,
            on_disk.last().map(String::as_str),
            WAIT,
        ));
    }
    sidecar.wait_for_log("rotation hook output", WAIT);
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());

    let lines = &sidecar.lines;
    assert!(
        lines.iter().any(|l| l.contains("TRACE")),
        "trace logging was on"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rotation hook output") && l.contains("[redacted JWT]")),
        "the hook printed the token, which was redacted"
    );
    let mut secrets = server.issued();
    secrets.extend(on_disk);
    secrets.push(credential);
    assert!(secrets.len() >= 6);
    for line in lines {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "a secret in: {line}");
        }
        assert!(!holds_jwt(line), "a JWT in: {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Self-healing
// ---------------------------------------------------------------------------------------------

/// Removing `token`, removing `..data` or changing the token's content is undone at once, with
/// the token in hand (no new request).
#[test]
fn tampering_is_undone_with_the_same_token() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let out = tmp.path().join("out");
    let mut sidecar = Sidecar::start(
        &[
            "--kubeconfig",
            &emulator.kubeconfig,
            "--dir",
            &arg(&out),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    sidecar.wait_for_rotations(1, STARTUP);
    let token = read_token(&out).unwrap();
    let restored = |what: &str| {
        wait_until(&format!("restored after {what}"), WAIT, || {
            (read_token(&out).as_deref() == Some(token.as_str())
                && std::fs::read_link(out.join("..data")).is_ok())
            .then_some(())
        });
        wait_for_one_version(&out);
        assert_consistent_layout(&out, &FLAG_VOLUME);
    };

    std::fs::remove_file(out.join("token")).unwrap();
    restored("removing token");

    std::fs::remove_file(out.join("..data")).unwrap();
    restored("removing ..data");

    let before = std::fs::read_link(out.join("..data")).unwrap();
    std::fs::write(out.join("token"), "tampered").unwrap();
    restored("overwriting the token");
    assert_ne!(
        std::fs::read_link(out.join("..data")).unwrap(),
        before,
        "a new version was published"
    );

    assert_eq!(
        metric(&sidecar.metrics(), SUCCESSES),
        1.0,
        "healing used the token in hand"
    );
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());
}

// ---------------------------------------------------------------------------------------------
// 8. Starting up: configuration from the environment, trust, waiting for the server
// ---------------------------------------------------------------------------------------------

/// How long a `--once` that fails at once may take (a process start on a loaded machine).
const FAILS_AT_ONCE: Duration = Duration::from_secs(20);

/// As docker-compose sets them with `${VAR:-}`: empty `PROJECTED_TOKEN_*` values mean "not set".
/// `PROJECTED_TOKEN_CONTEXT=` used to be read as a context named "", and `--once` failed with
/// "the kubeconfig has no current-context".
#[test]
fn empty_environment_values_mean_not_set() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let out = tmp.path().join("out");
    let mut sidecar = Sidecar::start(
        &[
            "--once",
            "--kubeconfig",
            &emulator.kubeconfig,
            "--dir",
            &arg(&out),
        ],
        &[
            ("PROJECTED_TOKEN_CONTEXT", ""),
            ("PROJECTED_TOKEN_NAMESPACE", ""),
            ("PROJECTED_TOKEN_AUDIENCE", ""),
            ("PROJECTED_TOKEN_METRICS_LISTEN", ""),
            ("PROJECTED_TOKEN_BOUND_POD_NAME", ""),
        ],
    );
    let status = sidecar.wait_exit(STARTUP);
    assert!(status.success(), "{}", sidecar.lines.join("\n"));
    assert_consistent_layout(&out, &FLAG_VOLUME);
    let token = decode(&read_token(&out).unwrap()).unwrap();
    assert_eq!(
        token.string_claim("sub"),
        Some("system:serviceaccount:default:default"),
        "the defaults, as if the variables were unset"
    );
    assert_eq!(token.audiences(), vec![DEFAULT_ISSUER.to_owned()]);
}

/// `emulate --expiration-seconds 10` compresses the lifetime of TokenRequest tokens too: a
/// sidecar asking for 600 s gets 10 s and rotates within 10 s (it used to get 600 s: every 8 min).
#[test]
fn sidecar_rotates_within_10_s_against_a_compressed_emulator() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = common::Emulator::start(tmp.path(), &["--expiration-seconds", "10"]);
    let admin = std::fs::read_to_string(&emulator.admin_token_file).unwrap();
    let kubeconfig = write_kubeconfig(
        &tmp.path().join("admin.kubeconfig"),
        &emulator.url,
        &emulator.dir.join("ca.crt"),
        &format!("{{token: {:?}}}", admin.trim()),
        None,
    );
    let out = tmp.path().join("out");
    let mut sidecar = Sidecar::start(
        &[
            "--kubeconfig",
            &kubeconfig,
            "--dir",
            &arg(&out),
            "--service-account",
            "app",
            "--expiration-seconds",
            "600",
        ],
        &[],
    );
    let first = wait_for_new_token(&out, None, STARTUP);
    let claims = decode(&first).unwrap();
    let iat = claims.numeric_claim("iat").unwrap();
    assert_eq!(claims.numeric_claim("exp").unwrap() - iat, 10);
    // Refreshed at about 80 % of 10 s: the next token comes within the 10 s of the first.
    let second = wait_for_new_token(&out, Some(&first), Duration::from_secs(10) + SLACK);
    let next_iat = decode(&second).unwrap().numeric_claim("iat").unwrap();
    assert!(next_iat - iat <= 10, "rotated after {} s", next_iat - iat);
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());
}

/// The repair counter of the flag-defined volume's `path` for what was `found` there.
fn repairs(path: &str, found: &str) -> String {
    format!("projected_token_repairs_total{{volume=\"token\",path=\"{path}\",found=\"{found}\"}}")
}

/// Waits for /readyz 200: a rotation is logged just before the status board says its token is
/// written, and a link is put back just before the repair is counted.
fn wait_ready(sidecar: &Sidecar) {
    wait_until("readyz 200", WAIT, || {
        (sidecar.get("/readyz").0 == 200).then_some(())
    });
}

/// Waits for `series` to read `value` (a repair is logged just before it is counted).
fn wait_metric(sidecar: &Sidecar, series: &str, value: f64) {
    wait_until(&format!("{series} = {value}"), WAIT, || {
        (metric(&sidecar.metrics(), series) == value).then_some(())
    });
}

fn is_ours(dir: &Path, name: &str) -> bool {
    std::fs::read_link(dir.join(name)).ok() == Some(PathBuf::from(format!("..data/{name}")))
}

/// A link pointed at a foreign file while the sidecar runs, or before it starts, is put back
/// (never written through), logged with what was found, counted, and /readyz is 200 after it.
#[test]
fn a_link_pointed_elsewhere_is_put_back_logged_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let out = tmp.path().join("out");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let args = [
        "--kubeconfig",
        &emulator.kubeconfig,
        "--dir",
        &arg(&out),
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let mut sidecar = Sidecar::start(&args, &[]);
    sidecar.wait_for_rotations(1, STARTUP);

    common::replace_entry(&out, "token", common::plant_link(&victim));
    wait_until("token put back", WAIT, || {
        is_ours(&out, "token").then_some(())
    });
    let line = sidecar.wait_for_log("repaired an entry", WAIT);
    assert!(
        line.contains(&format!("path=token found=a symlink to {victim:?}")),
        "{line}"
    );
    wait_metric(&sidecar, &repairs("token", "symlink"), 1.0);
    wait_ready(&sidecar);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());

    // While nothing runs.
    common::replace_entry(&out, "token", common::plant_link(&victim));
    let mut sidecar = Sidecar::start(&args, &[]);
    sidecar.wait_for_rotations(1, STARTUP);
    assert!(is_ours(&out, "token"));
    // Logged before the first write's rotation line.
    let line = sidecar
        .lines
        .iter()
        .find(|line| line.contains("repaired an entry"))
        .expect("a repair logged at start");
    assert!(line.contains("path=token"), "{line}");
    wait_metric(&sidecar, &repairs("token", "symlink"), 1.0);
    wait_ready(&sidecar);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert_consistent_layout(&out, &FLAG_VOLUME);
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());
}

/// A server whose certificate is a self-signed CA:TRUE certificate, configured as the CA itself,
/// is trusted as kubectl and client-go trust it (webpki alone refuses it: CaUsedAsEndEntity);
/// another CA is still refused, at once, with words that name the CA file.
#[test]
fn a_self_signed_ca_serving_as_itself_is_trusted_and_a_wrong_ca_named() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FaultServer::start_as_its_own_ca(Reply::Good);
    let ca = tmp.path().join("dev-cluster.crt");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let user = "{token: not-a-secret-credential}";
    let kubeconfig = write_kubeconfig(
        &tmp.path().join("dev.kubeconfig"),
        &server.url(),
        &ca,
        user,
        None,
    );
    let out = tmp.path().join("out");
    let (code, output) =
        run_sidecar_to_end(&["--once", "--kubeconfig", &kubeconfig, "--dir", &arg(&out)]);
    assert_eq!(code, Some(0), "{output}");
    assert_consistent_layout(&out, &FLAG_VOLUME);
    assert_eq!(
        std::fs::read_to_string(out.join("ca.crt")).unwrap(),
        server.ca_pem
    );

    // Another CA: refused at once, with words that name the CA file, whether the server serves
    // with a certificate its CA signed or with its CA certificate itself.
    let other = tmp.path().join("other-ca.crt");
    let other_ca = projected_token::tls::CertificateAuthority::generate("other").unwrap();
    std::fs::write(&other, other_ca.cert_pem()).unwrap();
    let signed = FaultServer::start(Reply::Good);
    for (what, url, detail) in [
        ("CA-signed", signed.url(), "UnknownIssuer"),
        ("its own CA", server.url(), "CaUsedAsEndEntity"),
    ] {
        let wrong = write_kubeconfig(
            &tmp.path().join("wrong.kubeconfig"),
            &url,
            &other,
            user,
            None,
        );
        // With the default --once-timeout (60 s), a retried error would not end within the bound.
        let none = tmp.path().join("none");
        let mut sidecar = Sidecar::start(
            &["--once", "--kubeconfig", &wrong, "--dir", &arg(&none)],
            &[],
        );
        let status = sidecar.wait_exit(FAILS_AT_ONCE);
        let output = sidecar.lines.join("\n");
        assert_eq!(status.code(), Some(1), "{what}: {output}");
        let error = sidecar
            .lines
            .iter()
            .find(|l| l.starts_with("error: "))
            .expect("an error line");
        for needle in [
            "volume \"token\", file \"token\": ",
            "the CA does not match",
            &format!("(file {})", other.display()),
            detail,
        ] {
            assert!(
                error.contains(needle),
                "{what}: missing {needle:?} in {error}"
            );
        }
        // The request's URL is said once per line.
        let request = format!("{url}/api/v1/namespaces/default/serviceaccounts/default/token");
        for line in &sidecar.lines {
            assert!(
                line.matches(&request).count() <= 1,
                "the URL twice in: {line}"
            );
        }
        assert!(!none.join("token").exists());
    }
}

/// `http://` against an HTTPS server and `https://` against a plain-HTTP one say so.
#[test]
fn plain_http_and_tls_mixed_up_are_said() {
    let tmp = tempfile::tempdir().unwrap();
    let server = FaultServer::start(Reply::Good);
    let ca = tmp.path().join("ca.crt");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let hooks = HookReceiver::start(); // a plain-HTTP server
    let cases = [
        (server.url().replace("https://", "http://"), "is a plain-HTTP URL, but the server did not answer in plain HTTP (it speaks HTTPS): use https://"),
        (format!("https://{}", hooks.addr), "speaks plain HTTP, not TLS"),
    ];
    for (index, (url, needle)) in cases.iter().enumerate() {
        let kubeconfig = write_kubeconfig(
            &tmp.path().join(format!("{index}.kubeconfig")),
            url,
            &ca,
            "{token: not-a-secret-credential}",
            None,
        );
        let (code, output) = run_sidecar_to_end(&[
            "--once",
            "--kubeconfig",
            &kubeconfig,
            "--dir",
            &arg(&tmp.path().join(format!("out{index}"))),
        ]);
        assert_eq!(code, Some(1), "{output}");
        assert!(
            output.contains(needle),
            "{url}: missing {needle:?} in:\n{output}"
        );
    }
}

/// `--once` started before the API server listens waits for it (connection refused is retried
/// with the backoff, within `--once-timeout`); a refusal is not waited for; `--once-timeout 0s`
/// does not wait.
#[test]
fn once_waits_for_the_server_within_its_timeout_but_not_for_a_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = FaultServer::start(Reply::Good);
    let ca = tmp.path().join("ca.crt");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let kubeconfig = write_kubeconfig(
        &tmp.path().join("k.kubeconfig"),
        &server.url(),
        &ca,
        "{token: not-a-secret-credential}",
        None,
    );
    let once = |out: &str, extra: &[&str]| {
        let out = arg(&tmp.path().join(out));
        let mut args = vec![
            "--once",
            "--kubeconfig",
            kubeconfig.as_str(),
            "--dir",
            out.as_str(),
        ];
        args.extend_from_slice(&BACKOFF);
        args.extend_from_slice(extra);
        Sidecar::start(&args, &[])
    };

    server.stop();
    let mut no_wait = once("no-wait", &["--once-timeout", "0s"]);
    assert_eq!(no_wait.wait_exit(FAILS_AT_ONCE).code(), Some(1));
    let error = no_wait.lines.join("\n");
    assert!(error.contains("Connection refused"), "{error}");

    let mut waiting = once("waited", &["--once-timeout", "60s"]);
    waiting.wait_for_log(
        "--once: the API server is unavailable; trying again",
        STARTUP,
    );
    waiting.wait_for_log("--once: the API server is unavailable; trying again", WAIT);
    assert!(
        waiting.process.child.try_wait().unwrap().is_none(),
        "still waiting"
    );
    server.restart();
    let status = waiting.wait_exit(WAIT + BACKOFF_CAP + SLACK);
    assert!(status.success(), "{}", waiting.lines.join("\n"));
    assert_consistent_layout(&tmp.path().join("waited"), &FLAG_VOLUME);

    // 403: asked once, not waited for.
    server.set_fallback(Reply::status(403));
    let asked_before = server.served().len();
    let mut refused = once("refused", &["--once-timeout", "60s"]);
    assert_eq!(refused.wait_exit(FAILS_AT_ONCE).code(), Some(1));
    let output = refused.lines.join("\n");
    assert!(
        output.contains("403 Forbidden") && output.contains("RoleBinding"),
        "{output}"
    );
    assert_eq!(server.served().len(), asked_before + 1, "one TokenRequest");
}

/// A directory bind-mounted over another for one test; unmounted on drop.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        if run_command(Command::new("umount").arg(&self.0), WAIT).is_err() {
            let _ = run_command(Command::new("umount").arg("-l").arg(&self.0), WAIT);
        }
    }
}

/// /readyz (and `projected_token_ready`) say not ready while a reader opening the token path
/// would get another file, naming what is there, and ready again once it is put back. The
/// tampered layout is mounted over the volume, so no inotify event tells the watcher: it stays
/// until the next write (here SIGHUP's), which puts the link back.
#[test]
fn readyz_follows_what_a_reader_of_the_token_path_gets() {
    if !rustix::process::geteuid().is_root() {
        println!("SKIPPED: bind mounts need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_cluster_api(tmp.path());
    let out = tmp.path().join("out");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let mut sidecar = Sidecar::start(
        &[
            "--kubeconfig",
            &emulator.kubeconfig,
            "--dir",
            &arg(&out),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    sidecar.wait_for_rotations(1, STARTUP);
    wait_ready(&sidecar);

    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mut payload = Payload::new();
    for name in FLAG_VOLUME {
        let file = FileProjection {
            data: b"old".as_slice().into(),
            mode: 0o644,
            fs_user: None,
        };
        payload.insert(name.to_owned(), file);
    }
    AtomicWriter::new(&other, WriterOptions::default())
        .write(&payload)
        .unwrap();
    common::replace_entry(&other, "token", common::plant_link(&victim));
    if let Err(why) = run_command(
        Command::new("mount").arg("--bind").arg(&other).arg(&out),
        WAIT,
    ) {
        println!("SKIPPED: {why}");
        return;
    }
    let mount = BindMount(out.clone());

    let body = wait_until("readyz 503", WAIT, || {
        let (status, body) = sidecar.get("/readyz");
        (status == 503).then_some(body)
    });
    let expected = format!(
        "[-] token/token not ready: a reader would not get the token written: token is a symlink to {victim:?}, not to ..data/token"
    );
    assert!(body.contains(&expected), "{body}");
    let ready = "projected_token_ready{volume=\"token\",path=\"token\"}";
    assert_eq!(metric(&sidecar.metrics(), ready), 0.0);

    sidecar.signal(Signal::HUP);
    wait_ready(&sidecar);
    assert!(is_ours(&out, "token"));
    wait_metric(&sidecar, &repairs("token", "symlink"), 1.0);
    assert_eq!(metric(&sidecar.metrics(), ready), 1.0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    drop(mount);
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(WAIT).success());
}
