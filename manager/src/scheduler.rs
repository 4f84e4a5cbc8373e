//! The scheduler actor: the single owner of session and job state
//! (DESIGN.md invariant 2). It applies every message to its `State`, hands
//! the resulting changes to the committer, and only once they are durable
//! lets the replies, assignments and notifications they caused go out.

use crate::client_conn::SessionUpdate;
use crate::commit::Committer;
use crate::schedule::WorkerId;
use crate::state::{State, WorkerEntry};
use crate::worker_conn::{ToWorker, WorkerConn};
use aam_protocol::codec;
use aam_protocol::messages::Stopped;
use aam_protocol::messages::{
    AttemptRef, ClientRequest, ClientResponse, ErrorKind, ManagerToWorker, WorkerToManager,
};
use aam_protocol::model::{ExitInfo, SessionSummary, StopCause};
use aam_protocol::output::OutputCapture;
use aam_protocol::{now_ms, JobKey, SessionId};
use aam_store::Store;
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::oneshot;

/// A client's request; `reply` gets the direct answer (None when the answer
/// comes as `SessionUpdate`s to `watcher`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientCall {
    pub request: ClientRequest,
    pub reply: oneshot::Sender<Option<ClientResponse>>,
    pub watcher: Option<Recipient<SessionUpdate>>,
    /// The name of the token the client presented.
    pub who: String,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerConnected {
    pub id: WorkerId,
    pub addr: Addr<WorkerConn>,
    pub name: String,
    pub address: String,
    pub slots: u32,
    pub prefetch: u32,
    pub labels: BTreeMap<String, String>,
    pub running: Vec<AttemptRef>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerDisconnected {
    pub id: WorkerId,
    /// It went silent past its lease (its jobs are requeued at once).
    pub lost: bool,
}

/// Any report from a registered worker after its registration.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerReport {
    pub id: WorkerId,
    pub report: WorkerToManager,
}

/// Resolves once everything changed so far is durable (for shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub done: oneshot::Sender<()>,
}

enum Effect {
    Reply(
        oneshot::Sender<Option<ClientResponse>>,
        Option<ClientResponse>,
    ),
    ToWorker(WorkerId, ManagerToWorker),
    /// A session's progress as of the commit this effect waits for (taken
    /// when the effect is made, so a later, not yet durable change never
    /// shows early).
    Notify(SessionSummary),
    Watch(SessionSummary, Recipient<SessionUpdate>),
    Drained(oneshot::Sender<()>),
}

pub struct Scheduler {
    state: State,
    store: Store,
    committer: Committer,
    heartbeat_ms: u64,
    lease_ms: u64,
    /// Finished sessions older than this are removed (hourly and by `aam gc`).
    pub retention_ms: u64,
    /// Most output bytes put into one answer (keeps it within a frame).
    pub answer_budget: usize,
    workers: HashMap<WorkerId, Addr<WorkerConn>>,
    watchers: HashMap<SessionId, Vec<Recipient<SessionUpdate>>>,
    /// Effects waiting for their commit, by commit sequence number.
    waiting: VecDeque<(u64, Vec<Effect>)>,
    next_seq: u64,
    cancel_waiters: Vec<CancelWaiter>,
}

impl Scheduler {
    pub fn new(
        state: State,
        store: Store,
        committer: Committer,
        heartbeat_ms: u64,
        lease_ms: u64,
    ) -> Self {
        Scheduler {
            state,
            store,
            committer,
            heartbeat_ms,
            lease_ms,
            retention_ms: 30 * 24 * 3600 * 1000,
            answer_budget: aam_protocol::codec::DEFAULT_MAX_FRAME / 2,
            workers: HashMap::new(),
            watchers: HashMap::new(),
            waiting: VecDeque::new(),
            next_seq: 0,
            cancel_waiters: Vec::new(),
        }
    }

