//! One actor per client connection: each request goes to the scheduler and
//! its answer back to the client; a `Watch` turns into a stream of progress.
//!
//! A batch too big for one frame comes as `SubmitPart`s of its jobs, held
//! here until its `Submit` takes them (nothing reaches the scheduler, or
//! the store, before the whole batch has).
//!
//! Requests are read one at a time: the next is read only once the answer
//! to this one is written out (within `PIPELINE_ALLOWANCE`), so answers keep
//! request order, and a client that sends requests without reading the
//! answers holds up only itself. Watch updates go through the same bounded
//! writer; a client too far behind on them is closed. They are written at
//! most every `PROGRESS_EVERY` per session, the latest one (the answer to
//! a `Watch` and a session's end at once): a busy session's watcher gets a
//! few frames a second, not one per job that ends.

use crate::access::{self, Action};
use crate::frame_writer::{stop_when_failed, FrameWriter, WriteError};
use crate::listener::Shared;
use crate::peer_input::check_request;
use crate::scheduler::ClientCall;
use aam_protocol::codec::CodecError;
use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind};
use aam_protocol::model::SessionSummary;
use aam_protocol::spec::JobSpec;
use aam_protocol::SessionId;
use actix::prelude::*;
use futures::StreamExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

/// Answer bytes that may still wait to be written when the next request is
/// read: small answers are pipelined, large ones are not piled up.
const PIPELINE_ALLOWANCE: usize = 1024 * 1024;

/// How often, at most, a watched session's progress is written to one
/// client (its end and the answer to a `Watch` are written at once).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(50);

/// A watched session changed, or (`first`) how it stands, the answer to a
/// `Watch`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionUpdate {
    pub summary: SessionSummary,
    pub first: bool,
}

/// The progress of one watched session on this connection: when it was
/// last written, and the latest not written yet.
struct Progress {
    written: Instant,
    held: Option<SessionSummary>,
}

pub struct ClientConn {
    peer: SocketAddr,
    /// Who this client is: its token as it was when it authenticated
    /// (name, role, quotas; a SIGHUP does not change an open connection).
    who: crate::access::Identity,
    shared: Shared,
    writer: FrameWriter,
    /// One permit: the next request may be read.
    next_request: Rc<Semaphore>,
    /// Jobs of `SubmitPart`s waiting for their `Submit`, part by part: they
    /// go to the scheduler as they are, and are validated where they lie
    /// (a million specs are 736 MB; put into one array, they were copied).
    staged: Vec<Vec<JobSpec>>,
    /// How many jobs `staged` holds.
    staged_jobs: usize,
    /// Watched sessions' progress, by session (gone once a session ends).
    progress: HashMap<SessionId, Progress>,
    /// One of the manager's connection slots, held while the connection lives.
    _slot: crate::listener::Slot,
}

/// The requests of `frames`, each read only once `next_request` has a permit.
fn one_at_a_time<S>(frames: S, next_request: Rc<Semaphore>) -> impl Stream<Item = S::Item>
where
    S: Stream + Unpin + 'static,
{
    futures::stream::unfold((frames, next_request), |(mut frames, gate)| async move {
        gate.acquire().await.ok()?.forget();
        let item = frames.next().await?;
        Some((item, (frames, gate)))
    })
}

impl ClientConn {
    /// Starts the actor of an authenticated client connection.
    pub fn start(
        peer: SocketAddr,
        who: crate::access::Identity,
        frames: impl Stream<Item = Result<ClientRequest, CodecError>> + Unpin + 'static,
        writer: (FrameWriter, oneshot::Receiver<String>),
        shared: Shared,
        slot: crate::listener::Slot,
    ) -> Addr<ClientConn> {
        ClientConn::create(move |ctx| {
            let next_request = Rc::new(Semaphore::new(1));
            ctx.add_stream(one_at_a_time(frames, next_request.clone()));
            stop_when_failed::<ClientConn>(writer.1, peer, ctx);
            ClientConn {
                peer,
                who,
                shared,
                writer: writer.0,
                next_request,
                staged: Vec::new(),
                staged_jobs: 0,
                progress: HashMap::new(),
                _slot: slot,
            }
        })
    }

