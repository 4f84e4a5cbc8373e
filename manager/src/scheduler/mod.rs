//! The scheduler actor: the single owner of session and job state
//! (ARCHITECTURE.md, invariant 2: one writer). A thin shell around `State`:
//! every message changes the state, then `settle` dispatches what can run,
//! commits what changed, and parks the message's effects (replies,
//! assignments, notifications) until that commit is durable.
//!
//! `requests` answers clients, one function per request; `workers` handles
//! what workers say; `effects` is the commit-then-release machinery;
//! `read_only` is what it does while the store takes no writes.

mod audit;
mod effects;
mod notices;
mod observers;
mod permissions;
mod read_only;
mod requests;
mod workers;

pub use audit::Audit;
pub use observers::{Readiness, Subscribe, SUBSCRIBER_BACKLOG};
pub use workers::{WorkerConnected, WorkerDisconnected, WorkerReport};

use crate::client_conn::SessionUpdate;
use crate::commit::Committer;
use crate::notify::Outbox;
use crate::state::{BranchDeletion, State};
use crate::worker_conn::WorkerConn;
use aam_protocol::codec;
use aam_protocol::messages::{ClientRequest, ClientResponse, ManagerToWorker};
use aam_protocol::output::OutputCapture;
use aam_protocol::{now_ms, JobKey, SessionId};
use aam_store::Store;
use actix::prelude::*;
use effects::{Effect, Parked};
use observers::Subscribers;
use read_only::{StoreHealth, PROBE_EVERY};
use requests::{CancelWaiter, Reply};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::oneshot;

pub use crate::state::WorkerId;

/// A client's request; `reply` gets the direct answer (None when the answer
/// comes as `SessionUpdate`s to `watcher`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientCall {
    pub request: ClientRequest,
    pub reply: oneshot::Sender<Option<ClientResponse>>,
    pub watcher: Option<Recipient<SessionUpdate>>,
    /// Who asks: the token the client presented (its name, role, quotas)
    /// and the client's address.
    pub who: crate::access::Identity,
    /// The jobs of the `SubmitPart`s before a `Submit`, part by part, in
    /// order (they come before the batch's own jobs); else empty.
    pub earlier_parts: Vec<Vec<aam_protocol::spec::JobSpec>>,
}

/// Resolves `done` once everything changed so far is durable (for shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush {
    pub done: oneshot::Sender<()>,
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
    /// The HTTP server's event streams.
    subscribers: Subscribers,
    parked: Parked,
    cancel_waiters: Vec<CancelWaiter>,
    health: StoreHealth,
    /// `[[notify]]`: events made with the changes, delivered once durable.
    pub notify: Outbox,
    /// Audit records waiting for the next commit.
    audit: audit::AuditLog,
}

impl Scheduler {
    pub fn new(
        state: State,
        store: Store,
        committer: Committer,
        heartbeat_ms: u64,
        lease_ms: u64,
        next_audit: u64,
    ) -> Self {
        Scheduler {
            audit: audit::AuditLog::starting_at(next_audit),
            state,
            store,
            committer,
            heartbeat_ms,
            lease_ms,
            retention_ms: 30 * 24 * 3600 * 1000,
            answer_budget: aam_protocol::codec::DEFAULT_MAX_FRAME / 2,
            workers: HashMap::new(),
            watchers: HashMap::new(),
            subscribers: Subscribers::default(),
            parked: Parked::default(),
            cancel_waiters: Vec::new(),
            health: StoreHealth::default(),
            notify: Outbox::default(),
        }
    }

