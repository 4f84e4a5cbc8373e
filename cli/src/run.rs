//! `aam run FILE`: an embedded manager and worker in this process, the
//! session run with live progress, then the results summary.

use crate::client::Client;
use crate::exit::{bad_input, failed, verdict};
use crate::{batch, progress};
use aam_manager::config::ManagerConfig;
use aam_worker::WorkerConfig;
use anyhow::Context as _;
use std::path::PathBuf;

pub struct RunArgs {
    pub file: PathBuf,
    pub slots: Option<u32>,
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    pub json: bool,
}

/// The manager config of an embedded manager: the file's, on a free
/// loopback port, with its state in `data_dir`.
pub fn embedded_config(
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> anyhow::Result<ManagerConfig> {
    ManagerConfig::load(
        config,
        std::env::vars(),
        &[
            ("listen", "127.0.0.1:0".to_string()),
            ("data_dir", data_dir.display().to_string()),
        ],
    )
    .map_err(|e| bad_input(e.to_string()))
}

/// Starts a manager and a local worker (named `local`, jobs run from the
/// current directory) inside the current actix system.
pub async fn start_embedded(
    config: ManagerConfig,
    slots: u32,
) -> anyhow::Result<(aam_manager::Manager, actix::Addr<aam_worker::WorkerAgent>)> {
    let workdir = std::env::current_dir()?;
    let manager = aam_manager::start(config).await.map_err(|e| {
        let locked = e
            .downcast_ref::<aam_store::StoreError>()
            .is_some_and(|s| matches!(s, aam_store::StoreError::Locked(_)));
        let hint = if locked {
            " (if `aam up` runs here, submit to it instead: `aam submit FILE --wait`)"
        } else {
            ""
        };
        bad_input(format!("cannot start the embedded manager: {e:#}{hint}"))
    })?;
    let worker = aam_worker::start(WorkerConfig {
        manager: manager.addr.to_string(),
        token: manager.token.clone(),
        name: "local".into(),
        slots,
        prefetch: 0,
        labels: Default::default(),
        workdir,
        max_frame: aam_protocol::codec::DEFAULT_MAX_FRAME,
    });
    Ok((manager, worker))
}

/// Jobs run at once when not given: the CPUs, at least 2.
pub fn default_slots() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
        .max(2)
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let batch = batch::load(&args.file)?;
    let slots = args.slots.unwrap_or_else(default_slots);
    if slots == 0 {
        return Err(bad_input("--slots must be at least 1"));
    }
    let config = embedded_config(args.config.as_deref(), &args.data_dir)?;
    let system = actix::System::new();
    let outcome = system.block_on(async move {
        let (manager, worker) = start_embedded(config, slots).await?;
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

async fn drive(
    manager: &aam_manager::Manager,
    file: &std::path::Path,
    batch: aam_protocol::spec::BatchSpec,
    json: bool,
) -> anyhow::Result<i32> {
    let addr = manager.addr.to_string();
    let mut client = Client::connect(&addr, &manager.token).await?;
    let submitted = client.submit(file, batch, None).await?;
    let session = submitted.session;
    eprintln!("session {session} submitted: {} jobs", submitted.jobs);
    let summary = progress::wait(&mut client, session, None)
        .await
        .context("following the session")?;
    crate::show_results(&mut client, session, json, false).await?;
    Ok(verdict(&summary))
}
