//! The audit log's scheduler side: each mutating request, each refused one
//! and each worker registration becomes an `AuditRecord`, encoded and
//! handed to the store with the next commit (durable like every change);
//! the listener sends its own (refused handshakes) as `Audit` messages.
//! `aam audit` reads the log back from the store.

use super::requests::Reply;
use super::Scheduler;
use crate::access::Identity;
use aam_protocol::audit::{AuditOutcome, AuditRecord};
use aam_protocol::codec;
use aam_protocol::messages::ClientResponse;
use aam_protocol::now_ms;
use aam_store::{AuditEntry, Changes};
use actix::prelude::*;
use tokio::sync::oneshot;

/// Records waiting for a commit past this many (the store takes no writes
/// for long) are dropped, counted in the log, rather than held unbounded.
const MAX_PENDING: usize = 100_000;

/// Most records one `aam audit` answer holds (the newest; fewer when they
/// do not fit in half a frame).
pub const MAX_ANSWER: usize = 10_000;

/// A record made outside the scheduler (the listener's refused handshakes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Audit(pub AuditRecord);

/// Records not yet committed, and the next sequence number.
#[derive(Default)]
pub struct AuditLog {
    pending: Vec<AuditEntry>,
    next_seq: u64,
    /// Retention: records older than this go with the next commit.
    prune_before: Option<u64>,
    dropped: u64,
}

impl AuditLog {
    /// Continues after the last stored record's sequence number.
    pub fn starting_at(next_seq: u64) -> AuditLog {
        AuditLog {
            next_seq,
            ..AuditLog::default()
        }
    }

    pub fn record(&mut self, record: &AuditRecord) {
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        match codec::encode(record) {
            Ok(bytes) => {
                self.pending.push(AuditEntry {
                    at_ms: record.at_ms,
                    seq: self.next_seq,
                    record: bytes,
                });
                self.next_seq += 1;
            }
            Err(e) => tracing::error!("cannot encode an audit record: {e}"),
        }
    }

    /// Drops records older than `before` (ms) with the next commit.
    pub fn prune(&mut self, before: u64) {
        self.prune_before = Some(before);
    }

    /// Moves what waits into `changes`.
    pub fn take_into(&mut self, changes: &mut Changes) {
        if self.dropped > 0 {
            tracing::error!(
                dropped = self.dropped,
                "audit records dropped: the store took no writes for too long"
            );
            self.dropped = 0;
        }
        changes.audit = std::mem::take(&mut self.pending);
        changes.audit_before = self.prune_before.take();
    }
}

/// A record of `who` doing `action` on `target`.
pub fn record(
    who: &Identity,
    action: &str,
    target: String,
    outcome: AuditOutcome,
    detail: String,
) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms(),
        token: who.name.clone(),
        role: who.grant.to_string(),
        peer: who.peer.clone(),
        action: action.to_string(),
        target,
        outcome,
        detail,
    }
}

/// A record of the manager itself acting (a permission rule or timeout).
pub fn record_by_manager(
    action: &str,
    target: String,
    outcome: AuditOutcome,
    detail: String,
) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms(),
        token: "aam-manager".to_string(),
        role: "manager".to_string(),
        peer: String::new(),
        action: action.to_string(),
        target,
        outcome,
        detail,
    }
}

/// How a request's answer reads in the audit log.
pub fn outcome_of(reply: &Reply) -> (AuditOutcome, String) {
    let answer = match reply {
        Reply::Answer(answer) | Reply::WhenEnded { answer, .. } => answer,
        Reply::Watch(_) | Reply::Audit { .. } => return (AuditOutcome::Done, String::new()),
    };
    match answer {
        ClientResponse::Error { message, .. } => (AuditOutcome::Failed, message.clone()),
        ClientResponse::Invalid(errors) => (
            AuditOutcome::Failed,
            format!("invalid batch ({} problems)", errors.0.len()),
        ),
        ClientResponse::Submitted {
            session,
            existing: true,
            ..
        } => (
            AuditOutcome::Done,
            format!("{session} (idempotency key seen)"),
        ),
        ClientResponse::Submitted { session, jobs, .. } => {
            (AuditOutcome::Done, format!("{session}, {jobs} jobs"))
        }
        ClientResponse::Collected { sessions, .. } => (
            AuditOutcome::Done,
            format!("{} sessions removed", sessions.len()),
        ),
        ClientResponse::PermissionDecided { request, summary } => {
            (AuditOutcome::Done, format!("request {request}: {summary}"))
        }
        ClientResponse::Retried { jobs } => (AuditOutcome::Done, format!("{} jobs", jobs.len())),
        _ => (AuditOutcome::Done, String::new()),
    }
}

impl Scheduler {
    /// Answers with the audit log from `since_ms` on, as the store holds
    /// it once every commit made before this request is in it (read by the
    /// commit thread, in order: an acknowledged action's record is there).
    pub(super) fn read_audit(
        &self,
        ctx: &mut Context<Self>,
        since_ms: Option<u64>,
        reply: oneshot::Sender<Option<ClientResponse>>,
    ) {
        let read = self.committer.audit(since_ms.unwrap_or(0), MAX_ANSWER);
        ctx.spawn(read.into_actor(self).map(move |read, act, _| {
            let answer = match read {
                Ok(Ok(read)) => act.audit_answer(read),
                Ok(Err(e)) => ClientResponse::Error {
                    kind: aam_protocol::messages::ErrorKind::Internal,
                    message: format!("reading the audit log: {e}"),
                },
                Err(_) => return super::read_only::commit_thread_gone(),
            };
            let _ = reply.send(Some(answer));
        }));
    }

    /// The newest audit records that fit in one answer.
    fn audit_answer(&self, (entries, truncated): (Vec<AuditEntry>, bool)) -> ClientResponse {
        // The newest that fit in one answer (a record's encoded size is
        // what it adds to the answer's frame).
        let mut bytes = 0usize;
        let fitting = entries
            .iter()
            .rev()
            .take_while(|e| {
                bytes += e.record.len() + 8;
                bytes <= self.answer_budget
            })
            .count();
        let truncated = truncated || fitting < entries.len();
        let records = entries[entries.len() - fitting..]
            .iter()
            .filter_map(|e| match codec::decode::<AuditRecord>(&e.record) {
                Ok(r) => Some(r),
                Err(err) => {
                    tracing::warn!(seq = e.seq, "an audit record does not decode: {err}");
                    None
                }
            })
            .collect();
        ClientResponse::Audit { records, truncated }
    }
}

impl Handler<Audit> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Audit, ctx: &mut Context<Self>) {
        self.audit.record(&msg.0);
        self.settle(ctx, Vec::new());
    }
}
