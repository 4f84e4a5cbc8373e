//! `aam __serve`, the background process of `aam up`: an embedded manager
//! and local worker until SIGTERM, then a drain of the running jobs.

use crate::embedded;
use crate::local::DOWN_DRAIN;
use aam_worker::agent::{Drain, KillAll};
use std::path::PathBuf;
use std::time::Duration;

/// The background process itself: manager and local worker until SIGTERM.
pub fn run(data_dir: PathBuf, slots: Option<u32>, config: Option<PathBuf>) -> anyhow::Result<i32> {
    aam_manager::logging::init(
        &std::env::var("AAM_LOG").unwrap_or_else(|_| "info".into()),
        false,
    );
    let config = embedded::config(config.as_deref(), &data_dir, embedded::Http::On)?;
    let slots = slots.unwrap_or_else(embedded::default_slots);
    // Before any thread exists: the embedded worker's watchdog is forked.
    if let Err(e) = aam_worker::orphans::start_watchdog("local") {
        tracing::debug!("no watchdog for the local worker: {e}");
    }
    let system = actix::System::new();
    let code = system.block_on(async move {
        let (manager, worker) = embedded::start(config, slots).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: draining the local worker");
        let (done, drained) = tokio::sync::oneshot::channel();
        worker.do_send(Drain {
            timeout: DOWN_DRAIN,
            grace: Duration::from_secs(5),
            done,
        });
        let _ = tokio::time::timeout(DOWN_DRAIN + Duration::from_secs(10), drained).await;
        let _ = worker.send(KillAll).await;
        manager.shutdown().await;
        anyhow::Ok(0)
    });
    // The local worker's jobs are stopped: its scratch files can go.
    aam_worker::scratch::remove();
    code
}
