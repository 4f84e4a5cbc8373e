//! The worker actor: one connection to the manager at a time, re-dialed
//! with backoff when it drops; the jobs it runs keep running meanwhile. The
//! worker keeps each attempt's output (head and tail, as the manager does),
//! so after a reconnect it sends the manager the whole of it again
//! (`OutputSync`), whatever the manager lost in a restart.

use crate::child::{run_job, run_marker, EventSink, JobEvent, StopOrder};
use crate::teardown::{become_subreaper, reap_adopted, stop_job};
use aam_protocol::codec::{CodecError, FrameCodec};
use aam_protocol::dial::{connect, ConnectError};
use aam_protocol::messages::{
    Assignment, AttemptRef, ManagerToWorker, Role, Stopped, WorkerToManager,
};
use aam_protocol::model::{ExitInfo, StopCause, TeardownReceipt};
use aam_protocol::output::OutputCapture;
use actix::prelude::*;
use futures::SinkExt;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub manager: String,
    pub token: String,
    pub name: String,
    pub slots: u32,
    /// Assignments accepted beyond `slots`, queued here (0: none).
    pub prefetch: u32,
    pub labels: BTreeMap<String, String>,
    /// Base directory for relative job workdirs.
    pub workdir: PathBuf,
    pub max_frame: usize,
}

/// What the worker keeps of an assigned attempt.
struct RunningJob {
    /// Its process group id, 0 until it started.
    pid: u32,
    /// Its processes' `AAM_RUN_ID` marker.
    marker: String,
    /// Tells the running job to stop (taken when used).
    stop: Option<oneshot::Sender<StopOrder>>,
    /// What it printed, as kept (resent after a reconnect).
    capture: OutputCapture,
}

/// Output bytes waiting to be written past which new output is not sent
/// (the attempt's capture keeps it and is resent whole later), so a chatty
/// job and a slow link cannot grow the worker's memory without bound.
pub const OUTPUT_BACKLOG: usize = 8 * 1024 * 1024;

/// Frames for the manager go through a writer task; `backlog` counts the
/// bytes not yet written.
struct Writer {
    tx: tokio::sync::mpsc::UnboundedSender<WorkerToManager>,
    backlog: Rc<Cell<usize>>,
}

fn frame_size(msg: &WorkerToManager) -> usize {
    match msg {
        WorkerToManager::Output { data, .. } => data.len() + 32,
        WorkerToManager::OutputSync { capture, .. } => capture.total().min(16 << 20) as usize + 64,
        _ => 64,
    }
}

