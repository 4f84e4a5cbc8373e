//! One actor per worker connection: reads the worker's frames, checks them
//! (`peer_input`) and forwards them to the scheduler, writes the
//! scheduler's orders through a bounded writer, and enforces the worker's
//! lease. It registers in `handle(Register)` and leaves in `stopping()`.
//! An `Ack` from a commit that gives the worker nothing else (`HoldAck`)
//! waits, at most `ACK_DELAY`, to go out with its next message.

use crate::frame_writer::{stop_when_failed, FrameWriter, WriteError};
use crate::listener::Shared;
use crate::peer_input::{check_register, trim_report};
use crate::scheduler::{WorkerConnected, WorkerDisconnected, WorkerReport};
use crate::state::WorkerId;
use aam_protocol::codec::CodecError;
use aam_protocol::messages::{AttemptRef, ManagerToWorker, WorkerToManager};
use actix::prelude::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a held `Ack` may wait for the next message to the same worker,
/// to go out with it. An `Ack` only lets the worker forget an end it
/// reported (sent again after a reconnect until acknowledged), so it need
/// not wake the worker on its own: a worker running one job after another
/// gets it with its next assignment (issue 18, BENCHMARKS.md). Past the
/// delay it goes alone, so a draining or idle worker is not kept waiting.
const ACK_DELAY: Duration = Duration::from_millis(20);

/// An order from the scheduler to this worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToWorker(pub ManagerToWorker);

/// The `Ack` of an end, from a commit that gives this worker nothing else:
/// held for its next message, or `ACK_DELAY`. (An `Ack` with an order goes
/// as a `ToWorker`, in the same write as the order.)
#[derive(Message)]
#[rtype(result = "()")]
pub struct HoldAck(pub AttemptRef);

/// Closes the connection; the worker dials again and registers anew.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect;

/// The same worker process registered on a newer connection: this one is
/// dead to it. Closes without a word to the peer, and without telling the
/// scheduler (its jobs went to the newer connection).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replaced;

pub struct WorkerConn {
    id: WorkerId,
    peer: SocketAddr,
    /// The token it registered with (for the audit log).
    who: crate::access::Identity,
    shared: Shared,
    writer: FrameWriter,
    /// `Ack`s held (`HoldAck`), and the timer that writes them.
    acks: Vec<AttemptRef>,
    acks_due: Option<SpawnHandle>,
    /// Set once it registers, cleared when it leaves without the scheduler
    /// needing to hear of it.
    name: Option<String>,
    last_seen: Instant,
    /// It went silent past its lease (rather than closing its connection).
    lease_expired: bool,
    /// One of the manager's connection slots, held while the connection lives.
    _slot: crate::listener::Slot,
}

impl WorkerConn {
    /// Starts the actor of an authenticated worker connection.
    pub fn start(
        id: WorkerId,
        peer: SocketAddr,
        who: crate::access::Identity,
        frames: impl Stream<Item = Result<WorkerToManager, CodecError>> + 'static,
        writer: (FrameWriter, oneshot::Receiver<String>),
        shared: Shared,
        slot: crate::listener::Slot,
    ) -> Addr<WorkerConn> {
        WorkerConn::create(move |ctx| {
            ctx.add_stream(frames);
            stop_when_failed::<WorkerConn>(writer.1, peer, ctx);
            WorkerConn {
                id,
                peer,
                who,
                shared,
                writer: writer.0,
                acks: Vec::new(),
                acks_due: None,
                name: None,
                last_seen: Instant::now(),
                lease_expired: false,
                _slot: slot,
            }
        })
    }

    fn refuse(&mut self, ctx: &mut Context<Self>, reason: String) {
        tracing::warn!(peer = %self.peer, "refusing worker: {reason}");
        self.close_with(ctx, ManagerToWorker::Refused { reason });
    }

    /// Writes a last message, then closes; the scheduler is not told (the
    /// worker never registered, or its registration was not taken).
    fn close_with(&mut self, ctx: &mut Context<Self>, last: ManagerToWorker) {
        self.name = None;
        self.write_acks(ctx);
        self.write(ctx, last);
        ctx.stop();
    }