    /// Runs after every message: dispatch what can run, then commit what
    /// changed, and hold `effects` until that commit is durable.
    fn settle(&mut self, ctx: &mut Context<Self>, mut effects: Vec<Effect>) {
        let now = now_ms();
        if !self.cancel_waiters.is_empty() {
            effects.extend(self.finished_cancels());
        }
        let dispatched = self.state.dispatch(now);
        let reader = self.output_reader();
        for (worker, mut assignment) in dispatched {
            if !self.state.job_depends_on_nothing(assignment.job) {
                assignment.inputs = self.state.inputs_for(assignment.job, &reader);
            }
            tracing::debug!(worker, job = %assignment.job_name, session = %assignment.job.session,
                attempt = assignment.attempt, "dispatching");
            effects.push(Effect::ToWorker(
                worker,
                ManagerToWorker::Assign(assignment),
            ));
        }
        let changes = self.state.take_changes();
        for session in self.state.take_changed_sessions() {
            if self.watchers.contains_key(&session) {
                if let Some(summary) = self.state.summary(session) {
                    effects.push(Effect::Notify(summary));
                }
            }
        }
        if changes.is_empty() {
            // Nothing new to make durable, but what these effects show may
            // still be in flight: they wait for the last pending commit.
            match self.waiting.back_mut() {
                Some((_, pending)) => pending.extend(effects),
                None => self.release(effects),
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push_back((seq, effects));
        let outputs: Vec<(JobKey, u32)> = changes
            .outputs
            .iter()
            .filter_map(|(k, _)| Some((*k, self.state.committing_attempt(*k)?)))
            .collect();
        let durable = self.committer.commit(changes);
        ctx.spawn(durable.into_actor(self).map(move |result, act, _ctx| {
            match result.unwrap_or_else(|_| Err("the commit thread stopped".into())) {
                Ok(()) => {
                    act.state.outputs_committed(&outputs);
                    while act.waiting.front().is_some_and(|(s, _)| *s <= seq) {
                        let (_, effects) = act.waiting.pop_front().expect("front exists");
                        act.release(effects);
                    }
                }
                Err(e) => {
                    // Without a durable store nothing may be acknowledged.
                    tracing::error!("cannot make state durable ({e}); stopping the manager");
                    System::current().stop_with_code(1);
                }
            }
        }));
    }

    /// Removes finished sessions older than `age` ms; returns them, their
    /// job count and the output bytes the store frees.
    fn collect(&mut self, age: u64) -> (Vec<SessionId>, u64, u64) {
        let removed = self.state.gc(now_ms().saturating_sub(age));
        let mut jobs = 0u64;
        let mut bytes = 0u64;
        for &(id, count) in &removed {
            jobs += count as u64;
            for index in 0..count {
                let key = JobKey { session: id, index };
                bytes += self
                    .store
                    .output(key)
                    .ok()
                    .flatten()
                    .map_or(0, |o| o.len() as u64);
            }
            self.watchers.remove(&id);
        }
        if !removed.is_empty() {
            tracing::info!(
                sessions = removed.len(),
                jobs,
                bytes,
                "removed finished sessions past retention"
            );
        }
        (removed.into_iter().map(|(id, _)| id).collect(), jobs, bytes)
    }

    /// Reads finished jobs' outputs from the store.
    fn output_reader(&self) -> impl Fn(JobKey) -> Option<OutputCapture> {
        let store = self.store.clone();
        move |key| {
            let bytes = store.output(key).ok().flatten()?;
            codec::decode::<OutputCapture>(&bytes).ok()
        }
    }

    fn release(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply(tx, response) => {
                    let _ = tx.send(response);
                }
                Effect::ToWorker(id, msg) => match self.workers.get(&id) {
                    Some(addr) => addr.do_send(ToWorker(msg)),
                    None => tracing::debug!(worker = id, "worker left before a message reached it"),
                },
                Effect::Notify(summary) => self.notify(summary),
                Effect::Watch(summary, recipient) => recipient.do_send(SessionUpdate(summary)),
                Effect::Drained(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }

    fn notify(&mut self, summary: SessionSummary) {
        let session = summary.id;
        let Some(list) = self.watchers.get_mut(&session) else {
            return;
        };
        list.retain(|r| r.connected());
        let terminal = summary.status.is_terminal();
        for r in list.iter() {
            r.do_send(SessionUpdate(summary.clone()));
        }
        if terminal || list.is_empty() {
            self.watchers.remove(&session);
        }
    }

    fn answer(
        &mut self,
        request: ClientRequest,
        watcher: Option<Recipient<SessionUpdate>>,
    ) -> (Option<ClientResponse>, Option<Effect>) {
        let not_found = |session: SessionId| ClientResponse::Error {
            kind: ErrorKind::NotFound,
            message: format!("no session {session}"),
        };
        let stored = self.output_reader();
        let response = match request {
            ClientRequest::Submit {
                batch,
                idempotency_key,
            } => {
                let name = batch.name.clone();
                if let Some((session, jobs)) = idempotency_key
                    .as_deref()
                    .and_then(|k| self.state.session_for_key(k))
                {
                    tracing::info!(session = %session, "submission with a known idempotency key");
                    return (
                        Some(ClientResponse::Submitted {
                            session,
                            jobs,
                            existing: true,
                            estimate: self.state.estimate(session, now_ms()),
                        }),
                        None,
                    );
                }
                match self.state.submit(batch, idempotency_key, now_ms()) {
                    Ok((session, jobs)) => {
                        tracing::info!(session = %session, name = %name, jobs, "session submitted");
                        ClientResponse::Submitted {
                            session,
                            jobs,
                            existing: false,
                            estimate: self.state.estimate(session, now_ms()),
                        }
                    }
                    Err(errors) => ClientResponse::Invalid(errors),
                }
            }
            ClientRequest::ListSessions => ClientResponse::Sessions(self.state.summaries()),
            ClientRequest::Session { session, output } => {
                match self
                    .state
                    .view(session, output, self.answer_budget, &stored)
                {
                    Some(view) => ClientResponse::Session(view),
                    None => not_found(session),
                }
            }
            ClientRequest::Logs { session, job, from } => {
                match self.state.logs(session, &job, from, &stored) {
                    Ok((status, attempt, output, output_bytes)) => ClientResponse::Logs {
                        status,
                        attempt,
                        output,
                        output_bytes,
                    },
                    Err(message) => ClientResponse::Error {
                        kind: ErrorKind::NotFound,
                        message,
                    },
                }
            }
            ClientRequest::Workers => ClientResponse::Workers(self.state.workers()),
            ClientRequest::Gc { older_than_ms } => {
                let (sessions, jobs, output_bytes) =
                    self.collect(older_than_ms.unwrap_or(self.retention_ms));
                ClientResponse::Collected {
                    sessions,
                    jobs,
                    output_bytes,
                }
            }
            ClientRequest::Agents => {
                let (agents, problems) = self.state.agents();
                ClientResponse::Agents { agents, problems }
            }
            ClientRequest::Retry { session } => match self.state.retry(session, now_ms()) {
                Ok(jobs) => {
                    tracing::info!(session = %session, jobs = jobs.len(), "session retried");
                    ClientResponse::Retried { jobs }
                }
                Err(message) => ClientResponse::Error {
                    kind: ErrorKind::BadRequest,
                    message,
                },
            },
            ClientRequest::Cancel { .. } | ClientRequest::Decide { .. } => ClientResponse::Error {
                kind: ErrorKind::Internal,
                message: "handled on its own".into(),
            },
            ClientRequest::Watch { session } => {
                if !self.state.session_exists(session) {
                    not_found(session)
                } else if let (Some(w), Some(summary)) = (watcher, self.state.summary(session)) {
                    // Subscribed now, so every later change makes a Notify
                    // effect; the first answer still waits for durability.
                    if !summary.status.is_terminal() {
                        self.watchers.entry(session).or_default().push(w.clone());
                    }
                    return (None, Some(Effect::Watch(summary, w)));
                } else {
                    ClientResponse::Error {
                        kind: ErrorKind::BadRequest,
                        message: "watch needs a subscriber".into(),
                    }
                }
            }
        };
        (Some(response), None)
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounds `send` from connection actors (output chunks wait here).
        ctx.set_mailbox_capacity(1024);
        // Retention: now, then every hour.
        ctx.run_later(Duration::from_secs(1), |act, ctx| {
            act.collect(act.retention_ms);
            act.settle(ctx, Vec::new());
        });
        ctx.run_interval(Duration::from_secs(3600), |act, ctx| {
            act.collect(act.retention_ms);
            act.settle(ctx, Vec::new());
        });
        ctx.run_interval(Duration::from_millis(200), |act, ctx| {
            let now = now_ms();
            if act.state.expire_orphans(now) > 0 {
                tracing::info!("requeued jobs whose worker did not come back");
            }
            act.state.release_delayed(now);
            act.settle(ctx, Vec::new());
        });
    }
}

impl Handler<ClientCall> for Scheduler {
    type Result = ();

    fn handle(&mut self, call: ClientCall, ctx: &mut Context<Self>) {
        if let ClientRequest::Cancel {
            session,
            job,
            grace_ms,
            wait,
        } = call.request
        {
            return self.cancel(ctx, session, job, grace_ms, wait, call.reply);
        }
        if let ClientRequest::Decide {
            session,
            job,
            approve,
            comment,
        } = call.request
        {
            let response = match self.state.decide(
                session,
                &job,
                approve,
                &call.who,
                comment,
                now_ms(),
            ) {
                Ok(status) => {
                    tracing::info!(session = %session, job = %job, approve, by = %call.who, "gate decided");
                    ClientResponse::Decided { status }
                }
                Err(message) => ClientResponse::Error {
                    kind: ErrorKind::BadRequest,
                    message,
                },
            };
            return self.settle(ctx, vec![Effect::Reply(call.reply, Some(response))]);
        }
        let (response, extra) = self.answer(call.request, call.watcher);
        let mut effects = vec![Effect::Reply(call.reply, response)];
        effects.extend(extra);
        self.settle(ctx, effects);
    }
}

impl Handler<WorkerConnected> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: WorkerConnected, ctx: &mut Context<Self>) {
        let now = now_ms();
        let entry = WorkerEntry {
            name: msg.name.clone(),
            address: msg.address,
            slots: msg.slots,
            prefetch: msg.prefetch,
            labels: msg.labels,
            running: Default::default(),
            draining: false,
            connected_at_ms: now,
            last_heartbeat_ms: now,
        };
        let registration = self.state.register_worker(msg.id, entry, &msg.running, now);
        if let Some(old) = registration.replaced {
            if let Some(addr) = self.workers.remove(&old) {
                tracing::info!(worker = %msg.name, "a new connection replaces the old one");
                addr.do_send(ToWorker(ManagerToWorker::Refused {
                    reason: "replaced by a newer connection of the same worker".into(),
                }));
            }
        }
        tracing::info!(worker = %msg.name, slots = msg.slots, adopted = registration.adopted.len(),
            killed = registration.kill.len(), "worker registered");
        self.workers.insert(msg.id, msg.addr);
        let mut effects = vec![Effect::ToWorker(
            msg.id,
            ManagerToWorker::Registered {
                heartbeat_ms: self.heartbeat_ms,
                lease_ms: self.lease_ms,
                output_cap: self.state.output_cap() as u64,
            },
        )];
        effects.extend(registration.kill.into_iter().map(|attempt| {
            let stop = ManagerToWorker::Stop {
                attempt,
                cause: StopCause::Superseded,
                grace_ms: 0,
            };
            Effect::ToWorker(msg.id, stop)
        }));
        effects.extend(registration.cancel.into_iter().map(|(attempt, grace_ms)| {
            let stop = ManagerToWorker::Stop {
                attempt,
                cause: StopCause::Cancelled,
                grace_ms,
            };
            Effect::ToWorker(msg.id, stop)
        }));
        self.settle(ctx, effects);
    }
}

impl Handler<WorkerDisconnected> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: WorkerDisconnected, ctx: &mut Context<Self>) {
        if self.workers.remove(&msg.id).is_some() {
            if let Some(name) = self.state.worker_name(msg.id) {
                tracing::info!(worker = %name, "worker disconnected");
            }
            self.state.worker_gone(msg.id, msg.lost, now_ms());
        }
        self.settle(ctx, Vec::new());
    }
}

