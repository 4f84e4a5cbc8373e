//! Notifications (`[[notify]]`): the supervisor hears that a session
//! finished, a gate waits, a job failed or a limit group paused, without
//! polling.
//!
//! Durable like every change: the scheduler takes the model's transitions
//! after each message (`State::take_transitions`), and the `Outbox` turns
//! each into an event for every target that wants it, written to the
//! store's outbox in the same commit as the change itself. Only once that
//! commit is durable are the events handed to delivery (`deliver`), which
//! runs off the scheduler; when an event is delivered, given up or
//! dropped, it is taken out of the outbox by a later commit. After a
//! restart, what is still in the outbox is delivered; the model's rebuild
//! makes no event again. A crash between a delivery and the commit that
//! removes it repeats that one event (at most once per crash): receivers
//! de-duplicate by its `id`.

pub mod config;
pub mod deliver;

pub use config::{NotifyEntry, Target};
pub use deliver::{event_id, retry_delay, Delivery, Notifier};

use crate::state::State;
use aam_store::{Changes, Notice};
use actix::prelude::*;
use bytes::Bytes;
use serde_json::json;

/// What became of a delivery (delivered, given up or dropped): it leaves
/// the outbox.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct NoticeSettled {
    pub seq: u64,
    pub target: u64,
}

/// The scheduler's side of notifications: the targets, the numbering of
/// events, what is to leave the outbox, and the delivery tasks.
#[derive(Default)]
pub struct Outbox {
    targets: Vec<Target>,
    next_seq: u64,
    next_seq_unsaved: bool,
    /// Settled since the last commit: to take out of the outbox.
    done: Vec<(u64, u64)>,
    /// What the store's outbox held at start, until delivery starts.
    backlog: Vec<Delivery>,
    notifier: Option<Notifier>,
}

impl Outbox {
    /// The targets, and what the store's outbox held at start (`notices`,
    /// numbered below `next_seq`). A notification for a target no longer
    /// configured is removed, with a log line.
    pub fn new(targets: Vec<Target>, notices: Vec<Notice>, next_seq: u64) -> Outbox {
        let mut outbox = Outbox {
            next_seq: next_seq.max(1),
            ..Outbox::default()
        };
        let mut orphaned = 0usize;
        for n in notices {
            outbox.next_seq = outbox.next_seq.max(n.seq + 1);
            if targets.iter().any(|t| t.fingerprint() == n.target) {
                outbox.backlog.push(Delivery {
                    seq: n.seq,
                    target: n.target,
                    event: Bytes::from(n.event),
                });
            } else {
                orphaned += 1;
                outbox.done.push((n.seq, n.target));
            }
        }
        if orphaned > 0 {
            tracing::warn!(
                orphaned,
                "dropping undelivered notifications of [[notify]] entries no longer configured"
            );
        }
        if !outbox.backlog.is_empty() {
            tracing::info!(
                events = outbox.backlog.len(),
                "delivering notifications left from before the restart"
            );
        }
        outbox.targets = targets;
        outbox
    }

    /// Starts delivery (the scheduler's `started`), with the backlog.
    pub fn start(&mut self, settled: Recipient<NoticeSettled>) {
        if self.targets.is_empty() {
            return;
        }
        let notifier = Notifier::start(&self.targets, settled);
        notifier.deliver(std::mem::take(&mut self.backlog));
        self.notifier = Some(notifier);
    }

    /// A delivery settled: it leaves the outbox with the next commit.
    pub fn settled(&mut self, msg: NoticeSettled) {
        self.done.push((msg.seq, msg.target));
    }