    /// Runs after every message: answers the cancels whose jobs have ended,
    /// dispatches what can run, then commits what changed and holds
    /// `effects` until that commit is durable. While the store takes no
    /// writes, nothing is dispatched or committed.
    fn settle(&mut self, ctx: &mut Context<Self>, mut effects: Vec<Effect>) {
        let now = now_ms();
        if !self.cancel_waiters.is_empty() {
            effects.extend(self.finished_cancels());
        }
        if self.read_only() {
            return self.commit_then_release(ctx, Default::default(), effects);
        }
        let reader = self.output_reader();
        for (worker, mut assignment) in self.state.dispatch(now) {
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
        for session in self.state.take_to_notify() {
            if self.watchers.contains_key(&session) || self.subscribers.want(session) {
                if let Some(summary) = self.state.summary(session) {
                    effects.push(Effect::Notify(summary));
                }
            }
        }
        let mut changes = self.state.take_changes();
        self.audit.take_into(&mut changes);
        let staged = self.notify.stage(&mut self.state, &mut changes, now);
        if !staged.is_empty() {
            effects.push(Effect::Notices(staged));
        }
        self.commit_then_release(ctx, changes, effects);
    }

    /// Removes finished sessions older than `age` ms; returns them, their
    /// job count and the output bytes the store frees. With `gc_branches`,
    /// the workers that hold their jobs' branches are told to delete them
    /// (`effects`, once the removal is durable).
    fn gc(&mut self, age: u64, effects: &mut Vec<Effect>) -> (Vec<SessionId>, u64, u64) {
        let collected = self.state.gc(now_ms().saturating_sub(age));
        effects.extend(self.delete_branches(collected.branches));
        let removed = collected.removed;
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

    /// Orders to delete branches, to the connected workers that hold
    /// them; best effort: those of a worker that is not connected are left
    /// (and the log says so).
    fn delete_branches(&self, deletions: Vec<BranchDeletion>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for BranchDeletion {
            worker,
            repo,
            branches,
        } in deletions
        {
            match self.state.worker_id(&worker) {
                Some(id) => {
                    tracing::info!(worker = %worker, repo = %repo, branches = branches.len(),
                        "deleting the branches of removed sessions");
                    let order = ManagerToWorker::DeleteBranches { repo, branches };
                    effects.push(Effect::ToWorker(id, order));
                }
                None => tracing::warn!(worker = %worker, repo = %repo, branches = branches.len(),
                    first = ?branches.first(),
                    "cannot delete the branches of removed sessions: their worker is not connected; they stay"),
            }
        }
        effects
    }

    /// Reads finished jobs' outputs from the store.
    fn output_reader(&self) -> impl Fn(JobKey) -> Option<OutputCapture> {
        let store = self.store.clone();
        move |key| {
            let bytes = store.output(key).ok().flatten()?;
            codec::decode::<OutputCapture>(&bytes).ok()
        }
    }

    /// Reads worktree jobs' patches from the store.
    fn patch_reader(&self) -> impl Fn(JobKey) -> Option<Vec<u8>> {
        let store = self.store.clone();
        move |key| store.patch(key).ok().flatten()
    }
}

impl Scheduler {
    /// Retention, at start and hourly (not while the store takes no
    /// writes: it changes records).
    fn retain(&mut self, ctx: &mut Context<Self>) {
        if !self.read_only() {
            let mut effects = Vec::new();
            self.gc(self.retention_ms, &mut effects);
            // The audit log is kept as long as finished sessions are.
            self.audit.prune(now_ms().saturating_sub(self.retention_ms));
            self.settle(ctx, effects);
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounds `send` from connection actors (output chunks wait here).
        ctx.set_mailbox_capacity(1024);
        self.notify.start(ctx.address().recipient());
        // Retention: now, then every hour (not while the store takes no
        // writes: the timers change records).
        ctx.run_later(Duration::from_secs(1), |act, ctx| act.retain(ctx));
        ctx.run_interval(Duration::from_secs(3600), |act, ctx| act.retain(ctx));
        ctx.run_interval(PROBE_EVERY, |act, ctx| act.check_store(ctx));
        ctx.run_interval(Duration::from_millis(200), |act, ctx| {
            if act.read_only() {
                return;
            }
            let now = now_ms();
            if act.state.expire_orphans(now) > 0 {
                tracing::info!("requeued jobs whose worker did not come back");
            }
            act.state.release_delayed(now);
            let mut effects = Vec::new();
            act.expire_permissions(now, &mut effects);
            act.settle(ctx, effects);
        });
    }
}

impl Handler<ClientCall> for Scheduler {
    type Result = ();

    fn handle(&mut self, call: ClientCall, ctx: &mut Context<Self>) {
        let ClientCall {
            request,
            reply,
            watcher,
            who,
            earlier_parts,
        } = call;
        let mut effects = Vec::new();
        let watching = watcher.is_some();
        match self.request(request, earlier_parts, &who, watching, &mut effects) {
            Reply::Answer(answer) => effects.push(Effect::Reply(reply, Some(answer))),
            Reply::WhenEnded { jobs, answer } => {
                self.cancel_waiters.push(CancelWaiter {
                    jobs,
                    reply,
                    answer,
                    seq: self.parked.next_seq(),
                });
            }
            Reply::Audit { since_ms } => self.read_audit(ctx, since_ms, reply),
            Reply::Watch(summary) => {
                // Subscribed now, so every later change makes a Notify; the
                // first answer still waits for durability. The direct answer
                // is None: the updates are the answer.
                effects.push(Effect::Reply(reply, None));
                if let Some(watcher) = watcher {
                    // One watch per session per connection, however often asked:
                    // a repeated Watch gets its first update, no second stream.
                    if !summary.status.is_terminal() {
                        let list = self.watchers.entry(summary.id).or_default();
                        if !list.contains(&watcher) {
                            list.push(watcher.clone());
                        }
                    }
                    effects.push(Effect::Watch(summary, watcher));
                }
            }
        }
        self.settle(ctx, effects);
    }
}

/// What the providers' loop saw this tick (`aam providers`, and why
/// queued jobs wait).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProvidersSeen(pub Vec<aam_protocol::model::ProviderView>);

impl Handler<ProvidersSeen> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: ProvidersSeen, _: &mut Context<Self>) {
        self.state.set_providers(msg.0);
    }
}

/// The model's capacity, for the providers' launch decision: `launchable`
/// is the most job slots the providers could bring (`State::capacity`).
#[derive(Message)]
#[rtype(result = "crate::state::Capacity")]
pub struct CountCapacity {
    pub launchable: u32,
}

impl Handler<CountCapacity> for Scheduler {
    type Result = MessageResult<CountCapacity>;

    fn handle(&mut self, msg: CountCapacity, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.capacity(now_ms(), msg.launchable))
    }
}

impl Handler<crate::metrics::CountModel> for Scheduler {
    type Result = MessageResult<crate::metrics::CountModel>;

    fn handle(&mut self, _: crate::metrics::CountModel, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.counts(now_ms()))
    }
}

impl Handler<Flush> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) {
        self.settle(ctx, vec![Effect::Flushed(msg.done)]);
    }
}