    /// Writes a response, replacing one too large for a frame by an error
    /// that says so (rather than a silently dropped connection).
    fn respond(&mut self, ctx: &mut Context<Self>, response: ClientResponse) {
        let refused = match self.writer.write(&response) {
            Err(WriteError::Codec(CodecError::FrameTooLarge { size, limit })) => {
                ClientResponse::Error {
                    kind: ErrorKind::BadRequest,
                    message: format!(
                        "the answer ({size} bytes) exceeds the frame limit of {limit} bytes; ask for less output"
                    ),
                }
            }
            other => return self.written(ctx, other),
        };
        let written = self.writer.write(&refused);
        self.written(ctx, written);
    }

    /// Closes a client that reads too little to take what it is sent, or
    /// that cannot be answered at all.
    fn written(&mut self, ctx: &mut Context<Self>, result: Result<(), WriteError>) {
        match result {
            Ok(()) => {}
            Err(e @ WriteError::Backlog { .. }) => {
                tracing::warn!(peer = %self.peer, "closing a client that does not read its answers: {e}");
                self.writer.abort();
                ctx.stop();
            }
            // Rather than leave the client waiting for an answer.
            Err(e) => {
                tracing::error!(peer = %self.peer, "cannot answer a client, closing its connection: {e}");
                ctx.stop();
            }
        }
    }

    /// Holds the jobs of a `SubmitPart` for the next `Submit`, if this
    /// token may submit and the session stays within its job limit (past
    /// it, what was held is dropped: the batch cannot be taken).
    fn stage(&mut self, jobs: Vec<JobSpec>) -> ClientResponse {
        if !self.who.grant.allows(Action::Submit) {
            self.drop_staged();
            return ClientResponse::Error {
                kind: ErrorKind::PermissionDenied,
                message: access::denied(&self.who.name, &self.who.grant),
            };
        }
        let limit = self.shared.max_jobs_per_session;
        let held = self.staged_jobs + jobs.len();
        if held > limit {
            self.drop_staged();
            return ClientResponse::Error {
                kind: ErrorKind::BadRequest,
                message: format!(
                    "the batch has more than {limit} jobs, the most one session may have (max_jobs_per_session)"
                ),
            };
        }
        self.staged.push(jobs);
        self.staged_jobs = held;
        ClientResponse::PartReceived {
            jobs: u32::try_from(held).unwrap_or(u32::MAX),
        }
    }

    fn drop_staged(&mut self) {
        self.staged = Vec::new();
        self.staged_jobs = 0;
    }

    /// The staged parts, for the `Submit` that follows them.
    fn take_staged(&mut self) -> Vec<Vec<JobSpec>> {
        self.staged_jobs = 0;
        std::mem::take(&mut self.staged)
    }

    /// Lets the next request be read once this answer is (mostly) written.
    fn read_next_when_written(&mut self, ctx: &mut Context<Self>) {
        let written = self.writer.drained(PIPELINE_ALLOWANCE);
        let next_request = self.next_request.clone();
        ctx.spawn(actix::fut::wrap_future(async move {
            written.await;
            next_request.add_permits(1);
        }));
    }
}

/// Whether a read failed because the client closed or dropped its end.
fn client_went_away(e: &CodecError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        CodecError::Truncated => true,
        CodecError::Io(io) => matches!(
            io.kind(),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
        ),
        _ => false,
    }
}

impl Actor for ClientConn {
    type Context = Context<Self>;
}

