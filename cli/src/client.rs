//! A connection to the manager as a client: one request, one answer (or a
//! stream of progress for `Watch`).

use crate::exit::{bad_input, unreachable};
use aam_protocol::codec::{FrameCodec, DEFAULT_MAX_FRAME, MAX_FRAME_CEILING};
use aam_protocol::dial::{connect, ConnectError};
use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind, Role};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub struct Client {
    addr: String,
    framed: Framed<TcpStream, FrameCodec<ClientResponse, ClientRequest>>,
}

impl Client {
    pub async fn connect(addr: &str, token: &str) -> anyhow::Result<Client> {
        let (stream, leftover) = connect(addr, Role::Client, token, DEFAULT_MAX_FRAME)
            .await
            .map_err(|e| match e {
                ConnectError::Rejected { addr, reason } => {
                    unreachable(format!("manager at {addr} refused us: {reason}"))
                }
                other => unreachable(other.to_string()),
            })?;
        // Answers may be as large as the manager's configured frame limit.
        let mut framed = Framed::new(stream, FrameCodec::new(MAX_FRAME_CEILING));
        framed.read_buffer_mut().extend_from_slice(&leftover);
        Ok(Client {
            addr: addr.to_string(),
            framed,
        })
    }

    pub async fn send(&mut self, request: ClientRequest) -> anyhow::Result<()> {
        self.framed
            .send(request)
            .await
            .map_err(|e| unreachable(format!("sending to the manager at {}: {e}", self.addr)))
    }

    /// The next answer; errors the manager reports become exit codes.
    pub async fn next(&mut self) -> anyhow::Result<ClientResponse> {
        match self.framed.next().await {
            Some(Ok(ClientResponse::Error { kind, message })) => Err(match kind {
                ErrorKind::BadRequest | ErrorKind::NotFound => bad_input(message),
                ErrorKind::Internal => anyhow::anyhow!("manager error: {message}"),
            }),
            Some(Ok(response)) => Ok(response),
            Some(Err(e)) => Err(unreachable(format!(
                "reading from the manager at {}: {e}",
                self.addr
            ))),
            None => Err(unreachable(format!(
                "the manager at {} closed the connection",
                self.addr
            ))),
        }
    }

    pub async fn call(&mut self, request: ClientRequest) -> anyhow::Result<ClientResponse> {
        self.send(request).await?;
        self.next().await
    }
}

/// The answer had an unexpected shape: a protocol bug, not a user error.
pub fn unexpected(response: ClientResponse) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the manager: {response:?}")
}
