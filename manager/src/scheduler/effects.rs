//! Durable before acknowledged (ARCHITECTURE.md, invariant 1): what a
//! message causes outside the model (a reply, an order to a worker, a
//! notification) is an `Effect`, parked until the commit of the changes
//! that caused it is durable, then released in commit order. When a commit
//! fails, its effects and those of every commit behind it are refused
//! instead (`read_only` takes over from there).

use super::read_only::{commit_thread_gone, not_stored};
use super::{Scheduler, WorkerId};
use crate::client_conn::SessionUpdate;
use crate::commit::StoreFailure;
use crate::notify::Staged;
use crate::worker_conn::{HoldAck, ToWorker};
use aam_protocol::messages::{ClientResponse, ManagerToWorker};
use aam_protocol::model::SessionSummary;
use aam_protocol::JobKey;
use aam_store::Changes;
use actix::prelude::*;
use std::collections::{HashSet, VecDeque};
use tokio::sync::{mpsc, oneshot};

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
    /// The first update of a new one-session subscriber (`observers`).
    FirstUpdate(SessionSummary, mpsc::Sender<SessionSummary>),
    /// Everything changed before it is durable.
    Flushed(oneshot::Sender<()>),
    /// Notifications stored with the commit, to deliver; and those it
    /// took out of the outbox.
    Notices(Staged),
}

/// Effects waiting for their commit, oldest first, by commit number.
#[derive(Default)]
pub(super) struct Parked {
    waiting: VecDeque<Pending>,
    next_seq: u64,
}

/// The effects of one commit in flight.
struct Pending {
    seq: u64,
    effects: Vec<Effect>,
    /// Its result once known. Results may be seen out of order; effects
    /// are released (or refused) in commit order.
    result: Option<Result<(), StoreFailure>>,
}

impl Parked {
    /// The number the next commit gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }
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
                Some(pending) => pending.effects.extend(effects),
                None => self.release(effects),
            }
            return;
        }
        let seq = self.parked.next_seq;
        self.parked.next_seq += 1;
        let outputs: Vec<(JobKey, u32)> = changes
            .outputs
            .iter()
            .chain(&changes.patches)
            .filter_map(|(k, _)| Some((*k, self.state.committing_attempt(*k)?)))
            .collect();
        self.parked.waiting.push_back(Pending {
            seq,
            effects,
            result: None,
        });
        let committed = self.committer.commit(changes);
        ctx.spawn(
            committed
                .durable
                .into_actor(self)
                .map(move |result, act, ctx| {
                    match result {
                        Ok(result) => act.committed(ctx, seq, result),
                        // Without a durable store nothing may be acknowledged.
                        Err(_) => commit_thread_gone(),
                    }
                }),
        );
        if !outputs.is_empty() {
            // Until sled holds them, queries read them from memory.
            ctx.spawn(
                committed
                    .applied
                    .into_actor(self)
                    .map(move |applied, act, _| {
                        if applied.is_ok() {
                            act.state.outputs_committed(&outputs);
                        }
                    }),
            );
        }
    }

    /// A commit's result: releases (or refuses) the effects of every
    /// commit up to the first whose result is not known yet.
    fn committed(&mut self, ctx: &mut Context<Self>, seq: u64, result: Result<(), StoreFailure>) {
        // Not found: refused already, with an earlier commit that failed.
        let Some(pending) = self.parked.waiting.iter_mut().find(|p| p.seq == seq) else {
            return;
        };
        pending.result = Some(result);
        while let Some(front) = self.parked.waiting.front() {
            match &front.result {
                None => break,
                Some(Ok(())) => {
                    let done = self.parked.waiting.pop_front().expect("front exists");
                    self.release(done.effects);
                }
                Some(Err(failure)) => {
                    let (failed, failure) = (front.seq, failure.clone());
                    self.store_failed(ctx, failed, failure);
                    break;
                }
            }
        }
    }

    /// The oldest commit in flight failed, and with it every later one
    /// (the commit thread fails all that follow a failure): their replies
    /// become the error; their orders and notifications are dropped.
    pub(super) fn refuse_parked(&mut self, failure: &StoreFailure) {
        for pending in std::mem::take(&mut self.parked.waiting) {
            for effect in pending.effects {
                match effect {
                    Effect::Reply(tx, _) => {
                        let _ = tx.send(Some(not_stored(failure)));
                    }
                    Effect::Flushed(tx) => {
                        let _ = tx.send(());
                    }
                    Effect::Notices(staged) => self.notify.refused(staged),
                    Effect::ToWorker(..)
                    | Effect::Notify(_)
                    | Effect::Watch(..)
                    | Effect::FirstUpdate(..) => {}
                }
            }
        }
    }

    fn release(&mut self, effects: Vec<Effect>) {
        let ordered = workers_with_orders(&effects);
        for effect in release_order(effects) {
            self.release_one(effect, &ordered);
        }
    }

    /// `ordered`: the workers this batch gives an order (an `Ack` to any
    /// other is held, see `HoldAck`).
    fn release_one(&mut self, effect: Effect, ordered: &HashSet<WorkerId>) {
        match effect {
            Effect::Reply(tx, response) => {
                let _ = tx.send(response);
            }
            Effect::ToWorker(id, msg) => match self.workers.get(&id) {
                Some(addr) => match msg {
                    ManagerToWorker::Ack(attempt) if !ordered.contains(&id) => {
                        addr.do_send(HoldAck(attempt))
                    }
                    msg => addr.do_send(ToWorker(msg)),
                },
                None => tracing::debug!(worker = id, "worker left before a message reached it"),
            },
            Effect::Notify(summary) => self.notify(summary),
            Effect::Watch(summary, recipient) => recipient.do_send(SessionUpdate {
                summary,
                first: true,
            }),
            Effect::FirstUpdate(summary, updates) => {
                super::observers::first_update(&updates, summary)
            }
            Effect::Flushed(tx) => {
                let _ = tx.send(());
            }
            Effect::Notices(staged) => self.notify.release(staged),
        }
    }

    fn notify(&mut self, summary: SessionSummary) {
        let session = summary.id;
        self.subscribers.send(&summary);
        let Some(list) = self.watchers.get_mut(&session) else {
            return;
        };
        list.retain(|r| r.connected());
        let terminal = summary.status.is_terminal();
        for r in list.iter() {
            r.do_send(SessionUpdate {
                summary: summary.clone(),
                first: false,
            });
        }
        if terminal || list.is_empty() {
            self.watchers.remove(&session);
        }
    }
}

