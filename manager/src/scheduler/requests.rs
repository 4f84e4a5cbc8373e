//! Clients' requests, one function each. Each changes the model as asked
//! and says how it is answered (`Reply`): now (once what it changed is
//! durable), when some jobs have ended (a cancel that waits), or as a watch.

use super::audit;
use super::effects::Effect;
use super::Scheduler;
use crate::access::{self, Identity, Role};
use crate::state::{ContinueRefused, StateError};
use crate::tokens::Quotas;
use aam_protocol::audit::AuditOutcome;
use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind, ManagerToWorker};
use aam_protocol::model::{SessionSummary, StopCause};
use aam_protocol::spec::{BatchSpec, JobSpec};
use aam_protocol::{JobKey, SessionId};
use tokio::sync::oneshot;

/// How a request is answered.
pub(super) enum Reply {
    /// This answer, once what the request changed is durable.
    Answer(ClientResponse),
    /// This answer once these jobs have ended, and that is durable.
    WhenEnded {
        jobs: Vec<JobKey>,
        answer: ClientResponse,
    },
    /// The caller watches the session: this summary now, then each change.
    Watch(SessionSummary),
    /// The audit log from then on, read in order with the commits.
    Audit { since_ms: Option<u64> },
}

impl From<StateError> for Reply {
    fn from(e: StateError) -> Reply {
        Reply::Answer(ClientResponse::Error {
            kind: e.kind(),
            message: e.to_string(),
        })
    }
}

/// A `Cancel` waiting for the jobs it stops to end.
pub(super) struct CancelWaiter {
    pub jobs: Vec<JobKey>,
    pub reply: oneshot::Sender<Option<ClientResponse>>,
    pub answer: ClientResponse,
    /// The commit that stores the cancel (or one after it): when that one
    /// fails, the cancel was not stored.
    pub seq: u64,
}

/// A request refused before it is applied: by the token's role (or
/// ownership), or by a quota.
struct Refusal {
    kind: ErrorKind,
    /// What `aam_refusals_total` counts it under.
    reason: &'static str,
    message: String,
}

impl Scheduler {
    /// Applies one request of `who`, if its token may make it. Mutating
    /// requests and refused ones are recorded in the audit log.
    /// `watching`: the caller can take a stream of updates. Orders for
    /// workers go to `effects`. `earlier_parts`: the jobs that came before
    /// a `Submit`'s own, in `SubmitPart`s.
    pub(super) fn request(
        &mut self,
        request: ClientRequest,
        earlier_parts: Vec<Vec<JobSpec>>,
        who: &Identity,
        watching: bool,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let action = access::action_of(&request);
        let target = access::target_of(&request);
        if let Err(refused) = self.permitted(&request, &earlier_parts, who) {
            tracing::warn!(token = %who.name, peer = %who.peer, action = action.name(),
                "refused: {}", refused.message);
            self.state.config().metrics.refused(refused.reason);
            let message = refused.message;
            let denied = audit::record(
                who,
                action.name(),
                target,
                AuditOutcome::Denied,
                message.clone(),
            );
            self.audit.record(&denied);
            return Reply::Answer(ClientResponse::Error {
                kind: refused.kind,
                message,
            });
        }
        let reply = self.perform(request, earlier_parts, who, watching, effects);
        if action.mutates() {
            let (outcome, detail) = audit::outcome_of(&reply);
            self.audit
                .record(&audit::record(who, action.name(), target, outcome, detail));
        }
        reply
    }

