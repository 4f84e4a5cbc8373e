//! Running one job as a child process: its own process group, stdin from
//! /dev/null (a pipe for an agent that takes input), stdout and stderr drained concurrently and streamed as they
//! come, `::progress::` lines picked out, an agent job's stdout read by its
//! format's reader (`run_reader.rs`), and the job stopped on a cancel,
//! past its timeout, or when it has printed nothing for its idle timeout.
//! A worktree job runs in a worktree of its own (`worktree/job.rs`), set
//! up before it starts and committed and removed before its end is told.
//! `child/pump.rs` streams the pipes; `child/container_start.rs` makes a
//! container job's container; an agent that takes input has its stdin fed
//! by `stdin_feed.rs`.

use crate::inputs::InputFiles;
use crate::leader::{self, Leader};
use crate::orphans::RunIds;
use crate::run_reader::RunReader;
use crate::teardown::{job_processes, stop_job};
use crate::worktree::{job, steps, Worktrees};
use aam_protocol::agent_run::AgentRun;
use aam_protocol::messages::{Assignment, AttemptRef, Stopped};
use aam_protocol::model::{ExitInfo, StopCause};
use aam_protocol::worktree::{JobChange, WorkspaceSteps};
use std::cell::{Cell, RefCell};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Largest output chunk sent in one message (small enough that the two
/// read buffers per job stay cheap to allocate for short jobs).
pub const CHUNK: usize = 16 * 1024;

/// How long to keep reading a job's pipes after it exited, when a process it
/// left behind still holds them open.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Grace for processes a job left behind when it exited on its own.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// What a running job tells the worker.
pub enum JobEvent {
    Started {
        attempt: AttemptRef,
        pid: u32,
    },
    Output {
        attempt: AttemptRef,
        data: Vec<u8>,
    },
    Progress {
        attempt: AttemptRef,
        percent: u8,
        message: Option<String>,
    },
    /// An agent that takes input: messages given up to `delivered`, and
    /// whether it answered and waits for more.
    InputState {
        attempt: AttemptRef,
        delivered: u32,
        waiting: bool,
    },
    /// Its agent asks to run a tool (`permission_relay.rs`).
    PermissionAsked {
        attempt: AttemptRef,
        ask: u64,
        tool: String,
        input: String,
    },
    /// What an agent job's agent did so far (throttled).
    AgentUpdate {
        attempt: AttemptRef,
        run: AgentRun,
    },
    SpawnFailed {
        attempt: AttemptRef,
        error: String,
    },
    /// A worktree job's worktree could not be set up; nothing started.
    WorktreeFailed {
        attempt: AttemptRef,
        reason: String,
    },
    Finished {
        attempt: AttemptRef,
        exit: ExitInfo,
        stopped: Option<Stopped>,
        /// For an agent job: its run, read to the end of its output.
        agent: Option<AgentRun>,
        /// For a worktree job: its change, committed on its branch.
        change: Option<Box<JobChange>>,
        /// That change's patch (cut at its cap).
        patch: Vec<u8>,
        /// For a worktree job: its workspace's setup and teardown.
        workspace: Option<WorkspaceSteps>,
    },
}

/// An order to stop a running job.
#[derive(Clone, Copy, Debug)]
pub struct StopOrder {
    pub cause: StopCause,
    pub grace: Duration,
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

/// Where jobs run: the base of relative workdirs, the worktrees of
/// worktree jobs (none: such a job fails, saying so), and the run ids
/// their processes carry.
#[derive(Clone)]
pub struct JobDirs {
    pub base: PathBuf,
    pub worktrees: Option<Arc<Worktrees>>,
    /// The ports jobs reserve (`ports = N`).
    pub ports: Arc<crate::ports::PortPool>,
    /// The container engine of container jobs (none: they fail, saying so).
    pub containers: Option<Arc<crate::container::Containers>>,
    pub run_ids: RunIds,
}

impl From<PathBuf> for JobDirs {
    fn from(base: PathBuf) -> JobDirs {
        JobDirs {
            base,
            worktrees: None,
            ports: crate::ports::PortPool::new(crate::ports::DEFAULT_RANGE),
            containers: None,
            run_ids: RunIds::new("worker"),
        }
    }
}

/// Runs one assignment to its end. Call it on a `LocalSet` (an actix
/// arbiter). A worktree job runs in a worktree of its own, set up first
/// (`WorktreeFailed` when it cannot be) and ended before its `Finished`.
pub async fn run_job(
    assignment: Assignment,
    dirs: JobDirs,
    sink: impl EventSink,
    stop: oneshot::Receiver<StopOrder>,
) {
    let (_said, said) = tokio::sync::mpsc::unbounded_channel();
    let (_decided, decided) = tokio::sync::mpsc::unbounded_channel();
    run_job_told(assignment, dirs, sink, stop, said, decided).await
}

/// `run_job`, with the messages said to its agent while it runs (for an
/// agent that takes input: `stdin_feed.rs`).
pub async fn run_job_told(
    mut assignment: Assignment,
    dirs: JobDirs,
    sink: impl EventSink,
    stop: oneshot::Receiver<StopOrder>,
    said: tokio::sync::mpsc::UnboundedReceiver<aam_protocol::say::SaidMessage>,
    decided: tokio::sync::mpsc::UnboundedReceiver<crate::permission_relay::Decision>,
) {
    let attempt = assignment.attempt_ref();
    // Held to the job's end (this function's), whatever the end.
    let ports = match dirs.ports.reserve(assignment.ports) {
        Ok(ports) => ports,
        Err(why) => {
            let error = format!("cannot reserve the job's ports: {why}");
            return sink.send(JobEvent::SpawnFailed { attempt, error }).await;
        }
    };
    // Its set-up, process, verify and teardown all see them.
    assignment.env.extend(ports.env());
    let workdir = resolve_workdir(&dirs.base, assignment.workdir.as_deref());
    let mut tree = match set_up_worktree(&assignment, &dirs, &workdir).await {
        Ok(tree) => tree,
        Err(reason) => {
            tracing::warn!(job = %attempt.job, "worktree not set up: {reason}");
            let failed = JobEvent::WorktreeFailed { attempt, reason };
            return sink.send(failed).await;
        }
    };
    // `AAM_CACHE_HIT` for its setup, process and teardown.
    assignment
        .env
        .extend(tree.as_ref().and_then(|tree| tree.cached.env()));
    // A container job's input files are written before its container is
    // made, which mounts them.
    let mut inputs = None;
    if let Some(tree) = tree.as_mut() {
        let made = start_container(tree, &assignment, &dirs, &sink, ports.ports()).await;
        match made {
            Ok(written) => inputs = written,
            Err(reason) => {
                tracing::warn!(job = %attempt.job, "container not started: {reason}");
                job::remove(tree, true).await;
                let failed = JobEvent::WorktreeFailed { attempt, reason };
                return sink.send(failed).await;
            }
        }
    }
    let workdir = tree.as_ref().map_or(workdir, |tree| tree.workdir.clone());
    let marker = dirs.run_ids.marker(&assignment);
    // A stop ordered during the set-up stops the job as soon as it started.
    let mut stop = Some(stop);
    let mut workspace = None;
    if let Some(tree) = &tree {
        let (setup_ms, failed) = steps::setup(tree, &assignment, &marker, &sink, &mut stop).await;
        let ran = WorkspaceSteps {
            setup_ms,
            ..WorkspaceSteps::default()
        };
        if let Some(failed) = failed {
            return end_after_failed_setup(tree, &assignment, &marker, &sink, failed, ran).await;
        }
        workspace = Some(ran);
    }
    let container = tree.as_ref().and_then(|t| t.container.as_ref());
    let launch = Launch {
        container,
        inputs,
        said: Some(said),
        decided: Some(decided),
    };
    let mut end = match run_process(&assignment, &workdir, &marker, &sink, &mut stop, launch).await
    {
        Ok(end) => end,
        Err(error) => {
            if let Some(tree) = tree {
                // Its setup ran: what it started is stopped all the same.
                steps::teardown(&tree, &assignment, &marker, &sink).await;
                job::remove(&tree, true).await;
            }
            return sink.send(JobEvent::SpawnFailed { attempt, error }).await;
        }
    };
    if let Some(tree) = tree {
        let process = job::ProcessEnd {
            assignment: &assignment,
            marker: &marker,
            started: end.started,
            stopped: end.stopped.as_ref(),
            answer: end.agent.as_ref().and_then(|run| run.result.as_deref()),
        };
        let tree_end = job::end(tree, process, &sink, &mut stop).await;
        if let Some(workspace) = workspace.as_mut() {
            workspace.teardown_ms = tree_end.teardown_ms;
        }
        end.stopped = end.stopped.or(tree_end.stopped);
        end.change = tree_end.change;
        end.patch = tree_end.patch;
    }
    sink.send(JobEvent::Finished {
        attempt,
        exit: end.exit,
        stopped: end.stopped,
        agent: end.agent,
        change: end.change,
        patch: end.patch,
        workspace,
    })
    .await;
}

/// Ends an attempt whose workspace setup failed (or was stopped): its
/// teardown runs, its worktree goes (nothing of the job ran in it), and
/// the attempt ends with the setup's exit and reason.
async fn end_after_failed_setup(
    tree: &job::JobTree,
    assignment: &Assignment,
    marker: &str,
    sink: &impl EventSink,
    failed: steps::SetupFailure,
    mut ran: WorkspaceSteps,
) {
    ran.teardown_ms = steps::teardown(tree, assignment, marker, sink).await;
    ran.setup_failed = failed.reason;
    job::remove(tree, true).await;
    sink.send(JobEvent::Finished {
        attempt: assignment.attempt_ref(),
        exit: failed.exit,
        stopped: failed.stopped,
        agent: None,
        change: None,
        patch: Vec::new(),
        workspace: Some(ran),
    })
    .await;
}

/// How a job's process is started: in its container, if it has one, and
/// with its input files when they were written already.
struct Launch<'a> {
    container: Option<&'a crate::container::job::JobContainer>,
    inputs: Option<InputFiles>,
    /// Messages said to an agent that takes input.
    said: Option<tokio::sync::mpsc::UnboundedReceiver<aam_protocol::say::SaidMessage>>,
    /// Decisions on an agent's relayed permission prompts.
    decided: Option<tokio::sync::mpsc::UnboundedReceiver<crate::permission_relay::Decision>>,
}

/// A worktree job's worktree, set up; None for another job; why it could
/// not be set up otherwise (the job's reason).
async fn set_up_worktree(
    assignment: &Assignment,
    dirs: &JobDirs,
    workdir: &Path,
) -> Result<Option<job::JobTree>, String> {
    let Some(order) = assignment.worktree.as_deref() else {
        return Ok(None);
    };
    let Some(worktrees) = &dirs.worktrees else {
        let reason = "this worker has no worktree root (start it with --worktrees DIR)";
        return Err(reason.to_string());
    };
    let tree = job::set_up(worktrees, workdir, order, assignment.attempt).await?;
    Ok(Some(tree))
}

/// How a job's process ended.
struct ProcessEnd {
    started: Instant,
    exit: ExitInfo,
    stopped: Option<Stopped>,
    agent: Option<AgentRun>,
    change: Option<Box<JobChange>>,
    patch: Vec<u8>,
}

/// Runs the job's process in `workdir` to its end (its output streamed,
/// stopped on an order or past its time), or why it could not start.
async fn run_process(
    assignment: &Assignment,
    workdir: &Path,
    marker: &str,
    sink: &impl EventSink,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
    launch: Launch<'_>,
) -> Result<ProcessEnd, String> {
    let attempt = assignment.attempt_ref();
    let said = launch.said;
    // Its socket and MCP config are removed when `relay` is dropped.
    let (relay, relay_task) = match (assignment.permission_relay, launch.decided) {
        (true, _) if launch.container.is_some() => {
            return Err("permissions = \"relay\" does not reach into a container yet".into())
        }
        (true, Some(decided)) => {
            let (relay, task) = crate::permission_relay::start(attempt, sink.clone(), decided)
                .map_err(|e| format!("opening the permission relay: {e}"))?;
            (Some(relay), Some(task))
        }
        _ => (None, None),
    };
    let launch = Launch {
        said: None,
        decided: None,
        ..launch
    };
    let extra: Vec<String> = relay.iter().flat_map(|r| r.argv()).collect();
    // `_inputs` removes the job's input files when dropped: once it ended.
    let spawned = spawn(assignment, workdir, marker, launch, &extra);
    let (mut child, started, _inputs) = spawned?;
    let pid = child.id();
    sink.send(JobEvent::Started { attempt, pid }).await;
    // An agent that takes input: its stdin fed, its turns counted.
    let turns = assignment
        .input
        .as_ref()
        .map(|_| Rc::new(crate::stdin_feed::TurnEnds::default()));
    let feeder = match (child.stdin.take(), &assignment.input, &turns, said) {
        (Some(stdin), Some(input), Some(turns), Some(said)) => {
            let feed = crate::stdin_feed::feed(
                stdin,
                (**input).clone(),
                said,
                turns.clone(),
                sink.clone(),
                attempt,
            );
            Some(tokio::task::spawn_local(feed))
        }
        _ => None,
    };
    let last_output = Rc::new(Cell::new(Instant::now()));
    // Shared with the stdout pump, which feeds it; read here at the end
    // even if that pump had to be abandoned. Never borrowed across an await.
    let run_reader = assignment
        .format
        .map(|format| Rc::new(RefCell::new(RunReader::new(format))));
    let pumps = start_pumps(&mut child, attempt, sink, &last_output, &run_reader, &turns);
    let order = stop_order(&mut child, assignment, started, stop, &last_output).await;
    // A stop that raced the job's own end: the end wins (the job is done;
    // calling it stopped would requeue or retry finished work).
    let order = order.filter(|_| !matches!(child.try_wait(), Ok(Some(_))));
    let stopped = match order {
        Some(order) => {
            tracing::info!(pid, cause = order.cause.as_str(), "stopping job");
            let marker = marker.to_string();
            let receipt = tokio::task::spawn_blocking(move || stop_job(pid, &marker, order.grace))
                .await
                .unwrap_or_default();
            Some(Stopped {
                cause: order.cause,
                receipt,
            })
        }
        None => None,
    };
    let status = child.wait().await;
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    if let Some(task) = relay_task {
        task.abort();
    }
    if stopped.is_none() {
        stop_leftovers(pid, marker.to_string()).await;
    }
    for pump in pumps {
        let abort = pump.abort_handle();
        if tokio::time::timeout(PIPE_GRACE, pump).await.is_err() {
            abort.abort();
        }
    }
    let agent = run_reader.map(|reader| reader.borrow_mut().finish());
    let duration_ms = started.elapsed().as_millis() as u64;
    Ok(ProcessEnd {
        started,
        exit: exit_info(status, duration_ms, &assignment.job_name),
        stopped,
        agent,
        change: None,
        patch: Vec::new(),
    })
}

/// How a job's process ended, as reported.
fn exit_info(
    status: std::io::Result<std::process::ExitStatus>,
    duration_ms: u64,
    job_name: &str,
) -> ExitInfo {
    match status {
        Ok(s) => ExitInfo {
            code: s.code(),
            signal: s.signal(),
            duration_ms,
        },
        Err(e) => {
            tracing::warn!("waiting for job {job_name}: {e}");
            ExitInfo {
                code: None,
                signal: None,
                duration_ms,
            }
        }
    }
}

/// Starts an assignment's command in `workdir`, with its input files
/// written and its `AAM_*` variables set: the child, when it started and
/// its input files (removed when dropped), or why it could not start.
fn spawn(
    assignment: &Assignment,
    workdir: &Path,
    marker: &str,
    launch: Launch<'_>,
    extra_args: &[String],
) -> Result<(Leader, Instant, InputFiles), String> {
    if !workdir.is_dir() {
        return Err(format!(
            "workdir {} is not a directory on this worker",
            workdir.display()
        ));
    }
    let inputs = match launch.inputs {
        Some(inputs) => inputs,
        None => crate::inputs::write(assignment)
            .map_err(|e| format!("writing the job's input files: {e}"))?,
    };
    let mut argv = crate::inputs::fill_paths(&assignment.argv, &inputs);
    // Flags go before a `--` that ends the options (`-- {prompt}`).
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv.splice(at..at, extra_args.iter().cloned());
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".to_string());
    };
    // The agent's `secret_env`, from this worker's own environment (checked
    // before the job was started; a value never leaves this process).
    let secrets = crate::secret_env::from_process(&assignment.secret_env, "this worker")?;
    let (marker_key, marker_value) = marker.split_once('=').unwrap_or(("AAM_RUN_ID", marker));
    let mut env: Vec<(String, std::ffi::OsString)> = assignment
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.into()))
        .collect();
    env.extend(secrets);
    env.extend(aam_vars(assignment).map(|(k, v)| (k, v.into())));
    env.push(("AAM_INPUTS".into(), inputs.json.clone().into()));
    env.push(("AAM_INPUTS_MD".into(), inputs.markdown.clone().into()));
    env.push((marker_key.into(), marker_value.into()));
    let mut command = match launch.container {
        Some(container) => container.exec(program, args, workdir, &env),
        None => {
            let mut command = leader::Command::new(program);
            command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
            command
        }
    };
    command
        .current_dir(workdir)
        .stdin_piped(assignment.input.is_some());
    // Held until spawned: the leader moves itself into it before exec.
    let cgroup = crate::orphans::guard(&mut command, marker)?;
    let started = Instant::now();
    let child = command.spawn().map_err(|e| {
        // Nothing started in it: it is free for another job.
        crate::cgroup::release(marker);
        match &cgroup {
            Some(c) => format!("{program}: {e} (started in cgroup {})", c.dir.display()),
            None => format!("{program}: {e}"),
        }
    })?;
    Ok((child, started, inputs))
}

