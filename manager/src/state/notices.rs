//! The changes someone outside may want to hear of (`[[notify]]`): a
//! session finishing, a gate starting to wait for its decision, a job
//! failing, a limit group being paused. The model notes each such
//! transition where it happens, once (a job that was failed already does
//! not fail again; a pause that is extended is no new pause); the
//! scheduler takes them after the message that caused them and renders
//! each as an event's JSON from the model as that message left it, to be
//! stored with the change itself (`notify::Outbox`). Nothing is noted by
//! `rebuild`: the events of what happened before a restart are in the
//! store's outbox already, or were delivered.

use super::State;
use aam_protocol::agent_run::LimitPause;
use aam_protocol::json::{opt_time, rfc3339, summary_json};
use aam_protocol::model::JobStatus;
use aam_protocol::{JobKey, SessionId};
use serde_json::{json, Value};

/// What an event is about; `on` in a `[[notify]]` entry names these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    SessionFinished,
    GateWaiting,
    JobFailed,
    LimitPaused,
    /// A running agent asks a permission nobody has decided yet.
    NeedsInput,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::SessionFinished,
        EventKind::GateWaiting,
        EventKind::JobFailed,
        EventKind::LimitPaused,
        EventKind::NeedsInput,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionFinished => "session_finished",
            EventKind::GateWaiting => "gate_waiting",
            EventKind::JobFailed => "job_failed",
            EventKind::LimitPaused => "limit_paused",
            EventKind::NeedsInput => "needs_input",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One transition as the model noted it; what it shows is read when it is
/// rendered, at the end of the same message.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub kind: EventKind,
    pub session: SessionId,
    /// The job it concerns (for a pause: the job whose attempt hit the limit).
    pub job: Option<u32>,
    /// A limit group's pause as it was made.
    pub pause: Option<LimitPause>,
    /// The permission request a `NeedsInput` is about.
    pub request: Option<u32>,
}

impl State {
    fn note(&mut self, kind: EventKind, key: JobKey) {
        self.transitions.push(Transition {
            kind,
            session: key.session,
            job: Some(key.index),
            pause: None,
            request: None,
        });
    }

    /// A job's status changed from `was`: a failure is noted the first
    /// time it fails (or times out), not when a failed job is set again.
    pub(super) fn note_status(&mut self, key: JobKey, was: Option<JobStatus>, now: JobStatus) {
        let failed = |s: JobStatus| matches!(s, JobStatus::Failed | JobStatus::TimedOut);
        if failed(now) && !was.is_some_and(failed) {
            self.note(EventKind::JobFailed, key);
        }
    }

    /// A gate is waiting for its decision.
    pub(super) fn note_gate_waiting(&mut self, key: JobKey) {
        self.note(EventKind::GateWaiting, key);
    }

    /// A running session ended.
    pub(super) fn note_session_finished(&mut self, session: SessionId) {
        self.transitions.push(Transition {
            kind: EventKind::SessionFinished,
            session,
            job: None,
            pause: None,
            request: None,
        });
    }

    /// A limit group that was not held is paused (after `by`'s attempt).
    pub(super) fn note_paused(&mut self, by: JobKey, pause: LimitPause) {
        self.transitions.push(Transition {
            kind: EventKind::LimitPaused,
            session: by.session,
            job: Some(by.index),
            pause: Some(pause),
            request: None,
        });
    }

    /// A job's agent asks a permission that waits for someone's answer.
    pub(super) fn note_needs_input(&mut self, key: JobKey, request: u32) {
        self.transitions.push(Transition {
            kind: EventKind::NeedsInput,
            session: key.session,
            job: Some(key.index),
            pause: None,
            request: Some(request),
        });
    }

    /// The transitions noted since the last call, in the order they
    /// happened.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.transitions)
    }

    /// The event of a transition as JSON, without its `id` (the outbox
    /// gives it one): `event`, `at`, the session's summary, and what
    /// applies of the job, the gate or the pause. None if its session is
    /// gone. Never a token nor an environment value: only names, statuses,
    /// reasons and counts.
    pub fn event_json(&self, t: &Transition, at_ms: u64) -> Option<Value> {
        let entry = self.sessions.get(t.session)?;
        let mut event = json!({
            "event": t.kind.as_str(),
            "at": rfc3339(at_ms),
            "session": summary_json(&entry.summary()),
        });
        let job = t.job.and_then(|i| entry.jobs().get(i as usize));
        if let Some(job) = job {
            event["job"] = json!(job.name);
        }
        match (t.kind, job) {
            (EventKind::JobFailed, Some(job)) => {
                event["status"] = json!(job.status.as_str());
                event["attempt"] = json!(job.attempts);
                event["reason"] = json!(job.reason);
                event["exit_code"] = json!(job.exit().and_then(|e| e.code));
                event["signal"] = json!(job.exit().and_then(|e| e.signal));
                if let Some(d) = &job.decision {
                    // A rejected gate: who rejected it, and why.
                    event["gate"] = json!(job.name);
                    event["decided_by"] = json!(d.by);
                    event["comment"] = json!(d.comment);
                }
            }
            (EventKind::GateWaiting, Some(job)) => event["gate"] = json!(job.name),
            (EventKind::NeedsInput, Some(job)) => {
                let asked = job
                    .permissions
                    .as_ref()
                    .and_then(|p| p.requests.iter().find(|r| Some(r.id) == t.request));
                if let Some(r) = asked {
                    event["request"] = json!(r.id);
                    event["tool"] = json!(r.tool);
                    event["call"] = json!(r.summary);
                    event["open"] = json!(r.decision.is_none());
                }
            }
            _ => {}
        }
        if let Some(p) = &t.pause {
            event["group"] = json!(p.group);
            event["until"] = opt_time(Some(p.until_ms));
            event["message"] = json!(p.message);
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests;