    /// Whether `who` may make `request`: its role (`access::check`), whose
    /// session a cancel stops, and its quotas for what it submits.
    fn permitted(
        &self,
        request: &ClientRequest,
        earlier_parts: &[Vec<JobSpec>],
        who: &Identity,
    ) -> Result<(), Refusal> {
        let role_refusal = |message| Refusal {
            kind: ErrorKind::PermissionDenied,
            reason: "role",
            message,
        };
        access::check(&who.name, &who.grant, request).map_err(role_refusal)?;
        let admin = who.grant.has(Role::Admin);
        let jobs = match request {
            ClientRequest::Cancel { session, .. } if !admin => {
                let owner = self.state.owner(*session);
                if owner != Some(who.name.as_str()) && self.state.session_exists(*session) {
                    return Err(role_refusal(format!(
                        "{}: session {session} was submitted by {}; only an admin token may \
                         cancel another token's sessions",
                        access::denied(&who.name, &who.grant),
                        owner.map_or("no known token".to_string(), |o| format!("token {o}")),
                    )));
                }
                return Ok(());
            }
            // A token without quotas has nothing to count.
            _ if who.quotas == Quotas::default() => return Ok(()),
            ClientRequest::Submit {
                batch,
                idempotency_key,
            } => {
                let known = idempotency_key
                    .as_deref()
                    .is_some_and(|k| self.state.session_for_key(k).is_some());
                if known {
                    return Ok(());
                }
                // A job of N variants becomes N jobs and their parent.
                let jobs = earlier_parts
                    .iter()
                    .flatten()
                    .chain(&batch.jobs)
                    .map(|j| 1 + j.variants.unwrap_or(0) as usize);
                u32::try_from(jobs.sum::<usize>()).unwrap_or(u32::MAX)
            }
            ClientRequest::Continue { .. } => 1,
            _ => return Ok(()),
        };
        let usage = self.state.usage(&who.name);
        match crate::state::quota_refusal(&who.name, who.quotas, usage, jobs) {
            Some(quota) => Err(Refusal {
                kind: ErrorKind::QuotaExceeded,
                reason: quota.reason,
                message: quota.message,
            }),
            None => Ok(()),
        }
    }

    /// Applies one permitted request.
    fn perform(
        &mut self,
        request: ClientRequest,
        earlier_parts: Vec<Vec<JobSpec>>,
        who: &Identity,
        watching: bool,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        if let Some(refused) = self.refusal(&request) {
            return Reply::Answer(refused);
        }
        let now = aam_protocol::now_ms();
        match request {
            ClientRequest::Submit {
                batch,
                idempotency_key,
            } => self.submit(batch, earlier_parts, idempotency_key, &who.name, now),
            ClientRequest::ListSessions { limit, offset } => {
                Reply::Answer(ClientResponse::Sessions {
                    sessions: self.state.summaries(limit, offset),
                    total: self.state.session_count(),
                    paused: self.state.paused_groups(now),
                    waiting: self.state.waiting(),
                })
            }
            ClientRequest::Session {
                session,
                output,
                page,
            } => {
                let stored = self.output_reader();
                let budget = self.answer_budget;
                match self
                    .state
                    .view_page(session, output, page, budget, &stored, now)
                {
                    Some(view) => Reply::Answer(ClientResponse::Session(view)),
                    None => StateError::NoSession(session).into(),
                }
            }
            ClientRequest::Logs { session, job, from } => self.logs(session, &job, from),
            ClientRequest::Workers => Reply::Answer(ClientResponse::Workers(self.state.workers())),
            ClientRequest::Resources => {
                Reply::Answer(ClientResponse::Resources(self.state.resources()))
            }
            ClientRequest::Providers => {
                Reply::Answer(ClientResponse::Providers(self.state.providers().to_vec()))
            }
            ClientRequest::Accounts => {
                Reply::Answer(ClientResponse::Accounts(self.state.accounts(now)))
            }
            ClientRequest::Gc { older_than_ms } => self.collect(older_than_ms, now, effects),
            ClientRequest::Agents => {
                let (agents, problems) = self.state.agents();
                Reply::Answer(ClientResponse::Agents { agents, problems })
            }
            ClientRequest::Retry { session } => self.retry(session, now),
            ClientRequest::Cancel {
                session,
                job,
                grace_ms,
                wait,
            } => self.cancel(session, job, grace_ms, wait, now, effects),
            ClientRequest::Decide {
                session,
                job,
                approve,
                comment,
            } => self.decide(session, &job, approve, &who.name, comment, now),
            ClientRequest::Watch { session } => self.watch(session, watching),
            ClientRequest::Patch { session, job } => {
                let stored = self.patch_reader();
                match self.state.patch(session, &job, &stored) {
                    Ok((change, patch)) => Reply::Answer(ClientResponse::Patch { change, patch }),
                    Err(e) => e.into(),
                }
            }
            ClientRequest::Continue {
                session,
                job,
                prompt,
            } => self.continue_job(session, &job, prompt, &who.name, now),
            ClientRequest::Audit { since_ms } => Reply::Audit { since_ms },
            // Held by the client's connection until its `Submit`; one that
            // reaches here came another way (the HTTP API takes whole batches).
            ClientRequest::SubmitPart { .. } => Reply::Answer(ClientResponse::Error {
                kind: ErrorKind::BadRequest,
                message: "parts of a batch are taken only on a client connection".into(),
            }),
            ClientRequest::Say { session, job, text } => {
                self.say(session, job.as_deref(), &text, &who.name, now, effects)
            }
            ClientRequest::DecidePermission {
                session,
                job,
                request,
                allow,
                always,
                message,
            } => {
                let decision = super::permissions::Decision {
                    session,
                    job,
                    request,
                    allow,
                    always,
                    message,
                };
                self.decide_permission(decision, &who.name, now, effects)
            }
        }
    }

