//! The scheduler while its store takes no writes (a full disk, an I/O
//! error): refuse changes, keep answering reads, and resume by itself.
//!
//! When a commit fails, the model already holds what it (and every commit
//! behind it) changed. It is rolled back to what is durable (the commit
//! thread's `snapshot`, rebuilt as at start), and every worker is
//! disconnected, so it registers again against that model and reports the
//! attempts it holds (which are adopted as after a restart). Until a probe
//! (every `PROBE_EVERY`) finds the store taking writes again, requests that
//! change something get the store's error at once, reads are answered,
//! nothing is dispatched, no timer changes a record, and worker reports
//! that would change one (ends, progress) are neither taken nor
//! acknowledged: the workers keep them. When the store takes writes again,
//! the workers are disconnected once more, so they send what they kept.

use super::Scheduler;
use crate::commit::StoreFailure;
use crate::state::State;
use crate::worker_conn::Disconnect;
use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind, WorkerToManager};
use aam_protocol::now_ms;
use actix::prelude::*;
use std::time::Duration;

/// How often a read-only scheduler asks whether the store takes writes.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Whether the store takes writes, as the scheduler knows it.
#[derive(Default)]
pub(super) struct StoreHealth {
    /// Why the store takes no writes; None while it does.
    failure: Option<StoreFailure>,
    /// The model may hold changes that are not durable: its rollback has
    /// not succeeded yet (it is retried before the next probe).
    model_ahead: bool,
    /// A probe is under way.
    probing: bool,
}

/// The answer to a request whose changes the store did not take.
pub(super) fn not_stored(failure: &StoreFailure) -> ClientResponse {
    ClientResponse::Error {
        kind: ErrorKind::Internal,
        message: format!(
            "the manager could not store this: {} ({failure}); nothing of it was stored, and \
             the manager takes no changes until its store accepts writes again (it checks every \
             second; reads keep working)",
            failure.headline()
        ),
    }
}

/// The answer to any request while the model may hold changes that are
/// not durable (its rollback failed: the store could not be read back).
fn not_read_back(failure: &StoreFailure) -> ClientResponse {
    ClientResponse::Error {
        kind: ErrorKind::Internal,
        message: format!(
            "the manager could not store its latest changes ({}: {failure}) and cannot read its \
             store back yet, so it answers nothing it cannot vouch for; it retries every second",
            failure.headline()
        ),
    }
}

/// The commit thread is gone (it panicked): nothing can be made durable.
pub(super) fn commit_thread_gone() {
    tracing::error!("the commit thread stopped; nothing can be acknowledged: stopping the manager");
    System::current().stop_with_code(1);
}

impl Scheduler {
    /// Whether the store takes no writes.
    pub(super) fn read_only(&self) -> bool {
        self.health.failure.is_some()
    }

    /// Why the store takes no writes (None while it does).
    pub(super) fn store_failure(&self) -> Option<String> {
        let failure = self.health.failure.as_ref()?;
        Some(format!("{} ({failure})", failure.headline()))
    }

    /// The answer to `request` while the store takes no writes, if the
    /// request would change something (or anything, while the model may
    /// hold what is not durable).
    pub(super) fn refusal(&self, request: &ClientRequest) -> Option<ClientResponse> {
        let failure = self.health.failure.as_ref()?;
        if self.health.model_ahead {
            return Some(not_read_back(failure));
        }
        let changes = match request {
            // A resubmission of a stored session changes nothing.
            ClientRequest::Submit {
                idempotency_key, ..
            } => idempotency_key
                .as_deref()
                .and_then(|k| self.state.session_for_key(k))
                .is_none(),
            ClientRequest::Retry { .. }
            | ClientRequest::Cancel { .. }
            | ClientRequest::Decide { .. }
            | ClientRequest::Gc { .. }
            | ClientRequest::Say { .. }
            | ClientRequest::DecidePermission { .. }
            | ClientRequest::Continue { .. } => true,
            ClientRequest::Patch { .. }
            | ClientRequest::Audit { .. }
            | ClientRequest::SubmitPart { .. } => false,
            ClientRequest::ListSessions { .. }
            | ClientRequest::Session { .. }
            | ClientRequest::Logs { .. }
            | ClientRequest::Workers
            | ClientRequest::Resources
            | ClientRequest::Accounts
            | ClientRequest::Providers
            | ClientRequest::Agents
            | ClientRequest::Watch { .. } => false,
        };
        changes.then(|| not_stored(failure))
    }

