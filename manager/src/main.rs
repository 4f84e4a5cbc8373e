//! The `aam-manager` binary: parses flags and config, starts the manager,
//! reloads its tokens from the config on SIGHUP, and shuts it down cleanly
//! on SIGINT or SIGTERM; with `--recover`, it
//! salvages a damaged store log instead, reports, and exits.

use aam_manager::config::ManagerConfig;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "aam-manager",
    version,
    about = "The aam manager: schedules agent jobs onto workers"
)]
struct Args {
    /// Address to listen on [default: 127.0.0.1:7410]
    #[arg(long)]
    listen: Option<String>,
    /// Address of the HTTP API and dashboard, or "off" [default: 127.0.0.1:7411]
    #[arg(long)]
    http: Option<String>,
    /// Directory for the store and the generated token [default: ./aam-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Config file (TOML)
    #[arg(long, env = "AAM_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Token every connection must present (else AAM_TOKEN, else generated)
    #[arg(long)]
    token: Option<String>,
    /// The manager's TLS certificate (PEM, its chain after it) [default:
    /// one made at first start in DATA_DIR/tls/cert.pem]
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM)
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Another name (DNS or IP) for the generated certificate (repeatable),
    /// e.g. the address workers on other machines dial
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Mutual TLS: workers and clients must present a certificate this CA
    /// (PEM) signed
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Log format
    #[arg(long, value_enum, default_value = "text")]
    log_format: aam_manager_log::LogFormat,
    /// Salvage a damaged store log (DATA_DIR/store.wal): keep it aside as
    /// store.wal.damaged-<unix time>, keep every intact entry before and
    /// after the damage, report what could not be read, and exit
    #[arg(long)]
    recover: bool,
    /// Serve only while holding this coordination.k8s.io Lease in the
    /// namespace of the in-cluster (or kubeconfig) context, so a second
    /// manager pod never serves the same store (a StatefulSet's)
    #[arg(long, env = "AAM_KUBE_LEASE")]
    kube_lease: Option<String>,
    /// How long the Lease lasts unrenewed (renewed every third of it)
    #[arg(long, env = "AAM_KUBE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    kube_lease_duration: std::time::Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print what the manager would create on an engine, to review it
    Render {
        #[command(subcommand)]
        what: Render,
    },
}

#[derive(clap::Subcommand)]
enum Render {
    /// One worker's Job and Secret for each Kubernetes provider of the
    /// config (YAML), as a launch creates them
    Kubernetes {
        /// Only this provider
        #[arg(long)]
        provider: Option<String>,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match aam_protocol::spec::parse_duration_ms(text) {
        Ok(ms) if ms >= 1000 => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!(
            "'{text}' is not a duration of a second or more like 15s"
        )),
    }
}

mod aam_manager_log {
    #[derive(Clone, Copy, clap::ValueEnum)]
    pub enum LogFormat {
        Text,
        Json,
    }
}

mod allocator;

