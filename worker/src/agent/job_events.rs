//! What the worker does with its jobs' events: notes a job's process,
//! keeps and forwards its output, progress and agent run, and reports its
//! end (a worktree that could not be set up is one), which frees its slot
//! for a waiting assignment.

use super::WorkerAgent;
use crate::child::{EventSink, JobEvent};
use aam_protocol::agent_run::AgentRun;
use aam_protocol::messages::{AttemptRef, WorkerToManager};
use aam_protocol::output::OutputCapture;
use aam_protocol::worktree::JobChange;
use actix::prelude::*;

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
                if let Some(job) = self.assigned.get_mut(&attempt) {
                    job.pid = pid;
                }
            }
            JobEvent::Progress {
                attempt,
                percent,
                message,
            } => {
                let progress = WorkerToManager::Progress {
                    attempt,
                    percent,
                    message,
                };
                // While not registered only the latest progress waits.
                if let Some(unsent) = self.link.send_if_registered(progress) {
                    self.pending_progress.insert(attempt, unsent);
                }
            }
            JobEvent::AgentUpdate { attempt, run } => self.agent_update(attempt, run),
            JobEvent::InputState {
                attempt,
                delivered,
                waiting,
            } => {
                // Lost while not registered: the next one says it all again.
                let state = WorkerToManager::InputState {
                    attempt,
                    delivered,
                    waiting,
                };
                let _ = self.link.send_if_registered(state);
            }
            JobEvent::PermissionAsked {
                attempt,
                ask,
                tool,
                input,
            } => {
                if let Some(job) = self.assigned.get_mut(&attempt) {
                    job.open_asks.insert(ask, (tool.clone(), input.clone()));
                }
                // Lost while not registered: asked again after registering.
                let asked = WorkerToManager::PermissionAsked {
                    attempt,
                    ask,
                    tool,
                    input,
                };
                let _ = self.link.send_if_registered(asked);
            }
            JobEvent::Output { attempt, data } => {
                if let Some(job) = self.assigned.get_mut(&attempt) {
                    job.capture.push(&data);
                }
                self.link.send_output(attempt, data);
            }
            JobEvent::SpawnFailed { attempt, error } => {
                tracing::warn!(job = %attempt.job, "could not start: {error}");
                self.assigned.remove(&attempt);
                let end = WorkerToManager::SpawnFailed { attempt, error };
                self.job_ended(attempt, end, OutputCapture::new(0), ctx);
            }
            JobEvent::WorktreeFailed { attempt, reason } => {
                self.assigned.remove(&attempt);
                let end = WorkerToManager::WorktreeFailed { attempt, reason };
                self.job_ended(attempt, end, OutputCapture::new(0), ctx);
            }
            JobEvent::Finished {
                attempt,
                exit,
                stopped,
                agent,
                change,
                patch,
                workspace,
            } => {
                let capture = self
                    .assigned
                    .remove(&attempt)
                    .map(|j| j.capture)
                    .unwrap_or_else(|| OutputCapture::new(0));
                if let Some(run) = &agent {
                    tracing::debug!(job = %attempt.job, turns = run.turns,
                        tool_calls = run.tool_calls, cost_usd = ?run.reported_cost_usd,
                        error = ?run.error, limited = run.limit.is_some(),
                        unparsed_lines = run.unparsed_lines, "agent run ended");
                }
                match change.as_deref() {
                    Some(JobChange {
                        commit: Some(commit),
                        branch,
                        stat,
                        ..
                    }) => {
                        tracing::info!(job = %attempt.job, %branch, %commit,
                            files = stat.files, insertions = stat.insertions,
                            deletions = stat.deletions, "job's change committed");
                    }
                    Some(JobChange { branch, .. }) => {
                        tracing::info!(job = %attempt.job, %branch, "job changed nothing");
                    }
                    None => {}
                }
                let end = WorkerToManager::Finished {
                    attempt,
                    exit,
                    stopped,
                    agent,
                    change,
                    patch,
                    workspace,
                };
                self.job_ended(attempt, end, capture, ctx);
            }
        }
    }
}

impl WorkerAgent {
    /// An agent job's run changed: it is sent now if the link can take it;
    /// otherwise only the latest is kept, and sent once it can (`link.rs`).
    fn agent_update(&mut self, attempt: AttemptRef, run: AgentRun) {
        let Some(job) = self.assigned.get_mut(&attempt) else {
            return;
        };
        job.agent_run_unsent = !self.link.send_agent_run(attempt, &run);
        job.agent_run = Some(run);
    }

    /// A started job ended: its end is reported, and its slot goes to the
    /// next waiting assignment.
    fn job_ended(
        &mut self,
        attempt: AttemptRef,
        end: WorkerToManager,
        capture: OutputCapture,
        ctx: &mut Context<Self>,
    ) {
        self.active = self.active.saturating_sub(1);
        self.report_end(attempt, end, capture);
        self.start_waiting(ctx);
        self.check_drained();
    }
}
