//! Permission prompts relayed from running agents (issue 16, agent key
//! `permissions = "relay"`): each ask a worker relays becomes a request in
//! its job's record (`JobPermissions.requests`), decided at once by the
//! job's rules, or left open (the job shows `needs input`) until someone
//! answers (`aam allow` / `aam deny`) or its timeout denies it. A decision
//! is committed before it is answered and sent to the worker after the
//! commit; the worker's MCP tool gives it to the agent's CLI.

use super::workers::WorkerId;
use super::{State, StateError};
use aam_protocol::messages::{AttemptRef, ManagerToWorker};
use aam_protocol::model::JobStatus;
use aam_protocol::permission::{
    duration_text, summary, PermissionDecision, PermissionRequest, MAX_INPUT_BYTES, MAX_REQUESTS,
};
use aam_protocol::{JobKey, SessionId};

/// A decision taken, for the worker and the audit log.
#[derive(Debug)]
pub struct Decided {
    /// `s4/fix`.
    pub job: String,
    pub request: PermissionRequest,
    /// Its worker and the order that answers its agent; none while the
    /// worker is away (it asks again when back, and is answered then).
    pub send: Option<(WorkerId, ManagerToWorker)>,
}

/// What became of an ask a worker relayed.
#[derive(Debug)]
pub enum Asked {
    /// Not for a running attempt of this worker's, or a repeat of one
    /// still open: nothing to do.
    Ignored,
    /// A new open request: the job needs input.
    Open {
        job: String,
        request: PermissionRequest,
    },
    /// Decided already (by a rule now, or earlier: a repeat after a
    /// reconnect is answered again).
    Decided(Box<Decided>),
}

impl State {
    /// A worker relays its agent's ask to run `tool` with `input` (JSON).
    pub fn permission_asked(
        &mut self,
        worker: WorkerId,
        attempt: AttemptRef,
        ask: u64,
        tool: &str,
        input: &str,
        now: u64,
    ) -> Asked {
        let reporter = self.workers.get(&worker).map(|w| w.name.clone());
        let Some(job) = self.sessions.job_mut(attempt.job) else {
            return Asked::Ignored;
        };
        let own = reporter.is_some() && job.worker == reporter;
        if !own || job.attempts != attempt.attempt || job.status != JobStatus::Running {
            return Asked::Ignored;
        }
        let name = format!("{}/{}", attempt.job.session, job.name);
        let Some(perms) = job.permissions.as_mut() else {
            return Asked::Ignored;
        };
        let answer = |request: &PermissionRequest| {
            let decision = request.decision.as_ref().expect("decided");
            ManagerToWorker::PermissionDecided {
                attempt,
                ask,
                allow: decision.allow,
                message: decision.message.clone().unwrap_or_default(),
            }
        };
        if let Some(seen) = perms
            .requests
            .iter()
            .find(|r| r.attempt == attempt.attempt && r.ask == ask)
        {
            return match seen.decision {
                None => Asked::Ignored,
                Some(_) => Asked::Decided(Box::new(Decided {
                    job: name,
                    request: seen.clone(),
                    send: Some((worker, answer(seen))),
                })),
            };
        }
        let value: serde_json::Value = serde_json::from_str(input).unwrap_or_default();
        let mut request = PermissionRequest {
            id: perms.requests.len() as u32 + 1,
            attempt: attempt.attempt,
            ask,
            tool: tool.to_string(),
            summary: summary(tool, &value),
            asked_at_ms: now,
            decision: None,
        };
        let decided = if perms.requests.len() >= MAX_REQUESTS {
            Some((false, format!("more than {MAX_REQUESTS} requests"), None))
        } else if input.len() > MAX_INPUT_BYTES {
            Some((false, "input too large".to_string(), None))
        } else {
            perms.by_rule(tool, &value).map(|(allow, rule)| {
                let message = (!allow).then(|| format!("denied by aam's {rule}"));
                (allow, rule, message)
            })
        };
        if let Some((allow, by, message)) = decided {
            let message = message.or_else(|| (!allow).then(|| by.clone()));
            request.decision = Some(PermissionDecision {
                allow,
                message,
                by,
                at_ms: now,
            });
        }
        if perms.requests.len() < MAX_REQUESTS {
            perms.requests.push(request.clone());
        }
        match request.decision {
            None => {
                self.note_needs_input(attempt.job, request.id);
                self.sessions.notify(attempt.job.session);
                Asked::Open { job: name, request }
            }
            Some(_) => {
                let order = answer(&request);
                Asked::Decided(Box::new(Decided {
                    job: name,
                    request,
                    send: Some((worker, order)),
                }))
            }
        }
    }

