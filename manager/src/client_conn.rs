//! One actor per client connection: each request goes to the scheduler and
//! its answer back to the client; a `Watch` turns into a stream of progress.

use crate::listener::Shared;
use crate::peer_input::check_request;
use crate::scheduler::ClientCall;
use aam_protocol::codec::{self, CodecError, FrameCodec};
use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind};
use aam_protocol::model::SessionSummary;
use actix::prelude::*;
use std::net::SocketAddr;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

type Writer = actix::io::FramedWrite<
    ClientResponse,
    OwnedWriteHalf,
    FrameCodec<ClientRequest, ClientResponse>,
>;

/// A watched session changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionUpdate(pub SessionSummary);

pub struct ClientConn {
    pub peer: SocketAddr,
    /// Who this client is, by its token's name (for audit records).
    pub token_name: String,
    pub shared: Shared,
    pub writer: Writer,
}

impl ClientConn {
    /// Writes a response, replacing one too large for a frame by an error
    /// that says so (rather than a silently dropped connection).
    fn respond(&mut self, response: ClientResponse) {
        let size = codec::encode(&response)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > self.shared.max_frame {
            self.writer.write(ClientResponse::Error {
                kind: ErrorKind::BadRequest,
                message: format!(
                    "the answer ({size} bytes) exceeds the frame limit of {} bytes; ask for less output",
                    self.shared.max_frame
                ),
            });
        } else {
            self.writer.write(response);
        }
    }
}

impl Actor for ClientConn {
    type Context = Context<Self>;
}

impl actix::io::WriteHandler<CodecError> for ClientConn {}

impl StreamHandler<Result<ClientRequest, CodecError>> for ClientConn {
    fn handle(&mut self, item: Result<ClientRequest, CodecError>, ctx: &mut Context<Self>) {
        let request = match item {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %self.peer, "closing client connection: {e}");
                self.writer.write(ClientResponse::Error {
                    kind: ErrorKind::BadRequest,
                    message: e.to_string(),
                });
                self.writer.close();
                ctx.stop();
                return;
            }
        };
        if let Err(message) = check_request(&request) {
            let kind = ErrorKind::BadRequest;
            return self.respond(ClientResponse::Error { kind, message });
        }
        let watcher =
            matches!(request, ClientRequest::Watch { .. }).then(|| ctx.address().recipient());
        let (reply, answer) = oneshot::channel();
        self.shared.scheduler.do_send(ClientCall {
            request,
            reply,
            watcher,
            who: self.token_name.clone(),
        });
        // Wait for this answer before reading the next request: answers keep request order.
        ctx.wait(answer.into_actor(self).map(|answer, act, _| {
            if let Ok(Some(response)) = answer {
                act.respond(response);
            }
        }));
    }
}

impl Handler<SessionUpdate> for ClientConn {
    type Result = ();

    fn handle(&mut self, msg: SessionUpdate, _ctx: &mut Context<Self>) {
        self.writer.write(ClientResponse::Progress(msg.0));
    }
}
