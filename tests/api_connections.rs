//! The HTTPS API against slow, idle, numerous and oversized clients, as kube-apiserver holds
//! out: TLS handshakes and request headers within a bound, idle connections closed (HTTP/1.1
//! and HTTP/2), a connection cap that keeps open connections served, and the 3 MiB body limit
//! answered with a `Status` over both protocols.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{https_client, https_client_speaking, start_serve, ApiServer};
use reqwest::Version;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;

fn address(server: &ApiServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

/// A TLS client configuration trusting only the server's CA, offering `alpn`.
fn tls_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let der = pem::parse(ca_pem).expect("CA PEM").into_contents();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .expect("CA certificate");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// `GET path` on a kept-alive HTTP/1.1 connection; the answer's status code.
async fn http1_get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
) -> io::Result<u16> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status line in {head:?}")))?;
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(status)
}

/// Whether the server closes `stream` within `within`, while `trickle` (if any) is written to
/// it every 250 ms as a slow client sends its headers.
async fn closed_by_server<S>(stream: S, trickle: Option<&'static [u8]>, within: Duration) -> bool
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = tokio::spawn(async move {
        let Some(line) = trickle else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if writer.write_all(line).await.is_err() {
                return;
            }
        }
    });
    let reading = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let closed = tokio::time::timeout(within, reading).await.is_ok();
    writing.abort();
    closed
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&h2_frame(0x4, 0, 0, &[]));
    bytes
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A HEADERS frame (END_STREAM, END_HEADERS) for `GET /livez` on `stream`, in HPACK without
/// Huffman coding: `:method GET`, `:scheme https` indexed, `:path` and `:authority` literal.
fn h2_get_livez(stream: u32) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x04, 6];
    block.extend_from_slice(b"/livez");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"127.0.0.1");
    h2_frame(0x1, 0x5, stream, &block)
}

/// One frame: type, flags, stream and payload; acknowledges SETTINGS and PING as a client must.
async fn h2_read_frame<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let (kind, flags) = (header[3], header[4]);
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    match (kind, flags & 0x1) {
        (0x4, 0) => stream.write_all(&h2_frame(0x4, 0x1, 0, &[])).await?,
        (0x6, 0) => stream.write_all(&h2_frame(0x6, 0x1, 0, &payload)).await?,
        _ => {}
    }
    Ok((kind, flags, id, payload))
}

/// `GET /livez` on `stream` of an HTTP/2 connection; true once its answer is 200.
async fn h2_livez<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    stream: u32,
) -> io::Result<bool> {
    conn.write_all(&h2_get_livez(stream)).await?;
    loop {
        let (kind, _, id, payload) = h2_read_frame(conn).await?;
        if kind == 0x1 && id == stream {
            // `:status 200` is entry 8 of HPACK's static table.
            return Ok(payload.first() == Some(&0x88));
        }
        if kind == 0x7 {
            return Err(io::Error::other("GOAWAY before the answer"));
        }
    }
}

/// Waits for a GOAWAY and then the end of the connection, answering PINGs meanwhile.
async fn h2_goaway_then_close<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S) -> bool {
    let mut goaway = false;
    loop {
        match h2_read_frame(conn).await {
            Ok((0x7, ..)) => goaway = true,
            Ok(_) => {}
            Err(_) => return goaway,
        }
    }
}

