//! What worker connections tell the scheduler: a worker registered (with
//! the attempts it holds), left, or reports on a job.

use super::effects::Effect;
use super::{Scheduler, WorkerId};
use crate::state::WorkerEntry;
use crate::worker_conn::{ToWorker, WorkerConn};
use aam_protocol::messages::{AttemptRef, ManagerToWorker, Stopped, WorkerToManager};
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
    pub address: String,
    pub slots: u32,
    pub prefetch: u32,
    pub labels: BTreeMap<String, String>,
    /// The attempts it reports holding.
    pub assigned: Vec<AttemptRef>,
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
            address: msg.address,
            slots: msg.slots,
            prefetch: msg.prefetch,
            labels: msg.labels,
            assigned: Default::default(),
            draining: false,
            connected_at_ms: now,
            last_heartbeat_ms: now,
        };
        let registration = self
            .state
            .register_worker(msg.id, entry, &msg.assigned, now);
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
        let registered = ManagerToWorker::Registered {
            heartbeat_ms: self.heartbeat_ms,
            lease_ms: self.lease_ms,
            output_cap: self.state.output_cap() as u64,
        };
        let mut effects = vec![Effect::ToWorker(msg.id, registered)];
        for attempt in registration.kill {
            effects.push(stop(msg.id, attempt, StopCause::Superseded, 0));
        }
        for (attempt, grace_ms) in registration.cancel {
            effects.push(stop(msg.id, attempt, StopCause::Cancelled, grace_ms));
        }
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
                self.state.job_output(attempt, &data);
                return;
            }
            WorkerToManager::OutputSync { attempt, capture } => {
                self.state.output_sync(attempt, capture);
                return;
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
                self.state.job_progress(attempt, percent, message);
            }
            WorkerToManager::Finished {
                attempt,
                exit,
                stopped,
            } => {
                self.finish(msg.id, attempt, exit, stopped, None, now);
                effects.push(Effect::ToWorker(msg.id, ManagerToWorker::Ack(attempt)));
            }
            WorkerToManager::SpawnFailed { attempt, error } => {
                let exit = ExitInfo::not_started();
                let reason = Some(format!("could not start: {error}"));
                self.finish(msg.id, attempt, exit, None, reason, now);
                effects.push(Effect::ToWorker(msg.id, ManagerToWorker::Ack(attempt)));
            }
            // Refused by the connection before it reaches here.
            WorkerToManager::Register { .. } => {}
        }
        self.settle(ctx, effects);
    }
}

impl Scheduler {
    /// An attempt ended; the fence drops the report of a stale one.
    fn finish(
        &mut self,
        worker: WorkerId,
        attempt: AttemptRef,
        exit: ExitInfo,
        stopped: Option<Stopped>,
        reason: Option<String>,
        now: u64,
    ) {
        if self
            .state
            .job_finished(attempt, Some(exit), stopped, reason, now)
        {
            tracing::debug!(worker, job = %attempt.job, attempt = attempt.attempt, "job finished");
        } else {
            tracing::info!(worker, job = %attempt.job, attempt = attempt.attempt,
                "ignoring a report of a stale attempt");
        }
    }
}
