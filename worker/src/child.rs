//! Running one job as a child process: its own process group, stdin from
//! /dev/null, stdout and stderr drained concurrently and streamed as they come.

use aam_protocol::messages::{Assignment, AttemptRef};
use aam_protocol::model::ExitInfo;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest output chunk sent in one message (small enough that the two
/// read buffers per job stay cheap to allocate for short jobs).
pub const CHUNK: usize = 16 * 1024;

/// How long to keep reading a job's pipes after it exited, when a process it
/// left behind still holds them open.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What a running job tells the worker.
pub enum JobEvent {
    Started { attempt: AttemptRef, pid: u32 },
    Output { attempt: AttemptRef, data: Vec<u8> },
    SpawnFailed { attempt: AttemptRef, error: String },
    Finished { attempt: AttemptRef, exit: ExitInfo },
}

/// Where events go; `send` waits when the receiver is busy (backpressure).
pub trait EventSink: Clone + 'static {
    fn send(&self, event: JobEvent) -> impl std::future::Future<Output = ()>;
}

/// Resolves a job's working directory against the worker's base directory.
pub fn resolve_workdir(base: &Path, workdir: Option<&str>) -> PathBuf {
    match workdir {
        None => base.to_path_buf(),
        Some(w) if Path::new(w).is_absolute() => PathBuf::from(w),
        Some(w) => base.join(w),
    }
}

/// Runs one assignment to its end. Call it on a `LocalSet` (an actix arbiter).
pub async fn run_job(assignment: Assignment, base_dir: PathBuf, sink: impl EventSink) {
    let attempt = AttemptRef {
        job: assignment.job,
        attempt: assignment.attempt,
    };
    let workdir = resolve_workdir(&base_dir, assignment.workdir.as_deref());
    if !workdir.is_dir() {
        let error = format!(
            "workdir {} is not a directory on this worker",
            workdir.display()
        );
        return sink.send(JobEvent::SpawnFailed { attempt, error }).await;
    }
    let Some((program, args)) = assignment.argv.split_first() else {
        let error = "empty command".to_string();
        return sink.send(JobEvent::SpawnFailed { attempt, error }).await;
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(assignment.env.iter().map(|(k, v)| (k, v)))
        .env("AAM_SESSION_ID", assignment.job.session.to_string())
        .env(
            "AAM_JOB_ID",
            format!("{}/{}", assignment.job.session, assignment.job_name),
        )
        .env("AAM_JOB_NAME", &assignment.job_name)
        .env("AAM_ATTEMPT", assignment.attempt.to_string())
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let error = format!("{program}: {e}");
            return sink.send(JobEvent::SpawnFailed { attempt, error }).await;
        }
    };
    let pid = child.id().unwrap_or(0);
    sink.send(JobEvent::Started { attempt, pid }).await;
    let stdout = child
        .stdout
        .take()
        .map(|s| tokio::task::spawn_local(pump(s, attempt, sink.clone())));
    let stderr = child
        .stderr
        .take()
        .map(|s| tokio::task::spawn_local(pump(s, attempt, sink.clone())));
    let status = child.wait().await;
    for pump in [stdout, stderr].into_iter().flatten() {
        let abort = pump.abort_handle();
        if tokio::time::timeout(PIPE_GRACE, pump).await.is_err() {
            abort.abort();
        }
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let exit = match status {
        Ok(s) => ExitInfo {
            code: s.code(),
            signal: s.signal(),
            duration_ms,
        },
        Err(e) => {
            tracing::warn!("waiting for job {}: {e}", assignment.job_name);
            ExitInfo {
                code: None,
                signal: None,
                duration_ms,
            }
        }
    };
    sink.send(JobEvent::Finished { attempt, exit }).await;
}

async fn pump(mut pipe: impl AsyncRead + Unpin, attempt: AttemptRef, sink: impl EventSink) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                sink.send(JobEvent::Output {
                    attempt,
                    data: buf[..n].to_vec(),
                })
                .await
            }
        }
    }
}

/// Sends SIGKILL to a job's whole process group.
pub fn kill_group(pid: u32) {
    if pid > 1 {
        // SAFETY: killpg only sends a signal; a stale pgid fails with ESRCH.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdirs_resolve_against_the_base() {
        let base = Path::new("/base");
        assert_eq!(resolve_workdir(base, None), PathBuf::from("/base"));
        assert_eq!(
            resolve_workdir(base, Some("sub")),
            PathBuf::from("/base/sub")
        );
        assert_eq!(resolve_workdir(base, Some("/abs")), PathBuf::from("/abs"));
    }
}
