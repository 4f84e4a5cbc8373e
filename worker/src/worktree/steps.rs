//! A worktree job's workspace steps around its process (`workspace.rs`
//! reads them): `setup` in the new worktree before the job, `teardown`
//! when it ends. Each runs like a verify (its own process group, the job's
//! environment and ports, a time limit) and its output goes to the job's
//! log under its own heading (`== setup ==`, `== teardown ==`), with
//! `== job ==` before the job's own output. The warm cache's lines go
//! under `== setup ==` too: hits before the setup's output, what became
//! of the misses (saved or why not) after it.

use super::cache::SetupEnd;
use super::job::JobTree;
use super::verify::{run_verify, VerifyCommand};
use crate::child::{EventSink, JobEvent, StopOrder};
use aam_protocol::messages::{Assignment, Stopped};
use aam_protocol::model::ExitInfo;
use aam_protocol::worktree::VerifyOutcome;
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest line of a failed setup's output quoted in its reason.
const REASON_LINE: usize = 200;

/// How a setup that did not pass ended the attempt.
pub struct SetupFailure {
    pub exit: ExitInfo,
    /// A stop order (a cancel) that ended it.
    pub stopped: Option<Stopped>,
    /// `setup failed: exit 3 (its last line)`; none when it was stopped.
    pub reason: Option<String>,
}

/// Runs the workspace's setup (after its copies, listed in the log): its
/// time in ms when it ran, and how it failed when it did not pass.
pub async fn setup<S: EventSink>(
    tree: &JobTree,
    assignment: &Assignment,
    marker: &str,
    sink: &S,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
) -> (Option<u64>, Option<SetupFailure>) {
    let Some(workspace) = &tree.workspace else {
        return (None, None);
    };
    let mut log = String::from("== setup ==\n");
    push_lines(&mut log, &tree.copied);
    push_lines(&mut log, &tree.cached.lines);
    let Some(argv) = &workspace.setup else {
        let saved = save_cache(tree, SetupEnd::None).await;
        push_lines(&mut log, &saved);
        if !tree.copied.is_empty() || !tree.cached.slots.is_empty() {
            log.push_str("== job ==\n");
            write_log(sink, assignment, log).await;
        }
        return (None, None);
    };
    let timeout = workspace.setup_timeout;
    let (outcome, stopped) =
        run_step("setup", argv, tree, assignment, marker, timeout, sink, stop).await;
    push_output(&mut log, &outcome.output_tail);
    let ms = outcome.duration_ms;
    let passed = outcome.passed && stopped.is_none();
    let end = if passed {
        SetupEnd::Passed
    } else {
        SetupEnd::NotPassed
    };
    push_lines(&mut log, &save_cache(tree, end).await);
    if passed {
        log.push_str("== job ==\n");
        write_log(sink, assignment, log).await;
        return (Some(ms), None);
    }
    let reason = stopped.is_none().then(|| failure_reason(&outcome, timeout));
    log.push_str(&format!(
        "== {} ==\n",
        reason.as_deref().unwrap_or("setup stopped")
    ));
    write_log(sink, assignment, log).await;
    let exit = ExitInfo {
        code: outcome.exit_code,
        signal: None,
        duration_ms: ms,
    };
    let failure = SetupFailure {
        exit,
        stopped,
        reason,
    };
    (Some(ms), Some(failure))
}

/// `setup failed: exit 3 (last line)`, or `setup failed: timed out after 600 s (last line)`.
fn failure_reason(outcome: &VerifyOutcome, timeout: Duration) -> String {
    let how = match outcome.exit_code {
        Some(code) => format!("exit {code}"),
        None => format!("timed out after {} s", timeout.as_secs()),
    };
    let last = outcome
        .output_tail
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.starts_with("[aam: "));
    match last {
        Some(line) => format!(
            "setup failed: {how} ({})",
            super::git::cut(line, REASON_LINE)
        ),
        None => format!("setup failed: {how}"),
    }
}

/// Runs the workspace's teardown, if it has one, to its end or its time
/// (no stop order cuts it short: it is what cleans up after a cancel):
/// its time in ms. A failing teardown is logged and changes nothing else.
pub async fn teardown<S: EventSink>(
    tree: &JobTree,
    assignment: &Assignment,
    marker: &str,
    sink: &S,
) -> Option<u64> {
    let workspace = tree.workspace.as_ref()?;
    let argv = workspace.teardown.as_ref()?;
    let timeout = workspace.teardown_timeout;
    let mut no_stop = None;
    let (outcome, _) = run_step(
        "teardown",
        argv,
        tree,
        assignment,
        marker,
        timeout,
        sink,
        &mut no_stop,
    )
    .await;
    let mut log = String::from("== teardown ==\n");
    push_output(&mut log, &outcome.output_tail);
    if !outcome.passed {
        let how = match outcome.exit_code {
            Some(code) => format!("exit {code}"),
            None => format!("timed out after {} s", timeout.as_secs()),
        };
        tracing::warn!(worktree = %tree.path.display(), "teardown failed: {how}");
        log.push_str(&format!(
            "== teardown failed: {how} (the job's outcome stands) ==\n"
        ));
    }
    write_log(sink, assignment, log).await;
    Some(outcome.duration_ms)
}

/// Runs one step at the worktree's top with the job's environment.
#[allow(clippy::too_many_arguments)]
async fn run_step<S: EventSink>(
    what: &str,
    argv: &[String],
    tree: &JobTree,
    assignment: &Assignment,
    marker: &str,
    timeout: Duration,
    sink: &S,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
) -> (VerifyOutcome, Option<Stopped>) {
    let mut env = assignment.env.clone();
    env.extend(crate::child::aam_vars(assignment));
    let command = VerifyCommand {
        what,
        argv,
        container: tree.container.as_ref(),
        dir: &tree.path,
        env: &env,
        marker,
        timeout,
        grace: Duration::from_millis(assignment.grace_ms),
    };
    let ended = run_verify(&command, assignment.attempt_ref(), sink, stop).await;
    tracing::info!(step = what, exit = ?ended.0.exit_code, duration_ms = ended.0.duration_ms,
        "workspace step ended");
    ended
}

/// Saves the job's cache paths that missed, after its setup: log lines.
async fn save_cache(tree: &JobTree, end: SetupEnd) -> Vec<String> {
    if tree.cached.slots.is_empty() {
        return Vec::new();
    }
    let cache = tree.worktrees().cache().cloned();
    let (path, repo, placed) = (tree.path.clone(), tree.repo.clone(), tree.cached.clone());
    let saved = tokio::task::spawn_blocking(move || {
        super::cache::save(cache.as_deref(), &path, &repo, &placed, end)
    });
    saved
        .await
        .unwrap_or_else(|e| vec![format!("cache: not saved: {e}")])
}

fn push_lines(log: &mut String, lines: &[String]) {
    for line in lines {
        log.push_str(line);
        log.push('\n');
    }
}

fn push_output(log: &mut String, output: &str) {
    log.push_str(output);
    if !output.is_empty() && !output.ends_with('\n') {
        log.push('\n');
    }
}

async fn write_log<S: EventSink>(sink: &S, assignment: &Assignment, text: String) {
    let attempt = assignment.attempt_ref();
    let data = text.into_bytes();
    sink.send(JobEvent::Output { attempt, data }).await;
}