#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn main() {
    allocator::tune();
    // Before any other thread exists: they inherit it.
    let batch = aam_manager::cpu_policy::run_as_batch();
    // Everything this process creates (sled's files among them) holds
    // sessions' commands and outputs: readable by its owner only.
    // SAFETY: umask only sets this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let args = Args::parse();
    let filter = std::env::var("AAM_LOG").unwrap_or_else(|_| "info".into());
    aam_manager::logging::init(
        &filter,
        matches!(args.log_format, aam_manager_log::LogFormat::Json),
    );
    aam_manager::memory::on_give_back(allocator::give_back);
    if let Err(e) = allocator::start_purging() {
        tracing::warn!("freed memory goes back to the system only when the manager allocates: {e}");
    }
    if let Err(e) = batch {
        tracing::debug!("the manager's threads keep the normal CPU policy: {e}");
    }
    let mut overrides = Vec::new();
    if let Some(listen) = args.listen {
        overrides.push(("listen", listen));
    }
    if let Some(http) = args.http {
        overrides.push(("http", http));
    }
    if let Some(dir) = &args.data_dir {
        overrides.push(("data_dir", dir.display().to_string()));
    }
    if let Some(token) = args.token {
        overrides.push(("token", token));
    }
    let config_file = args.config.clone();
    for (key, file) in [
        ("tls_cert", &args.tls_cert),
        ("tls_key", &args.tls_key),
        ("client_ca", &args.client_ca),
    ] {
        if let Some(file) = file {
            overrides.push((key, file.display().to_string()));
        }
    }
    let mut config = match ManagerConfig::load(args.config.as_deref(), std::env::vars(), &overrides)
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aam-manager: {e}");
            std::process::exit(2);
        }
    };
    config.tls_san.extend(args.tls_san);
    if let Some(Command::Render {
        what: Render::Kubernetes { provider },
    }) = &args.command
    {
        match render_kubernetes(&config, provider.as_deref()) {
            Ok(text) => {
                print!("{text}");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("aam-manager: {e}");
                std::process::exit(2);
            }
        }
    }
    if args.recover {
        match aam_manager::recover(&config) {
            Ok(report) => {
                println!("{report}");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("aam-manager: recovery failed: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let system = actix::System::new();
    // Before the store is opened: another manager may be serving it.
    let lease = args.kube_lease.as_deref().map(|name| {
        system
            .block_on(aam_manager::lease::acquire(name, args.kube_lease_duration))
            .unwrap_or_else(|e| {
                eprintln!("aam-manager: {e}");
                std::process::exit(1);
            })
    });
    let started = system.block_on(aam_manager::start(config));
    let manager = match started {
        Ok(m) => m,
        Err(e) => {
            eprintln!("aam-manager: {e:#}");
            std::process::exit(1);
        }
    };
    if let Some(path) = &manager.token_file {
        tracing::info!("token in {}", path.display());
    }
    system.block_on(async move {
        actix::spawn(async move {
            let reload =
                || ManagerConfig::load(config_file.as_deref(), std::env::vars(), &overrides);
            let lost = async move {
                match lease {
                    Some(held) => held.keep().await,
                    None => std::future::pending().await,
                }
            };
            let code = tokio::select! {
                _ = wait_for_signal(&manager, reload) => 0,
                why = lost => {
                    tracing::error!("{why}: stopping, so that only one manager serves this store");
                    1
                }
            };
            tracing::info!("shutting down");
            manager.shutdown().await;
            actix::System::current().stop_with_code(code);
        });
    });
    // Runs until a signal, or a store failure, stops the system.
    let code = system.run_with_code().unwrap_or(1);
    std::process::exit(code);
}

/// The objects of `render kubernetes`: every Kubernetes provider's (or
/// the one named).
fn render_kubernetes(config: &ManagerConfig, only: Option<&str>) -> Result<String, String> {
    use aam_manager::providers::{config::Kind, kubernetes};
    let providers = aam_manager::providers::config::providers(&config.providers)?;
    let mut out = String::new();
    for p in &providers {
        let Kind::Kubernetes(opts) = &p.kind else {
            continue;
        };
        if only.is_some_and(|name| name != p.name) {
            continue;
        }
        out.push_str(&format!("# provider {}: one worker's objects\n", p.name));
        out.push_str(&kubernetes::render(p, opts, &config.listen)?);
    }
    if out.is_empty() {
        return Err(match only {
            Some(name) => format!("no Kubernetes provider named '{name}' in the config"),
            None => "the config declares no [[providers]] of kind = \"kubernetes\"".into(),
        });
    }
    Ok(out)
}

/// Waits for SIGINT or SIGTERM; on each SIGHUP meanwhile, reloads the
/// tokens from the config (`reload`). A config that does not load is
/// logged and the tokens in force are kept.
async fn wait_for_signal(
    manager: &aam_manager::Manager,
    reload: impl Fn() -> Result<ManagerConfig, aam_manager::ConfigError>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                let reloaded = reload()
                    .map_err(anyhow::Error::from)
                    .and_then(|config| manager.reload_tokens(&config));
                match reloaded {
                    Ok(names) => tracing::info!(tokens = ?names, "SIGHUP: tokens reloaded from the config"),
                    Err(e) => tracing::error!("SIGHUP: the config did not load, the tokens in force are kept: {e:#}"),
                }
            }
        }
    }
}
