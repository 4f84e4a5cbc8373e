//! A worktree job's `verify`: its argv run in the worktree after the job
//! ended, before the commit, like a job of its own (process group, stdin
//! from /dev/null, its pipes drained), within a time limit and stopped by a
//! stop order; it passes when it exits 0. What it printed last is kept.

use crate::child::{next_stop, stop_leftovers, EventSink, JobEvent, StopOrder};
use crate::leader::{self, Leader};
use crate::teardown::stop_job;
use aam_protocol::messages::{AttemptRef, Stopped};
use aam_protocol::worktree::VerifyOutcome;
use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

/// Bytes of a verify's output kept (its end: a test run's summary).
pub const OUTPUT_TAIL: usize = 16 * 1024;

/// How long to keep reading a verify's pipes after it ended, when a
/// process it left holds them open.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What a verify runs, where, with what, and for how long.
pub struct VerifyCommand<'a> {
    /// What it is, for its notes (`verify`, `setup`, `teardown`).
    pub what: &'a str,
    pub argv: &'a [String],
    /// The job's container, which it runs in, if it has one.
    pub container: Option<&'a crate::container::job::JobContainer>,
    pub dir: &'a Path,
    pub env: &'a [(String, String)],
    /// The job's `AAM_RUN_ID=...` entry: the verify's processes are the
    /// job's as far as a stop or the worker's exit are concerned.
    pub marker: &'a str,
    pub timeout: Duration,
    /// SIGTERM-to-SIGKILL time when it is stopped or runs out of time.
    pub grace: Duration,
}

/// Runs a verify to its end: how it ended and, when a stop order ended
/// it, that stop. Its process group is reported to `sink` as the
/// attempt's (`Started`), so the worker's exit stops it too.
pub async fn run_verify(
    verify: &VerifyCommand<'_>,
    attempt: AttemptRef,
    sink: &impl EventSink,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
) -> (VerifyOutcome, Option<Stopped>) {
    let started = Instant::now();
    let outcome = |exit_code: Option<i32>, tail: String| VerifyOutcome {
        exit_code,
        passed: exit_code == Some(0),
        duration_ms: started.elapsed().as_millis() as u64,
        output_tail: tail,
    };
    let mut child = match spawn(verify) {
        Ok(child) => child,
        Err(error) => return (outcome(None, error), None),
    };
    let pid = child.id();
    sink.send(JobEvent::Started { attempt, pid }).await;
    let tail = RefCell::new(Tail::default());
    let (ended_tx, ended_rx) = oneshot::channel::<()>();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let pumps = async {
        let drains = async { tokio::join!(drain(stdout, &tail), drain(stderr, &tail)) };
        tokio::select! {
            _ = drains => {}
            // Something it left holds the pipes: read a little longer only.
            _ = async { let _ = ended_rx.await; tokio::time::sleep(PIPE_GRACE).await } => {}
        }
    };
    let ending = async {
        let end = wait_or_stop(&mut child, verify, pid, stop).await;
        let _ = ended_tx.send(());
        end
    };
    let (_, (code, stopped, note)) = tokio::join!(pumps, ending);
    let mut text = tail.into_inner().text();
    if let Some(note) = note {
        text.push_str(&note);
    }
    (outcome(code, text), stopped)
}

/// Waits for the verify's end, its time limit or a stop order, stopping
/// it for the last two: its exit code, the stop, and a note for its output.
async fn wait_or_stop(
    child: &mut Leader,
    verify: &VerifyCommand<'_>,
    pid: u32,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
) -> (Option<i32>, Option<Stopped>, Option<String>) {
    let (order, note) = tokio::select! {
        status = child.wait() => {
            // What it left running in its group goes with it.
            stop_leftovers(pid, verify.marker.to_string()).await;
            return (status.ok().and_then(|s| s.code()), None, None);
        }
        _ = tokio::time::sleep(verify.timeout) => {
            let secs = verify.timeout.as_secs();
            (None, format!("\n[aam: {} stopped after its time limit of {secs} s]\n", verify.what))
        }
        order = next_stop(stop) => {
            let note = format!("\n[aam: {} stopped: {}]\n", verify.what, order.cause.as_str());
            (Some(order), note)
        }
    };
    let (marker, grace) = (verify.marker.to_string(), verify.grace);
    let receipt = tokio::task::spawn_blocking(move || stop_job(pid, &marker, grace))
        .await
        .unwrap_or_default();
    let _ = child.wait().await;
    let stopped = order.map(|order| Stopped {
        cause: order.cause,
        receipt,
    });
    (None, stopped, Some(note))
}

/// Starts the verify: in its own process group, stdin from /dev/null.
fn spawn(verify: &VerifyCommand<'_>) -> Result<Leader, String> {
    let Some((program, args)) = verify.argv.split_first() else {
        return Err(format!("{} is an empty command", verify.what));
    };
    let (marker_key, marker_value) = verify.marker.split_once('=').unwrap_or(("AAM_RUN_ID", ""));
    let mut env = verify.env.to_vec();
    env.push((marker_key.to_string(), marker_value.to_string()));
    let mut command = match verify.container {
        Some(container) => container.exec(program, args, verify.dir, &env),
        None => {
            let mut command = leader::Command::new(program);
            command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
            command
        }
    };
    command.current_dir(verify.dir);
    // Like the job's own process: dies with the worker, in the job's cgroup.
    let _cgroup = crate::orphans::guard(&mut command, verify.marker)
        .map_err(|e| format!("[aam: {} could not start: {e}]\n", verify.what))?;
    command.spawn().map_err(|e| {
        crate::cgroup::release(verify.marker);
        format!("[aam: {} could not start: {program}: {e}]\n", verify.what)
    })
}

/// Reads a pipe to its end into the shared tail.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, tail: &RefCell<Tail>) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 8 * 1024];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        tail.borrow_mut().push(&buf[..n]);
    }
}

/// The last `OUTPUT_TAIL` bytes of an output.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        // Trimmed now and then, not on every push.
        if self.bytes.len() > 2 * OUTPUT_TAIL {
            let drop = self.bytes.len() - OUTPUT_TAIL;
            self.bytes.drain(..drop);
        }
    }

    /// The tail as text (a character cut at its start is dropped).
    fn text(mut self) -> String {
        let drop = self.bytes.len().saturating_sub(OUTPUT_TAIL);
        self.bytes.drain(..drop);
        let text = String::from_utf8_lossy(&self.bytes);
        text.trim_start_matches('\u{FFFD}').to_string()
    }
}
