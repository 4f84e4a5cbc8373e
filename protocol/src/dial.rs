//! Dialing the manager: TCP with TCP_NODELAY, then TLS (verifying the
//! manager), then the handshake (workers and clients share it). A peer
//! either waits for the handshake's reply (`connect`) or sends its first
//! request right behind the handshake and reads the reply before the first
//! answer (`connect_pipelined`, then `read_reply`): one round trip less,
//! which is what a CLI command, one request on a new connection, is made of.

use crate::codec::{encode_frame, CodecError, FrameCodec, DEFAULT_MAX_FRAME};
use crate::messages::{Handshake, HandshakeReply, Role};
use crate::tls::{is_tls_refusal, mismatch_of, ClientStream, ClientTls};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, Framed};

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

/// TCP, then TLS verifying the manager: a stream ready for the handshake.
async fn open(addr: &str, tls: &ClientTls) -> Result<ClientStream, ConnectError> {
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
    tokio::time::timeout(Duration::from_secs(10), tls.handshake(addr, stream))
        .await
        .map_err(|_| unreachable("no TLS handshake within 10 s".into()))?
        .map_err(|e| tls_failure(addr, e))
}

/// Connects and authenticates, waiting for the handshake's reply; returns
/// the stream and any bytes read past the handshake.
pub async fn connect(
    addr: &str,
    role: Role,
    token: &str,
    tls: &ClientTls,
) -> Result<(ClientStream, BytesMut), ConnectError> {
    let mut framed = connect_pipelined::<(), ()>(addr, role, token, DEFAULT_MAX_FRAME, tls).await?;
    read_reply(&mut framed, addr).await?;
    let parts = framed.into_parts();
    Ok((parts.io, parts.read_buf))
}

/// Connects and sends the handshake without waiting for its reply: the
/// caller's first request follows at once, and `read_reply` reads the
/// reply before the first answer.
pub async fn connect_pipelined<In, Out: Serialize>(
    addr: &str,
    role: Role,
    token: &str,
    max_frame: usize,
    tls: &ClientTls,
) -> Result<Framed<ClientStream, DialCodec<In, Out>>, ConnectError> {
    let stream = open(addr, tls).await?;
    let mut framed = Framed::new(stream, DialCodec::new(max_frame));
    let handshake = encode_frame(&Handshake::new(role, token), DEFAULT_MAX_FRAME)
        .map_err(|e| reply_failure(addr, e))?;
    framed.write_buffer_mut().extend_from_slice(&handshake);
    SinkExt::<Out>::flush(&mut framed)
        .await
        .map_err(|e| reply_failure(addr, e))?;
    Ok(framed)
}

/// Reads the handshake's reply on a connection from `connect_pipelined`
/// (within 10 s, as `connect` waits), and says what it means.
pub async fn read_reply<In: DeserializeOwned, Out>(
    framed: &mut Framed<ClientStream, DialCodec<In, Out>>,
    addr: &str,
) -> Result<(), ConnectError> {
    let unreachable = |reason: &str| ConnectError::Unreachable {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
        Err(_) => Err(unreachable("no handshake reply within 10 s")),
        Ok(Some(Ok(Incoming::Reply(reply)))) => accepted(addr, reply),
        // The codec reads the reply first: a frame is one read after it.
        Ok(Some(Ok(Incoming::Frame(_)))) => Err(unreachable("a frame before the handshake reply")),
        Ok(Some(Err(e))) => Err(reply_failure(addr, e)),
        Ok(None) => Err(closed_in_handshake(addr)),
    }
}

/// What the manager's reply to a handshake says: go on, or why not.
fn accepted(addr: &str, reply: HandshakeReply) -> Result<(), ConnectError> {
    match reply {
        HandshakeReply::Accepted { .. } => Ok(()),
        HandshakeReply::Rejected { reason } => Err(ConnectError::Rejected {
            addr: addr.to_string(),
            reason,
        }),
    }
}

