//! A connection to the manager as a client: one request, one answer (or a
//! stream of progress for `Watch`).

use crate::exit::{bad_input, unreachable, Lost};
use aam_protocol::codec::{FrameCodec, DEFAULT_MAX_FRAME, MAX_FRAME_CEILING};
use aam_protocol::dial::{connect, ConnectError};
use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind, Role};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type Connection = Framed<TcpStream, FrameCodec<ClientResponse, ClientRequest>>;

pub struct Client {
    addr: String,
    token: String,
    framed: Connection,
}

async fn dial(addr: &str, token: &str) -> Result<Connection, ConnectError> {
    let (stream, leftover) = connect(addr, Role::Client, token, DEFAULT_MAX_FRAME).await?;
    // Answers may be as large as the manager's configured frame limit.
    let mut framed = Framed::new(stream, FrameCodec::new(MAX_FRAME_CEILING));
    framed.read_buffer_mut().extend_from_slice(&leftover);
    Ok(framed)
}

fn connect_error(e: ConnectError) -> anyhow::Error {
    match e {
        ConnectError::Rejected { addr, reason } => {
            unreachable(format!("manager at {addr} refused us: {reason}"))
        }
        other => unreachable(other.to_string()),
    }
}

impl Client {
    pub async fn connect(addr: &str, token: &str) -> anyhow::Result<Client> {
        let framed = dial(addr, token).await.map_err(connect_error)?;
        Ok(Client {
            addr: addr.to_string(),
            token: token.to_string(),
            framed,
        })
    }

    /// Dials again after a lost connection (a manager restart), with
    /// backoff, until it works or `deadline` passes. A refusal (bad token)
    /// is not retried.
    pub async fn reconnect(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match dial(&self.addr, &self.token).await {
                Ok(framed) => {
                    self.framed = framed;
                    return Ok(());
                }
                Err(e @ ConnectError::Rejected { .. }) => return Err(connect_error(e)),
                Err(e) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() + backoff > d) {
                        return Err(connect_error(e));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    pub async fn send(&mut self, request: ClientRequest) -> anyhow::Result<()> {
        self.framed
            .send(request)
            .await
            .map_err(|e| Lost(format!("sending to the manager at {}: {e}", self.addr)).into())
    }

    /// The next answer; errors the manager reports become exit codes.
    pub async fn next(&mut self) -> anyhow::Result<ClientResponse> {
        match self.framed.next().await {
            Some(Ok(ClientResponse::Error { kind, message })) => Err(match kind {
                ErrorKind::BadRequest | ErrorKind::NotFound => bad_input(message),
                ErrorKind::Internal => anyhow::anyhow!("manager error: {message}"),
            }),
            Some(Ok(response)) => Ok(response),
            Some(Err(e)) => {
                Err(Lost(format!("reading from the manager at {}: {e}", self.addr)).into())
            }
            None => Err(Lost(format!(
                "the manager at {} closed the connection",
                self.addr
            ))
            .into()),
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