impl Writer {
    fn start(write: OwnedWriteHalf, max_frame: usize) -> Writer {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<WorkerToManager>();
        let backlog = Rc::new(Cell::new(0usize));
        let left = backlog.clone();
        actix::spawn(async move {
            let mut framed = tokio_util::codec::FramedWrite::new(
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
}

struct Connection {
    writer: Writer,
    heartbeat: Option<SpawnHandle>,
    reader: SpawnHandle,
}

pub struct WorkerAgent {
    config: WorkerConfig,
    conn: Option<Connection>,
    connecting: bool,
    backoff: Duration,
    /// Assigned attempts (started or waiting for a slot).
    running: HashMap<AttemptRef, RunningJob>,
    /// Assigned attempts waiting for a free slot (only with prefetch).
    waiting: VecDeque<Assignment>,
    /// Children started and not yet finished.
    active: u32,
    /// Ends reported but not yet acknowledged as durable: resent after a
    /// reconnect, so a report lost with a connection cannot make the
    /// manager run a finished job again.
    unacked: HashMap<AttemptRef, (WorkerToManager, OutputCapture)>,
    /// When the manager was last heard from on the current connection.
    last_heard: Instant,
    /// Set by `Drain`: told when the last job has ended and been acknowledged.
    drained: Option<oneshot::Sender<()>>,
    draining: bool,
    /// The latest progress of each attempt, kept while disconnected.
    pending_progress: HashMap<AttemptRef, WorkerToManager>,
    /// Output bytes kept per attempt (the manager's setting).
    output_cap: usize,
    /// Attempts whose output was held back for a full backlog: their
    /// capture is sent whole once the backlog drains.
    behind: HashSet<AttemptRef>,
}

/// Starts a worker in the current actix system.
pub fn start(config: WorkerConfig) -> Addr<WorkerAgent> {
    WorkerAgent {
        config,
        conn: None,
        connecting: false,
        backoff: Duration::from_millis(100),
        running: HashMap::new(),
        waiting: VecDeque::new(),
        active: 0,
        unacked: HashMap::new(),
        last_heard: Instant::now(),
        drained: None,
        draining: false,
        pending_progress: HashMap::new(),
        output_cap: aam_protocol::output::DEFAULT_OUTPUT_CAP,
        behind: HashSet::new(),
    }
    .start()
}

impl WorkerAgent {
    fn dial(&mut self, ctx: &mut Context<Self>) {
        if self.connecting || self.conn.is_some() {
            return;
        }
        self.connecting = true;
        let config = self.config.clone();
        let attempt = async move {
            connect(
                &config.manager,
                Role::Worker,
                &config.token,
                config.max_frame,
            )
            .await
        };
        ctx.spawn(attempt.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            match result {
                Ok((stream, leftover)) => act.connected(stream, leftover, ctx),
                Err(ConnectError::Rejected { addr, reason }) => {
                    tracing::error!("manager at {addr} refused this worker: {reason}");
                    act.kill_all();
                    System::current().stop_with_code(3);
                }
                Err(e) => {
                    tracing::info!("{e}; retrying in {:?}", act.backoff);
                    let wait = act.backoff;
                    act.backoff = (act.backoff * 2).min(Duration::from_secs(5));
                    ctx.run_later(wait, |act, ctx| act.dial(ctx));
                }
            }
        }));
    }

    fn connected(
        &mut self,
        stream: tokio::net::TcpStream,
        leftover: bytes::BytesMut,
        ctx: &mut Context<Self>,
    ) {
        let (read, write) = stream.into_split();
        let mut reader = FramedRead::new(
            read,
            FrameCodec::<ManagerToWorker, WorkerToManager>::new(self.config.max_frame),
        );
        reader.read_buffer_mut().extend_from_slice(&leftover);
        let reader = ctx.add_stream(reader);
        let mut writer = Writer::start(write, self.config.max_frame);
        writer.write(WorkerToManager::Register {
            name: self.config.name.clone(),
            slots: self.config.slots,
            prefetch: self.config.prefetch,
            labels: self.config.labels.clone(),
            assigned: self
                .running
                .keys()
                .chain(self.unacked.keys())
                .copied()
                .collect(),
        });
        self.last_heard = Instant::now();
        self.conn = Some(Connection {
            writer,
            heartbeat: None,
            reader,
        });
        tracing::info!(manager = %self.config.manager, worker = %self.config.name, "connected");
    }

    fn disconnected(&mut self, ctx: &mut Context<Self>, why: &str) {
        if let Some(conn) = self.conn.take() {
            if let Some(h) = conn.heartbeat {
                ctx.cancel_future(h);
            }
            ctx.cancel_future(conn.reader);
            tracing::warn!(manager = %self.config.manager, running = self.running.len(),
                "lost the manager ({why}); jobs keep running, reconnecting");
        }
        self.dial(ctx);
    }

    /// Sends an attempt's end now if registered, and keeps it (with its
    /// output) until acknowledged.
    fn report_end(&mut self, msg: WorkerToManager, capture: OutputCapture) {
        let attempt = match &msg {
            WorkerToManager::Finished { attempt, .. }
            | WorkerToManager::SpawnFailed { attempt, .. } => *attempt,
            _ => return self.report(msg),
        };
        self.pending_progress.remove(&attempt);
        let held_back = self.behind.remove(&attempt);
        if let Some(conn) = &mut self.conn {
            if conn.heartbeat.is_some() {
                if held_back {
                    // Its output did not all go: the whole of it goes before its end.
                    conn.writer.write(WorkerToManager::OutputSync {
                        attempt,
                        capture: capture.clone(),
                    });
                }
                conn.writer.write(msg.clone());
                tracing::debug!(job = %attempt.job, attempt = attempt.attempt, "reported the end of a job");
            }
        }
        self.unacked.insert(attempt, (msg, capture));
    }

    /// Sends a report now if registered. Otherwise output is not queued
    /// (the attempt's capture has it) and only the latest progress is kept.
    fn report(&mut self, msg: WorkerToManager) {
        if let Some(conn) = &mut self.conn {
            if conn.heartbeat.is_some() {
                if let WorkerToManager::Output { attempt, .. } = &msg {
                    if conn.writer.backlog.get() > OUTPUT_BACKLOG {
                        // The capture has it; it goes whole once we catch up.
                        self.behind.insert(*attempt);
                        return;
                    }
                    if self.behind.contains(attempt) {
                        return;
                    }
                }
                conn.writer.write(msg);
                return;
            }
        }
        if let WorkerToManager::Progress { attempt, .. } = &msg {
            self.pending_progress.insert(*attempt, msg);
        }
    }

    /// Starts waiting assignments while slots are free.
    fn start_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.active < self.config.slots {
            let Some(assignment) = self.waiting.pop_front() else {
                break;
            };
            tracing::debug!(job = %assignment.job_name, session = %assignment.job.session,
                attempt = assignment.attempt, "starting job");
            self.active += 1;
            let (stop, stop_rx) = oneshot::channel();
            let attempt = AttemptRef {
                job: assignment.job,
                attempt: assignment.attempt,
            };
            if let Some(job) = self.running.get_mut(&attempt) {
                job.stop = Some(stop);
            }
            let base = self.config.workdir.clone();
            let span = tracing::info_span!("job", session = %assignment.job.session,
                job = %assignment.job_name, attempt = assignment.attempt);
            actix::spawn(tracing::Instrument::instrument(
                run_job(assignment, base, ctx.address(), stop_rx),
                span,
            ));
        }
    }

    /// Sends the captures of attempts whose output was held back, once the
    /// backlog has drained.
    fn catch_up(&mut self) {
        let Some(conn) = &mut self.conn else {
            return;
        };
        if self.behind.is_empty() || conn.writer.backlog.get() > OUTPUT_BACKLOG / 8 {
            return;
        }
        for attempt in std::mem::take(&mut self.behind) {
            if let Some(job) = self.running.get(&attempt) {
                conn.writer.write(WorkerToManager::OutputSync {
                    attempt,
                    capture: job.capture.clone(),
                });
            } else if let Some((_, capture)) = self.unacked.get(&attempt) {
                conn.writer.write(WorkerToManager::OutputSync {
                    attempt,
                    capture: capture.clone(),
                });
            }
        }
    }

    /// After (re)registering: everything the manager may have missed.
    fn resync(&mut self) {
        let Some(conn) = &mut self.conn else {
            return;
        };
        // The whole captures go now: nothing is held back any more.
        self.behind.clear();
        if self.draining {
            conn.writer.write(WorkerToManager::Draining);
        }
        for (attempt, job) in &self.running {
            if !job.capture.is_empty() {
                conn.writer.write(WorkerToManager::OutputSync {
                    attempt: *attempt,
                    capture: job.capture.clone(),
                });
            }
        }
        for (_, msg) in self.pending_progress.drain() {
            conn.writer.write(msg);
        }
        // Ended attempts: their output, then their end.
        for (attempt, (msg, capture)) in &self.unacked {
            if !capture.is_empty() {
                conn.writer.write(WorkerToManager::OutputSync {
                    attempt: *attempt,
                    capture: capture.clone(),
                });
            }
            conn.writer.write(msg.clone());
        }
    }

    /// Stops every job now, synchronously (for a process about to exit):
    /// SIGTERM and SIGKILL at once to all of their processes.
    fn kill_all(&mut self) -> usize {
        self.waiting.clear();
        for job in self.running.values() {
            if job.pid != 0 {
                stop_job(job.pid, &job.marker, Duration::ZERO);
            }
        }
        self.running.len()
    }

    /// Tells `Drain` its work is done once nothing runs and every end is acknowledged.
    fn check_drained(&mut self) {
        if self.draining && self.running.is_empty() && self.unacked.is_empty() {
            if let Some(done) = self.drained.take() {
                let _ = done.send(());
            }
        }
    }

    /// Stops one attempt: a waiting one ends at once, a running one gets
    /// its stop order and reports its end (with a receipt) when done.
    fn stop(&mut self, attempt: AttemptRef, cause: StopCause, grace: Duration) {
        if let Some(pos) = self
            .waiting
            .iter()
            .position(|a| a.job == attempt.job && a.attempt == attempt.attempt)
        {
            self.waiting.remove(pos);
            self.running.remove(&attempt);
            let exit = ExitInfo {
                code: None,
                signal: None,
                duration_ms: 0,
            };
            let stopped = Some(Stopped {
                cause,
                receipt: TeardownReceipt::default(),
            });
            let end = WorkerToManager::Finished {
                attempt,
                exit,
                stopped,
            };
            self.report_end(end, OutputCapture::new(0));
        } else if let Some(order) = self.running.get_mut(&attempt).and_then(|j| j.stop.take()) {
            let _ = order.send(StopOrder { cause, grace });
        }
    }
}

impl Actor for WorkerAgent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        // Descendants that escape a job's process group are reparented to
        // us rather than to init: we can find them and must reap them.
        if !become_subreaper() {
            tracing::warn!("cannot become a child subreaper; escaped job processes go to init");
        }
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            let own: BTreeSet<u32> = act.running.values().map(|j| j.pid).collect();
            reap_adopted(&own);
        });
        self.dial(ctx);
    }
}