/// The manager closed the connection before it replied to the handshake.
fn closed_in_handshake(addr: &str) -> ConnectError {
    ConnectError::Unreachable {
        addr: addr.to_string(),
        reason: "connection closed during the handshake".into(),
    }
}

/// What a dialed connection reads: the handshake's reply, then frames.
#[derive(Debug)]
pub enum Incoming<In> {
    Reply(HandshakeReply),
    Frame(In),
}

/// The codec of a connection that sent its handshake without waiting for
/// the reply (`connect_pipelined`): the first frame it reads is the reply
/// (`read_reply`), every later one an `In`; it writes `Out`s.
pub struct DialCodec<In, Out> {
    reply: FrameCodec<HandshakeReply, Handshake>,
    frames: FrameCodec<In, Out>,
    replied: bool,
}

impl<In, Out> DialCodec<In, Out> {
    /// Frames of up to `max_frame` bytes after the reply.
    pub fn new(max_frame: usize) -> Self {
        DialCodec {
            reply: FrameCodec::default(),
            frames: FrameCodec::new(max_frame),
            replied: false,
        }
    }

    /// Whether the handshake's reply has been read.
    pub fn replied(&self) -> bool {
        self.replied
    }
}

impl<In: DeserializeOwned, Out> Decoder for DialCodec<In, Out> {
    type Item = Incoming<In>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming<In>>, CodecError> {
        if self.replied {
            return Ok(self.frames.decode(src)?.map(Incoming::Frame));
        }
        let reply = self.reply.decode(src)?;
        self.replied = reply.is_some();
        Ok(reply.map(Incoming::Reply))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Incoming<In>>, CodecError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for DialCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.frames.encode(item, dst)
    }
}

/// A failed send of the handshake or read of its reply: a TLS alert (the
/// manager refused our certificate) is not worth retrying, other failures
/// are.
fn reply_failure(addr: &str, e: crate::codec::CodecError) -> ConnectError {
    match e {
        crate::codec::CodecError::Io(io) => tls_failure(addr, io),
        other => ConnectError::Unreachable {
            addr: addr.to_string(),
            reason: format!("bad handshake reply: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Codec = DialCodec<String, String>;

    #[test]
    fn the_reply_comes_first_then_frames_each_whole() {
        let reply = HandshakeReply::Accepted {
            manager_version: "1".into(),
        };
        let mut bytes = BytesMut::new();
        bytes.extend(encode_frame(&reply, 1024).unwrap());
        bytes.extend(encode_frame(&"answer".to_string(), 1024).unwrap());
        let mut codec = Codec::new(1024);
        // Cut anywhere, nothing comes out before its frame is whole.
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for byte in bytes {
            src.extend_from_slice(&[byte]);
            while let Some(item) = codec.decode(&mut src).unwrap() {
                got.push(item);
            }
        }
        assert!(codec.replied());
        assert!(
            matches!(&got[..], [Incoming::Reply(HandshakeReply::Accepted { .. }), Incoming::Frame(f)] if f == "answer")
        );
    }

    #[test]
    fn a_refusal_is_the_reply_and_a_cut_reply_is_truncated() {
        let refusal = HandshakeReply::Rejected {
            reason: "invalid token".into(),
        };
        let frame = encode_frame(&refusal, 1024).unwrap();
        let mut codec = Codec::new(1024);
        let mut src = BytesMut::from(&frame[..]);
        let Some(Incoming::Reply(reply)) = codec.decode(&mut src).unwrap() else {
            panic!("no reply decoded");
        };
        let refused = accepted("h:1", reply).unwrap_err();
        assert!(
            matches!(&refused, ConnectError::Rejected { reason, .. } if reason == "invalid token"),
            "{refused:?}"
        );
        let mut codec = Codec::new(1024);
        let mut cut = BytesMut::from(&frame[..frame.len() - 1]);
        assert!(matches!(
            codec.decode_eof(&mut cut),
            Err(CodecError::Truncated)
        ));
        assert!(!codec.replied());
    }
}
