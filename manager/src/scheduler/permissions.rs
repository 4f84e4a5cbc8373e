//! Permission prompts on the scheduler's side (issue 16): a worker's
//! relayed ask is stored on its job and decided by its rules or left open
//! (`needs input`); `aam allow` / `aam deny` and the timeout decide the
//! open ones. Every request and decision goes to the audit log, and each
//! decision reaches the worker after the commit that holds it.

use super::audit::record_by_manager;
use super::effects::Effect;
use super::requests::Reply;
use super::Scheduler;
use super::WorkerId;
use crate::state::permissions::{Asked, Decided};
use aam_protocol::audit::AuditOutcome;
use aam_protocol::messages::{AttemptRef, ClientResponse};
use aam_protocol::SessionId;

/// What `aam allow` / `aam deny` asks.
pub(super) struct Decision {
    pub session: SessionId,
    pub job: String,
    pub request: Option<u32>,
    pub allow: bool,
    pub always: bool,
    pub message: Option<String>,
}

impl Scheduler {
    /// A worker relays its agent's ask.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn permission_asked(
        &mut self,
        worker: WorkerId,
        attempt: AttemptRef,
        ask: u64,
        tool: &str,
        input: &str,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        match self
            .state
            .permission_asked(worker, attempt, ask, tool, input, now)
        {
            Asked::Ignored => {}
            Asked::Open { job, request } => {
                tracing::info!(job = %job, request = request.id, call = %request.summary,
                    "needs input");
                let detail = format!("request {}: {} (open)", request.id, request.summary);
                self.audit.record(&record_by_manager(
                    "permission",
                    job,
                    AuditOutcome::Done,
                    detail,
                ));
            }
            Asked::Decided(decided) => self.decided(*decided, effects),
        }
    }

    /// `aam allow` / `aam deny` by `who`.
    pub(super) fn decide_permission(
        &mut self,
        d: Decision,
        who: &str,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let decided = self.state.decide_permission(
            d.session, &d.job, d.request, d.allow, d.always, d.message, who, now,
        );
        match decided {
            Ok(decided) => {
                let answer = ClientResponse::PermissionDecided {
                    request: decided.request.id,
                    summary: decided.request.summary.clone(),
                };
                tracing::info!(job = %decided.job, request = decided.request.id,
                    allow = d.allow, by = %who, "permission decided");
                if let Some((worker, order)) = decided.send {
                    effects.push(Effect::ToWorker(worker, order));
                }
                Reply::Answer(answer)
            }
            Err(e) => e.into(),
        }
    }

    /// Denies the open requests past their timeout.
    pub(super) fn expire_permissions(&mut self, now: u64, effects: &mut Vec<Effect>) {
        for decided in self.state.expire_permissions(now) {
            self.decided(decided, effects);
        }
    }

    /// A decision taken by the manager (a rule, the timeout): logged,
    /// audited, and sent to the worker after the commit.
    fn decided(&mut self, decided: Decided, effects: &mut Vec<Effect>) {
        let Decided { job, request, send } = decided;
        if let Some(decision) = &request.decision {
            let action = if decision.allow { "allow" } else { "deny" };
            tracing::info!(job = %job, request = request.id, call = %request.summary,
                by = %decision.by, "permission {action}");
            let detail = format!(
                "request {}: {} by {}",
                request.id, request.summary, decision.by
            );
            self.audit
                .record(&record_by_manager(action, job, AuditOutcome::Done, detail));
        }
        if let Some((worker, order)) = send {
            effects.push(Effect::ToWorker(worker, order));
        }
    }
}