    /// Stores a message for running agents (answered once durable) and
    /// sends it to their workers after the commit.
    fn say(
        &mut self,
        session: SessionId,
        job: Option<&str>,
        text: &str,
        who: &str,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        match self.state.say(session, job, text, who, now) {
            Ok(said) => {
                let jobs: Vec<String> = said.iter().map(|s| s.job.clone()).collect();
                tracing::info!(session = %session, jobs = ?jobs, by = %who, "said");
                for (worker, order) in said.into_iter().filter_map(|s| s.send) {
                    effects.push(Effect::ToWorker(worker, order));
                }
                Reply::Answer(ClientResponse::Said { jobs })
            }
            Err(e) => e.into(),
        }
    }

    fn logs(&self, session: SessionId, job: &str, from: u64) -> Reply {
        let stored = self.output_reader();
        match self.state.logs(session, job, from, &stored) {
            Ok(logs) => Reply::Answer(ClientResponse::Logs {
                status: logs.status,
                attempt: logs.attempt,
                output: logs.output,
                output_bytes: logs.output_bytes,
                format: logs.format,
            }),
            Err(e) => e.into(),
        }
    }

    /// `aam gc`: finished sessions older than `older_than_ms` (else the
    /// retention) go, and audit records past the retention.
    fn collect(
        &mut self,
        older_than_ms: Option<u64>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let (sessions, jobs, output_bytes) =
            self.gc(older_than_ms.unwrap_or(self.retention_ms), effects);
        // The audit log goes by the retention only: `--older-than` is no
        // way to erase it.
        self.audit.prune(now.saturating_sub(self.retention_ms));
        Reply::Answer(ClientResponse::Collected {
            sessions,
            jobs,
            output_bytes,
        })
    }

    /// A follow-up of an agent job: a new session of one job resuming its
    /// conversation, answered like a submission.
    fn continue_job(
        &mut self,
        session: SessionId,
        job: &str,
        prompt: String,
        owner: &str,
        now: u64,
    ) -> Reply {
        match self.state.continue_job(session, job, prompt, now) {
            Ok((new, jobs)) => {
                self.state.set_owner(new, owner);
                tracing::info!(session = %new, from = %session, job = %job, "follow-up submitted");
                Reply::Answer(ClientResponse::Submitted {
                    session: new,
                    jobs,
                    existing: false,
                    estimate: self.state.estimate(new, now),
                })
            }
            Err(ContinueRefused::State(e)) => e.into(),
            Err(ContinueRefused::Invalid(errors)) => Reply::Answer(ClientResponse::Invalid(errors)),
        }
    }

