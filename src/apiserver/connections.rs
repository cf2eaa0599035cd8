//! How the HTTPS API treats connections, as kube-apiserver's secure serving
//! (k8s.io/apiserver/pkg/server/secure_serving.go): bounded TLS handshakes and request headers,
//! idle connections closed, and at most so many connections at once.
//!
//! The cap is a semaphore taken before `accept`: a client past it waits in the kernel's listen
//! queue (as Go's `netutil.LimitListener`), so every open connection keeps being served and no
//! `accept` ever fails for want of a file descriptor.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::idle::IdleAcceptor;

/// kube-apiserver's `ReadHeaderTimeout` (secure_serving.go: "just shy of
/// requestTimeoutUpperBound").
pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(32);
/// kube-apiserver's `IdleTimeout` ("matches http.DefaultTransport keep-alive timeout"), for
/// HTTP/1.1 and HTTP/2 alike.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// kube-apiserver's HTTP/2 `MaxConcurrentStreams` when `--http2-max-streams-per-connection` is
/// not set.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// File descriptors never given to connections: the process needs some for its listeners, logs,
/// token files and hooks.
const RESERVED_FILES: u64 = 256;

/// The bounds every connection is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The TLS handshake, then the headers of each request (HTTP/1.1: counted from the end of
    /// the previous answer; HTTP/2: the first request).
    pub read_header_timeout: Duration,
    /// No request in flight for this long closes the connection.
    pub idle_timeout: Duration,
    /// Connections open at once, across every listener.
    pub max_connections: usize,
}

/// The connection cap that fits `open_files` (the soft `RLIMIT_NOFILE`; `None`: unlimited):
/// `requested`, lowered so that half the descriptors, up to 256, stay free for everything
/// else; never below 1.
pub fn connection_cap(requested: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return requested;
    };
    let room = limit.saturating_sub((limit / 2).min(RESERVED_FILES)).max(1);
    usize::try_from(room).map_or(requested, |room| requested.min(room))
}

/// The process's soft limit on open files, `None` when unlimited.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The free connection slots, shared by every listener of the server.
#[derive(Clone, Debug)]
pub struct ConnectionSlots(Arc<Semaphore>);

impl ConnectionSlots {
    pub fn new(max_connections: usize) -> Self {
        Self(Arc::new(Semaphore::new(
            max_connections.clamp(1, Semaphore::MAX_PERMITS),
        )))
    }
}

/// The peer of a connection: the address type of our listener for axum-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<PeerAddr> for SocketAddr {
    fn connect_info(peer: PeerAddr) -> Self {
        peer.0
    }
}

impl axum_server::Address for PeerAddr {
    type Stream = SlottedStream;
    type Listener = CappedListener;
}

/// A TCP listener that accepts only while a connection slot is free.
#[derive(Debug)]
pub struct CappedListener {
    tcp: TcpListener,
    slots: ConnectionSlots,
}

impl CappedListener {
    /// `tcp` must be non-blocking.
    pub fn new(tcp: std::net::TcpListener, slots: ConnectionSlots) -> io::Result<Self> {
        Ok(Self {
            tcp: TcpListener::from_std(tcp)?,
            slots,
        })
    }
}

impl axum_server::AddrListener<SlottedStream, PeerAddr> for CappedListener {
    async fn bind_to(_addr: PeerAddr) -> io::Result<Self> {
        // Binding needs the shared slots; the server is always built from a bound listener.
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a capped listener is made from a bound socket and the server's connection slots",
        ))
    }

    async fn accept_stream(&self) -> io::Result<(SlottedStream, PeerAddr)> {
        // Both awaits are cancel-safe: a shutdown between them only returns the slot.
        let slot = self
            .slots
            .0
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        let (stream, peer) = self.tcp.accept().await?;
        // TCP_NODELAY, as Go's net/http (kube-apiserver) sets on every connection: with Nagle
        // on, a response written in several segments waits for the client's ACK, which cut
        // HTTP/2 throughput with 16 requests in flight 5-8x (benches/api.rs).
        stream.set_nodelay(true)?;
        Ok((
            SlottedStream {
                stream,
                _slot: slot,
            },
            PeerAddr(peer),
        ))
    }

    fn get_local_addr(&self) -> io::Result<PeerAddr> {
        self.tcp.local_addr().map(PeerAddr)
    }
}

/// An accepted connection holding its slot until it is dropped (closed).
#[derive(Debug)]
pub struct SlottedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for SlottedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SlottedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The HTTPS server of one listener.
pub type HttpsServer = axum_server::Server<PeerAddr, IdleAcceptor<RustlsAcceptor>>;

/// An HTTPS server on `listener` held to `limits`: the TLS handshake and the first request
/// within `read_header_timeout` each, HTTP/1.1 headers too (hyper starts that timer when a
/// kept-alive connection goes idle, so it also bounds the wait for the next request), and
/// any connection idle for `idle_timeout` closed.
pub fn https_server(
    listener: CappedListener,
    tls: RustlsConfig,
    limits: &ConnectionLimits,
) -> HttpsServer {
    let tls = RustlsAcceptor::new(tls).handshake_timeout(limits.read_header_timeout);
    let mut server = axum_server::Server::from_listener(listener)
        .acceptor(IdleAcceptor::new(tls, limits.idle_timeout))
        // Also covers hyper's protocol detection and an HTTP/2 client that opens no stream.
        .first_request_timeout(limits.read_header_timeout)
        .accept_error_handler(|peer: Option<&PeerAddr>, error: &io::Error| match peer {
            // A failed or timed-out TLS handshake: routine on an open port.
            Some(peer) => tracing::debug!(peer = %peer.0, %error, "connection not served"),
            None => tracing::warn!(%error, "cannot accept a connection; retrying"),
        });
    let builder = server.http_builder();
    // axum-server installs hyper's Tokio timer for both protocols.
    builder
        .http1()
        .header_read_timeout(limits.read_header_timeout);
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_half_the_descriptors_up_to_256() {
        assert_eq!(connection_cap(4096, None), 4096, "unlimited");
        assert_eq!(
            connection_cap(4096, Some(1_048_576)),
            4096,
            "a container's limit"
        );
        assert_eq!(
            connection_cap(4096, Some(1024)),
            768,
            "a login shell's soft limit"
        );
        assert_eq!(connection_cap(4096, Some(4352)), 4096);
        assert_eq!(connection_cap(4096, Some(4351)), 4095);
        assert_eq!(connection_cap(4096, Some(64)), 32);
        assert_eq!(connection_cap(10, Some(64)), 10, "a lower request stands");
        assert_eq!(connection_cap(4096, Some(1)), 1, "never zero");
        assert_eq!(connection_cap(4096, Some(0)), 1, "never zero");
    }
}