    /// Turns the model's transitions into events for the targets that want
    /// them, added to `changes` (with what leaves the outbox); returns what
    /// to deliver once `changes` are durable, and how many leave.
    pub fn stage(&mut self, state: &mut State, changes: &mut Changes, now: u64) -> Staged {
        let transitions = state.take_transitions();
        let mut deliveries = Vec::new();
        for t in transitions {
            let wanted: Vec<u64> = self
                .targets
                .iter()
                .filter(|target| target.on.contains(&t.kind))
                .map(Target::fingerprint)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let Some(mut event) = state.event_json(&t, now) else {
                continue;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.next_seq_unsaved = true;
            event["id"] = json!(event_id(seq));
            let event = Bytes::from(event.to_string());
            for target in wanted {
                changes.notices.push(Notice {
                    seq,
                    target,
                    event: event.to_vec(),
                });
                deliveries.push(Delivery {
                    seq,
                    target,
                    event: event.clone(),
                });
            }
        }
        if std::mem::take(&mut self.next_seq_unsaved) {
            changes.next_notice = Some(self.next_seq);
        }
        let removed = std::mem::take(&mut self.done);
        changes.notices_done.extend_from_slice(&removed);
        Staged {
            deliveries,
            removed,
        }
    }

    /// Once the commit of `staged` is durable: delivery starts.
    pub fn release(&self, staged: Staged) {
        if !staged.removed.is_empty() {
            let ids: Vec<String> = staged.removed.iter().map(|(s, _)| event_id(*s)).collect();
            tracing::info!(ids = %ids.join(","), "settled notifications are out of the outbox");
        }
        if let Some(notifier) = &self.notifier {
            notifier.deliver(staged.deliveries);
        }
    }

    /// The commit of `staged` failed: nothing of it is in the store. Its
    /// events go with the changes that made them (which the model rolls
    /// back, and makes again when they happen again); what was to leave
    /// the outbox is still to leave it.
    pub fn refused(&mut self, staged: Staged) {
        self.done.extend(staged.removed);
    }
}

/// What one commit adds to delivery.
#[derive(Default)]
pub struct Staged {
    pub deliveries: Vec<Delivery>,
    /// (seq, target) of what leaves the outbox.
    pub removed: Vec<(u64, u64)>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateConfig;
    use aam_protocol::spec::{BatchSpec, JobSpec};

    fn target(on: &[&str], url: &str) -> Target {
        let entry = NotifyEntry {
            on: on.iter().map(|s| s.to_string()).collect(),
            url: Some(url.into()),
            ..NotifyEntry::default()
        };
        Target::from_entry(1, &entry).unwrap()
    }

    fn gate_batch() -> BatchSpec {
        let gate = JobSpec {
            name: "go".into(),
            gate: true,
            ..Default::default()
        };
        BatchSpec {
            name: "b".into(),
            max_parallel: None,
            max_cost_usd: None,
            jobs: vec![gate],
        }
    }

    #[test]
    fn events_go_to_the_targets_that_want_them_numbered_after_the_stored_ones() {
        let gates = target(&["gate_waiting"], "http://a/");
        let failures = target(&["job_failed"], "http://b/");
        let gone = Notice {
            seq: 4,
            target: 99,
            event: b"{}".to_vec(),
        };
        let kept = Notice {
            seq: 5,
            target: gates.fingerprint(),
            event: b"{}".to_vec(),
        };
        let mut outbox = Outbox::new(vec![gates.clone(), failures], vec![gone, kept], 3);
        assert_eq!(outbox.backlog.len(), 1, "the configured target's event");
        let mut state = State::new(StateConfig::default());
        state.submit(gate_batch(), None, 0).unwrap();
        let mut changes = state.take_changes();
        let staged = outbox.stage(&mut state, &mut changes, 7);
        // Numbered after what the store held; only for the target that
        // wants it; the unconfigured target's event leaves the outbox.
        assert_eq!(changes.notices.len(), 1);
        assert_eq!(changes.notices[0].seq, 6);
        assert_eq!(changes.notices[0].target, gates.fingerprint());
        assert_eq!(changes.next_notice, Some(7));
        assert_eq!(changes.notices_done, [(4, 99)]);
        let event: serde_json::Value = serde_json::from_slice(&changes.notices[0].event).unwrap();
        assert_eq!(
            (&event["id"], &event["event"]),
            (&json!("n6"), &json!("gate_waiting"))
        );
        assert_eq!(staged.deliveries.len(), 1);
        // A refused commit keeps its removals for the next one.
        outbox.refused(staged);
        outbox.settled(NoticeSettled { seq: 5, target: 1 });
        let mut next = Changes::default();
        let staged = outbox.stage(&mut state, &mut next, 8);
        assert_eq!(next.notices_done, [(4, 99), (5, 1)]);
        assert!(next.notices.is_empty() && next.next_notice.is_none());
        assert_eq!(staged.removed.len(), 2);
    }

    #[test]
    fn without_targets_nothing_is_stored() {
        let mut outbox = Outbox::new(Vec::new(), Vec::new(), 1);
        let mut state = State::new(StateConfig::default());
        state.submit(gate_batch(), None, 0).unwrap();
        let mut changes = state.take_changes();
        assert!(outbox.stage(&mut state, &mut changes, 1).is_empty());
        assert!(changes.notices.is_empty() && changes.next_notice.is_none());
    }
}