    /// Whether a worker's report stays with the worker for now: the store
    /// takes no writes and the report would change a record. The worker
    /// keeps it (an end until it is acknowledged, the latest progress) and
    /// sends it again after it registers again.
    pub(super) fn holds_back(&self, report: &WorkerToManager) -> bool {
        self.read_only()
            && matches!(
                report,
                WorkerToManager::Finished { .. }
                    | WorkerToManager::SpawnFailed { .. }
                    | WorkerToManager::WorktreeFailed { .. }
                    | WorkerToManager::Progress { .. }
                    | WorkerToManager::AgentUpdate { .. }
            )
    }

    /// Commit number `failed` failed, and every one behind it: their
    /// replies (and those of cancels waiting on them) become the error,
    /// and the model is rolled back to what is durable.
    pub(super) fn store_failed(
        &mut self,
        ctx: &mut Context<Self>,
        failed: u64,
        failure: StoreFailure,
    ) {
        if !self.read_only() {
            tracing::warn!(
                "the store takes no writes ({}): {failure}; the manager refuses changes and \
                 dispatches nothing until it does (checked every {PROBE_EVERY:?}); reads keep working",
                failure.headline()
            );
        }
        self.refuse_parked(&failure);
        let (refused, kept) = std::mem::take(&mut self.cancel_waiters)
            .into_iter()
            .partition(|w| w.seq >= failed);
        self.cancel_waiters = kept;
        for waiter in refused {
            let _ = waiter.reply.send(Some(not_stored(&failure)));
        }
        self.health.failure = Some(failure);
        self.roll_back(ctx);
    }

    /// Rebuilds the model from what is durable. No other message is
    /// handled until then.
    fn roll_back(&mut self, ctx: &mut Context<Self>) {
        self.health.model_ahead = true;
        self.disconnect_workers();
        let snapshot = self.committer.snapshot();
        ctx.wait(
            snapshot
                .into_actor(self)
                .map(|result, act, _ctx| match result {
                    Ok(Ok(snapshot)) => {
                        let (sessions, jobs) = (snapshot.sessions.len(), snapshot.jobs.len());
                        let config = act.state.config().clone();
                        act.state = State::rebuild(config, snapshot, now_ms());
                        act.health.model_ahead = false;
                        tracing::info!(
                            sessions,
                            jobs,
                            "rolled the model back to what the store holds"
                        );
                    }
                    Ok(Err(e)) => tracing::error!(
                        "cannot read what the store holds ({e}); the rollback is retried"
                    ),
                    Err(_) => commit_thread_gone(),
                }),
        );
    }

    /// Closes every worker's connection; each dials again and registers
    /// anew, reporting the attempts (and kept ends) it holds.
    fn disconnect_workers(&mut self) {
        let now = now_ms();
        for (id, addr) in self.workers.drain() {
            // Gone from the model at once, so nothing is assigned to it
            // before its new connection registers.
            self.state.worker_gone(id, false, now);
            addr.do_send(Disconnect);
        }
    }

    /// While read-only: retries a failed rollback, else probes the store.
    pub(super) fn check_store(&mut self, ctx: &mut Context<Self>) {
        if !self.read_only() || self.health.probing {
            return;
        }
        if self.health.model_ahead {
            return self.roll_back(ctx);
        }
        self.health.probing = true;
        let probe = self.committer.probe();
        ctx.spawn(probe.into_actor(self).map(|result, act, ctx| {
            act.health.probing = false;
            match result {
                Ok(Ok(())) => act.resume(ctx),
                Ok(Err(failure)) => {
                    tracing::debug!("the store still takes no writes: {failure}");
                    act.health.failure = Some(failure);
                }
                Err(_) => commit_thread_gone(),
            }
        }));
    }

    fn resume(&mut self, ctx: &mut Context<Self>) {
        self.health.failure = None;
        tracing::info!(
            "the store takes writes again: the manager takes changes and dispatches again"
        );
        // The workers kept the ends and progress they reported meanwhile:
        // registering again makes them send those.
        self.disconnect_workers();
        self.settle(ctx, Vec::new());
    }
}
