//! What worker connections tell the scheduler: a worker registered (with
//! the attempts it holds), left, or reports on a job.

use super::effects::Effect;
use super::{Scheduler, WorkerId};
use crate::state::{BudgetStop, EndReport, Fenced, Registration, WorkerEntry};
use crate::worker_conn::{Replaced, ToWorker, WorkerConn};
use aam_protocol::messages::{AttemptRef, ManagerToWorker, WorkerToManager};
use aam_protocol::model::{ExitInfo, StopCause};
use aam_protocol::now_ms;
use actix::prelude::*;
use std::collections::BTreeMap;

#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerConnected {
    pub id: WorkerId,
    pub addr: Addr<WorkerConn>,
    pub name: String,
    /// Drawn once per worker process.
    pub instance: u64,
    pub address: String,
    pub slots: u32,
    pub prefetch: aam_protocol::messages::Prefetch,
    pub labels: BTreeMap<String, String>,
    /// The attempts it reports holding.
    pub assigned: Vec<AttemptRef>,
    /// The token it registered with.
    pub who: crate::access::Identity,
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

fn stop(worker: WorkerId, attempt: AttemptRef, cause: StopCause, grace_ms: u64) -> Effect {
    Effect::ToWorker(
        worker,
        ManagerToWorker::Stop {
            attempt,
            cause,
            grace_ms,
        },
    )
}

impl Handler<WorkerConnected> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: WorkerConnected, ctx: &mut Context<Self>) {
        let now = now_ms();
        let entry = WorkerEntry {
            name: msg.name.clone(),
            instance: msg.instance,
            address: msg.address.clone(),
            slots: msg.slots,
            prefetch: msg.prefetch,
            recent_job_us: None,
            labels: msg.labels,
            assigned: Default::default(),
            draining: false,
            connected_at_ms: now,
            last_heartbeat_ms: now,
        };
        let registration = match self
            .state
            .register_worker(msg.id, entry, &msg.assigned, now)
        {
            Ok(registration) => registration,
            Err(in_use) => {
                let reason = format!(
                    "a worker named {} is already connected from {}",
                    msg.name, in_use.address
                );
                tracing::warn!(peer = %msg.address, "refusing a worker for now: {reason}");
                // Nothing changed: no commit to wait for.
                msg.addr
                    .do_send(ToWorker(ManagerToWorker::RetryLater { reason }));
                return;
            }
        };
        if let Some(old) = registration.replaced {
            if let Some(addr) = self.workers.remove(&old) {
                tracing::info!(worker = %msg.name, "the worker is back on a new connection; closing its old one");
                addr.do_send(Replaced);
            }
        }
        tracing::info!(worker = %msg.name, slots = msg.slots, adopted = registration.adopted.len(),
            killed = registration.kill.len(), token = %msg.who.name, "worker registered");
        let detail = format!(
            "{} slots, {} attempts adopted",
            msg.slots,
            registration.adopted.len()
        );
        let done = aam_protocol::audit::AuditOutcome::Done;
        let record = super::audit::record(&msg.who, "register", msg.name.clone(), done, detail);
        self.audit.record(&record);
        self.workers.insert(msg.id, msg.addr);
        let effects = self.registered(msg.id, registration);
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
        if self.holds_back(&msg.report) {
            return;
        }
        let now = now_ms();
        let mut effects = Vec::new();
        match msg.report {
            // The hot reports change nothing stored: no settle.
            WorkerToManager::Heartbeat => return self.state.heartbeat(msg.id, now),
            WorkerToManager::Output { attempt, data } => {
                let fenced = self.state.job_output(msg.id, attempt, &data);
                return self.log_fenced(msg.id, attempt, "output", fenced);
            }
            WorkerToManager::OutputSync { attempt, capture } => {
                let fenced = self.state.output_sync(msg.id, attempt, &capture);
                return self.log_fenced(msg.id, attempt, "output", fenced);
            }
            WorkerToManager::RetireIfIdle => {
                let granted = self.state.retire_if_idle(msg.id);
                if let Some(name) = self.state.worker_name(msg.id) {
                    tracing::info!(worker = %name, granted, "idle worker asks to retire");
                }
                effects.push(Effect::ToWorker(
                    msg.id,
                    ManagerToWorker::Retire { granted },
                ));
            }
            WorkerToManager::Draining => {
                if let Some(name) = self.state.worker_name(msg.id) {
                    tracing::info!(worker = %name, "worker is draining");
                }
                self.state.worker_draining(msg.id);
            }
            WorkerToManager::Progress {
                attempt,
                percent,
                message,
            } => {
                let fenced = self.state.job_progress(msg.id, attempt, percent, message);
                self.log_fenced(msg.id, attempt, "progress", fenced);
            }
            WorkerToManager::Finished {
                attempt,
                exit,
                stopped,
                agent,
                change,
                patch,
                workspace,
            } => {
                let report = EndReport {
                    exit: Some(exit),
                    stopped,
                    // A failed workspace setup is the attempt's reason.
                    reason: workspace.as_ref().and_then(|w| w.setup_failed.clone()),
                    agent,
                    change: change.map(|c| *c),
                    patch,
                    workspace,
                };
                effects.extend(self.finish(msg.id, attempt, report, now));
            }
            WorkerToManager::InputState {
                attempt,
                delivered,
                waiting,
            } => {
                let missing = self
                    .state
                    .input_state(msg.id, attempt, delivered, waiting, now);
                effects.extend(missing.into_iter().map(|m| Effect::ToWorker(msg.id, m)));
            }
            WorkerToManager::PermissionAsked {
                attempt,
                ask,
                tool,
                input,
            } => self.permission_asked(msg.id, attempt, ask, &tool, &input, now, &mut effects),
            WorkerToManager::WorktreeFailed { attempt, reason } => {
                let fenced = self.state.worktree_failed(msg.id, attempt, reason, now);
                effects.extend(self.acknowledge(msg.id, attempt, fenced));
            }
            WorkerToManager::AgentUpdate { attempt, run } => {
                match self.state.agent_update(msg.id, attempt, run, now) {
                    Ok(Some(BudgetStop {
                        worker,
                        attempt,
                        grace_ms,
                    })) => effects.push(stop(worker, attempt, StopCause::Budget, grace_ms)),
                    Ok(None) => {}
                    fenced @ Err(_) => {
                        self.log_fenced(msg.id, attempt, "agent update", fenced.map(drop))
                    }
                }
            }
            WorkerToManager::SpawnFailed { attempt, error } => {
                let report = EndReport {
                    exit: Some(ExitInfo::not_started()),
                    reason: Some(format!("could not start: {error}")),
                    ..EndReport::default()
                };
                effects.extend(self.finish(msg.id, attempt, report, now));
            }
            // Refused by the connection before it reaches here.
            WorkerToManager::Register { .. } => {}
        }
        self.settle(ctx, effects);
    }
}