impl StreamHandler<Result<ManagerToWorker, CodecError>> for WorkerAgent {
    fn handle(&mut self, item: Result<ManagerToWorker, CodecError>, ctx: &mut Context<Self>) {
        let msg = match item {
            Ok(m) => m,
            Err(e) => return self.disconnected(ctx, &e.to_string()),
        };
        self.last_heard = Instant::now();
        match msg {
            ManagerToWorker::Registered {
                heartbeat_ms,
                lease_ms,
                output_cap,
            } => {
                self.backoff = Duration::from_millis(100);
                let every = Duration::from_millis(heartbeat_ms.max(50));
                let lease = Duration::from_millis(lease_ms.max(heartbeat_ms * 2));
                let handle = ctx.run_interval(every, move |act, ctx| {
                    if act.last_heard.elapsed() > lease {
                        // A silent cut (no reset): do not write into it for minutes.
                        return act.disconnected(ctx, "the manager went silent");
                    }
                    if let Some(conn) = &mut act.conn {
                        conn.writer.write(WorkerToManager::Heartbeat);
                    }
                    act.catch_up();
                });
                if let Some(conn) = &mut self.conn {
                    conn.heartbeat = Some(handle);
                }
                self.output_cap = output_cap as usize;
                self.resync();
                tracing::info!(worker = %self.config.name, slots = self.config.slots, "registered");
            }
            ManagerToWorker::Assign(assignment) => {
                let attempt = AttemptRef {
                    job: assignment.job,
                    attempt: assignment.attempt,
                };
                if self.draining {
                    // Sent before the manager heard we drain: hand it back.
                    let exit = ExitInfo {
                        code: None,
                        signal: None,
                        duration_ms: 0,
                    };
                    let stopped = Some(Stopped {
                        cause: StopCause::Shutdown,
                        receipt: TeardownReceipt::default(),
                    });
                    let end = WorkerToManager::Finished {
                        attempt,
                        exit,
                        stopped,
                    };
                    return self.report_end(end, OutputCapture::new(0));
                }
                let job = RunningJob {
                    pid: 0,
                    marker: run_marker(&assignment),
                    stop: None,
                    capture: OutputCapture::new(self.output_cap),
                };
                self.running.insert(attempt, job);
                self.waiting.push_back(assignment);
                self.start_waiting(ctx);
            }
            ManagerToWorker::Stop {
                attempt,
                cause,
                grace_ms,
            } => {
                tracing::info!(job = %attempt.job, attempt = attempt.attempt,
                    cause = cause.as_str(), "manager ordered a stop");
                self.stop(attempt, cause, Duration::from_millis(grace_ms));
            }
            ManagerToWorker::Refused { reason } => {
                tracing::error!("manager refused this worker: {reason}");
                self.kill_all();
                System::current().stop_with_code(2);
            }
            ManagerToWorker::Pong => {}
            ManagerToWorker::Ack(attempt) => {
                self.unacked.remove(&attempt);
                self.check_drained();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.disconnected(ctx, "connection closed");
    }
}

/// A job's event, delivered to the worker actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Event(pub JobEvent);

impl EventSink for Addr<WorkerAgent> {
    async fn send(&self, event: JobEvent) {
        let _ = Addr::send(self, Event(event)).await;
    }
}

impl Handler<Event> for WorkerAgent {
    type Result = ();

    fn handle(&mut self, Event(event): Event, ctx: &mut Context<Self>) {
        match event {
            JobEvent::Started { attempt, pid } => {
                if let Some(job) = self.running.get_mut(&attempt) {
                    job.pid = pid;
                }
            }
            JobEvent::Progress {
                attempt,
                percent,
                message,
            } => self.report(WorkerToManager::Progress {
                attempt,
                percent,
                message,
            }),
            JobEvent::Output { attempt, data } => {
                if let Some(job) = self.running.get_mut(&attempt) {
                    job.capture.push(&data);
                }
                self.report(WorkerToManager::Output { attempt, data })
            }
            JobEvent::SpawnFailed { attempt, error } => {
                tracing::warn!(job = %attempt.job, "could not start: {error}");
                self.running.remove(&attempt);
                self.active = self.active.saturating_sub(1);
                let none = OutputCapture::new(0);
                self.report_end(WorkerToManager::SpawnFailed { attempt, error }, none);
                self.start_waiting(ctx);
                self.check_drained();
            }
            JobEvent::Finished {
                attempt,
                exit,
                stopped,
            } => {
                let capture = self
                    .running
                    .remove(&attempt)
                    .map(|j| j.capture)
                    .unwrap_or_else(|| OutputCapture::new(0));
                self.active = self.active.saturating_sub(1);
                let end = WorkerToManager::Finished {
                    attempt,
                    exit,
                    stopped,
                };
                self.report_end(end, capture);
                self.start_waiting(ctx);
                self.check_drained();
            }
        }
    }
}

/// Graceful shutdown: take no more jobs, hand back the ones not started,
/// let running ones finish for up to `timeout`, then stop them (they are
/// requeued, not failed). `done` is told when all have ended and the manager
/// has acknowledged it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub timeout: Duration,
    /// SIGTERM-to-SIGKILL time for jobs still running at the timeout.
    pub grace: Duration,
    pub done: oneshot::Sender<()>,
}

impl Handler<Drain> for WorkerAgent {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) {
        self.draining = true;
        self.drained = Some(msg.done);
        if let Some(conn) = &mut self.conn {
            if conn.heartbeat.is_some() {
                conn.writer.write(WorkerToManager::Draining);
            }
        }
        let waiting: Vec<AttemptRef> = self
            .waiting
            .iter()
            .map(|a| AttemptRef {
                job: a.job,
                attempt: a.attempt,
            })
            .collect();
        for attempt in waiting {
            self.stop(attempt, StopCause::Shutdown, Duration::ZERO);
        }
        tracing::info!(running = self.running.len(), timeout = ?msg.timeout, "draining");
        let grace = msg.grace;
        ctx.run_later(msg.timeout, move |act, _| {
            let left: Vec<AttemptRef> = act.running.keys().copied().collect();
            if !left.is_empty() {
                tracing::info!(
                    jobs = left.len(),
                    "drain timeout: stopping the jobs still running"
                );
            }
            for attempt in left {
                act.stop(attempt, StopCause::Shutdown, grace);
            }
        });
        self.check_drained();
    }
}

/// Kills every running job's process group (for shutdown).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct KillAll;

impl Handler<KillAll> for WorkerAgent {
    type Result = usize;

    fn handle(&mut self, _: KillAll, _ctx: &mut Context<Self>) -> usize {
        self.kill_all()
    }
}