/// The `AAM_*` variables that say which job and attempt a process runs for.
pub fn aam_vars(assignment: &Assignment) -> [(String, String); 4] {
    let session = assignment.job.session.to_string();
    let job_id = format!("{session}/{}", assignment.job_name);
    [
        ("AAM_SESSION_ID".to_string(), session),
        ("AAM_JOB_ID".to_string(), job_id),
        ("AAM_JOB_NAME".to_string(), assignment.job_name.clone()),
        ("AAM_ATTEMPT".to_string(), assignment.attempt.to_string()),
    ]
}

/// Waits for the job's end or a reason to stop it: an order from the
/// worker, its timeout, or its idle timeout. None when it ended on its own.
async fn stop_order(
    child: &mut Leader,
    assignment: &Assignment,
    started: Instant,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
    last_output: &Cell<Instant>,
) -> Option<StopOrder> {
    // A deadline past what an Instant holds is none.
    let deadline = assignment
        .timeout_ms
        .and_then(|t| started.checked_add(Duration::from_millis(t)))
        .map(tokio::time::Instant::from_std);
    let idle = assignment.idle_timeout_ms.map(Duration::from_millis);
    let grace = Duration::from_millis(assignment.grace_ms);
    // Only jobs with an idle timeout pay for a timer.
    let mut idle_check = idle.map(|i| {
        tokio::time::interval((i / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)))
    });
    loop {
        tokio::select! {
            biased;
            _ = child.wait() => break None,
            order = next_stop(stop) => break Some(order),
            _ = sleep_until(deadline) => break Some(StopOrder { cause: StopCause::Timeout, grace }),
            _ = tick(&mut idle_check) => {
                if last_output.get().elapsed() >= idle.unwrap_or_default() {
                    break Some(StopOrder { cause: StopCause::Idle, grace });
                }
            }
        }
    }
}