impl Handler<WorkerReport> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: WorkerReport, ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut effects = Vec::new();
        match msg.report {
            WorkerToManager::Heartbeat => {
                self.state.heartbeat(msg.id, now);
                return;
            }
            WorkerToManager::Draining => {
                if let Some(name) = self.state.worker_name(msg.id) {
                    tracing::info!(worker = %name, "worker is draining");
                }
                self.state.worker_draining(msg.id);
            }
            WorkerToManager::Output { attempt, data } => {
                self.state.job_output(attempt, &data);
                return;
            }
            WorkerToManager::OutputSync { attempt, capture } => {
                self.state.output_sync(attempt, capture);
                return;
            }
            WorkerToManager::Finished {
                attempt,
                exit,
                stopped,
            } => {
                self.finish(msg.id, attempt, Some(exit), stopped, None, now);
                effects.push(Effect::ToWorker(msg.id, ManagerToWorker::Ack(attempt)));
            }
            WorkerToManager::Progress {
                attempt,
                percent,
                message,
            } => {
                self.state.job_progress(attempt, percent, message);
            }
            WorkerToManager::SpawnFailed { attempt, error } => {
                let exit = ExitInfo {
                    code: None,
                    signal: None,
                    duration_ms: 0,
                };
                self.finish(
                    msg.id,
                    attempt,
                    Some(exit),
                    None,
                    Some(format!("could not start: {error}")),
                    now,
                );
                effects.push(Effect::ToWorker(msg.id, ManagerToWorker::Ack(attempt)));
            }
            WorkerToManager::Register { .. } => {}
        }
        self.settle(ctx, effects);
    }
}

