//! The command line as clap parses it: the commands, their arguments and
//! the flags that say where the manager is.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "aam",
    version,
    about = "aam, the async agent manager: run many agent jobs at once without waiting on them"
)]
pub struct Cli {
    #[command(flatten)]
    pub manager_flags: ManagerFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the manager is and how to authenticate to it: flags every
/// command takes (`endpoint.rs` resolves them).
#[derive(Args, Clone)]
pub struct ManagerFlags {
    /// Manager address [default: the one `aam up` started here, else 127.0.0.1:7410]
    #[arg(long, global = true, env = "AAM_MANAGER")]
    pub manager: Option<String>,
    /// Token (else AAM_TOKEN, else --token-file, else the token of `aam up` here, else ./aam-data/token)
    #[arg(long, global = true, env = "AAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token
    #[arg(long, global = true, env = "AAM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust this certificate or CA file (PEM) for the manager [default:
    /// tls/cert.pem next to the token file, of `aam up` here, else ./aam-data/tls/cert.pem]
    #[arg(long, global = true, env = "AAM_CA")]
    pub ca: Option<PathBuf>,
    /// Trust exactly the manager certificate of this SHA-256 fingerprint
    /// (hex, colons optional, `sha256:` optional; the manager logs it)
    #[arg(long, global = true, env = "AAM_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Our certificate (PEM), for a manager that requires one (--client-ca)
    #[arg(long, global = true, env = "AAM_CERT")]
    pub cert: Option<PathBuf>,
    /// The key of --cert (PEM)
    #[arg(long, global = true, env = "AAM_KEY")]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand)]
// Each command's arguments are built only when that command is parsed:
// building all of them cost every `aam` start about 50 page faults
// (about 0.2 ms here, BENCHMARKS.md, twelfth session), for one command used.
#[command(defer = true)]
pub enum Command {
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
        /// Show the session's jobs from this one on (0 is the first)
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Show at most this many jobs (0: all of them); counts are always whole
        #[arg(long, default_value_t = crate::cmd::status::DEFAULT_LIMIT)]
        limit: u32,
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
    /// A job's captured output: aam logs SESSION/JOB (an agent job's as a
    /// readable transcript)
    Logs {
        job: String,
        /// Keep printing output as it comes, until the job ends
        #[arg(long, short)]
        follow: bool,
        /// The bytes as captured, also for an agent job
        #[arg(long)]
        raw: bool,
    },
    /// Ask an agent job (SESSION/JOB) a follow-up: a new session of one job
    /// that resumes its agent's conversation with PROMPT; prints its id
    Continue {
        job: String,
        prompt: String,
        #[arg(long)]
        json: bool,
    },
    /// Say something to a running agent (SESSION/JOB), or to every running
    /// agent of a session that takes input (SESSION): one more message of
    /// its conversation, on its stdin
    Say {
        target: String,
        /// The message (or --file)
        text: Option<String>,
        /// Read the message from this file
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Allow a running agent's permission request (SESSION/JOB, and the
    /// request's id when more than one is open; `aam status` lists them)
    Allow {
        job: String,
        request: Option<u32>,
        /// Allow the same tool for the rest of this job
        #[arg(long)]
        always: bool,
        #[arg(long)]
        json: bool,
    },
    /// Deny a running agent's permission request (SESSION/JOB [REQUEST]);
    /// the agent is told the message
    Deny {
        job: String,
        request: Option<u32>,
        /// What the agent is told [default: denied by TOKEN]
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A worktree job's patch (SESSION/JOB), as `git format-patch` wrote
    /// it (for a job of variants, its winner's)
    Diff {
        job: String,
        /// The branch, commits, diffstat and patch as JSON
        #[arg(long)]
        json: bool,
    },
    /// Apply a worktree job's patch (SESSION/JOB) in this directory's
    /// repository as a new branch named like the job's, and check it out
    Apply {
        job: String,
        #[arg(long)]
        json: bool,
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
    /// The audit log (admin token): who did, or was refused, what and when
    Audit {
        /// Only records of this recent past (e.g. 1h, 7d)
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Connected workers
    Workers {
        #[arg(long)]
        json: bool,
    },
    /// Shared resources: capacity, in use and who holds them
    Resources {
        #[arg(long)]
        json: bool,
    },
    /// Accounts: paused until when, running jobs, cost so far
    Accounts {
        #[arg(long)]
        json: bool,
    },
    /// Providers of workers on demand: connected, launching, last error
    Providers {
        #[arg(long)]
        json: bool,
    },
    /// All sessions
    Sessions {
        #[arg(long)]
        json: bool,
    },
    /// Serve aam's tools to an AI assistant over MCP on stdin/stdout
    /// (register it with: claude mcp add aam -- aam mcp)
    Mcp,
    /// Print shell completions: aam completions bash > ~/.local/share/bash-completion/completions/aam
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    pub file: PathBuf,
    /// Jobs run at once [default: number of CPUs]
    #[arg(long)]
    pub slots: Option<u32>,
    /// Where the embedded manager keeps its state
    #[arg(long, default_value = ".aam")]
    pub data_dir: PathBuf,
    /// Manager config file (for agents)
    #[arg(long, env = "AAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the results as JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
}
