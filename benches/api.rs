//! The emulated API over HTTPS next to the bare crypto it wraps, all in one run.
//!
//! Two real release `serve` processes (one RS256 key, one ES256 key, written by this bench so it
//! can sign and verify with the same keys) are driven with one reqwest client per protocol over
//! keep-alive loopback connections, trusting only the CA that `serve` writes with `--ca-out`.
//!
//! - `api/raw_sign_{alg}`: `SigningKey::sign_raw` over a message as long as a token's signed
//!   part (`header.payload`), with the server's key.
//! - `api/raw_verify_{alg}`: `KeySet::verify_signature` of a token the server issued, the key
//!   set prepared once from the server's `/openid/v1/jwks`.
//! - `api/token_request_{alg}` and `api/token_review_{alg}`: one request at a time over HTTP/2
//!   (ALPN `h2`, one connection); `..._h1` the same over HTTP/1.1.
//! - `..._c{N}_h2` and `..._c{N}_h1`: N requests in flight (N tokio tasks, each sending
//!   requests back to back); HTTP/2 multiplexes them on one connection, HTTP/1.1 uses N
//!   connections. The time reported is wall time per completed request, i.e. 1 / throughput.
//! - `api/livez_h2`, `api/livez_h1`: `GET /livez` one at a time, the bare round trip.
//!
//! After each HTTPS benchmark a `cpu api/...` line on stderr gives the CPU time per request of
//! the server and of this process (the load generator), from `/proc/PID/stat`, and after all of
//! them an `rss api/serve-...` line the server's memory (`/proc/PID/status`).
//!
//! The TokenRequest is the kubelet's: a pod-bound token for the API audiences (the pod is
//! created on first use), authenticated with the admin token. The TokenReview reviews one such
//! token, so the server verifies it, looks up the pod and accounts for the use in its ledger.
//!
//! The load generator (a current-thread tokio runtime, so one core at most) and the server
//! (two worker threads) share the machine's cores: on a 2-core machine the HTTPS figures
//! include the client's TLS and HTTP work competing with the server's.
//!
//! `API_BENCH_IN_FLIGHT` sets N (default 16).

use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use projected_token::issuer::verify::KeySet;
use projected_token::issuer::{KeyAlgorithm, SigningKey};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Version};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const BIN: &str = env!("CARGO_BIN_EXE_projected-token");
const NAMESPACE: &str = "bench";
const SERVICE_ACCOUNT: &str = "loadgen";
const POD: &str = "loadgen-7c9f8d6b5-x2k4q";
const POD_UID: &str = "9b1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Panics with what failed; a benchmark cannot go on without its server.
trait OrPanic<T> {
    fn or_panic(self, what: &str) -> T;
}

