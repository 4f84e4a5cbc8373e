//! Jobs in containers (`isolation = "container"`): the host's container
//! engine found at start (podman, else docker), the containers this worker
//! left behind removed, and one container per job (`job.rs`) that its
//! setup, process, verify and teardown are all run in with the engine's
//! `exec`, so what the setup starts is there for the job. A container's
//! network is `none`, `open`, or an internal network whose only way out is
//! a proxy this worker runs for the job (`network.rs`, `proxy.rs`).
//!
//! Stopping needs nothing of its own: every process run in the container
//! carries the job's `AAM_RUN_ID`, and the worker (root, or the owner of a
//! rootless engine's processes) finds and signals them like the job's
//! other processes (`teardown.rs`).

pub mod forward;
pub mod job;
pub mod network;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Longest an engine command of ours may take (an image is never pulled:
/// `--pull=never`).
const ENGINE_TIME: Duration = Duration::from_secs(120);

/// The label on every container a worker makes (its value: the worker's
/// name), so the ones a dead worker left are found at its next start.
pub const WORKER_LABEL: &str = "aam.worker";

/// A container engine on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Engine {
    /// The engine's command (`podman`, `docker`, or a path).
    pub program: PathBuf,
    pub kind: EngineKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Podman,
    Docker,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }
}

/// The engine `choice` names (`--container-engine`): `auto` (podman if it
/// runs, else docker), `none`, `podman`, `docker`, or a path to either.
/// None when there is none to use (a named one that does not run is an
/// error: the user asked for it).
pub fn detect(choice: &str) -> Result<Option<Engine>, String> {
    let runs = |program: &Path| {
        std::process::Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).to_ascii_lowercase())
    };
    match choice {
        "none" => Ok(None),
        "auto" => Ok([EngineKind::Podman, EngineKind::Docker]
            .into_iter()
            .find_map(|kind| {
                let program = PathBuf::from(kind.as_str());
                runs(&program).map(|_| Engine { program, kind })
            })),
        named => {
            let program = PathBuf::from(named);
            let version = runs(&program).ok_or_else(|| {
                format!(
                    "--container-engine {named}: it does not run here (`{named} --version` failed)"
                )
            })?;
            let kind = if version.contains("docker") {
                EngineKind::Docker
            } else {
                EngineKind::Podman
            };
            Ok(Some(Engine { program, kind }))
        }
    }
}

/// The worker's engine and what its jobs' containers share.
#[derive(Debug)]
pub struct Containers {
    pub engine: Engine,
    /// This worker's name (in its containers' names).
    pub worker: String,
    /// The value of its containers' `aam.worker` label: its name and its
    /// worktree root (`NAME:ROOT`), which one worker process holds at a
    /// time, so what it clears at start is its own alone.
    pub label: String,
    /// A static init to keep a job's container alive (catatonit's pause
    /// mode), mounted into it: any image works, even one without `sleep`.
    pause: Option<PathBuf>,
    /// The internal network of egress-limited containers, made once.
    egress_net: tokio::sync::OnceCell<Result<network::EgressNet, String>>,
}

/// Where podman keeps catatonit, which pauses with `-P`.
const CATATONIT: [&str; 2] = ["/usr/libexec/podman/catatonit", "/usr/bin/catatonit"];

impl Containers {
    pub fn new(engine: Engine, worker: &str, root: Option<&Path>) -> Containers {
        let pause = CATATONIT
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p)))
            .find(|p| p.is_file());
        Containers {
            engine,
            worker: worker.to_string(),
            label: format!(
                "{worker}:{}",
                root.map(|r| r.display().to_string()).unwrap_or_default()
            ),
            pause,
            egress_net: tokio::sync::OnceCell::new(),
        }
    }

    /// An engine command (stdin closed, output captured).
    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.engine.program);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs an engine command to its end: its stdout, or its last line of
    /// error (the engine's own words).
    async fn run(&self, args: &[String]) -> Result<String, String> {
        let mut command = self.command();
        command.args(args);
        let program = self.engine.program.display().to_string();
        let what = args.first().map_or("", String::as_str);
        let out = tokio::time::timeout(ENGINE_TIME, command.output())
            .await
            .map_err(|_| format!("`{program} {what}` took longer than {ENGINE_TIME:?}"))?
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no error output");
        Err(format!("`{program} {what}` failed: {line}"))
    }

    /// A running container's address on its network.
    pub async fn address_of(&self, name: &str) -> Result<std::net::IpAddr, String> {
        let format = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
        let args = ["inspect", "--format", format, name].map(String::from);
        let out = self.run(&args).await?;
        out.split_whitespace()
            .find_map(|a| a.parse().ok())
            .ok_or_else(|| format!("container {name} has no address ({})", out.trim()))
    }

    /// The egress network, made on first use.
    pub async fn egress_net(&self) -> Result<&network::EgressNet, String> {
        let made = self.egress_net.get_or_init(|| network::ensure(self)).await;
        made.as_ref().map_err(Clone::clone)
    }

    /// Removes every container with this worker's label (left by an
    /// earlier process of it that died): how many.
    pub async fn remove_leftovers(&self) -> usize {
        let filter = format!("label={WORKER_LABEL}={}", self.label);
        let listed = self
            .run(&["ps".into(), "-aq".into(), "--filter".into(), filter])
            .await;
        let ids: Vec<String> = match listed {
            Ok(out) => out.split_whitespace().map(String::from).collect(),
            Err(why) => {
                tracing::warn!("could not list containers left by an earlier worker: {why}");
                return 0;
            }
        };
        if ids.is_empty() {
            return 0;
        }
        let mut args = vec!["rm".to_string(), "-f".into()];
        args.extend(ids.iter().cloned());
        match self.run(&args).await {
            Ok(_) => ids.len(),
            Err(why) => {
                tracing::warn!("could not remove containers left by an earlier worker: {why}");
                0
            }
        }
    }
}