impl StreamHandler<Result<ClientRequest, CodecError>> for ClientConn {
    fn handle(&mut self, item: Result<ClientRequest, CodecError>, ctx: &mut Context<Self>) {
        let request = match item {
            Ok(r) => r,
            Err(e) if client_went_away(&e) => {
                // A CLI stopped midway (Ctrl-C, a batch refused as it was
                // read): nothing for the operator to act on, nobody to answer.
                tracing::info!(peer = %self.peer, "client connection closed by the client: {e}");
                ctx.stop();
                return;
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, "closing client connection: {e}");
                let error = ClientResponse::Error {
                    kind: ErrorKind::BadRequest,
                    message: e.to_string(),
                };
                let _ = self.writer.write(&error);
                ctx.stop();
                return;
            }
        };
        if let Err(message) = check_request(&request) {
            let kind = ErrorKind::BadRequest;
            self.respond(ctx, ClientResponse::Error { kind, message });
            return self.read_next_when_written(ctx);
        }
        let request = match request {
            ClientRequest::SubmitPart { jobs } => {
                let answer = self.stage(jobs);
                self.respond(ctx, answer);
                return self.read_next_when_written(ctx);
            }
            other => other,
        };
        let earlier_parts = match request {
            ClientRequest::Submit { .. } => self.take_staged(),
            _ => Vec::new(),
        };
        let watcher =
            matches!(request, ClientRequest::Watch { .. }).then(|| ctx.address().recipient());
        let (reply, answer) = oneshot::channel();
        self.shared.scheduler.do_send(ClientCall {
            request,
            reply,
            watcher,
            who: self.who.clone(),
            earlier_parts,
        });
        ctx.spawn(answer.into_actor(self).map(|answer, act, ctx| {
            if let Ok(Some(response)) = answer {
                act.respond(ctx, response);
            }
            act.read_next_when_written(ctx);
        }));
    }
}

impl Handler<SessionUpdate> for ClientConn {
    type Result = ();

    fn handle(&mut self, msg: SessionUpdate, ctx: &mut Context<Self>) {
        let SessionUpdate { summary, first } = msg;
        let id = summary.id;
        let now = Instant::now();
        if summary.status.is_terminal() {
            // Whatever was held is older; nothing follows the end.
            self.progress.remove(&id);
            return self.write_progress(ctx, summary);
        }
        let progress = self.progress.entry(id).or_insert(Progress {
            written: now,
            held: None,
        });
        let due = progress.written + PROGRESS_EVERY;
        if first || now >= due {
            progress.written = now;
            progress.held = None;
            return self.write_progress(ctx, summary);
        }
        // One flush per interval, of the latest update by then.
        if progress.held.replace(summary).is_none() {
            ctx.run_later(due - now, move |act, ctx| act.flush_progress(ctx, id));
        }
    }
}

impl ClientConn {
    fn write_progress(&mut self, ctx: &mut Context<Self>, summary: SessionSummary) {
        let written = self.writer.write(&ClientResponse::Progress(summary));
        self.written(ctx, written);
    }

    /// Writes the progress held for `id`, unless the session ended since.
    /// A flush of an earlier interval whose update was written by then
    /// may find a newer one held: that one waits for its interval.
    fn flush_progress(&mut self, ctx: &mut Context<Self>, id: SessionId) {
        let Some(progress) = self.progress.get_mut(&id) else {
            return;
        };
        let (now, due) = (Instant::now(), progress.written + PROGRESS_EVERY);
        if now < due {
            if progress.held.is_some() {
                ctx.run_later(due - now, move |act, ctx| act.flush_progress(ctx, id));
            }
            return;
        }
        if let Some(summary) = progress.held.take() {
            progress.written = now;
            self.write_progress(ctx, summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_hung_up_is_told_apart_from_one_that_sent_garbage() {
        let io = |kind| CodecError::Io(std::io::Error::from(kind));
        assert!(client_went_away(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(client_went_away(&CodecError::Truncated));
        assert!(!client_went_away(&CodecError::Decode("bad tag".into())));
        assert!(!client_went_away(&CodecError::FrameTooLarge {
            size: 2,
            limit: 1
        }));
        assert!(!client_went_away(&io(std::io::ErrorKind::InvalidData)));
    }
}