/// Sends `GET /livez` with `client` until `done` is set; panics at the first failure.
async fn served_throughout(
    client: reqwest::Client,
    url: String,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut answered = 0;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let reply = client
            .get(format!("{url}/livez"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("a normal client was not served: {e:?}"));
        assert_eq!(reply.status(), 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_within_the_header_bound_while_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_serve(dir.path(), &["--read-header-timeout=2s"]);
    let addr = address(&server);
    let http1 = tls_config(&server.ca_pem, b"http/1.1");
    let http2 = tls_config(&server.ca_pem, b"h2");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let normal = tokio::spawn(served_throughout(
        server.client.clone(),
        server.url.clone(),
        done.clone(),
    ));
    // Bound 2 s; each slow client gives up after 12 s (TLS handshake and first request may
    // each take the bound).
    let within = Duration::from_secs(12);
    let mut slow = JoinSet::new();
    for i in 0..300 {
        let (http1, http2) = (http1.clone(), http2.clone());
        slow.spawn(async move {
            match i % 3 {
                // Connects and never starts the TLS handshake.
                0 => {
                    let tcp = TcpStream::connect(addr).await.expect("connect");
                    ("silent TCP", closed_by_server(tcp, None, within).await)
                }
                // HTTP/1.1 headers, one line every 250 ms, never ending.
                1 => match tls_connect(addr, http1).await {
                    Ok(mut tls) => {
                        tls.write_all(b"GET /livez HTTP/1.1\r\n")
                            .await
                            .expect("request line");
                        let trickle: &[u8] = b"X-Slow: 1\r\n";
                        (
                            "trickled headers",
                            closed_by_server(tls, Some(trickle), within).await,
                        )
                    }
                    // Refused within the bound, as the server is busy with the others.
                    Err(_) => ("trickled headers", true),
                },
                // HTTP/2 that never opens a stream.
                _ => match tls_connect(addr, http2).await {
                    Ok(mut tls) => {
                        tls.write_all(&h2_preface()).await.expect("preface");
                        (
                            "HTTP/2 without a stream",
                            closed_by_server(tls, None, within).await,
                        )
                    }
                    Err(_) => ("HTTP/2 without a stream", true),
                },
            }
        });
    }
    let mut open = Vec::new();
    while let Some(result) = slow.join_next().await {
        let (kind, closed) = result.expect("slow client task");
        if !closed {
            open.push(kind);
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = normal.await.expect("normal client");
    assert!(
        open.is_empty(),
        "{} of 300 slow connections still open after {within:?} (bound 2 s): {:?}",
        open.len(),
        open.iter().take(5).collect::<Vec<_>>()
    );
    assert!(answered > 0, "the normal client was answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_bound_on_both_protocols() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The header bound is longer, so the idle bound is what closes kept-alive connections.
    let server = start_serve(
        dir.path(),
        &["--read-header-timeout=20s", "--idle-timeout=2s"],
    );
    let addr = address(&server);

    let mut http1 = tls_connect(addr, tls_config(&server.ca_pem, b"http/1.1"))
        .await
        .expect("TLS");
    let mut http2 = tls_connect(addr, tls_config(&server.ca_pem, b"h2"))
        .await
        .expect("TLS");
    http2.write_all(&h2_preface()).await.expect("preface");
    // Requests every 300 ms for 2.4 s: activity keeps a connection open past the idle bound.
    for n in 0..8u32 {
        assert_eq!(
            http1_get(&mut http1, "/livez").await.expect("HTTP/1.1 GET"),
            200
        );
        assert!(h2_livez(&mut http2, 1 + 2 * n).await.expect("HTTP/2 GET"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let within = Duration::from_secs(10);
    assert!(
        closed_by_server(http1, None, within).await,
        "an idle HTTP/1.1 connection is closed"
    );
    let goaway = tokio::time::timeout(within, h2_goaway_then_close(&mut http2)).await;
    assert_eq!(
        goaway.ok(),
        Some(true),
        "an idle HTTP/2 connection gets a GOAWAY and is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_clients_wait_while_open_ones_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_serve(dir.path(), &["--max-connections=8"]);
    let addr = address(&server);
    let config = tls_config(&server.ca_pem, b"http/1.1");
    let mut keeper = tls_connect(addr, config.clone()).await.expect("TLS");
    assert_eq!(http1_get(&mut keeper, "/livez").await.expect("GET"), 200);
    // Seven more connections, past their handshake (so surely accepted), sending nothing:
    // the cap is reached and stays so (the header bound is 32 s).
    let mut idle = Vec::new();
    for _ in 0..7 {
        idle.push(tls_connect(addr, config.clone()).await.expect("TLS"));
    }

    let newcomer = https_client(&server.ca_pem, &[]);
    let waited = newcomer
        .get(format!("{}/livez", server.url))
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(
        waited.as_ref().is_err_and(reqwest::Error::is_timeout),
        "a client past the cap waits: {waited:?}"
    );
    assert_eq!(
        http1_get(&mut keeper, "/livez")
            .await
            .expect("GET at the cap"),
        200,
        "an open connection is served at the cap"
    );

    let waiting = tokio::spawn({
        let url = server.url.clone();
        async move { newcomer.get(format!("{url}/livez")).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(idle.pop());
    let served = waiting
        .await
        .expect("task")
        .expect("served once a slot frees");
    assert_eq!(served.status(), 200);
    assert_eq!(
        http1_get(&mut keeper, "/livez").await.expect("GET"),
        200,
        "the open connection is still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_file_limit_a_slowloris_flood_is_outlasted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        common::start_serve_with_open_file_limit(dir.path(), &["--read-header-timeout=2s"], 64);
    let addr = address(&server);
    let config = tls_config(&server.ca_pem, b"http/1.1");
    let mut keeper = tls_connect(addr, config.clone()).await.expect("TLS");
    assert_eq!(http1_get(&mut keeper, "/livez").await.expect("GET"), 200);

    // 120 slow clients, far more than the 64 descriptors: each completes its handshake when
    // its turn comes, then trickles headers until the server closes it.
    let mut flood = JoinSet::new();
    for _ in 0..120 {
        let config = config.clone();
        flood.spawn(async move {
            let connected =
                tokio::time::timeout(Duration::from_secs(40), tls_connect(addr, config));
            if let Ok(Ok(mut tls)) = connected.await {
                if tls.write_all(b"GET /livez HTTP/1.1\r\n").await.is_ok() {
                    closed_by_server(tls, Some(b"X-Slow: 1\r\n"), Duration::from_secs(40)).await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new client is served once the flood has been outlasted, while the open connection
    // is served throughout.
    let started = Instant::now();
    let fresh = https_client(&server.ca_pem, &[]);
    let fresh = tokio::spawn({
        let url = server.url.clone();
        async move { fresh.get(format!("{url}/livez")).send().await }
    });
    while !fresh.is_finished() {
        assert_eq!(
            http1_get(&mut keeper, "/livez")
                .await
                .expect("the open connection is served during the flood"),
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = fresh.await.expect("task");
    assert!(
        fresh.as_ref().is_ok_and(|r| r.status() == 200),
        "a new client is served after {:?}: {fresh:?}",
        started.elapsed()
    );
    flood.abort_all();
    let lowered = server
        .process
        .wait_for_log("--max-connections lowered", Duration::from_secs(5));
    assert!(lowered.contains("max_connections=32"), "{lowered}");
}

/// A TokenReview whose JSON is padded with spaces to `size` bytes.
fn token_review_of_size(size: usize) -> Vec<u8> {
    let mut body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": "not-a-token"},
    }))
    .expect("JSON");
    body.resize(size, b' ');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_3_mib_is_a_413_status_over_http1_and_http2() {
    const LIMIT: usize = 3 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_serve(dir.path(), &[]);
    let url = format!("{}/apis/authentication.k8s.io/v1/tokenreviews", server.url);
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let client = https_client_speaking(&server.ca_pem, version);
        let post = |size: usize, token: Option<&str>| {
            let mut request = client
                .post(&url)
                .header("content-type", "application/json")
                .body(token_review_of_size(size));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await.unwrap_or_else(|e| {
                    panic!("{version:?} POST of {size} bytes: no answer: {e:?}")
                });
                assert_eq!(response.version(), version);
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.expect("body");
                common::Reply {
                    status,
                    headers,
                    text,
                }
            }
        };
        let admin = Some(server.admin_token.as_str());
        let at_limit = post(LIMIT, admin).await;
        assert_eq!(at_limit.status, 201, "{version:?}: {}", at_limit.text);

        let over = post(LIMIT + 1, admin).await;
        let message = over.assert_status(413, "RequestEntityTooLarge");
        assert_eq!(message, "Request entity too large: limit is 3145728");
        // The excess is read and thrown away, so the client, still sending, gets the answer.
        post(LIMIT + 512 * 1024, admin)
            .await
            .assert_status(413, "RequestEntityTooLarge");

        // Answers given before the body is read: an HTTP/1.1 client still writing when the
        // server closes the connection may see a broken pipe instead (as with Go's server,
        // which drains at most 256 KiB); HTTP/2 ends the stream cleanly.
        if version == Version::HTTP_2 {
            let far_over = post(4 * LIMIT, admin).await;
            far_over.assert_status(413, "RequestEntityTooLarge");
            // As upstream, the caller is authenticated before the body is read.
            post(LIMIT + 1, None)
                .await
                .assert_status(401, "Unauthorized");
        }
    }
}