impl<T, E: Display> OrPanic<T> for Result<T, E> {
    fn or_panic(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

/// A running `serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    admin_token: String,
    ca_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `serve` with `key` and waits until it prints its URL and admin token file.
    fn start(key: &SigningKey) -> Self {
        let dir = tempfile::tempdir().or_panic("tempdir");
        let key_file = dir.path().join("signing-key.pem");
        let ca_file = dir.path().join("ca.crt");
        let admin_file = dir.path().join("admin-token");
        std::fs::write(&key_file, key.private_key_pem()).or_panic("write the signing key");
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--ca-out")
            .arg(&ca_file)
            .arg("--admin-token-file")
            .arg(&admin_file)
            .arg("--signing-key")
            .arg(&key_file)
            .env("PROJECTED_TOKEN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .or_panic("spawn projected-token serve");
        let (url, admin_path) = match wait_until_ready(&mut child) {
            Ok(ready) => ready,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not get ready: {err}");
            }
        };
        let admin_token = std::fs::read_to_string(Path::new(&admin_path))
            .or_panic("read the admin token file")
            .trim()
            .to_owned();
        let ca_pem = std::fs::read(&ca_file).or_panic("read the CA written by --ca-out");
        Self {
            child,
            url,
            admin_token,
            ca_pem,
            _dir: dir,
        }
    }
}

impl Server {
    /// One line for the summary: the server's memory after all the requests it served.
    fn report_memory(&self, label: &str) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .or_panic("read /proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map_or("?", str::trim)
                .to_owned()
        };
        eprintln!(
            "rss api/{label} after the benchmarks: VmRSS {}, VmHWM {}, RssAnon {}, RssFile {}, threads {}",
            field("VmRSS"),
            field("VmHWM"),
            field("RssAnon"),
            field("RssFile"),
            field("Threads")
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `serve`'s stdout until both the URL and the admin token file are printed.
fn wait_until_ready(child: &mut Child) -> Result<(String, String), String> {
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (sender, lines) = mpsc::channel();
    // The reader lives until the process exits, so stdout never fills up.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let (mut url, mut admin) = (None, None);
    while url.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).map_err(|e| {
            format!("no URL and admin token file on stdout within {READY_TIMEOUT:?} ({e})")
        })?;
        if let Some(rest) = line.strip_prefix("serving https API on ") {
            url.get_or_insert_with(|| rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("admin token file: ") {
            admin = Some(rest.trim().to_owned());
        }
    }
    Ok((url.unwrap_or_default(), admin.unwrap_or_default()))
}

#[derive(Clone, Copy)]
enum Op {
    TokenRequest,
    TokenReview,
    /// `GET /livez`: the round trip of a request that does nothing.
    Livez,
}

/// One client and the requests it sends.
struct Api {
    client: reqwest::Client,
    token_request_url: String,
    token_review_url: String,
    livez_url: String,
    authorization: String,
    token_request_body: String,
    token_review_body: String,
}

impl Api {
    fn new(server: &Server, version: Version, token_to_review: &str) -> Self {
        let ca = reqwest::Certificate::from_pem(&server.ca_pem).or_panic("parse the CA");
        let builder = reqwest::Client::builder().tls_certs_only([ca]);
        let builder = if version == Version::HTTP_2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        let token_request_body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": POD_UID},
            },
        })
        .to_string();
        let token_review_body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token_to_review},
        })
        .to_string();
        Self {
            client: builder.build().or_panic("build the HTTP client"),
            token_request_url: format!(
                "{}/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token",
                server.url
            ),
            token_review_url: format!("{}/apis/authentication.k8s.io/v1/tokenreviews", server.url),
            livez_url: format!("{}/livez", server.url),
            authorization: format!("Bearer {}", server.admin_token),
            token_request_body,
            token_review_body,
        }
    }

    /// Sends one request and reads the whole response; panics unless it succeeded.
    async fn call(&self, op: Op) -> (Version, Vec<u8>) {
        let post = |url: &str, body: &str| {
            self.client
                .post(url)
                .header(AUTHORIZATION, &self.authorization)
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_owned())
        };
        let (name, request, expected) = match op {
            Op::TokenRequest => (
                "TokenRequest",
                post(&self.token_request_url, &self.token_request_body),
                StatusCode::CREATED,
            ),
            Op::TokenReview => (
                "TokenReview",
                post(&self.token_review_url, &self.token_review_body),
                StatusCode::CREATED,
            ),
            Op::Livez => (
                "GET /livez",
                self.client.get(&self.livez_url),
                StatusCode::OK,
            ),
        };
        let response = request.send().await.or_panic(name);
        let status = response.status();
        let version = response.version();
        let bytes = response.bytes().await.or_panic(name);
        if status != expected {
            panic!("{name}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        (version, bytes.to_vec())
    }
}

