//! The emulated API as tests reach it: `serve` started and read, HTTPS requests and answers.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{https_client, Running, SERVE_STARTUP};

/// How to reach a running emulated API: its URL, the CA that signed its certificate, its admin
/// token, and a client that trusts only that CA; with the requests tests make of it.
pub struct Api {
    /// The first URL it printed.
    pub url: String,
    pub ca_pem: String,
    pub admin_token: String,
    pub client: reqwest::Client,
}

/// A running `serve` and its API (its fields and requests through `Deref`). The process is
/// killed when this is dropped.
pub struct ApiServer {
    pub process: Running,
    /// Every `serving https API on URL` line's URL, in order.
    pub urls: Vec<String>,
    pub api: Api,
}

impl std::ops::Deref for ApiServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// An HTTP answer, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {}, {:?}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the answer is a `metav1.Status` failure with this code and reason, and returns
    /// its message.
    pub fn assert_status(&self, code: u16, reason: &str) -> String {
        assert_eq!(self.status, code, "HTTP status; body {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["apiVersion"], "v1", "{body}");
        assert_eq!(body["status"], "Failure", "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["reason"], reason, "{body}");
        body["message"].as_str().expect("message").to_owned()
    }
}

static NEXT_SERVER: AtomicUsize = AtomicUsize::new(0);

/// Starts `serve` with `args`, its CA written to and admin token kept in files under `dir`, and
/// waits until it has printed where it serves.
pub fn start_serve(dir: &Path, args: &[&str]) -> ApiServer {
    start_serve_with(dir, args, &[], None)
}

/// As [`start_serve`], with `env` set for the process (see [`Running::spawn_with_env`]).
pub fn start_serve_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> ApiServer {
    start_serve_with(dir, args, env, None)
}

/// As [`start_serve`], with at most `open_files` file descriptors.
pub fn start_serve_with_open_file_limit(dir: &Path, args: &[&str], open_files: u64) -> ApiServer {
    start_serve_with(dir, args, &[], Some(open_files))
}

fn start_serve_with(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    open_files: Option<u64>,
) -> ApiServer {
    let n = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
    let ca_out = dir.join(format!("serve-{n}-ca.crt"));
    let admin_file = dir.join(format!("serve-{n}-admin-token"));
    let ca_arg = format!("--ca-out={}", ca_out.display());
    let admin_arg = format!("--admin-token-file={}", admin_file.display());
    let mut full = vec!["serve", ca_arg.as_str(), admin_arg.as_str()];
    full.extend_from_slice(args);
    let process = match open_files {
        Some(limit) => Running::spawn_with_open_file_limit_and_env(&full, limit, env),
        None => Running::spawn_with_env(&full, env),
    };
    let lines = process.wait_for_stdout("admin token file: ", SERVE_STARTUP);
    let urls: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("serving https API on "))
        .map(str::to_owned)
        .collect();
    assert!(!urls.is_empty(), "no URL printed: {lines:?}");
    let printed = lines
        .last()
        .and_then(|l| l.strip_prefix("admin token file: "))
        .expect("admin token line");
    assert_eq!(Path::new(printed), admin_file, "admin token file");
    let ca_pem = std::fs::read_to_string(&ca_out).expect("--ca-out written before ready");
    let admin_token = std::fs::read_to_string(&admin_file)
        .expect("admin token file")
        .trim()
        .to_owned();
    assert!(!admin_token.is_empty());
    let client = https_client(&ca_pem, &[]);
    ApiServer {
        process,
        api: Api {
            url: urls[0].clone(),
            ca_pem,
            admin_token,
            client,
        },
        urls,
    }
}

impl Api {
    /// The port of the first URL.
    pub fn port(&self) -> u16 {
        reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.port())
            .expect("port in URL")
    }

    /// Sends a request to this server's first URL and reads the whole answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        send(
            &self.client,
            method,
            &format!("{}{path}", self.url),
            token,
            content_type,
            body,
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, path, token, None, None)
            .await
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Reply {
        let bytes = serde_json::to_vec(body).expect("JSON body");
        self.send(
            reqwest::Method::POST,
            path,
            token,
            Some("application/json"),
            Some(bytes),
        )
        .await
    }

    /// `POST .../serviceaccounts/{sa}/token` as the admin, with this `spec`.
    pub async fn token_request(&self, namespace: &str, sa: &str, spec: serde_json::Value) -> Reply {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": spec,
        });
        self.post_json(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"),
            Some(self.admin_token.as_str()),
            &body,
        )
        .await
    }

    /// A token from a TokenRequest that must succeed.
    pub async fn issue(&self, namespace: &str, sa: &str, spec: serde_json::Value) -> String {
        let reply = self.token_request(namespace, sa, spec).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json()["status"]["token"]
            .as_str()
            .expect("status.token")
            .to_owned()
    }

    /// A TokenReview of `token` by the admin, which must be answered 201; returns `status`.
    pub async fn review(&self, token: &str) -> serde_json::Value {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        let reply = self
            .post_json(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                Some(self.admin_token.as_str()),
                &body,
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let review = reply.json();
        assert_eq!(review["kind"], "TokenReview", "{review}");
        review["status"].clone()
    }

    /// The `kid`s the JWKS publishes now, in order.
    pub async fn jwks_kids(&self) -> Vec<String> {
        let reply = self.get("/openid/v1/jwks", None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        super::kids(&reply.json())
    }

    /// A SelfSubjectReview made with `token`.
    pub async fn whoami(&self, token: &str) -> Reply {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
        });
        self.post_json(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(token),
            &body,
        )
        .await
    }
}

/// Sends one request with `client` and reads the whole answer.
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> Reply {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    Reply {
        status,
        headers,
        text,
    }
}
