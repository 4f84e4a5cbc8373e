//! aam-manager: the process every worker and client connects to.
//!
//! `start` opens the store, rebuilds the model from it, and runs the
//! scheduler actor, the listener and the HTTP server inside the current
//! actix system, so the `aam-manager` binary and `aam run` (embedded) share
//! one code path.

pub mod access;
pub mod client_conn;
pub mod commit;
pub mod config;
pub mod cpu_policy;
pub mod definitions;
pub mod estimate;
pub mod frame_writer;
pub mod http;
pub mod lease;
pub mod listener;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod peer_input;
pub mod peer_limit;
pub mod prices;
pub mod providers;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod tls;
pub mod token;
pub mod tokens;
pub mod worker_conn;

use crate::commit::Committer;
use crate::config::ManagerConfig;
use crate::listener::Shared;
use crate::scheduler::{Flush, Scheduler};
use crate::state::State;
use aam_protocol::now_ms;
use aam_store::Store;
use actix::prelude::*;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::oneshot;

pub use config::ConfigError;

/// A running manager.
pub struct Manager {
    /// The address it listens on (resolved, so port 0 becomes the real port).
    pub addr: SocketAddr,
    /// The HTTP server's address (None: `http = "off"`).
    pub http_addr: Option<SocketAddr>,
    pub token: String,
    /// Where the token was generated or read, when it was not given.
    pub token_file: Option<PathBuf>,
    /// The certificate served on both ports, and its fingerprint.
    pub tls: tls::ManagerTls,
    scheduler: Addr<Scheduler>,
    /// The tokens in force (`reload_tokens` replaces them).
    tokens: tokens::LiveTokens,
    stop_accepting: Option<oneshot::Sender<()>>,
    http: Option<http::HttpServer>,
}