/// Runs `requests` requests of `op`, `in_flight` at a time, and returns the wall time.
async fn run(api: &Arc<Api>, op: Op, requests: u64, in_flight: u64) -> Duration {
    let started = Instant::now();
    if in_flight <= 1 {
        for _ in 0..requests {
            api.call(op).await;
        }
    } else {
        let mut tasks = JoinSet::new();
        for task in 0..in_flight {
            let share = requests / in_flight + u64::from(task < requests % in_flight);
            let api = api.clone();
            tasks.spawn(async move {
                for _ in 0..share {
                    api.call(op).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.or_panic("request task");
        }
    }
    started.elapsed()
}

/// CPU time (user + system) of a process so far, in clock ticks of 10 ms (Linux's USER_HZ).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).or_panic("read /proc/PID/stat");
    // Fields after the command name, which is in parentheses: state is the first, then
    // utime and stime are the 12th and 13th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| field.parse::<u64>().or_panic("parse /proc/PID/stat"))
        .sum()
}

/// CPU used by the server and by this process (the load generator) over a benchmark's runs.
struct CpuMeter {
    server_pid: String,
    server_ticks: u64,
    client_ticks: u64,
    requests: u64,
}

impl CpuMeter {
    fn new(server: &Server) -> Self {
        Self {
            server_pid: server.child.id().to_string(),
            server_ticks: 0,
            client_ticks: 0,
            requests: 0,
        }
    }

    /// Runs `f`, which completes `requests` requests, and accounts for the CPU it took.
    fn measure<T>(&mut self, requests: u64, f: impl FnOnce() -> T) -> T {
        let (server, client) = (cpu_ticks(&self.server_pid), cpu_ticks("self"));
        let result = f();
        self.server_ticks += cpu_ticks(&self.server_pid).saturating_sub(server);
        self.client_ticks += cpu_ticks("self").saturating_sub(client);
        self.requests += requests;
        result
    }

    /// One line for the summary: CPU time per request on each side.
    fn report(self, name: &str) {
        let per_request = |ticks: u64| ticks as f64 * 10_000.0 / self.requests.max(1) as f64;
        eprintln!(
            "cpu api/{name}: server {:.0} µs/request, load generator {:.0} µs/request ({} requests, 10 ms ticks)",
            per_request(self.server_ticks),
            per_request(self.client_ticks),
            self.requests
        );
    }
}

fn json_field<'a>(value: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    path.iter().fold(value, |v, key| &v[*key])
}

fn in_flight() -> u64 {
    match std::env::var("API_BENCH_IN_FLIGHT") {
        Ok(text) => match text.parse::<u64>() {
            Ok(n) if n >= 2 => n,
            _ => panic!("API_BENCH_IN_FLIGHT={text}: want a number >= 2"),
        },
        Err(_) => 16,
    }
}

fn bench_algorithm(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    name: &str,
    algorithm: KeyAlgorithm,
) {
    let key = SigningKey::generate(algorithm).or_panic("generate a signing key");
    let server = Server::start(&key);

    // One token from the server: its signed part sizes the raw signing, and it is the token
    // verified raw and reviewed over HTTPS.
    let probe = Arc::new(Api::new(&server, Version::HTTP_2, ""));
    let (version, body) = runtime.block_on(probe.call(Op::TokenRequest));
    if version != Version::HTTP_2 {
        panic!("asked for HTTP/2, got {version:?}");
    }
    let response: serde_json::Value =
        serde_json::from_slice(&body).or_panic("TokenRequest response");
    let token = json_field(&response, &["status", "token"])
        .as_str()
        .unwrap_or_else(|| panic!("no status.token in {response}"))
        .to_owned();
    let jwks: serde_json::Value = runtime.block_on(async {
        probe
            .client
            .get(format!("{}/openid/v1/jwks", server.url))
            .send()
            .await
            .or_panic("GET /openid/v1/jwks")
            .json()
            .await
            .or_panic("JWKS body")
    });
    let keys = KeySet::from_jwks(&jwks).or_panic("prepare the key set");
    if keys
        .verify_signature(&token)
        .or_panic("verify the issued token")
        != key.kid()
    {
        panic!("the token was not signed with the bench's key");
    }
    let signed_len = token.rfind('.').unwrap_or(token.len());
    let message = vec![b'a'; signed_len];

    let clients = [Version::HTTP_2, Version::HTTP_11].map(|version| {
        let api = Arc::new(Api::new(&server, version, &token));
        let (got, body) = runtime.block_on(api.call(Op::TokenReview));
        let review: serde_json::Value =
            serde_json::from_slice(&body).or_panic("TokenReview response");
        if got != version || json_field(&review, &["status", "authenticated"]) != true {
            panic!("TokenReview over {version:?} (got {got:?}) did not authenticate: {review}");
        }
        api
    });
    let [h2, h1] = &clients;

    group.bench_function(format!("raw_sign_{name}"), |b| {
        b.iter(|| {
            key.sign_raw(std::hint::black_box(&message))
                .or_panic("sign")
        })
    });
    group.bench_function(format!("raw_verify_{name}"), |b| {
        b.iter(|| {
            keys.verify_signature(std::hint::black_box(&token))
                .or_panic("verify")
        })
    });
    let in_flight = in_flight();
    let mut bench_http = |bench: String, api: &Arc<Api>, op: Op, in_flight: u64| {
        let mut meter = CpuMeter::new(&server);
        group.bench_function(&bench, |b| {
            // With several in flight, `iters` requests per task, so every sample keeps all of
            // them busy; the time per request is the wall time divided by all the requests.
            b.iter_custom(|iters| {
                let requests = iters * in_flight;
                meter.measure(requests, || {
                    runtime.block_on(run(api, op, requests, in_flight))
                }) / u32::try_from(in_flight).unwrap_or(u32::MAX)
            })
        });
        meter.report(&bench);
    };
    if algorithm == KeyAlgorithm::Rs256 {
        // Once: the round trip alone, which every sequential request pays.
        bench_http("livez_h2".into(), h2, Op::Livez, 1);
        bench_http("livez_h1".into(), h1, Op::Livez, 1);
    }
    for (op, what) in [
        (Op::TokenRequest, "token_request"),
        (Op::TokenReview, "token_review"),
    ] {
        bench_http(format!("{what}_{name}"), h2, op, 1);
        bench_http(format!("{what}_{name}_h1"), h1, op, 1);
        bench_http(format!("{what}_{name}_c{in_flight}_h2"), h2, op, in_flight);
        bench_http(format!("{what}_{name}_c{in_flight}_h1"), h1, op, in_flight);
    }
    server.report_memory(&format!("serve-{name}"));
}

fn api(c: &mut Criterion) {
    // The same provider as the binary, installed before any TLS object is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .or_panic("tokio runtime");
    let mut group = c.benchmark_group("api");
    group.throughput(Throughput::Elements(1));
    for (name, algorithm) in [
        ("rs256", KeyAlgorithm::Rs256),
        ("es256", KeyAlgorithm::Es256),
    ] {
        bench_algorithm(&mut group, &runtime, name, algorithm);
    }
    group.finish();
}

criterion_group!(benches, api);
criterion_main!(benches);
