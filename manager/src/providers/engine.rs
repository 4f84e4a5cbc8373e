//! The small interface every kind of provider implements (podman, Slurm,
//! ...): launch a worker, list everything this install's provider has on
//! the engine, ask about one of them, stop one. The loop in `run` knows
//! nothing else about an engine, so a new kind is one file more.

use std::future::Future;
use std::pin::Pin;

/// What an engine's call yields: its answer, or its own words for why not
/// (`sbatch: error: invalid partition specified: gpu`).
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + 'a>>;

/// One worker to start.
pub struct WorkerSpec<'a> {
    /// The worker's name (`PROVIDER-8HEX`), its `--name`.
    pub worker: &'a str,
    /// Where it dials the manager, and the certificate it trusts there.
    pub manager: &'a str,
    pub fingerprint: &'a str,
    /// Its join token: handed over in the environment, never in an argv.
    pub token: &'a str,
}

/// Where one launched worker is, in the engine's words.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Queued or starting (`PENDING: Resources`, `created`).
    Pending(String),
    Running,
    /// Gone or going (`FAILED: NonZeroExitCode, exit 1:0`, `exited`).
    Ended(String),
}

/// One worker as the engine lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    /// The engine's id for it: the container's name, the Slurm job id.
    pub handle: String,
    /// The worker's name, read back from what the engine keeps.
    pub worker: String,
    pub phase: Phase,
}

pub trait Engine {
    /// Starts one worker; the engine's handle for it.
    fn launch<'a>(&'a self, spec: &'a WorkerSpec<'a>) -> EngineFuture<'a, String>;
    /// Everything this install's provider has on the engine (found by a
    /// label or a name that carries the install id), ended ones included
    /// while the engine still shows them.
    fn list(&self) -> EngineFuture<'_, Vec<Listed>>;
    /// One worker's state, when the listing lost it (to say why it went);
    /// `None` if the engine no longer knows it.
    fn status<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, Option<Listed>>;
    /// Stops one worker (and removes what it leaves on the engine).
    fn stop<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, ()>;
    /// Whether an ended worker this manager does not know must be removed
    /// (a container left behind), or only ages out of the engine's view (a
    /// Slurm job).
    fn removes_ended(&self) -> bool {
        false
    }
}

/// The name every engine knows this install's worker by:
/// `aam-INSTALL-WORKER`.
pub fn engine_name(install: &str, worker: &str) -> String {
    format!("aam-{install}-{worker}")
}

/// The worker's name back from `engine_name`, if it is one of this
/// install's.
pub fn worker_of<'a>(install: &str, name: &'a str) -> Option<&'a str> {
    name.strip_prefix("aam-")?
        .strip_prefix(install)?
        .strip_prefix('-')
}

/// Runs one of the engine's commands: its stdout, or the last line of its
/// stderr as the error (`podman run: ...`, `sbatch: error: ...`). The
/// manager's own `AAM_*` settings are not passed on (sbatch exports its
/// environment to the worker, which must get only what `env` gives it).
pub async fn run_command(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<String, String> {
    let mut cmd = crate::cpu_policy::command(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AAM_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let said = String::from_utf8_lossy(&out.stderr);
        let line = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let name = std::path::Path::new(program)
            .file_name()
            .map_or(program.into(), |n| n.to_string_lossy());
        Err(match args.first() {
            // The program said who it is (`sbatch: error: ...`).
            _ if line.starts_with(&format!("{name}:")) => line.to_string(),
            Some(verb) if !verb.starts_with('-') => format!("{name} {verb}: {line}"),
            _ => format!("{name}: {line}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_name_reads_back_to_its_worker_for_its_install_only() {
        let name = engine_name("ab12cd34", "pods-0a1b2c3d");
        assert_eq!(worker_of("ab12cd34", &name), Some("pods-0a1b2c3d"));
        assert_eq!(worker_of("ab12cd35", &name), None);
        assert_eq!(worker_of("ab12", &name), None);
    }
}
