//! The worker's link to the manager: its state (down, dialing, connected,
//! registered, closed), dialing with backoff, the writer task in front of
//! the socket and its counted backlog, output held back while that backlog
//! is full, and the resync after every (re)registration.

use super::{AssignedJob, UnackedEnd, WorkerAgent};
use aam_protocol::agent_run::AgentRun;
use aam_protocol::codec::FrameCodec;
use aam_protocol::dial::{connect, ConnectError};
use aam_protocol::messages::{AttemptRef, ManagerToWorker, Role, WorkerToManager};
use aam_protocol::output::OutputCapture;
use actix::prelude::*;
use futures::SinkExt;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use tokio_util::codec::{FramedRead, FramedWrite};

/// Output bytes waiting to be written past which new output is not sent
/// (the attempt's capture keeps it and is resent whole later), so a chatty
/// job and a slow link cannot grow the worker's memory without bound
/// (ARCHITECTURE.md invariant 7).
const OUTPUT_BACKLOG: usize = 8 * 1024 * 1024;

/// The first wait before dialing again; it doubles after each failure.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Longest heartbeat interval and lease taken from the manager.
const MAX_HEARTBEAT_MS: u64 = 60_000;
const MAX_LEASE_MS: u64 = 3_600_000;

/// The worker's connection to the manager.
pub(super) enum Link {
    /// No connection and no dial under way (a redial may be scheduled).
    Down,
    /// A dial is under way.
    Dialing,
    /// `Register` is sent; reports wait for `Registered`.
    Connected { writer: Writer, reader: SpawnHandle },
    /// Reports flow and heartbeats run.
    Registered {
        writer: Writer,
        reader: SpawnHandle,
        heartbeat: SpawnHandle,
        /// Attempts whose output was held back for a full backlog: their
        /// capture is sent whole once the backlog drains.
        behind: HashSet<AttemptRef>,
    },
    /// Closed for good (the worker is exiting): never dialed again, and
    /// nothing more is sent.
    Closed,
}

/// Frames for the manager go through a writer task; `backlog` counts the
/// bytes not yet written.
pub(super) struct Writer {
    tx: tokio::sync::mpsc::UnboundedSender<WorkerToManager>,
    backlog: Rc<Cell<usize>>,
}

fn frame_size(msg: &WorkerToManager) -> usize {
    match msg {
        WorkerToManager::Output { data, .. } => data.len() + 32,
        WorkerToManager::OutputSync { capture, .. } => capture.total().min(16 << 20) as usize + 64,
        WorkerToManager::AgentUpdate { run, .. } => agent_run_size(run),
        WorkerToManager::Finished { agent, patch, .. } => {
            256 + patch.len() + agent.as_ref().map_or(0, agent_run_size)
        }
        _ => 64,
    }
}

/// About the bytes an agent run takes in a frame (its answer may be
/// hundreds of KiB).
fn agent_run_size(run: &AgentRun) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let texts = [
        &run.session_id,
        &run.model,
        &run.last_tool,
        &run.last_text,
        &run.result,
        &run.error,
    ];
    let models: usize = run.usage.keys().map(|model| model.len() + 40).sum();
    let limit = run.limit.as_ref().map_or(0, |l| l.message.len() + 16);
    128 + texts.into_iter().map(text).sum::<usize>() + models + limit
}

impl Writer {
    fn start(write: impl AsyncWrite + Unpin + 'static, max_frame: usize) -> Writer {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<WorkerToManager>();
        let backlog = Rc::new(Cell::new(0usize));
        let left = backlog.clone();
        actix::spawn(async move {
            let mut framed = FramedWrite::new(
                write,
                FrameCodec::<ManagerToWorker, WorkerToManager>::new(max_frame),
            );
            // Everything queued goes out in one flush.
            while let Some(msg) = rx.recv().await {
                let mut size = frame_size(&msg);
                let mut sent = framed.feed(msg).await;
                while sent.is_ok() {
                    let Ok(more) = rx.try_recv() else { break };
                    size += frame_size(&more);
                    sent = framed.feed(more).await;
                }
                if sent.is_ok() {
                    sent = framed.flush().await;
                }
                left.set(left.get().saturating_sub(size));
                if let Err(e) = sent {
                    tracing::warn!("writing to the manager: {e}");
                    break;
                }
            }
        });
        Writer { tx, backlog }
    }