impl Scheduler {
    fn finish(
        &mut self,
        worker: WorkerId,
        attempt: AttemptRef,
        exit: Option<ExitInfo>,
        stopped: Option<Stopped>,
        reason: Option<String>,
        now: u64,
    ) {
        if self.state.job_finished(attempt, exit, stopped, reason, now) {
            tracing::debug!(worker, job = %attempt.job, attempt = attempt.attempt, "job finished");
        } else {
            tracing::info!(worker, job = %attempt.job, attempt = attempt.attempt,
                "ignoring a report of a stale attempt");
        }
    }
}

/// A `Cancel` waiting for the jobs it stops to end.
struct CancelWaiter {
    keys: Vec<JobKey>,
    reply: oneshot::Sender<Option<ClientResponse>>,
    response: ClientResponse,
}

impl Scheduler {
    fn cancel(
        &mut self,
        ctx: &mut Context<Self>,
        session: SessionId,
        job: Option<String>,
        grace_ms: Option<u64>,
        wait: bool,
        reply: oneshot::Sender<Option<ClientResponse>>,
    ) {
        let outcome = match self
            .state
            .cancel(session, job.as_deref(), grace_ms, now_ms())
        {
            Ok(o) => o,
            Err(message) => {
                let error = ClientResponse::Error {
                    kind: ErrorKind::NotFound,
                    message,
                };
                return self.settle(ctx, vec![Effect::Reply(reply, Some(error))]);
            }
        };
        tracing::info!(session = %session, job = job.as_deref().unwrap_or("*"),
            cancelled = outcome.cancelled.len(), stopping = outcome.stopping.len(), "cancel");
        let mut effects: Vec<Effect> = outcome
            .stopping
            .iter()
            .map(|&(worker, attempt, grace_ms)| {
                let stop = ManagerToWorker::Stop {
                    attempt,
                    cause: StopCause::Cancelled,
                    grace_ms,
                };
                Effect::ToWorker(worker, stop)
            })
            .collect();
        let response = ClientResponse::Cancelled {
            cancelled: outcome.cancelled,
            stopped: outcome.stopping_names,
        };
        if wait && !outcome.stopping.is_empty() {
            self.cancel_waiters.push(CancelWaiter {
                keys: outcome.stopping.iter().map(|(_, a, _)| a.job).collect(),
                reply,
                response,
            });
        } else {
            effects.push(Effect::Reply(reply, Some(response)));
        }
        self.settle(ctx, effects);
    }

    /// Answers the cancels whose jobs have all ended.
    fn finished_cancels(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut still = Vec::new();
        for waiter in std::mem::take(&mut self.cancel_waiters) {
            if waiter.keys.iter().all(|k| self.state.is_terminal(*k)) {
                effects.push(Effect::Reply(waiter.reply, Some(waiter.response)));
            } else {
                still.push(waiter);
            }
        }
        self.cancel_waiters = still;
        effects
    }
}

impl Handler<Drain> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) {
        self.settle(ctx, vec![Effect::Drained(msg.done)]);
    }
}
