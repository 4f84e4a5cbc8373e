//! Dialing the manager: TCP with TCP_NODELAY, then TLS (verifying the
//! manager), then the handshake (workers and clients share it).

use crate::codec::FrameCodec;
use crate::messages::{Handshake, HandshakeReply, Role};
use crate::tls::{is_tls_refusal, mismatch_of, ClientStream, ClientTls};
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
    /// TLS failed: the manager's certificate is not the one trusted, or it
    /// refused ours. Not worth retrying either; `reason` is one line.
    #[error("{reason}")]
    Untrusted { addr: String, reason: String },
}

/// What a failed TLS exchange with the manager at `addr` means.
fn tls_failure(addr: &str, e: std::io::Error) -> ConnectError {
    let untrusted = |reason: String| ConnectError::Untrusted {
        addr: addr.to_string(),
        reason,
    };
    if let Some(mismatch) = mismatch_of(&e) {
        return untrusted(format!("the manager at {addr} {mismatch}"));
    }
    if is_tls_refusal(&e) {
        return untrusted(format!(
            "TLS with the manager at {addr} failed: {e} (does it require a client certificate? pass --cert and --key, or AAM_CERT and AAM_KEY)"
        ));
    }
    ConnectError::Unreachable {
        addr: addr.to_string(),
        reason: format!("TLS: {e}"),
    }
}

/// Connects and authenticates; returns the stream and any bytes read past the handshake.
pub async fn connect(
    addr: &str,
    role: Role,
    token: &str,
    max_frame: usize,
    tls: &ClientTls,
) -> Result<(ClientStream, bytes::BytesMut), ConnectError> {
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
    let stream = tokio::time::timeout(Duration::from_secs(10), tls.handshake(addr, stream))
        .await
        .map_err(|_| unreachable("no TLS handshake within 10 s".into()))?
        .map_err(|e| tls_failure(addr, e))?;
    let mut framed = Framed::new(
        stream,
        FrameCodec::<HandshakeReply, Handshake>::new(max_frame),
    );
    framed
        .send(Handshake::new(role, token))
        .await
        .map_err(|e| codec_failure(addr, e))?;
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
        Some(Err(e)) => Err(codec_failure(addr, e)),
        None => Err(unreachable("connection closed during the handshake".into())),
    }
}

/// A failed send or read of the handshake: a TLS alert (the manager
/// refused our certificate) is not worth retrying, other failures are.
fn codec_failure(addr: &str, e: crate::codec::CodecError) -> ConnectError {
    match e {
        crate::codec::CodecError::Io(io) => tls_failure(addr, io),
        other => ConnectError::Unreachable {
            addr: addr.to_string(),
            reason: format!("bad handshake reply: {other}"),
        },
    }
}