/// Starts a manager inside the current actix system.
pub async fn start(config: ManagerConfig) -> anyhow::Result<Manager> {
    aam_store::files::ensure_private_dir(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let (store, writer) = Store::open(&config.data_dir, config.sled_cache_bytes)?;
    let (token, token_file) = token::load_or_create(config.token.as_deref(), &config.data_dir)?;
    let manager_tls = tls::load_or_generate(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let http_listener = match config.http_addr() {
        Some(http) => Some(http::bind(http, config.http_any_port)?),
        None => None,
    };
    let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    // Before manager.addr, which `aam up` waits for: both are there then.
    http::write_addr_file(&config.data_dir, http_addr)?;
    // Lets scripts and tests that asked for port 0 find the real one.
    let addr_file = config.data_dir.join("manager.addr");
    aam_store::files::write_private(&addr_file, format!("{addr}\n").as_bytes())
        .with_context(|| format!("writing {}", addr_file.display()))?;

    // From sled with the log laid over it: a start right after a big
    // commit serves while sled takes the log in (the commit thread's first
    // task), instead of waiting for it.
    let (mut loaded, writer) = tokio::task::spawn_blocking(move || {
        let snapshot = writer.start_snapshot();
        snapshot.map(|snapshot| (snapshot, writer))
    })
    .await??;
    let next_audit = loaded.next_audit;
    let outbox = notify::Outbox::new(
        notify::config::targets(&config.notify).map_err(anyhow::Error::msg)?,
        std::mem::take(&mut loaded.notices),
        loaded.next_notice,
    );
    let (sessions, jobs) = (loaded.sessions.len(), loaded.jobs.len());
    let mut state_config = config.state_config();
    let observer = metrics::Observer::new(state_config.agents.iter().map(|(name, def)| {
        // An agent's limit group is its own name unless it names one.
        (name.as_str(), def.limit_group.as_deref().unwrap_or(name))
    }));
    state_config.metrics = observer.clone();
    let state = State::rebuild(state_config, loaded, now_ms());
    tracing::info!(sessions, jobs, data_dir = %config.data_dir.display(), "state rebuilt from the store");

    let committer = Committer::start(writer, observer.clone());
    let mut scheduler = Scheduler::new(
        state,
        store,
        committer,
        config.heartbeat_ms,
        config.lease_ms,
        next_audit,
    );
    // Half the frame for outputs leaves room for the rest of a session view.
    scheduler.answer_budget = config.max_frame_bytes / 2;
    scheduler.retention_ms = config.retention_ms();
    scheduler.notify = outbox;
    let scheduler = scheduler.start();
    let joins = providers::join::JoinTokens::load(config.data_dir.join("join-tokens"));
    let providers = providers::config::providers(&config.providers).map_err(anyhow::Error::msg)?;
    if !providers.is_empty() {
        // Workers on this host dial the manager on loopback when it
        // listens on every address.
        let manager = match addr.ip().is_unspecified() {
            true => format!("127.0.0.1:{}", addr.port()),
            false => addr.to_string(),
        };
        providers::run::start(providers::run::Setup {
            providers,
            install: providers::run::install_id(&config.data_dir)?,
            manager,
            fingerprint: manager_tls.fingerprint.to_string(),
            joins: joins.clone(),
            scheduler: scheduler.clone(),
        });
    }
    let shared = Shared {
        scheduler: scheduler.clone(),
        tokens: tokens::LiveTokens::new(tokens::TokenSet::new(
            &config.token_name,
            &token,
            &config.tokens,
        )),
        joins,
        max_frame: config.max_frame_bytes,
        // A few answers' worth: past it, a peer is not reading.
        max_backlog: config.max_frame_bytes.saturating_mul(4),
        max_connections: listener::connections_within(
            config.max_connections,
            listener::raise_fd_limit(),
        ),
        peer_slots: peer_limit::PeerSlots::new(config.max_connections_per_peer),
        lease_ms: config.lease_ms,
        max_jobs_per_session: config.max_jobs_per_session,
        next_worker_id: Arc::new(AtomicU64::new(1)),
        metrics: metrics::Metrics::new(observer, scheduler.clone()),
    };
    let live_tokens = shared.tokens.clone();
    let http = match http_listener {
        Some(l) => Some(http::start(l, shared.clone(), &manager_tls.config)?),
        None => None,
    };
    let (stop_accepting, stop_rx) = oneshot::channel::<()>();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(aam_protocol::tls::without_tickets(
        &manager_tls.config,
    )));
    actix::spawn(listener::accept_loop(
        listener,
        shared,
        acceptor,
        async move {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(%addr, "manager listening");
    Ok(Manager {
        addr,
        http_addr,
        token,
        token_file,
        tls: manager_tls,
        scheduler,
        tokens: live_tokens,
        stop_accepting: Some(stop_accepting),
        http,
    })
}

/// `aam-manager --recover`: keeps a damaged log of the store aside and
/// replaces it by every intact entry it holds (see `aam_store::Recovery`).
pub fn recover(config: &ManagerConfig) -> anyhow::Result<aam_store::Recovery> {
    let dir = &config.data_dir;
    anyhow::ensure!(
        dir.is_dir(),
        "data directory {} does not exist",
        dir.display()
    );
    Ok(Store::recover(dir, config.sled_cache_bytes)?)
}

impl Manager {
    /// Replaces the accepted tokens by those of `config` (SIGHUP: rotation
    /// without a restart). Connections already open keep their identity.
    /// Returns the names now accepted.
    pub fn reload_tokens(&self, config: &ManagerConfig) -> anyhow::Result<Vec<String>> {
        let (token, _) = token::load_or_create(config.token.as_deref(), &config.data_dir)?;
        let set = tokens::TokenSet::new(&config.token_name, &token, &config.tokens);
        let names = set.names().into_iter().map(String::from).collect();
        self.tokens.replace(set);
        Ok(names)
    }

    /// Stops accepting connections (and HTTP requests) and waits until
    /// every change is durable.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop_accepting.take() {
            let _ = stop.send(());
        }
        if let Some(http) = self.http.take() {
            http.stop().await;
        }
        let (done, drained) = oneshot::channel();
        if self.scheduler.send(Flush { done }).await.is_ok() {
            let _ = drained.await;
        }
    }
}
