//! A manager and a local worker inside this process, for `aam run` and
//! for the background process of `aam up`.

use crate::exit::bad_input;
use aam_manager::config::ManagerConfig;
use aam_worker::WorkerConfig;

/// Whether an embedded manager serves HTTP (the API and dashboard).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// `aam run`: off unless the config or `AAM_HTTP` sets it (two runs
    /// at once must not clash on a port).
    OffUnlessSet,
    /// `aam up`: on (`http`, default 127.0.0.1:7411), on a free port when
    /// that one is taken (one `aam up` per directory, several at once).
    On,
}

/// The manager config of an embedded manager: the file's, on a free
/// loopback port, with its state in `data_dir`.
pub fn config(
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    http: Http,
) -> anyhow::Result<ManagerConfig> {
    let defaults = match http {
        Http::OffUnlessSet => vec![("http", "off".to_string())],
        Http::On => vec![],
    };
    let mut config = ManagerConfig::load_with_defaults(
        config,
        std::env::vars(),
        &defaults,
        &[
            ("listen", "127.0.0.1:0".to_string()),
            ("data_dir", data_dir.display().to_string()),
        ],
    )
    .map_err(|e| bad_input(e.to_string()))?;
    config.http_any_port = http == Http::On;
    Ok(config)
}

/// Starts a manager and a local worker (named `local`, jobs run from the
/// current directory) inside the current actix system.
pub async fn start(
    config: ManagerConfig,
    slots: u32,
) -> anyhow::Result<(aam_manager::Manager, actix::Addr<aam_worker::WorkerAgent>)> {
    let workdir = std::env::current_dir()?;
    let worktrees = aam_worker::worktree::embedded_root(&config.data_dir);
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
        prefetch: aam_protocol::messages::Prefetch::Auto,
        labels: Default::default(),
        workdir,
        worktrees,
        max_frame: aam_protocol::codec::DEFAULT_MAX_FRAME,
        ports: aam_worker::ports::DEFAULT_RANGE,
        cache: aam_worker::worktree::cache::CacheConfig::default_for_user(),
        // The manager started just above: its own certificate, pinned.
        tls: aam_protocol::tls::ClientTls::pinned(manager.tls.fingerprint),
        // Container jobs run here when this machine has podman or docker.
        container_engine: aam_worker::container::detect("auto").unwrap_or(None),
        idle_exit: None,
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
