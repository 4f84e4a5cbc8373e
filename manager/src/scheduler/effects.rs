//! Durable before acknowledged (ARCHITECTURE.md, invariant 1): what a
//! message causes outside the model (a reply, an order to a worker, a
//! notification) is an `Effect`, parked until the commit of the changes
//! that caused it is durable, then released in commit order.

use super::{Scheduler, WorkerId};
use crate::client_conn::SessionUpdate;
use crate::worker_conn::ToWorker;
use aam_protocol::messages::{ClientResponse, ManagerToWorker};
use aam_protocol::model::SessionSummary;
use aam_protocol::JobKey;
use aam_store::Changes;
use actix::prelude::*;
use std::collections::VecDeque;
use tokio::sync::oneshot;

pub(super) enum Effect {
    /// A client's answer (None: its answer is a stream of updates).
    Reply(
        oneshot::Sender<Option<ClientResponse>>,
        Option<ClientResponse>,
    ),
    ToWorker(WorkerId, ManagerToWorker),
    /// A session's progress as of the commit this effect waits for (taken
    /// when the effect is made, so a later, not yet durable change never
    /// shows early).
    Notify(SessionSummary),
    /// The first update of a new watcher.
    Watch(SessionSummary, Recipient<SessionUpdate>),
    /// Everything changed before it is durable.
    Flushed(oneshot::Sender<()>),
}

/// Effects waiting for their commit, oldest first, by commit number.
#[derive(Default)]
pub(super) struct Parked {
    waiting: VecDeque<(u64, Vec<Effect>)>,
    next_seq: u64,
}

impl Scheduler {
    /// Commits `changes` and releases `effects` once they are durable. With
    /// nothing to commit, the effects may still show what an earlier commit
    /// in flight changed: they wait for the last one.
    pub(super) fn commit_then_release(
        &mut self,
        ctx: &mut Context<Self>,
        changes: Changes,
        effects: Vec<Effect>,
    ) {
        if changes.is_empty() {
            match self.parked.waiting.back_mut() {
                Some((_, pending)) => pending.extend(effects),
                None => self.release(effects),
            }
            return;
        }
        let seq = self.parked.next_seq;
        self.parked.next_seq += 1;
        self.parked.waiting.push_back((seq, effects));
        let outputs: Vec<(JobKey, u32)> = changes
            .outputs
            .iter()
            .filter_map(|(k, _)| Some((*k, self.state.committing_attempt(*k)?)))
            .collect();
        let durable = self.committer.commit(changes);
        ctx.spawn(durable.into_actor(self).map(move |result, act, _ctx| {
            match result.unwrap_or_else(|_| Err("the commit thread stopped".into())) {
                Ok(()) => {
                    act.state.outputs_committed(&outputs);
                    while act.parked.waiting.front().is_some_and(|(s, _)| *s <= seq) {
                        let (_, effects) = act.parked.waiting.pop_front().expect("front exists");
                        act.release(effects);
                    }
                }
                Err(e) => {
                    // Without a durable store nothing may be acknowledged.
                    tracing::error!("cannot make state durable ({e}); stopping the manager");
                    System::current().stop_with_code(1);
                }
            }
        }));
    }

    fn release(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply(tx, response) => {
                    let _ = tx.send(response);
                }
                Effect::ToWorker(id, msg) => match self.workers.get(&id) {
                    Some(addr) => addr.do_send(ToWorker(msg)),
                    None => tracing::debug!(worker = id, "worker left before a message reached it"),
                },
                Effect::Notify(summary) => self.notify(summary),
                Effect::Watch(summary, recipient) => recipient.do_send(SessionUpdate(summary)),
                Effect::Flushed(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }

    fn notify(&mut self, summary: SessionSummary) {
        let session = summary.id;
        let Some(list) = self.watchers.get_mut(&session) else {
            return;
        };
        list.retain(|r| r.connected());
        let terminal = summary.status.is_terminal();
        for r in list.iter() {
            r.do_send(SessionUpdate(summary.clone()));
        }
        if terminal || list.is_empty() {
            self.watchers.remove(&session);
        }
    }
}