    /// Answers a request of the running agent `job` (`request`: its id;
    /// none: the only open one) for `who`. Refused, saying why, when the
    /// job relays no permissions, is not running, or has no such request.
    #[allow(clippy::too_many_arguments)]
    pub fn decide_permission(
        &mut self,
        session: SessionId,
        job: &str,
        request: Option<u32>,
        allow: bool,
        always: bool,
        message: Option<String>,
        who: &str,
        now: u64,
    ) -> Result<Decided, StateError> {
        let index = self.job_index(session, job)?;
        let key = JobKey { session, index };
        let name = format!("{session}/{job}");
        let worker = self
            .job(key)
            .and_then(|j| self.worker_by_name.get(j.worker.as_deref()?))
            .copied();
        let record = self.job(key).expect("job_index found it");
        let Some(perms) = record.permissions.as_deref() else {
            return Err(StateError::Refused(format!(
                "{name} does not relay permission prompts (its agent has no permissions = \"relay\")"
            )));
        };
        let open: Vec<u32> = perms.open().map(|r| r.id).collect();
        let id = match (request, open.as_slice()) {
            (Some(id), _) if open.contains(&id) => id,
            (Some(id), _) => {
                return Err(StateError::Refused(
                    match perms.requests.iter().find(|r| r.id == id) {
                        Some(_) => format!("request {id} of {name} was answered already"),
                        None => format!("{name} has no permission request {id}"),
                    },
                ))
            }
            (None, [id]) => *id,
            (None, []) => {
                return Err(StateError::Refused(format!(
                    "{name} has no open permission request"
                )))
            }
            (None, ids) => {
                return Err(StateError::Refused(format!(
                    "{name} has {} open permission requests ({}): name one",
                    ids.len(),
                    ids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        let attempts = record.attempts;
        let running = record.status == JobStatus::Running;
        let perms = self
            .sessions
            .job_mut(key)
            .and_then(|j| j.permissions.as_mut())
            .expect("checked above");
        let request = perms
            .requests
            .iter_mut()
            .find(|r| r.id == id)
            .expect("open");
        let message = (!allow).then(|| message.unwrap_or_else(|| format!("denied by {who}")));
        request.decision = Some(PermissionDecision {
            allow,
            message: message.clone(),
            by: who.to_string(),
            at_ms: now,
        });
        let request = request.clone();
        if allow && always && !perms.always.contains(&request.tool) {
            perms.always.push(request.tool.clone());
        }
        let send = worker
            .filter(|_| running && request.attempt == attempts)
            .map(|w| {
                let order = ManagerToWorker::PermissionDecided {
                    attempt: AttemptRef {
                        job: key,
                        attempt: request.attempt,
                    },
                    ask: request.ask,
                    allow,
                    message: message.unwrap_or_default(),
                };
                (w, order)
            });
        self.sessions.notify(session);
        Ok(Decided {
            job: name,
            request,
            send,
        })
    }

    /// Denies every open request of a running job past its timeout
    /// (`no answer within 1h`).
    pub fn expire_permissions(&mut self, now: u64) -> Vec<Decided> {
        let running: Vec<JobKey> = self
            .workers
            .values()
            .flat_map(|w| w.assigned.iter().copied())
            .chain(self.orphans.keys().copied())
            .collect();
        let mut out = Vec::new();
        for key in running {
            let Some(job) = self.job(key) else { continue };
            let Some(perms) = job.permissions.as_deref() else {
                continue;
            };
            let timeout = perms.timeout_ms;
            let late: Vec<u32> = perms
                .open()
                .filter(|r| now.saturating_sub(r.asked_at_ms) >= timeout)
                .map(|r| r.id)
                .collect();
            let (session, name) = (key.session, job.name.clone());
            for id in late {
                let message = format!("no answer within {}", duration_text(timeout));
                let decided = self.decide_permission(
                    session,
                    &name,
                    Some(id),
                    false,
                    false,
                    Some(message),
                    "timeout",
                    now,
                );
                out.extend(decided.ok());
            }
        }
        out
    }

    /// Closes the open requests of an attempt that ended (its agent is
    /// gone): they read as denied by `job ended`.
    pub fn close_permissions(&mut self, key: JobKey, attempt: u32, now: u64) {
        let open = self
            .job(key)
            .and_then(|j| j.permissions.as_deref())
            .is_some_and(|p| p.open().any(|r| r.attempt == attempt));
        if !open {
            return;
        }
        let Some(perms) = self.job_mut(key).and_then(|j| j.permissions.as_mut()) else {
            return;
        };
        for request in perms.requests.iter_mut().filter(|r| r.decision.is_none()) {
            request.decision = Some(PermissionDecision {
                allow: false,
                message: Some("the job's attempt ended".into()),
                by: "job ended".into(),
                at_ms: now,
            });
        }
    }

    /// A running job's open requests, oldest first, for its status.
    pub fn open_permissions(&self, key: JobKey) -> Vec<PermissionRequest> {
        self.job(key)
            .and_then(|j| j.permissions.as_deref())
            .map(|p| p.open().cloned().collect())
            .unwrap_or_default()
    }

    /// The open requests of a worker's adopted attempt are asked again by
    /// it; those decided while it was away are answered again here.
    pub fn decided_while_away(&self, attempt: AttemptRef) -> Vec<ManagerToWorker> {
        let Some(job) = self.job(attempt.job) else {
            return Vec::new();
        };
        if job.attempts != attempt.attempt || job.status != JobStatus::Running {
            return Vec::new();
        }
        let Some(perms) = job.permissions.as_deref() else {
            return Vec::new();
        };
        perms
            .requests
            .iter()
            .filter(|r| r.attempt == attempt.attempt)
            .filter_map(|r| {
                let d = r.decision.as_ref()?;
                Some(ManagerToWorker::PermissionDecided {
                    attempt,
                    ask: r.ask,
                    allow: d.allow,
                    message: d.message.clone().unwrap_or_default(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