    fn write(&mut self, msg: WorkerToManager) {
        self.backlog.set(self.backlog.get() + frame_size(&msg));
        let _ = self.tx.send(msg);
    }

    fn backlog(&self) -> usize {
        self.backlog.get()
    }
}

/// The whole output of an attempt, as the worker keeps it.
fn output_sync(attempt: AttemptRef, capture: &OutputCapture) -> WorkerToManager {
    WorkerToManager::OutputSync {
        attempt,
        capture: capture.clone(),
    }
}

impl Link {
    /// A fresh connection: its frames go to the actor's stream handler, and
    /// `first` is written before anything else.
    fn open(
        stream: aam_protocol::tls::ClientStream,
        leftover: bytes::BytesMut,
        max_frame: usize,
        first: WorkerToManager,
        ctx: &mut Context<WorkerAgent>,
    ) -> Link {
        let (read, write) = tokio::io::split(stream);
        let reader = FramedRead::new(
            aam_protocol::tls::after_handshake(leftover, read),
            FrameCodec::<ManagerToWorker, WorkerToManager>::new(max_frame),
        );
        let reader = ctx.add_stream(reader);
        let mut writer = Writer::start(write, max_frame);
        writer.write(first);
        Link::Connected { writer, reader }
    }

    /// `Registered` heard: reports flow from now on, and `heartbeat` runs
    /// until the connection drops.
    fn register(&mut self, heartbeat: SpawnHandle, ctx: &mut Context<WorkerAgent>) {
        let (writer, reader) = match std::mem::replace(self, Link::Down) {
            Link::Connected { writer, reader } => (writer, reader),
            // Registered again: one heartbeat is enough.
            Link::Registered {
                writer,
                reader,
                heartbeat: previous,
                ..
            } => {
                ctx.cancel_future(previous);
                (writer, reader)
            }
            unconnected => {
                ctx.cancel_future(heartbeat);
                *self = unconnected;
                return;
            }
        };
        *self = Link::Registered {
            writer,
            reader,
            heartbeat,
            behind: HashSet::new(),
        };
    }

    /// Drops the connection, if there is one (its reader and heartbeat
    /// stop); the link is then down. Whether there was one.
    fn disconnect(&mut self, ctx: &mut Context<WorkerAgent>) -> bool {
        let (reader, heartbeat) = match std::mem::replace(self, Link::Down) {
            Link::Connected { reader, .. } => (reader, None),
            Link::Registered {
                reader, heartbeat, ..
            } => (reader, Some(heartbeat)),
            unconnected => {
                *self = unconnected;
                return false;
            }
        };
        if let Some(heartbeat) = heartbeat {
            ctx.cancel_future(heartbeat);
        }
        ctx.cancel_future(reader);
        true
    }

    /// Closes the link for good: the connection drops and is never dialed again.
    pub(super) fn close_for_good(&mut self, ctx: &mut Context<WorkerAgent>) {
        self.disconnect(ctx);
        *self = Link::Closed;
    }

    /// Sends a report if registered; gives it back otherwise.
    pub(super) fn is_registered(&self) -> bool {
        matches!(self, Link::Registered { .. })
    }

    pub(super) fn send_if_registered(&mut self, msg: WorkerToManager) -> Option<WorkerToManager> {
        match self {
            Link::Registered { writer, .. } => {
                writer.write(msg);
                None
            }
            _ => Some(msg),
        }
    }

    /// Sends output if registered and the backlog allows. Otherwise it is
    /// not queued: the attempt's capture has it, and it goes whole once the
    /// backlog drains (`catch_up`) or after the next registration.
    pub(super) fn send_output(&mut self, attempt: AttemptRef, data: Vec<u8>) {
        let Link::Registered { writer, behind, .. } = self else {
            return;
        };
        if writer.backlog() > OUTPUT_BACKLOG {
            behind.insert(attempt);
            return;
        }
        if !behind.contains(&attempt) {
            writer.write(WorkerToManager::Output { attempt, data });
        }
    }

    /// Sends an agent job's run if registered and the backlog allows;
    /// whether it was sent (if not, the job keeps it for later).
    pub(super) fn send_agent_run(&mut self, attempt: AttemptRef, run: &AgentRun) -> bool {
        match self {
            Link::Registered { writer, .. } if writer.backlog() <= OUTPUT_BACKLOG => {
                let run = run.clone();
                writer.write(WorkerToManager::AgentUpdate { attempt, run });
                true
            }
            _ => false,
        }
    }

