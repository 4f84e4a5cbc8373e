//! The `aam-worker` binary: parses flags, connects to the manager and runs
//! jobs until SIGINT or SIGTERM.

use aam_worker::agent::{Drain, KillAll};
use aam_worker::worktree::cache::CacheConfig;
use aam_worker::WorkerConfig;
use anyhow::Context as _;
use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "aam-worker",
    version,
    about = "The aam worker: runs agent jobs for a manager"
)]
struct Args {
    /// Manager address
    #[arg(long, env = "AAM_MANAGER", default_value = aam_protocol::DEFAULT_MANAGER_ADDR)]
    manager: String,
    /// Jobs run at once
    #[arg(long, default_value_t = default_slots())]
    slots: u32,
    /// Assignments accepted beyond --slots and queued here, so short jobs
    /// start without a round trip to the manager: `auto` (as many as the
    /// slots while recent jobs are short, none otherwise; one that waits
    /// here over a second goes back to the manager), or a fixed number
    #[arg(long, default_value = "auto")]
    prefetch: aam_protocol::messages::Prefetch,
    /// Name shown in `aam workers` [default: HOSTNAME-PID]
    #[arg(long)]
    name: Option<String>,
    /// A label, key=value (repeatable)
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Base directory for relative job workdirs [default: current directory]
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// The worker's own directory for jobs' git worktrees (made 0700; what
    /// is left in it is removed at start) [default:
    /// $XDG_DATA_HOME/aam/worktrees/NAME, else ~/.local/share/aam/worktrees/NAME]
    #[arg(long)]
    worktrees: Option<PathBuf>,
    /// The TCP ports jobs reserve with `ports = N` (each free when
    /// reserved, held by one job at a time on this worker)
    #[arg(long, env = "AAM_PORTS_RANGE", default_value_t = aam_worker::ports::DEFAULT_RANGE)]
    ports: aam_worker::ports::PortRange,
    /// The warm cache of workspaces' `cache` paths (kept across restarts,
    /// shared by the workers that name it; not inside --worktrees)
    /// [default: $XDG_DATA_HOME/aam/cache, else ~/.local/share/aam/cache]
    #[arg(long, env = "AAM_CACHE")]
    cache: Option<PathBuf>,
    /// Most the cache holds on disk, least recently used entries removed
    /// first: 10GiB, 500MiB, 2G (K, M, G, T: powers of 1024; KB, MB, GB,
    /// TB: of 1000)
    #[arg(long, env = "AAM_CACHE_MAX", default_value = "10GiB",
          value_parser = aam_worker::worktree::cache::parse_size)]
    cache_max: u64,
    /// Empty the cache (--cache), say what was removed, and exit
    #[arg(long)]
    clear_cache: bool,
    /// Token (else AAM_TOKEN, else --token-file)
    #[arg(long, env = "AAM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Trust this certificate or CA file (PEM) for the manager [default:
    /// DATA_DIR/tls/cert.pem next to --token-file, else ./aam-data/tls/cert.pem]
    #[arg(long, env = "AAM_CA")]
    ca: Option<PathBuf>,
    /// Trust exactly the manager certificate of this SHA-256 fingerprint
    /// (hex, colons optional, `sha256:` optional; the manager logs it)
    #[arg(long, env = "AAM_FINGERPRINT")]
    fingerprint: Option<String>,
    /// This worker's certificate (PEM), for a manager that requires one
    #[arg(long, env = "AAM_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The key of --cert (PEM)
    #[arg(long, env = "AAM_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Leave once there has been nothing to run for `--idle-timeout`, when
    /// the manager agrees (it assigns a leaving worker nothing more): for
    /// workers launched on demand.
    #[arg(long)]
    once_idle: bool,
    /// How long `--once-idle` waits with nothing to run.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// On SIGTERM, how long running jobs may go on before they are stopped
    /// (and requeued); a second SIGTERM or a SIGINT stops them at once
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: std::time::Duration,
    /// The container engine of `isolation = "container"` jobs: auto
    /// (podman, else docker), none, podman, docker, or a path to either
    #[arg(long, env = "AAM_CONTAINER_ENGINE", default_value = "auto")]
    container_engine: String,
    /// Log format
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    aam_protocol::spec::parse_duration_ms(s).map(std::time::Duration::from_millis)
}

