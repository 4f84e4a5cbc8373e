//! One actor per worker connection: reads the worker's frames, checks them
//! (`peer_input`) and forwards them to the scheduler, writes the
//! scheduler's orders, and enforces the worker's lease. It registers in `handle(Register)` and leaves in `stopping()`.

use crate::listener::Shared;
use crate::peer_input::{check_register, trim_report};
use crate::scheduler::{WorkerConnected, WorkerDisconnected, WorkerReport};
use crate::state::WorkerId;
use aam_protocol::codec::{CodecError, FrameCodec};
use aam_protocol::messages::{ManagerToWorker, WorkerToManager};
use actix::prelude::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::tcp::OwnedWriteHalf;

type Writer = actix::io::FramedWrite<
    ManagerToWorker,
    OwnedWriteHalf,
    FrameCodec<WorkerToManager, ManagerToWorker>,
>;

/// An order from the scheduler to this worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToWorker(pub ManagerToWorker);

/// The same worker process registered on a newer connection: this one is
/// dead to it. Closes without a word to the peer, and without telling the
/// scheduler (its jobs went to the newer connection).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replaced;

pub struct WorkerConn {
    pub id: WorkerId,
    pub peer: SocketAddr,
    pub shared: Shared,
    pub writer: Writer,
    pub name: Option<String>,
    pub last_seen: Instant,
    /// It went silent past its lease (rather than closing its connection).
    pub lease_expired: bool,
}

impl WorkerConn {
    fn refuse(&mut self, ctx: &mut Context<Self>, reason: String) {
        tracing::warn!(peer = %self.peer, "refusing worker: {reason}");
        self.writer.write(ManagerToWorker::Refused { reason });
        self.writer.close();
        ctx.stop();
    }

    /// Hands a message to the scheduler and reads nothing more until it is
    /// taken: a worker that floods is slowed down, never buffered.
    fn forward<M>(&mut self, ctx: &mut Context<Self>, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        crate::scheduler::Scheduler: Handler<M>,
    {
        let sent = self.shared.scheduler.send(msg);
        ctx.wait(sent.into_actor(self).map(|_, _, _| ()));
    }
}

impl Actor for WorkerConn {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let lease = Duration::from_millis(self.shared.lease_ms);
        ctx.run_interval(lease / 4, move |act, ctx| {
            if act.last_seen.elapsed() > lease {
                tracing::warn!(peer = %act.peer, worker = act.name.as_deref().unwrap_or("?"),
                    "worker silent past its lease of {lease:?}; dropping it");
                act.lease_expired = true;
                ctx.stop();
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        if self.name.is_some() {
            self.shared.scheduler.do_send(WorkerDisconnected {
                id: self.id,
                lost: self.lease_expired,
            });
        }
        Running::Stop
    }
}

impl actix::io::WriteHandler<CodecError> for WorkerConn {}

impl StreamHandler<Result<WorkerToManager, CodecError>> for WorkerConn {
    fn handle(&mut self, item: Result<WorkerToManager, CodecError>, ctx: &mut Context<Self>) {
        let msg = match item {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(peer = %self.peer, "closing worker connection: {e}");
                ctx.stop();
                return;
            }
        };
        self.last_seen = Instant::now();
        let span = tracing::debug_span!("worker", worker = self.name.as_deref().unwrap_or("?"), peer = %self.peer);
        let _entered = span.enter();
        match (msg, self.name.is_some()) {
            (
                WorkerToManager::Register {
                    name,
                    instance,
                    slots,
                    prefetch,
                    labels,
                    assigned,
                },
                false,
            ) => {
                if let Err(reason) = check_register(&name, slots, prefetch, &labels, &assigned) {
                    return self.refuse(ctx, reason);
                }
                self.name = Some(name.clone());
                let connected = WorkerConnected {
                    id: self.id,
                    addr: ctx.address(),
                    name,
                    instance,
                    address: self.peer.to_string(),
                    slots,
                    prefetch,
                    labels,
                    assigned,
                };
                self.forward(ctx, connected);
            }
            (WorkerToManager::Register { .. }, true) => {
                self.refuse(ctx, "registered twice on one connection".into())
            }
            (_, false) => self.refuse(ctx, "a worker must register first".into()),
            (mut report, true) => {
                if matches!(report, WorkerToManager::Heartbeat) {
                    self.writer.write(ManagerToWorker::Pong);
                }
                trim_report(&mut report);
                let id = self.id;
                self.forward(ctx, WorkerReport { id, report });
            }
        }
    }
}

impl Handler<ToWorker> for WorkerConn {
    type Result = ();

    fn handle(&mut self, msg: ToWorker, ctx: &mut Context<Self>) {
        let last = matches!(
            msg.0,
            ManagerToWorker::Refused { .. } | ManagerToWorker::RetryLater { .. }
        );
        self.writer.write(msg.0);
        if last {
            // Its registration was not taken: the scheduler need not hear of it.
            self.name = None;
            self.writer.close();
            ctx.stop();
        }
    }
}

impl Handler<Replaced> for WorkerConn {
    type Result = ();

    fn handle(&mut self, _: Replaced, ctx: &mut Context<Self>) {
        self.name = None;
        ctx.stop();
    }
}
