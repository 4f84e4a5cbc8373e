//! What the HTTP server asks of the scheduler besides clients' requests:
//! subscriptions to sessions' changes (its event streams, `Subscribe`) and
//! whether the manager is ready (`Readiness`).
//!
//! A subscriber is the sending half of a bounded channel. The scheduler
//! never waits on it: an update that does not fit drops the subscriber
//! (its stream ends, its client reconnects), and a subscriber whose
//! receiver is gone is forgotten at the next update. So a slow or vanished
//! client costs the scheduler one failed `try_send`, never a wait.

use super::effects::Effect;
use super::Scheduler;
use aam_protocol::model::SessionSummary;
use aam_protocol::SessionId;
use actix::prelude::*;
use tokio::sync::mpsc;

/// Updates a subscriber may have waiting before it is dropped as too slow.
pub const SUBSCRIBER_BACKLOG: usize = 1024;

/// Subscribes to every change of one session (`session`) or of every
/// session (None). The answer is an error message when the session does
/// not exist. A one-session subscriber first gets the session as it is.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Subscribe {
    pub session: Option<SessionId>,
    pub updates: mpsc::Sender<SessionSummary>,
}

/// Whether the manager can take changes: Err(why) while its store takes
/// no writes. (The model is rebuilt before the scheduler runs at all.)
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Readiness;

pub(super) struct Subscriber {
    session: Option<SessionId>,
    updates: mpsc::Sender<SessionSummary>,
}

/// Every subscriber to sessions' changes.
#[derive(Default)]
pub(super) struct Subscribers(Vec<Subscriber>);

impl Subscribers {
    /// Whether a change of `session` is for someone.
    pub(super) fn want(&self, session: SessionId) -> bool {
        self.0
            .iter()
            .any(|s| s.session.is_none_or(|id| id == session))
    }

    /// Hands `summary` to those it is for; drops those that are gone or
    /// too far behind.
    pub(super) fn send(&mut self, summary: &SessionSummary) {
        self.0.retain(|s| {
            if s.session.is_some_and(|id| id != summary.id) {
                return !s.updates.is_closed();
            }
            match s.updates.try_send(summary.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        backlog = SUBSCRIBER_BACKLOG,
                        "dropping an event stream whose client does not keep up"
                    );
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Sends the first update of a one-session subscriber (an effect, so it
/// shows only what is durable).
pub(super) fn first_update(updates: &mpsc::Sender<SessionSummary>, summary: SessionSummary) {
    let _ = updates.try_send(summary);
}

impl Handler<Subscribe> for Scheduler {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let Subscribe { session, updates } = msg;
        let mut effects = Vec::new();
        if let Some(id) = session {
            let summary = self
                .state
                .summary(id)
                .ok_or_else(|| format!("no session {id}"))?;
            effects.push(Effect::FirstUpdate(summary, updates.clone()));
        }
        // Subscribed now, so the next settle already makes its updates.
        self.subscribers.0.push(Subscriber { session, updates });
        self.settle(ctx, effects);
        Ok(())
    }
}

impl Handler<Readiness> for Scheduler {
    type Result = Result<(), String>;

    fn handle(&mut self, _: Readiness, _: &mut Context<Self>) -> Self::Result {
        match self.store_failure() {
            None => Ok(()),
            Some(why) => Err(format!("the store takes no writes: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::model::SessionStatus;

    fn summary(id: u64) -> SessionSummary {
        SessionSummary {
            id: SessionId(id),
            name: "x".into(),
            status: SessionStatus::Running,
            created_at_ms: 0,
            finished_at_ms: None,
            counts: [0; 8],
            total: 1,
            cost_usd: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            needs_input: 0,
            waiting_for_input: 0,
        }
    }

    #[test]
    fn updates_reach_those_they_are_for_and_a_full_subscriber_is_dropped() {
        let mut subs = Subscribers::default();
        let (all_tx, mut all) = mpsc::channel(SUBSCRIBER_BACKLOG);
        let (one_tx, mut one) = mpsc::channel(1);
        subs.0.push(Subscriber {
            session: None,
            updates: all_tx,
        });
        subs.0.push(Subscriber {
            session: Some(SessionId(2)),
            updates: one_tx,
        });
        assert!(subs.want(SessionId(1)));
        subs.send(&summary(1));
        subs.send(&summary(2));
        assert_eq!(all.try_recv().unwrap().id, SessionId(1));
        assert_eq!(all.try_recv().unwrap().id, SessionId(2));
        assert_eq!(one.try_recv().unwrap().id, SessionId(2));
        assert!(one.try_recv().is_err());
        // Its one place is taken and not read: the next update drops it.
        subs.send(&summary(2));
        subs.send(&summary(2));
        assert_eq!(subs.len(), 1);
        // A receiver gone: forgotten at the next update.
        drop(all);
        subs.send(&summary(3));
        assert_eq!(subs.len(), 0);
        assert!(!subs.want(SessionId(1)));
    }
}
