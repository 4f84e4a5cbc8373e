//! The `aam` command-line client: submit sessions, watch and query them,
//! and `aam run` a batch on an embedded manager and worker.

mod batch;
mod client;
mod exit;
mod follow;
mod progress;
mod render;
mod run;
mod up;

use aam_protocol::messages::OutputWanted;
use aam_protocol::{now_ms, SessionId};
use clap::{Parser, Subcommand};
use client::Client;
use exit::{bad_input, unreachable, verdict};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "aam",
    version,
    about = "aam, the async agent manager: run many agent jobs at once without waiting on them"
)]
struct Cli {
    /// Manager address [default: the one `aam up` started here, else 127.0.0.1:7410]
    #[arg(long, global = true, env = "AAM_MANAGER")]
    manager: Option<String>,
    /// Token (else AAM_TOKEN, else --token-file, else the token of `aam up` here, else ./aam-data/token)
    #[arg(long, global = true, env = "AAM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a batch file; prints the session id once it is durably stored
    Submit {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Then wait for the session to end (exit code as `aam wait`)
        #[arg(long)]
        wait: bool,
        /// Submitting again with the same key returns the first session
        /// instead of starting a second one
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// All sessions, or one session's jobs
    Status {
        session: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Block until a session ends; exit 0 if every job succeeded, 1 if not
    Wait {
        session: String,
        /// Give up after this many seconds (exit 1)
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// The results summary (Markdown), or every job's whole output with --json
    Results {
        session: String,
        #[arg(long)]
        json: bool,
        /// Only the jobs that did not succeed
        #[arg(long)]
        failed: bool,
    },
    /// Run the failed, timed out, cancelled and skipped jobs of a session
    /// again as new attempts, keeping what succeeded
    Retry { session: String },
    /// A job's captured output: aam logs SESSION/JOB
    Logs {
        job: String,
        /// Keep printing output as it comes, until the job ends
        #[arg(long, short)]
        follow: bool,
    },
    /// A live view of a session's jobs until it ends
    Watch { session: String },
    /// Approve a gate (SESSION/JOB): it counts as succeeded
    Approve {
        job: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a gate (SESSION/JOB): it counts as failed
    Reject {
        job: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Cancel a session (SESSION) or one job (SESSION/JOB): jobs not started
    /// end at once; running ones get SIGTERM, then SIGKILL after the grace
    Cancel {
        target: String,
        /// Time between SIGTERM and SIGKILL [default: the job's grace, 10s]
        #[arg(long)]
        grace: Option<String>,
        /// Return at once instead of when the running jobs have stopped
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every agent jobs can name: from the config and from agent
    /// definition files, with where each comes from
    Agents {
        #[arg(long)]
        json: bool,
    },
    /// Remove finished sessions older than the retention (or --older-than)
    /// with their outputs, now, and say what was freed
    Gc {
        /// Age instead of the configured retention (e.g. 7d, 12h, 0s)
        #[arg(long)]
        older_than: Option<String>,
    },
    /// Connected workers
    Workers {
        #[arg(long)]
        json: bool,
    },
    /// All sessions
    Sessions {
        #[arg(long)]
        json: bool,
    },
    /// Start a manager and a local worker in the background (state, token
    /// and logs under ./.aam); aam commands run here then use them
    Up {
        /// Jobs run at once [default: number of CPUs]
        #[arg(long)]
        slots: Option<u32>,
        /// Manager config file (for agents and defaults)
        #[arg(long, env = "AAM_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Stop what `aam up` started here, letting running jobs finish briefly
    Down,
    /// The background process of `aam up`
    #[command(name = "__serve", hide = true)]
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        slots: Option<u32>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a batch on an embedded manager and worker, show progress, print results
    Run {
        file: PathBuf,
        /// Jobs run at once [default: number of CPUs]
        #[arg(long)]
        slots: Option<u32>,
        /// Where the embedded manager keeps its state
        #[arg(long, default_value = ".aam")]
        data_dir: PathBuf,
        /// Manager config file (for agents)
        #[arg(long, env = "AAM_CONFIG")]
        config: Option<PathBuf>,
        /// Print the results as JSON instead of Markdown
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    // Quiet by default: the CLI's own output is the interface. (The
    // background process of `aam up` is started with AAM_LOG=info.)
    aam_manager::logging::init(
        &std::env::var("AAM_LOG").unwrap_or_else(|_| "warn".into()),
        false,
    );
    let code = match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aam: {e:#}");
            exit::code_of(&e)
        }
    };
    std::process::exit(code);
}

fn execute(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Up { slots, config } => return up::up(slots, config),
        Command::Down => return up::down(),
        Command::Serve {
            data_dir,
            slots,
            config,
        } => return up::serve(data_dir, slots, config),
        _ => {}
    }
    if let Command::Run {
        file,
        slots,
        data_dir,
        config,
        json,
    } = cli.command
    {
        return run::run(run::RunArgs {
            file,
            slots,
            data_dir,
            config,
            json,
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(remote(cli))
}

/// Where to reach the manager and how to authenticate: flags and
/// environment first, then a manager `aam up` started in this directory,
/// then the defaults of a plain `aam-manager`.
fn endpoint(cli: &Cli) -> anyhow::Result<(String, String)> {
    let local = up::Local::here();
    let started_here = cli.manager.is_none() && local.addr_file().exists();
    let addr = match (&cli.manager, started_here) {
        (Some(m), _) => m.clone(),
        (None, true) => local.addr()?,
        (None, false) => aam_protocol::DEFAULT_MANAGER_ADDR.to_string(),
    };
    if let Some(t) = &cli.token {
        return Ok((addr, t.clone()));
    }
    let path = match &cli.token_file {
        Some(p) => p.clone(),
        None if started_here => local.token_file(),
        None => {
            let default = PathBuf::from("aam-data/token");
            if !default.exists() {
                return Err(unreachable(format!(
                    "no token to authenticate to the manager at {addr}: pass --token or --token-file, or set AAM_TOKEN (the manager writes its token to DATA_DIR/token), or start one here with `aam up`"
                )));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| unreachable(format!("reading token file {}: {e}", path.display())))?;
    Ok((addr, text.trim().to_string()))
}

fn session_arg(s: &str) -> anyhow::Result<SessionId> {
    s.parse::<SessionId>().map_err(|e| bad_input(e.to_string()))
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

async fn remote(cli: Cli) -> anyhow::Result<i32> {
    // Check what can be checked locally before dialing.
    let submit_batch = match &cli.command {
        Command::Submit { file, .. } => Some(batch::load(file)?),
        _ => None,
    };
    let (addr, token) = endpoint(&cli)?;
    let mut client = Client::connect(&addr, &token).await?;
    match cli.command {
        Command::Submit {
            file,
            json,
            wait,
            idempotency_key,
        } => {
            let batch = submit_batch.expect("loaded above");
            let name = batch.name.clone();
            let submitted = client.submit(&file, batch, idempotency_key).await?;
            let session = submitted.session;
            if json {
                print_json(&serde_json::json!({
                    "session": session.to_string(),
                    "name": name,
                    "jobs": submitted.jobs,
                    "existing": submitted.existing,
                    "estimate": render::estimate_json(&submitted.estimate),
                }));
            } else {
                println!("{session}");
                // The id alone on stdout (for scripts); the estimate aside.
                eprintln!("{session}: {}", render::estimate_line(&submitted.estimate));
            }
            if wait {
                let summary = progress::wait(&mut client, session, None).await?;
                return Ok(verdict(&summary));
            }
            Ok(0)
        }
        Command::Status {
            session: None,
            json,
        }
        | Command::Sessions { json } => {
            let list = client.sessions().await?;
            if json {
                print_json(&list.iter().map(render::summary_json).collect());
            } else {
                print!("{}", render::sessions_table(&list));
            }
            Ok(0)
        }
        Command::Status {
            session: Some(id),
            json,
        } => {
            let view = client
                .session(session_arg(&id)?, OutputWanted::None)
                .await?;
            if json {
                print_json(&render::session_json(&view, false));
            } else {
                print!("{}", render::session_table(&view));
            }
            Ok(0)
        }
        Command::Wait { session, timeout } => {
            let session = session_arg(&session)?;
            let timeout = match timeout {
                Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
                Some(t) => {
                    return Err(bad_input(format!(
                        "--timeout {t} is not a number of seconds"
                    )))
                }
                None => None,
            };
            let summary = progress::wait(&mut client, session, timeout).await?;
            Ok(verdict(&summary))
        }
        Command::Results {
            session,
            json,
            failed,
        } => {
            show_results(&mut client, session_arg(&session)?, json, failed).await?;
            Ok(0)
        }
        Command::Retry { session } => {
            let session = session_arg(&session)?;
            let jobs = client.retry(session).await?;
            println!(
                "{session}: running {} jobs again: {}",
                jobs.len(),
                jobs.join(", ")
            );
            Ok(0)
        }
        Command::Cancel {
            target,
            grace,
            no_wait,
            json,
        } => {
            let (session, job) = match target.split_once('/') {
                Some((s, j)) => (session_arg(s)?, Some(j.to_string())),
                None => (session_arg(&target)?, None),
            };
            let grace_ms = grace
                .map(|g| {
                    aam_protocol::spec::parse_duration_ms(&g)
                        .map_err(|e| bad_input(format!("--grace: {e}")))
                })
                .transpose()?;
            let ended = client.cancel(session, job, grace_ms, !no_wait).await?;
            if json {
                print_json(
                    &serde_json::json!({"cancelled": ended.cancelled, "stopped": ended.stopped}),
                );
            } else {
                let verb = if no_wait { "stopping" } else { "stopped" };
                println!(
                    "{target}: {} cancelled before they started, {} {verb}",
                    ended.cancelled.len(),
                    ended.stopped.len()
                );
                for name in &ended.stopped {
                    println!("  {verb}: {name}");
                }
            }
            Ok(0)
        }
        Command::Logs { job, follow } => {
            let (session, name) = job
                .split_once('/')
                .ok_or_else(|| bad_input(format!("'{job}' is not SESSION/JOB")))?;
            client.reconnect_when_lost();
            follow::logs(&mut client, session_arg(session)?, name, follow).await?;
            Ok(0)
        }
        Command::Approve { job, comment } => decide(&mut client, &job, true, comment).await,
        Command::Reject { job, comment } => decide(&mut client, &job, false, comment).await,
        Command::Watch { session } => {
            client.reconnect_when_lost();
            let summary = follow::watch(&mut client, session_arg(&session)?).await?;
            Ok(verdict(&summary))
        }
        Command::Gc { older_than } => {
            let older_than_ms = older_than
                .map(|d| {
                    aam_protocol::spec::parse_duration_ms(&d)
                        .map_err(|e| bad_input(format!("--older-than: {e}")))
                })
                .transpose()?;
            let removed = client.gc(older_than_ms).await?;
            let ids: Vec<String> = removed.sessions.iter().map(|s| s.to_string()).collect();
            println!(
                "removed {} sessions ({} jobs, {} bytes of output){}{}",
                ids.len(),
                removed.jobs,
                removed.output_bytes,
                if ids.is_empty() { "" } else { ": " },
                ids.join(", ")
            );
            Ok(0)
        }
        Command::Agents { json } => {
            let known = client.agents().await?;
            if json {
                print_json(&render::agents_json(&known.agents, &known.problems));
            } else {
                print!("{}", render::agents_table(&known.agents, &known.problems));
            }
            Ok(0)
        }
        Command::Workers { json } => {
            let list = client.workers().await?;
            if json {
                print_json(&render::workers_json(&list));
            } else {
                print!("{}", render::workers_table(&list, now_ms()));
            }
            Ok(0)
        }
        Command::Run { .. } | Command::Up { .. } | Command::Down | Command::Serve { .. } => {
            unreachable!("handled before connecting")
        }
    }
}

/// Prints a session's results: Markdown with each job's output tail, or
/// JSON with the whole captured outputs.
pub async fn show_results(
    client: &mut Client,
    session: SessionId,
    json: bool,
    only_failed: bool,
) -> anyhow::Result<()> {
    let output = if json {
        OutputWanted::All
    } else {
        OutputWanted::Tail(4096)
    };
    let view = client.session(session, output).await?;
    if json {
        let mut doc = render::session_json(&view, true);
        if only_failed {
            if let Some(jobs) = doc["jobs"].as_array_mut() {
                jobs.retain(|j| j["status"] != "succeeded");
            }
        }
        print_json(&doc);
    } else {
        print!("{}", render::results_markdown(&view, only_failed));
    }
    Ok(())
}

/// `aam approve` / `aam reject`.
async fn decide(
    client: &mut Client,
    job: &str,
    approve: bool,
    comment: Option<String>,
) -> anyhow::Result<i32> {
    let (session, name) = job
        .split_once('/')
        .ok_or_else(|| bad_input(format!("'{job}' is not SESSION/JOB")))?;
    client
        .decide(session_arg(session)?, name, approve, comment)
        .await?;
    println!("{job}: {}", if approve { "approved" } else { "rejected" });
    Ok(0)
}