fn default_slots() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label '{s}' is not key=value"))?;
    if k.is_empty() {
        return Err(format!("label '{s}' has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }
}

/// How the worker trusts the manager: flags, else the certificate of a
/// manager on this machine (next to the token file, else ./aam-data).
fn tls(args: &Args) -> anyhow::Result<aam_protocol::tls::ClientTls> {
    use aam_protocol::tls::{choose_trust, ClientTls, Identity, CERT_FILE};
    let mut candidates = Vec::new();
    if let Some(dir) = args.token_file.as_ref().and_then(|f| f.parent()) {
        candidates.push(dir.join(CERT_FILE));
    }
    candidates.push(PathBuf::from("aam-data").join(CERT_FILE));
    let trust = choose_trust(
        &args.manager,
        args.ca.as_deref(),
        args.fingerprint.as_deref(),
        &candidates,
    )
    .map_err(anyhow::Error::msg)?;
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(Identity {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    ClientTls::new(&trust, identity.as_ref()).map_err(anyhow::Error::msg)
}

fn config(args: Args) -> anyhow::Result<WorkerConfig> {
    let tls = tls(&args)?;
    let token = match (args.token, args.token_file) {
        (Some(t), _) => t,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading token file {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("no token: pass --token, --token-file or set AAM_TOKEN"),
    };
    anyhow::ensure!(args.slots >= 1, "--slots must be at least 1");
    let workdir = match args.workdir {
        Some(w) => w,
        None => std::env::current_dir()?,
    };
    anyhow::ensure!(
        workdir.is_dir(),
        "--workdir {} is not a directory",
        workdir.display()
    );
    let name = args.name.unwrap_or_else(default_name);
    let container_engine =
        aam_worker::container::detect(&args.container_engine).map_err(anyhow::Error::msg)?;
    let worktrees = match args.worktrees {
        // Relative to where the worker starts, like --workdir.
        Some(dir) => Some(std::path::absolute(dir)?),
        None => aam_worker::worktree::default_root(&name),
    };
    let cache = cache_config(args.cache, args.cache_max, worktrees.as_deref())?;
    Ok(WorkerConfig {
        manager: args.manager,
        token,
        name,
        slots: args.slots,
        prefetch: args.prefetch,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        workdir,
        worktrees,
        max_frame: aam_protocol::codec::DEFAULT_MAX_FRAME,
        ports: args.ports,
        cache,
        tls,
        container_engine,
        idle_exit: args.once_idle.then_some(args.idle_timeout),
    })
}

/// The cache's place (made absolute) and cap; refused inside the worktree
/// root, which is cleared at each start.
fn cache_config(
    dir: Option<PathBuf>,
    max_bytes: u64,
    worktrees: Option<&std::path::Path>,
) -> anyhow::Result<Option<CacheConfig>> {
    let dir = match dir {
        Some(dir) => std::path::absolute(dir)?,
        None => match aam_worker::worktree::cache::default_dir() {
            Some(dir) => dir,
            None => return Ok(None),
        },
    };
    if let Some(root) = worktrees.filter(|root| dir.starts_with(root)) {
        anyhow::bail!(
            "--cache {} is inside the worktree root {} (cleared at each start): give it a place of its own",
            dir.display(),
            root.display()
        );
    }
    Ok(Some(CacheConfig { dir, max_bytes }))
}

/// `--clear-cache`: empties the cache and says what went.
fn clear_cache(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => aam_worker::worktree::cache::default_dir()
            .context("no cache directory: pass --cache DIR (or set HOME)")?,
    };
    if !dir.exists() {
        println!(
            "aam-worker: the cache {} is empty (it does not exist)",
            dir.display()
        );
        return Ok(());
    }
    let cleared = aam_worker::worktree::cache::clear(&dir);
    println!(
        "aam-worker: cleared the cache {}: removed {} entries ({})",
        dir.display(),
        cleared.entries,
        aam_worker::worktree::cache::format_size(cleared.bytes)
    );
    Ok(())
}

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "permission-prompt")
    {
        aam_worker::permission_prompt::main_from_args();
    }
    let args = Args::parse();
    init_logging(args.log_format == "json");
    if args.clear_cache {
        let code = match clear_cache(args.cache) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("aam-worker: {e:#}");
                1
            }
        };
        std::process::exit(code);
    }
    let drain_timeout = args.drain_timeout;
    let config = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aam-worker: {e:#}");
            std::process::exit(2);
        }
    };
    // Before any thread exists: the watchdog is forked.
    if let Err(e) = aam_worker::orphans::start_watchdog(&config.name) {
        tracing::warn!("no watchdog: a job's descendants may outlive a killed worker ({e})");
    }
    let system = actix::System::new();
    system.block_on(async move {
        let worker = aam_worker::start(config);
        actix::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
            let drain = tokio::select! {
                _ = int.recv() => false,
                _ = term.recv() => true,
            };
            if drain {
                let (done, drained) = tokio::sync::oneshot::channel();
                worker.do_send(Drain {
                    timeout: drain_timeout,
                    grace: std::time::Duration::from_secs(5),
                    done,
                });
                // Jobs, their stops and the manager's acknowledgements all
                // get a bounded time; a second signal cuts it short.
                let bound = drain_timeout + std::time::Duration::from_secs(15);
                tokio::select! {
                    _ = drained => tracing::info!("drained"),
                    _ = tokio::time::sleep(bound) => tracing::warn!("drain did not finish in {bound:?}"),
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            let killed = worker.send(KillAll).await.unwrap_or(0);
            tracing::info!(killed, "worker stopping");
            actix::System::current().stop();
        });
    });
    // Runs until a signal, or a fatal refusal by the manager, stops the system.
    let code = system.run_with_code().unwrap_or(1);
    aam_worker::scratch::remove();
    std::process::exit(code);
}
