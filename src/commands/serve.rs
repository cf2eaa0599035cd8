//! `serve`: the emulated kube-apiserver token API alone, without projecting volumes.

use std::sync::{Arc, Mutex};

use super::setup::{bind_listeners, key_ring, load_issuer, load_objects, start_api};
use super::shared::{shutdown_signal, CommandError};
use crate::apiserver::ledger::LedgerLimits;
use crate::cli::ServeArgs;
use crate::clock::{Clock, SystemClock};

pub async fn run(args: ServeArgs) -> Result<(), CommandError> {
    let shutdown = shutdown_signal()?;
    let listeners = bind_listeners(&args.server)?;
    let loaded = load_issuer(&args.issuer).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let objects = Arc::new(Mutex::new(load_objects(&args.server, clock.clone())?));
    let keys = key_ring(&loaded)?;
    let api = start_api(
        &loaded,
        keys,
        objects,
        clock,
        &args.server,
        LedgerLimits::default(),
        listeners,
    )
    .await?;
    print_api_summary(&api);
    shutdown.await;
    api.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Prints where the API is and how to reach it, once it is ready.
pub fn print_api_summary(api: &super::setup::RunningApi) {
    use std::io::Write as _;
    let mut out = String::new();
    for url in &api.urls {
        out.push_str(&format!("serving https API on {url}\n"));
    }
    out.push_str(&format!(
        "admin token file: {}\n",
        api.admin_token_file.path().display()
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