/// The next stop order. Pending for ever once the order is taken, or the
/// worker forgot the job (nobody can stop it any more but its own end).
pub async fn next_stop(stop: &mut Option<oneshot::Receiver<StopOrder>>) -> StopOrder {
    let Some(receiver) = stop else {
        return std::future::pending().await;
    };
    let order = receiver.await;
    *stop = None;
    match order {
        Ok(order) => order,
        Err(_) => std::future::pending().await,
    }
}

/// Stops what a job (or a verify) that ended on its own left running in
/// its group or its cgroup, if anything, and removes its cgroup. One
/// syscall (and with a cgroup, one small read) decides: scanning /proc for
/// escaped descendants on every exit would cost more than the job.
pub async fn stop_leftovers(pid: u32, marker: String) {
    if !group_has_members(pid) && !crate::cgroup::populated(&marker) {
        crate::cgroup::release(&marker);
        return;
    }
    let leftovers = tokio::task::spawn_blocking(move || {
        let left = job_processes(pid, &marker);
        (!left.is_empty()).then(|| stop_job(pid, &marker, LEFTOVER_GRACE))
    })
    .await
    .ok()
    .flatten();
    if let Some(receipt) = leftovers {
        tracing::info!(
            pid,
            signalled = receipt.signals.len(),
            "stopped processes the job left behind"
        );
    }
}

/// Whether any process is left in a process group.
fn group_has_members(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks that the group exists and may be signalled.
    pgid > 1 && unsafe { libc::killpg(pgid as libc::pid_t, 0) } == 0
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

mod container_start;
mod pump;

use container_start::start_container;
pub use pump::parse_progress;
use pump::{sleep_until, start_pumps};

#[cfg(test)]
mod agent_job_tests;

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

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress(b"::progress:: 40 running unit tests"),
            Some((40, Some("running unit tests".into())))
        );
        assert_eq!(parse_progress(b"  ::progress::100"), Some((100, None)));
        assert_eq!(
            parse_progress(b"::progress:: 12.6% half"),
            Some((13, Some("half".into())))
        );
        assert_eq!(parse_progress(b"::progress:: 140"), None);
        assert_eq!(parse_progress(b"progress 40"), None);
        assert_eq!(parse_progress(b"::progress:: lots"), None);
    }
}