    /// Sends the runs held back for a full backlog, once it has drained.
    fn send_held_agent_runs(&mut self, assigned: &mut HashMap<AttemptRef, AssignedJob>) {
        for (attempt, job) in assigned.iter_mut().filter(|(_, job)| job.agent_run_unsent) {
            if let Some(run) = &job.agent_run {
                if !self.send_agent_run(*attempt, run) {
                    return;
                }
            }
            job.agent_run_unsent = false;
        }
    }

    /// Sends an attempt's end if registered, after the whole of its output
    /// if some of that was held back.
    pub(super) fn send_end(
        &mut self,
        attempt: AttemptRef,
        end: &WorkerToManager,
        capture: &OutputCapture,
    ) {
        let Link::Registered { writer, behind, .. } = self else {
            return;
        };
        if behind.remove(&attempt) {
            writer.write(output_sync(attempt, capture));
        }
        writer.write(end.clone());
        tracing::debug!(job = %attempt.job, attempt = attempt.attempt, "reported the end of a job");
    }

    /// Sends the captures of attempts whose output was held back, once the
    /// backlog has drained.
    fn catch_up<'a>(&mut self, capture_of: impl Fn(&AttemptRef) -> Option<&'a OutputCapture>) {
        let Link::Registered { writer, behind, .. } = self else {
            return;
        };
        if behind.is_empty() || writer.backlog() > OUTPUT_BACKLOG / 8 {
            return;
        }
        for attempt in std::mem::take(behind) {
            if let Some(capture) = capture_of(&attempt) {
                writer.write(output_sync(attempt, capture));
            }
        }
    }

    /// After (re)registering, everything the manager may have missed, in
    /// this order: that the worker drains, the output of the assigned
    /// attempts, their latest progress and agent runs, then each
    /// unacknowledged end after that attempt's output.
    fn resync(
        &mut self,
        draining: bool,
        assigned: &mut HashMap<AttemptRef, AssignedJob>,
        latest_progress: &mut HashMap<AttemptRef, WorkerToManager>,
        unacked: &HashMap<AttemptRef, UnackedEnd>,
    ) {
        let Link::Registered { writer, behind, .. } = self else {
            return;
        };
        // The whole captures go now: nothing is held back any more.
        behind.clear();
        if draining {
            writer.write(WorkerToManager::Draining);
        }
        for (attempt, job) in assigned.iter() {
            if !job.capture.is_empty() {
                writer.write(output_sync(*attempt, &job.capture));
            }
        }
        for (_, progress) in latest_progress.drain() {
            writer.write(progress);
        }
        for (attempt, job) in assigned.iter_mut() {
            if let Some(run) = &job.agent_run {
                let (attempt, run) = (*attempt, run.clone());
                writer.write(WorkerToManager::AgentUpdate { attempt, run });
            }
            job.agent_run_unsent = false;
        }
        // Asks of its agents still open: the manager answers those it
        // decided and keeps the others open (it numbers them by `ask`).
        for (attempt, job) in assigned.iter() {
            for (ask, (tool, input)) in &job.open_asks {
                writer.write(WorkerToManager::PermissionAsked {
                    attempt: *attempt,
                    ask: *ask,
                    tool: tool.clone(),
                    input: input.clone(),
                });
            }
        }
        for (attempt, end) in unacked {
            if !end.capture.is_empty() {
                writer.write(output_sync(*attempt, &end.capture));
            }
            writer.write(end.report.clone());
        }
    }
}

