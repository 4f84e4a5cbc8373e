//! Accepts TCP connections, runs the handshake (version, role, token) before
//! anything else, and hands authenticated connections to a per-connection
//! actor. A bad peer costs only its own connection.

use crate::client_conn::ClientConn;
use crate::scheduler::Scheduler;
use crate::state::WorkerId;
use crate::token;
use crate::worker_conn::WorkerConn;
use aam_protocol::codec::FrameCodec;
use aam_protocol::messages::{
    ClientRequest, ClientResponse, Handshake, HandshakeReply, ManagerToWorker, Role,
    WorkerToManager, MAGIC,
};
use aam_protocol::PROTOCOL_VERSION;
use actix::prelude::*;
use futures::{SinkExt, StreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, FramedRead};

/// A peer must finish its handshake within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest handshake frame: nobody unauthenticated makes us buffer more.
pub const HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

/// What every connection actor needs to know.
#[derive(Clone)]
pub struct Shared {
    pub scheduler: Addr<Scheduler>,
    /// Every accepted token, with its name.
    pub tokens: Arc<Vec<(String, String)>>,
    pub max_frame: usize,
    pub lease_ms: u64,
    pub next_worker_id: Arc<AtomicU64>,
}

/// Accepts connections until `shutdown` resolves.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Shared,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    actix::spawn(handshake(stream, peer, shared.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Checks a handshake; returns the name of the token it presented.
fn check(handshake: &Handshake, tokens: &[(String, String)]) -> Result<String, String> {
    if handshake.magic != MAGIC {
        return Err("not an aam handshake".into());
    }
    if handshake.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported (this manager speaks version {PROTOCOL_VERSION})",
            handshake.version
        ));
    }
    // Compare against every token, so the time taken does not tell which matched.
    let mut found = None;
    for (name, token) in tokens {
        if token::matches(token, &handshake.token) {
            found = Some(name.clone());
        }
    }
    found.ok_or_else(|| "invalid token".into())
}

/// The frame reader of an authenticated connection, starting with the bytes
/// that arrived right behind the handshake.
fn reader<In, Out>(
    read: tokio::net::tcp::OwnedReadHalf,
    leftover: &[u8],
    max_frame: usize,
) -> FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec<In, Out>> {
    let mut reader = FramedRead::new(read, FrameCodec::new(max_frame));
    reader.read_buffer_mut().extend_from_slice(leftover);
    reader
}

async fn handshake(stream: TcpStream, peer: SocketAddr, shared: Shared) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "set_nodelay: {e}");
    }
    let mut framed = Framed::new(
        stream,
        FrameCodec::<Handshake, HandshakeReply>::new(HANDSHAKE_MAX_FRAME),
    );
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await;
    let verdict = match first {
        Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
        Ok(None) => {
            tracing::debug!(%peer, "connection closed before its handshake");
            return;
        }
        Ok(Some(Err(e))) => Err(format!("bad handshake frame: {e}")),
        Ok(Some(Ok(h))) => check(&h, &shared.tokens).map(|name| (h.role, name)),
    };
    let (role, token_name) = match verdict {
        Ok(accepted) => accepted,
        Err(reason) => {
            tracing::warn!(%peer, "rejected connection: {reason}");
            let reply = HandshakeReply::Rejected { reason };
            let _ = tokio::time::timeout(Duration::from_secs(1), framed.send(reply)).await;
            return;
        }
    };
    let accepted = HandshakeReply::Accepted {
        manager_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    if let Err(e) = framed.send(accepted).await {
        tracing::debug!(%peer, "handshake reply failed: {e}");
        return;
    }
    let parts = framed.into_parts();
    start_connection(role, token_name, parts.io, parts.read_buf, peer, shared);
}

/// Starts the connection actor of an authenticated peer; `leftover` is
/// what was read past the handshake.
fn start_connection(
    role: Role,
    token_name: String,
    stream: TcpStream,
    leftover: bytes::BytesMut,
    peer: SocketAddr,
    shared: Shared,
) {
    let (read, write) = stream.into_split();
    match role {
        Role::Worker => {
            let id: WorkerId = shared.next_worker_id.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, id, "worker connection authenticated");
            WorkerConn::create(move |ctx| {
                ctx.add_stream(reader::<WorkerToManager, ManagerToWorker>(
                    read,
                    &leftover,
                    shared.max_frame,
                ));
                WorkerConn {
                    id,
                    peer,
                    writer: actix::io::FramedWrite::new(
                        write,
                        FrameCodec::new(shared.max_frame),
                        ctx,
                    ),
                    shared,
                    name: None,
                    last_seen: Instant::now(),
                    lease_expired: false,
                }
            });
        }
        Role::Client => {
            tracing::debug!(%peer, "client connection authenticated");
            ClientConn::create(move |ctx| {
                ctx.add_stream(reader::<ClientRequest, ClientResponse>(
                    read,
                    &leftover,
                    shared.max_frame,
                ));
                ClientConn {
                    peer,
                    token_name,
                    writer: actix::io::FramedWrite::new(
                        write,
                        FrameCodec::new(shared.max_frame),
                        ctx,
                    ),
                    shared,
                }
            });
        }
    }
}