/// The workers `effects` give a message other than an `Ack`: an `Ack` to
/// one of them goes out with it, in the same write.
fn workers_with_orders(effects: &[Effect]) -> HashSet<WorkerId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToWorker(_, ManagerToWorker::Ack(_)) => None,
            Effect::ToWorker(id, _) => Some(*id),
            _ => None,
        })
        .collect()
}

/// Orders to workers first, then everything else, each in its own order:
/// a client woken first by its answer took the manager's CPU before the
/// assignment its submission had caused was written (issue 18, BENCHMARKS.md).
/// `ToWorker` is the only effect addressed to a worker; the rest go to
/// clients, notification targets and the manager's own waiters, so no
/// peer sees its own messages reordered.
fn release_order(mut effects: Vec<Effect>) -> impl Iterator<Item = Effect> {
    let orders: Vec<Effect> = effects
        .extract_if(.., |e| matches!(e, Effect::ToWorker(..)))
        .collect();
    orders.into_iter().chain(effects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::messages::AttemptRef;
    use aam_protocol::SessionId;

    fn described(effect: &Effect) -> String {
        match effect {
            Effect::ToWorker(worker, ManagerToWorker::Pong) => format!("worker {worker}"),
            Effect::Reply(_, Some(ClientResponse::Cancelled { cancelled, .. })) => {
                format!("reply {}", cancelled.join(""))
            }
            Effect::Flushed(_) => "flushed".into(),
            _ => "other".into(),
        }
    }

    #[test]
    fn orders_to_workers_go_first_and_each_kind_keeps_its_order() {
        let reply = |text: &str| {
            let (tx, _) = oneshot::channel();
            let answer = ClientResponse::Cancelled {
                cancelled: vec![text.into()],
                stopped: Vec::new(),
            };
            Effect::Reply(tx, Some(answer))
        };
        let effects = vec![
            reply("a"),
            Effect::ToWorker(1, ManagerToWorker::Pong),
            Effect::Flushed(oneshot::channel().0),
            reply("b"),
            Effect::ToWorker(2, ManagerToWorker::Pong),
            Effect::ToWorker(1, ManagerToWorker::Pong),
        ];
        let order: Vec<String> = release_order(effects).map(|e| described(&e)).collect();
        assert_eq!(
            order,
            ["worker 1", "worker 2", "worker 1", "reply a", "flushed", "reply b"]
        );
    }

    #[test]
    fn only_workers_given_more_than_an_ack_count_as_ordered() {
        let ack = |worker: WorkerId| {
            let job = JobKey {
                session: SessionId(1),
                index: worker as u32,
            };
            Effect::ToWorker(worker, ManagerToWorker::Ack(AttemptRef { job, attempt: 1 }))
        };
        let effects = vec![
            ack(1),
            ack(2),
            Effect::ToWorker(2, ManagerToWorker::Pong),
            Effect::Flushed(oneshot::channel().0),
            ack(3),
            Effect::ToWorker(4, ManagerToWorker::Pong),
        ];
        let ordered = workers_with_orders(&effects);
        assert_eq!(ordered, HashSet::from([2, 4]));
    }
}
