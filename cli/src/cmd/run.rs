//! `aam run FILE`: an embedded manager and worker in this process, the
//! session run with live progress, then the results summary.

use crate::args::RunArgs;
use crate::client::Client;
use crate::cmd::results;
use crate::exit::{bad_input, failed, verdict};
use crate::{batch, embedded, progress};
use anyhow::Context as _;

/// Runs the batch in `args.file` to its end; the session's exit code.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // A big JSON file is streamed, as by `aam submit`.
    let batch = batch::load_to_submit(&args.file)?;
    let slots = args.slots.unwrap_or_else(embedded::default_slots);
    if slots == 0 {
        return Err(bad_input("--slots must be at least 1"));
    }
    let config = embedded::config(
        args.config.as_deref(),
        &args.data_dir,
        embedded::Http::OffUnlessSet,
    )?;
    // Before any thread exists: the embedded worker's watchdog is forked.
    if let Err(e) = aam_worker::orphans::start_watchdog("local") {
        tracing::debug!("no watchdog for the local worker: {e}");
    }
    let system = actix::System::new();
    let outcome = system.block_on(async move {
        let (manager, worker) = embedded::start(config, slots).await?;
        let result = tokio::select! {
            result = drive(&manager, &args.file, batch, args.json) => result,
            signal = interrupted() => Err(failed(format!(
                "{signal}: stopping the running jobs (the session stays in {})",
                args.data_dir.display()
            ))),
        };
        // Jobs run in process groups of their own: a Ctrl-C on aam does not reach them.
        let _ = worker.send(aam_worker::agent::KillAll).await;
        manager.shutdown().await;
        result
    });
    // The embedded worker's jobs are stopped: its scratch files can go.
    aam_worker::scratch::remove();
    outcome
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

/// Submits the batch to the embedded manager, follows the session and
/// prints its results.
async fn drive(
    manager: &aam_manager::Manager,
    file: &std::path::Path,
    batch: batch::ToSubmit,
    json: bool,
) -> anyhow::Result<i32> {
    let addr = manager.addr.to_string();
    // The manager this process started: its own certificate, pinned.
    let tls = aam_protocol::tls::ClientTls::pinned(manager.tls.fingerprint);
    let mut client = Client::connect(&addr, &manager.token, tls).await?;
    let (submitted, _) = client.submit_loaded(file, batch, None).await?;
    let session = submitted.session;
    stderr_line!("session {session} submitted: {} jobs", submitted.jobs);
    let summary = progress::wait(&mut client, session, None)
        .await
        .context("following the session")?;
    results::show(&mut client, session, json, false).await?;
    Ok(verdict(&summary))
}