impl Scheduler {
    /// What a registered worker is told: that it may start, and which of
    /// the attempts it reported to stop.
    fn registered(&self, id: WorkerId, registration: Registration) -> Vec<Effect> {
        let registered = ManagerToWorker::Registered {
            heartbeat_ms: self.heartbeat_ms,
            lease_ms: self.lease_ms,
            output_cap: self.state.output_cap() as u64,
        };
        let mut effects = vec![Effect::ToWorker(id, registered)];
        for attempt in registration.kill {
            effects.push(stop(id, attempt, StopCause::Superseded, 0));
        }
        for (attempt, grace_ms) in registration.cancel {
            effects.push(stop(id, attempt, StopCause::Cancelled, grace_ms));
        }
        // What was said to its agents and may not have reached them (the
        // worker skips what it gave already).
        for attempt in &registration.adopted {
            for message in self.state.unsaid(*attempt) {
                effects.push(Effect::ToWorker(id, message));
            }
            // Permission requests decided while it was away (it asks the
            // open ones again itself).
            for decided in self.state.decided_while_away(*attempt) {
                effects.push(Effect::ToWorker(id, decided));
            }
        }
        effects
    }

    /// An attempt ended, as `worker` says. The end is acknowledged (once
    /// durable) when recorded, and when stale, so the worker forgets it; a
    /// worker reporting the end of another's attempt changes nothing and
    /// hears nothing.
    fn finish(
        &mut self,
        worker: WorkerId,
        attempt: AttemptRef,
        report: EndReport,
        now: u64,
    ) -> Option<Effect> {
        let fenced = self.state.job_finished(worker, attempt, report, now);
        self.acknowledge(worker, attempt, fenced)
    }

    /// The answer to an attempt's end (`Finished`, `SpawnFailed`,
    /// `WorktreeFailed`): an `Ack` once durable, also for a stale one so
    /// the worker forgets it; nothing for another worker's attempt.
    fn acknowledge(
        &self,
        worker: WorkerId,
        attempt: AttemptRef,
        fenced: Result<(), Fenced>,
    ) -> Option<Effect> {
        if fenced.is_ok() {
            tracing::debug!(worker, job = %attempt.job, attempt = attempt.attempt, "job finished");
        }
        self.log_fenced(worker, attempt, "end", fenced);
        let ack = Effect::ToWorker(worker, ManagerToWorker::Ack(attempt));
        (fenced != Err(Fenced::NotYours)).then_some(ack)
    }

    /// Logs a report the fence turned away: a stale one is expected (after
    /// a reconnect or a requeue), one about another worker's attempt is not.
    fn log_fenced(
        &self,
        worker: WorkerId,
        attempt: AttemptRef,
        what: &str,
        fenced: Result<(), Fenced>,
    ) {
        match fenced {
            Ok(()) => {}
            // Ends are few; output of a stopped attempt may still stream in.
            Err(Fenced::Stale) if what == "end" => {
                tracing::info!(worker, job = %attempt.job, attempt = attempt.attempt,
                    "ignoring the end of a stale attempt")
            }
            Err(Fenced::Stale) => {
                tracing::debug!(worker, job = %attempt.job, attempt = attempt.attempt,
                    "ignoring the {what} of a stale attempt")
            }
            Err(Fenced::NotYours) => {
                let name = self.state.worker_name(worker).unwrap_or("?");
                tracing::warn!(worker = %name, id = worker, job = %attempt.job, attempt = attempt.attempt,
                    "refusing the {what} a worker reports for an attempt not assigned to it")
            }
        }
    }
}
