//! Ending the worker: `Drain` (take no more jobs, let the running ones
//! finish for a while, then stop them so they are requeued), `KillAll`
//! (kill every job at once, for a process about to exit), and the exit when
//! the manager refuses this worker.

use super::WorkerAgent;
use crate::teardown::stop_job;
use aam_protocol::messages::{AttemptRef, WorkerToManager};
use aam_protocol::model::StopCause;
use actix::prelude::*;
use std::time::Duration;
use tokio::sync::oneshot;

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
        self.link.send_if_registered(WorkerToManager::Draining);
        let waiting: Vec<AttemptRef> = self.waiting.iter().map(super::attempt_of).collect();
        for attempt in waiting {
            self.stop(attempt, StopCause::Shutdown, Duration::ZERO);
        }
        tracing::info!(running = self.assigned.len(), timeout = ?msg.timeout, "draining");
        let grace = msg.grace;
        ctx.run_later(msg.timeout, move |act, _| {
            let left: Vec<AttemptRef> = act.assigned.keys().copied().collect();
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

impl WorkerAgent {
    /// Stops every job now, synchronously (for a process about to exit):
    /// SIGTERM and SIGKILL at once to all of their processes.
    fn kill_all(&mut self) -> usize {
        self.waiting.clear();
        for job in self.assigned.values() {
            if job.pid != 0 {
                stop_job(job.pid, &job.marker, Duration::ZERO);
            }
        }
        self.assigned.len()
    }

    /// The manager refused this worker: every job is killed, then the
    /// process exits with `code`.
    pub(super) fn exit_refused(&mut self, code: i32) {
        self.kill_all();
        System::current().stop_with_code(code);
    }
}
