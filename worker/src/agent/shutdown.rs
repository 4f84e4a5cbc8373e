//! Ending the worker: `Drain` (take no more jobs, let the running ones
//! finish for a while, then stop them so they are requeued), `KillAll`
//! (kill every job at once, for a process about to exit), and the exit when
//! the manager refuses this worker.

use super::WorkerAgent;
use crate::teardown::stop_job;
use aam_protocol::messages::{AttemptRef, WorkerToManager};
use aam_protocol::model::StopCause;
use actix::prelude::*;
use std::future::Future;
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
        let waiting: Vec<AttemptRef> = self.waiting.iter().map(|(_, a)| a.attempt_ref()).collect();
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

/// Kills every running job's processes, for a process about to exit: the
/// link to the manager closes for good. Answers, once they are all gone (or
/// SIGKILLed and given up on), how many attempts were assigned.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct KillAll;

impl Handler<KillAll> for WorkerAgent {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: KillAll, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.kill_all(ctx))
    }
}

impl WorkerAgent {
    /// Stops every job for a process about to exit: SIGTERM and at once
    /// SIGKILL to all of their processes. The link closes first, so no
    /// assignment arrives and no end of a killed job goes out meanwhile
    /// (the manager requeues them once the worker is gone). The stops run
    /// at the same time on blocking threads: each waits up to 3 s for its
    /// processes to go, which on the actor's thread would stall every actor
    /// there, the embedded manager's too in `aam run`. Resolves to the
    /// number of assigned attempts.
    fn kill_all(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = usize> + 'static {
        self.link.close_for_good(ctx);
        self.waiting.clear();
        // Jobs' ends no longer commit: their worktrees are left for the
        // clean-up at the next start rather than hold up the exit.
        if let Some(worktrees) = &self.worktrees {
            worktrees.set_exiting();
        }
        let assigned = self.assigned.len();
        let started: Vec<(u32, String)> = self
            .assigned
            .values()
            .filter(|job| job.pid != 0)
            .map(|job| (job.pid, job.marker.clone()))
            .collect();
        let stops = started.into_iter().map(|(pid, marker)| {
            tokio::task::spawn_blocking(move || stop_job(pid, &marker, Duration::ZERO))
        });
        let stopped = futures::future::join_all(stops);
        async move {
            stopped.await;
            assigned
        }
    }

    /// The manager refused this worker: every job is killed, then the
    /// process exits with `code`.
    pub(super) fn exit_refused(&mut self, code: i32, ctx: &mut Context<Self>) {
        let killed = self.kill_all(ctx);
        actix::spawn(async move {
            killed.await;
            System::current().stop_with_code(code);
        });
    }
}
