//! The API server's listeners, one per `--listen` address, each serving until stopped. A
//! `RefuseConnections` outage closes them: new connections are refused, open ones are closed once
//! their requests in flight are answered; each listens on the same address again when the outage
//! ends or is ended early.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use super::connections::{
    https_server, CappedListener, ConnectionLimits, ConnectionSlots, PeerAddr,
};
use super::outage::{Outage, OutageMode, OutageSwitch};
use crate::clock::{Clock, WALL_CLOCK_RECHECK};

/// Every listener of the API server, serving until [`Listeners::shutdown`].
pub struct Listeners {
    /// Tells every listener to stop for good.
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listeners {
    /// Serves `app` on each of `bound` (already bound, non-blocking), closing and reopening it
    /// for the refusing outages `outage` announces.
    pub fn spawn(
        bound: Vec<(TcpListener, SocketAddr)>,
        tls: RustlsConfig,
        limits: ConnectionLimits,
        app: axum::Router,
        outage: &OutageSwitch,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        // One pool of connection slots for every listener, kept across outages (connections of a
        // closed listener hold theirs until they end).
        let slots = ConnectionSlots::new(limits.max_connections);
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (tcp, local) in bound {
            let listener = Listener {
                local,
                tls: tls.clone(),
                slots: slots.clone(),
                limits,
                app: app.clone(),
                outage: outage.subscribe(),
                stop: stop.subscribe(),
                clock: clock.clone(),
            };
            tasks.push(tokio::spawn(listener.run(tcp)));
        }
        Self { stop, tasks }
    }

    /// Stops accepting and lets requests in flight finish (up to 2 s).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// One `--listen` address. Serves until stopped; a `RefuseConnections` outage closes it (new
/// connections are refused, open ones are closed once their requests in flight are answered), and
/// it listens on the same address again when the outage ends or is ended early.
struct Listener {
    local: SocketAddr,
    tls: RustlsConfig,
    slots: ConnectionSlots,
    limits: ConnectionLimits,
    app: axum::Router,
    outage: tokio::sync::watch::Receiver<Option<Outage>>,
    stop: tokio::sync::watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
}

/// Why a listener stopped serving.
enum Served {
    Stopped,
    Refusing(Outage),
}

impl Listener {
    async fn run(mut self, mut tcp: TcpListener) {
        loop {
            let outage = match self.serve(tcp).await {
                Served::Stopped => return,
                Served::Refusing(outage) => outage,
            };
            tracing::warn!(listen = %self.local, until = %outage.ends_at, "simulated outage: not listening, connections are refused");
            if !self.wait_out_outage().await {
                return;
            }
            tcp = match self.rebind().await {
                Some(tcp) => tcp,
                None => return,
            };
            tracing::info!(listen = %self.local, "simulated outage over: listening again");
        }
    }

    /// The refusing outage on now, if any (marks the channel seen).
    fn refusing_now(&mut self) -> Option<Outage> {
        let now = self.clock.now();
        (*self.outage.borrow_and_update())
            .filter(|o| o.mode == OutageMode::RefuseConnections && o.is_active(now))
    }

    async fn serve(&mut self, tcp: TcpListener) -> Served {
        let handle: axum_server::Handle<PeerAddr> = axum_server::Handle::new();
        let listener = match CappedListener::new(tcp, self.slots.clone()) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(listen = %self.local, error = %e, "API server stopped");
                return Served::Stopped;
            }
        };
        let server = https_server(listener, self.tls.clone(), &self.limits).handle(handle.clone());
        let service = self
            .app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let serving = server.serve(service);
        tokio::pin!(serving);
        // An outage that started while this listener was closed is seen at once.
        self.outage.mark_changed();
        let mut outages_open = true;
        loop {
            tokio::select! {
                result = &mut serving => {
                    if let Err(e) = result {
                        tracing::error!(listen = %self.local, error = %e, "API server stopped");
                    }
                    return Served::Stopped;
                }
                _ = self.stop.changed() => {
                    handle.graceful_shutdown(Some(Duration::from_secs(2)));
                    let _ = serving.await;
                    return Served::Stopped;
                }
                changed = self.outage.changed(), if outages_open => {
                    if changed.is_err() {
                        outages_open = false;
                        continue;
                    }
                    if let Some(outage) = self.refusing_now() {
                        // The answer that started the outage is still being written: let
                        // requests in flight finish (briefly), then close every connection.
                        handle.graceful_shutdown(Some(Duration::from_secs(1)));
                        let _ = serving.await;
                        return Served::Refusing(outage);
                    }
                }
            }
        }
    }

    /// Waits while a refusing outage is on (it may be replaced or ended early). False when the
    /// server is stopping.
    async fn wait_out_outage(&mut self) -> bool {
        let mut outages_open = true;
        loop {
            let Some(outage) = self.refusing_now() else {
                return true;
            };
            // The end is a wall-clock time; a sleep runs on the monotonic clock, which a step of
            // the wall clock forward does not move: look again at least every re-check period.
            let left = Duration::try_from(outage.remaining(self.clock.now()))
                .unwrap_or(Duration::ZERO)
                .min(WALL_CLOCK_RECHECK);
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                changed = self.outage.changed(), if outages_open => {
                    // No more changes can come: the outage ends when its time is up.
                    outages_open = changed.is_ok();
                }
                _ = self.stop.changed() => return false,
            }
        }
    }

    /// Binds the same address again (std sets SO_REUSEADDR, so connections of the previous
    /// listener in TIME_WAIT do not stand in the way). Retries until it works or the server stops.
    async fn rebind(&mut self) -> Option<TcpListener> {
        let mut attempts = 0u32;
        loop {
            match TcpListener::bind(self.local).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(tcp) => return Some(tcp),
                Err(e) => {
                    if attempts.is_multiple_of(50) {
                        tracing::error!(listen = %self.local, error = %e, "cannot listen again after the simulated outage; retrying every 100 ms");
                    }
                    attempts = attempts.wrapping_add(1);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.stop.changed() => return None,
            }
        }
    }
}