    fn submit(
        &mut self,
        batch: BatchSpec,
        earlier_parts: Vec<Vec<JobSpec>>,
        idempotency_key: Option<String>,
        owner: &str,
        now: u64,
    ) -> Reply {
        let known = idempotency_key
            .as_deref()
            .and_then(|k| self.state.session_for_key(k));
        if let Some((session, jobs)) = known {
            tracing::info!(session = %session, "submission with a known idempotency key");
            return Reply::Answer(ClientResponse::Submitted {
                session,
                jobs,
                existing: true,
                estimate: self.state.estimate(session, now),
            });
        }
        let name = batch.name.clone();
        match self
            .state
            .submit_parts(batch, earlier_parts, idempotency_key, now)
        {
            Ok((session, jobs)) => {
                self.state.set_owner(session, owner);
                tracing::info!(session = %session, name = %name, jobs, by = %owner, "session submitted");
                Reply::Answer(ClientResponse::Submitted {
                    session,
                    jobs,
                    existing: false,
                    estimate: self.state.estimate(session, now),
                })
            }
            Err(errors) => Reply::Answer(ClientResponse::Invalid(errors)),
        }
    }

    fn retry(&mut self, session: SessionId, now: u64) -> Reply {
        match self.state.retry(session, now) {
            Ok(jobs) => {
                tracing::info!(session = %session, jobs = jobs.len(), "session retried");
                Reply::Answer(ClientResponse::Retried { jobs })
            }
            Err(e) => e.into(),
        }
    }

    /// Jobs not started end now; running ones get a stop order. With `wait`
    /// the answer waits until those have ended.
    fn cancel(
        &mut self,
        session: SessionId,
        job: Option<String>,
        grace_ms: Option<u64>,
        wait: bool,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let outcome = match self.state.cancel(session, job.as_deref(), grace_ms, now) {
            Ok(outcome) => outcome,
            Err(e) => return e.into(),
        };
        tracing::info!(session = %session, job = job.as_deref().unwrap_or("*"),
            cancelled = outcome.cancelled.len(), stopping = outcome.stopping.len(), "cancel");
        for &(worker, attempt, grace_ms) in &outcome.stopping {
            let stop = ManagerToWorker::Stop {
                attempt,
                cause: StopCause::Cancelled,
                grace_ms,
            };
            effects.push(Effect::ToWorker(worker, stop));
        }
        let stopping: Vec<JobKey> = outcome.stopping.iter().map(|(_, a, _)| a.job).collect();
        let answer = ClientResponse::Cancelled {
            cancelled: outcome.cancelled,
            stopped: outcome.stopping_names,
        };
        if wait && !stopping.is_empty() {
            Reply::WhenEnded {
                jobs: stopping,
                answer,
            }
        } else {
            Reply::Answer(answer)
        }
    }

    fn decide(
        &mut self,
        session: SessionId,
        job: &str,
        approve: bool,
        who: &str,
        comment: Option<String>,
        now: u64,
    ) -> Reply {
        match self.state.decide(session, job, approve, who, comment, now) {
            Ok(status) => {
                tracing::info!(session = %session, job = %job, approve, by = %who, "gate decided");
                Reply::Answer(ClientResponse::Decided { status })
            }
            Err(e) => e.into(),
        }
    }

    fn watch(&mut self, session: SessionId, watching: bool) -> Reply {
        match self.state.summary(session) {
            None => StateError::NoSession(session).into(),
            Some(summary) if watching => Reply::Watch(summary),
            Some(_) => Reply::Answer(ClientResponse::Error {
                kind: ErrorKind::BadRequest,
                message: "watch needs a subscriber".into(),
            }),
        }
    }

    /// Answers the cancels whose jobs have all ended.
    pub(super) fn finished_cancels(&mut self) -> Vec<Effect> {
        let (done, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.cancel_waiters)
            .into_iter()
            .partition(|w| w.jobs.iter().all(|k| self.state.is_terminal(*k)));
        self.cancel_waiters = still;
        done.into_iter()
            .map(|w| Effect::Reply(w.reply, Some(w.answer)))
            .collect()
    }
}
