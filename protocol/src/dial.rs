//! Dialing the manager: TCP with TCP_NODELAY, then the handshake (workers and clients share it).

use crate::codec::FrameCodec;
use crate::messages::{Handshake, HandshakeReply, Role};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Worth retrying: the manager may come up.
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// Not worth retrying as is (bad token, other protocol version).
    #[error("manager at {addr} refused the connection: {reason}")]
    Rejected { addr: String, reason: String },
}

/// Connects and authenticates; returns the stream and any bytes read past the handshake.
pub async fn connect(
    addr: &str,
    role: Role,
    token: &str,
    max_frame: usize,
) -> Result<(TcpStream, bytes::BytesMut), ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| unreachable(e.to_string()))?;
    let mut framed = Framed::new(
        stream,
        FrameCodec::<HandshakeReply, Handshake>::new(max_frame),
    );
    framed
        .send(Handshake::new(role, token))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let reply = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .map_err(|_| unreachable("no handshake reply within 10 s".into()))?;
    match reply {
        Some(Ok(HandshakeReply::Accepted { .. })) => {
            let parts = framed.into_parts();
            Ok((parts.io, parts.read_buf))
        }
        Some(Ok(HandshakeReply::Rejected { reason })) => Err(ConnectError::Rejected {
            addr: addr.to_string(),
            reason,
        }),
        Some(Err(e)) => Err(unreachable(format!("bad handshake reply: {e}"))),
        None => Err(unreachable("connection closed during the handshake".into())),
    }
}