impl WorkerAgent {
    /// Dials the manager if the link is down; on failure, dials again after
    /// a backoff that doubles up to `MAX_BACKOFF`.
    pub(super) fn dial(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.link, Link::Down) {
            return;
        }
        self.link = Link::Dialing;
        let config = self.config.clone();
        let attempt =
            async move { connect(&config.manager, Role::Worker, &config.token, &config.tls).await };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    // Closed for good meanwhile: the worker is exiting.
                    _ if !matches!(act.link, Link::Dialing) => {}
                    Ok((stream, leftover)) => act.connected(stream, leftover, ctx),
                    Err(ConnectError::Rejected { addr, reason }) => {
                        tracing::error!("manager at {addr} refused this worker: {reason}");
                        act.exit_refused(3, ctx);
                    }
                    // Another certificate than the one trusted (or ours
                    // refused): retrying would fail the same way, silently.
                    Err(ConnectError::Untrusted { reason, .. }) => {
                        tracing::error!("{reason}");
                        act.exit_refused(3, ctx);
                    }
                    Err(e) => {
                        act.link = Link::Down;
                        let wait = act.dial_after_backoff(ctx);
                        tracing::info!("{e}; retrying in {wait:?}");
                    }
                }),
        );
    }

    /// Dials again after the current backoff, which doubles (up to
    /// `MAX_BACKOFF`) until a registration succeeds; returns the wait.
    fn dial_after_backoff(&mut self, ctx: &mut Context<Self>) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        ctx.run_later(wait, |act, ctx| act.dial(ctx));
        wait
    }

    /// The manager cannot take the registration yet (the name is connected
    /// from elsewhere, perhaps this worker's own half-open old connection,
    /// until its lease runs out): the jobs run on, and the worker dials
    /// again after a backoff.
    pub(super) fn retry_later(&mut self, reason: &str, ctx: &mut Context<Self>) {
        self.link.disconnect(ctx);
        let wait = self.dial_after_backoff(ctx);
        tracing::warn!(worker = %self.config.name, running = self.assigned.len(),
            "the manager cannot take this worker yet: {reason}; retrying in {wait:?}");
    }

    fn connected(
        &mut self,
        stream: aam_protocol::tls::ClientStream,
        leftover: bytes::BytesMut,
        ctx: &mut Context<Self>,
    ) {
        let register = WorkerToManager::Register {
            name: self.config.name.clone(),
            instance: self.instance,
            slots: self.config.slots,
            prefetch: self.config.prefetch,
            labels: self.config.labels.clone(),
            // Every attempt still its own, ended ones too until acknowledged.
            assigned: self
                .assigned
                .keys()
                .chain(self.unacked.keys())
                .copied()
                .collect(),
        };
        self.link = Link::open(stream, leftover, self.config.max_frame, register, ctx);
        self.last_heard = Instant::now();
        tracing::info!(manager = %self.config.manager, worker = %self.config.name, "connected");
    }

    /// The connection failed or closed: the jobs keep running, and the
    /// worker dials again.
    pub(super) fn disconnected(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.link.disconnect(ctx) {
            tracing::warn!(manager = %self.config.manager, running = self.assigned.len(),
                "lost the manager ({why}); jobs keep running, reconnecting");
        }
        self.dial(ctx);
    }

    /// The manager took the registration: heartbeats start (and watch the
    /// lease), and the manager gets everything it may have missed.
    pub(super) fn registered(&mut self, heartbeat_ms: u64, lease_ms: u64, ctx: &mut Context<Self>) {
        self.backoff = FIRST_BACKOFF;
        // The manager's numbers, within sane bounds whatever they say.
        let heartbeat_ms = heartbeat_ms.clamp(50, MAX_HEARTBEAT_MS);
        let lease_ms = lease_ms
            .max(heartbeat_ms.saturating_mul(2))
            .min(MAX_LEASE_MS);
        let every = Duration::from_millis(heartbeat_ms);
        let lease = Duration::from_millis(lease_ms);
        let heartbeat = ctx.run_interval(every, move |act, ctx| {
            if act.last_heard.elapsed() > lease {
                // A silent cut (no reset): do not write into it for minutes.
                return act.disconnected(ctx, "the manager went silent");
            }
            act.link.send_if_registered(WorkerToManager::Heartbeat);
            act.link.send_held_agent_runs(&mut act.assigned);
            let (assigned, unacked) = (&act.assigned, &act.unacked);
            act.link.catch_up(|attempt| {
                assigned
                    .get(attempt)
                    .map(|job| &job.capture)
                    .or_else(|| unacked.get(attempt).map(|end| &end.capture))
            });
        });
        self.link.register(heartbeat, ctx);
        self.link.resync(
            self.draining,
            &mut self.assigned,
            &mut self.pending_progress,
            &self.unacked,
        );
        tracing::info!(worker = %self.config.name, slots = self.config.slots, "registered");
    }
}