    /// Writes an order; closes a worker that reads too little to take it,
    /// or when the order cannot be sent at all.
    fn write(&mut self, ctx: &mut Context<Self>, msg: ManagerToWorker) {
        match self.writer.write(&msg) {
            Ok(()) => {}
            Err(e @ WriteError::Backlog { .. }) => {
                tracing::warn!(peer = %self.peer, worker = self.name.as_deref().unwrap_or("?"),
                    "closing a worker that does not read what it is sent: {e}");
                self.writer.abort();
                ctx.stop();
            }
            // A dropped order (an assignment) would leave its job running
            // forever: closing makes the worker come back and resync.
            Err(e) => {
                tracing::error!(peer = %self.peer, "cannot send to a worker, closing its connection: {e}");
                ctx.stop();
            }
        }
    }

    /// Keeps an `Ack` for the next message to this worker, or `ACK_DELAY`.
    fn hold_ack(&mut self, ctx: &mut Context<Self>, attempt: AttemptRef) {
        self.acks.push(attempt);
        if self.acks_due.is_none() {
            self.acks_due = Some(ctx.run_later(ACK_DELAY, |act, ctx| {
                act.acks_due = None;
                act.write_acks(ctx);
            }));
        }
    }

    /// Writes the `Ack`s held so far (ahead of the message that follows).
    fn write_acks(&mut self, ctx: &mut Context<Self>) {
        if let Some(due) = self.acks_due.take() {
            ctx.cancel_future(due);
        }
        for attempt in std::mem::take(&mut self.acks) {
            self.write(ctx, ManagerToWorker::Ack(attempt));
        }
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

    fn register(&mut self, ctx: &mut Context<Self>, register: WorkerToManager) {
        let WorkerToManager::Register {
            name,
            instance,
            slots,
            prefetch,
            labels,
            assigned,
        } = register
        else {
            return;
        };
        if let Err(reason) = check_register(&name, slots, prefetch, &labels, &assigned) {
            return self.refuse(ctx, reason);
        }
        // A provider's join token is its worker's alone: it registers
        // under the name it was made for, or not at all.
        if let Some(joined) = self.who.name.strip_prefix(crate::providers::join::PREFIX) {
            if joined != name {
                let reason = format!("this join token is for worker {joined}, not {name}");
                return self.refuse(ctx, reason);
            }
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
            who: self.who.clone(),
        };
        self.forward(ctx, connected);
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
            (register @ WorkerToManager::Register { .. }, false) => self.register(ctx, register),
            (WorkerToManager::Register { .. }, true) => {
                self.refuse(ctx, "registered twice on one connection".into())
            }
            (_, false) => self.refuse(ctx, "a worker must register first".into()),
            (mut report, true) => {
                // Anything still queued reaches the worker as a sign of life:
                // a Pong behind it would only pile up on a worker that does
                // not read.
                if matches!(report, WorkerToManager::Heartbeat) && self.writer.backlog() == 0 {
                    self.write_acks(ctx);
                    self.write(ctx, ManagerToWorker::Pong);
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
        match msg.0 {
            last @ (ManagerToWorker::Refused { .. } | ManagerToWorker::RetryLater { .. }) => {
                self.close_with(ctx, last)
            }
            order => {
                self.write_acks(ctx);
                self.write(ctx, order)
            }
        }
    }
}

impl Handler<HoldAck> for WorkerConn {
    type Result = ();

    fn handle(&mut self, msg: HoldAck, ctx: &mut Context<Self>) {
        self.hold_ack(ctx, msg.0);
    }
}

impl Handler<Disconnect> for WorkerConn {
    type Result = ();

    fn handle(&mut self, _msg: Disconnect, ctx: &mut Context<Self>) {
        // What is queued still goes out; then the writer closes the socket.
        self.write_acks(ctx);
        ctx.stop();
    }
}

impl Handler<Replaced> for WorkerConn {
    type Result = ();

    fn handle(&mut self, _: Replaced, ctx: &mut Context<Self>) {
        self.name = None;
        self.writer.abort();
        ctx.stop();
    }
}
