//! Closing connections that carry no request for a while, as Go's `http.Server.IdleTimeout`
//! (HTTP/1.1 and HTTP/2; hyper has no idle timeout of its own for HTTP/2).
//!
//! Each connection counts its requests in flight; once the count is zero for the idle timeout,
//! the connection is shut down gracefully (HTTP/2: GOAWAY). A request is in flight from the
//! moment its headers are read until its handler has answered (our answers are small and
//! written at once).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum_server::accept::Accept;
use axum_server::ConnectionShutdown;
use tokio::sync::watch;
use tower_service::Service;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Wraps another acceptor (TLS) and gives every connection's service an idle timer.
#[derive(Clone, Debug)]
pub struct IdleAcceptor<A> {
    inner: A,
    idle_timeout: Duration,
}

impl<A> IdleAcceptor<A> {
    pub fn new(inner: A, idle_timeout: Duration) -> Self {
        Self {
            inner,
            idle_timeout,
        }
    }
}

impl<A, I, S> Accept<I, S> for IdleAcceptor<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = IdleService<A::Service>;
    type Future = BoxFuture<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepting = self.inner.accept(stream, service);
        let idle_timeout = self.idle_timeout;
        Box::pin(async move {
            let (stream, service) = accepting.await?;
            Ok((stream, IdleService::new(service, idle_timeout)))
        })
    }
}

/// One connection's activity, shared by the clones of its service.
#[derive(Debug)]
struct Activity {
    /// Requests in flight; the idle watcher subscribes.
    in_flight: watch::Sender<usize>,
    idle_timeout: Duration,
    /// Whether the watcher is running (it starts with the first request, which carries the
    /// connection's shutdown handle; before it, axum-server's first-request timeout applies).
    watched: AtomicBool,
}

/// The service of one connection, counting its requests in flight.
#[derive(Clone, Debug)]
pub struct IdleService<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> IdleService<S> {
    fn new(inner: S, idle_timeout: Duration) -> Self {
        Self {
            inner,
            activity: Arc::new(Activity {
                in_flight: watch::Sender::new(0),
                idle_timeout,
                watched: AtomicBool::new(false),
            }),
        }
    }
}

impl<S, B> Service<Request<B>> for IdleService<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !self.activity.watched.swap(true, Ordering::Relaxed) {
            // axum-server puts the connection's handle on every request.
            if let Some(shutdown) = request.extensions().get::<ConnectionShutdown>() {
                tokio::spawn(close_when_idle(
                    self.activity.in_flight.subscribe(),
                    shutdown.clone(),
                    self.activity.idle_timeout,
                ));
            }
        }
        let in_flight = InFlight::start(self.activity.clone());
        let answering = self.inner.call(request);
        Box::pin(async move {
            let answer = answering.await;
            drop(in_flight);
            answer
        })
    }
}

/// A request in flight; counted down when dropped (answered or cancelled).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.send_modify(|n| *n += 1);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Shuts the connection down once it has had no request in flight for `idle_timeout`. Ends
/// when the connection does (its services, holding the sender, are dropped).
async fn close_when_idle(
    mut in_flight: watch::Receiver<usize>,
    shutdown: ConnectionShutdown,
    idle_timeout: Duration,
) {
    loop {
        while *in_flight.borrow_and_update() > 0 {
            if in_flight.changed().await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(idle_timeout) => {
                shutdown.graceful_shutdown();
                return;
            }
            // A request started (or ended): the idle time counts from scratch.
            changed = in_flight.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
