//! Accepts TCP connections, runs TLS and then the handshake (version, role,
//! token) before anything else, and hands authenticated connections to a
//! per-connection actor. A bad peer costs only its own connection.
//!
//! The TLS handshake runs inside the same admission and the same
//! `HANDSHAKE_TIMEOUT` as the aam handshake: a peer that connects and
//! never sends a ClientHello is just another connection waiting for its
//! handshake, pushed out by newer ones past `MAX_HANDSHAKES`.
//!
//! Connections are admitted within limits, so peers that never authenticate
//! cannot use up the manager's file descriptors: at most `max_connections`
//! at once (one more is closed at once), and at most `MAX_HANDSHAKES`
//! waiting for their handshake (a new one pushes out the oldest, which is
//! the likeliest to be idle; a real peer handshakes at once).

use crate::access::{self, Action, Grant, Identity};
use crate::client_conn::ClientConn;
use crate::frame_writer::FrameWriter;
use crate::scheduler::{Audit, Scheduler};
use crate::state::WorkerId;
use crate::worker_conn::WorkerConn;
use aam_protocol::audit::{AuditOutcome, AuditRecord};
use aam_protocol::codec::FrameCodec;
use aam_protocol::messages::{
    ClientRequest, ClientResponse, Handshake, HandshakeReply, ManagerToWorker, Role,
    WorkerToManager, MAGIC,
};
use aam_protocol::tls::{after_handshake, AfterHandshake, ServerStream};
use aam_protocol::PROTOCOL_VERSION;
use actix::prelude::*;
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, FramedRead};

/// A peer must finish its handshakes (TLS, then aam's) within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest handshake frame: nobody unauthenticated makes us buffer more.
pub const HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

/// Most connections waiting for their handshake at once.
pub const MAX_HANDSHAKES: usize = 256;

/// How long a refused peer's bytes are still read, and dropped, after the
/// refusal (`linger`).
const LINGER_FOR: Duration = Duration::from_secs(1);

/// File descriptors kept for the store, logs and the listener itself, out
/// of the process's limit, when sizing `max_connections`.
const RESERVED_FDS: u64 = 64;

/// What every connection actor needs to know.
#[derive(Clone)]
pub struct Shared {
    pub scheduler: Addr<Scheduler>,
    /// Every accepted token, with its name, role(s) and quotas; replaced
    /// whole on SIGHUP.
    pub tokens: crate::tokens::LiveTokens,
    /// The tokens of workers launched by providers (role `worker` only).
    pub joins: crate::providers::join::JoinTokens,
    pub max_frame: usize,
    /// Bytes that may wait to be written to one peer; past it the peer is closed.
    pub max_backlog: usize,
    /// Connections open at once, authenticated or not.
    pub max_connections: usize,
    /// Authenticated connections open at once per IP address.
    pub peer_slots: crate::peer_limit::PeerSlots,
    pub lease_ms: u64,
    /// Most jobs a connection may hold in `SubmitPart`s for its `Submit`.
    pub max_jobs_per_session: usize,
    pub next_worker_id: Arc<AtomicU64>,
    /// What `GET /metrics` shows.
    pub metrics: crate::metrics::Metrics,
}

/// Raises this process's soft limit of open files to its hard limit, and
/// returns the limit now in force (None if it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// `wanted` connections, or fewer if the process may not open that many files.
pub fn connections_within(wanted: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(fds) if (wanted as u64).saturating_add(RESERVED_FDS) > fds => {
            let fit = fds.saturating_sub(RESERVED_FDS).max(1) as usize;
            tracing::warn!(
                "max_connections lowered from {wanted} to {fit}: this process may open {fds} files"
            );
            fit
        }
        _ => wanted,
    }
}

/// A warning for something that may happen in bursts: logged at most every
/// 10 s, with how many times it happened since.
struct Throttled {
    what: &'static str,
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttled {
    fn new(what: &'static str) -> Throttled {
        Throttled {
            what,
            last: None,
            unlogged: 0,
        }
    }

    fn happened(&mut self, peer: SocketAddr) {
        self.unlogged += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(%peer, times = self.unlogged, "{}", self.what);
            self.last = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

/// The connections admitted so far: their slots, and the handshakes still
/// waiting (oldest first).
struct Admission {
    slots: Arc<Semaphore>,
    handshakes: VecDeque<JoinHandle<()>>,
    over_limit: Throttled,
    pushed_out: Throttled,
}

impl Admission {
    fn new(max_connections: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            handshakes: VecDeque::new(),
            over_limit: Throttled::new("connection limit reached: closing new connections"),
            pushed_out: Throttled::new(
                "too many connections waiting for their handshake: closing the oldest",
            ),
        }
    }

    /// A slot for a new connection, or None (it is to be closed).
    fn admit(&mut self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.over_limit.happened(peer);
        }
        slot
    }

    /// Runs a handshake, making room for it by closing the oldest one
    /// waiting if `MAX_HANDSHAKES` are.
    fn handshake(&mut self, peer: SocketAddr, run: impl Future<Output = ()> + 'static) {
        if self.handshakes.len() >= MAX_HANDSHAKES {
            self.handshakes.retain(|h| !h.is_finished());
        }
        if self.handshakes.len() >= MAX_HANDSHAKES {
            if let Some(oldest) = self.handshakes.pop_front() {
                oldest.abort();
                self.pushed_out.happened(peer);
            }
        }
        self.handshakes.push_back(actix::spawn(run));
    }
}

/// Accepts connections until `shutdown` resolves.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Shared,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut admission = Admission::new(shared.max_connections);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Without a slot, the stream is dropped: closed at once.
                    if let Some(slot) = admission.admit(peer) {
                        let run = handshake(stream, peer, shared.clone(), tls.clone(), slot);
                        admission.handshake(peer, run);
                    }
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

/// Checks a handshake: its magic, version, token, and that the token's
/// role allows what the peer comes as (a worker needs `worker`; a client's
/// requests are checked one by one). Returns who it is; a refusal of a
/// known peer is recorded in the audit log and counted.
fn check(handshake: &Handshake, shared: &Shared, peer: SocketAddr) -> Result<Identity, String> {
    if handshake.magic != MAGIC {
        return Err("not an aam handshake".into());
    }
    if handshake.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported (this manager speaks version {PROTOCOL_VERSION})",
            handshake.version
        ));
    }
    let tokens = shared.tokens.current();
    let joined = || {
        let worker = shared.joins.find(&handshake.token)?;
        Some(Identity {
            name: format!("{}{worker}", crate::providers::join::PREFIX),
            grant: Grant::new([crate::access::Role::Worker]),
            quotas: Default::default(),
            peer: peer.to_string(),
        })
    };
    let who = match tokens.find(&handshake.token) {
        Some(entry) => Some(Identity::of(entry, peer)),
        None => joined(),
    };
    let Some(who) = who else {
        let unknown = Identity {
            name: "?".into(),
            grant: Grant::new([]),
            quotas: Default::default(),
            peer: peer.to_string(),
        };
        refused(shared, &unknown, "connect", "token", "invalid token".into());
        return Err("invalid token".into());
    };
    if handshake.role == Role::Worker && !who.grant.allows(Action::Register) {
        let message = access::denied(&who.name, &who.grant);
        refused(shared, &who, "register", "role", message.clone());
        return Err(message);
    }
    Ok(who)
}

/// One of the peer address's slots; a peer that holds
/// `max_connections_per_peer` already is refused (counted and audited).
fn within_peer_limit(
    shared: &Shared,
    who: &Identity,
    peer: SocketAddr,
) -> Result<OwnedSemaphorePermit, String> {
    shared.peer_slots.take(peer.ip()).ok_or_else(|| {
        let message = shared.peer_slots.refusal(peer.ip());
        refused(
            shared,
            who,
            "connect",
            "connections_per_peer",
            message.clone(),
        );
        message
    })
}

/// A refused connection: counted under `reason`, recorded in the audit log.
pub(crate) fn refused(
    shared: &Shared,
    who: &Identity,
    action: &str,
    reason: &str,
    message: String,
) {
    shared.metrics.observer().refused(reason);
    let record = AuditRecord {
        at_ms: aam_protocol::now_ms(),
        token: who.name.clone(),
        role: who.grant.to_string(),
        peer: who.peer.clone(),
        action: action.to_string(),
        target: String::new(),
        outcome: AuditOutcome::Denied,
        detail: message,
    };
    shared.scheduler.do_send(Audit(record));
}

/// The frames of an authenticated connection, starting with the bytes that
/// arrived right behind the handshake.
type Frames<In, Out> = FramedRead<AfterHandshake<ReadHalf<ServerStream>>, FrameCodec<In, Out>>;

fn reader<In, Out>(
    read: ReadHalf<ServerStream>,
    leftover: bytes::BytesMut,
    max_frame: usize,
) -> Frames<In, Out> {
    FramedRead::new(after_handshake(leftover, read), FrameCodec::new(max_frame))
}

/// TLS, within `deadline`; None (the connection dropped) if it failed.
async fn tls_accept(
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    deadline: tokio::time::Instant,
) -> Option<ServerStream> {
    match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        // A port probe (`aam up`, health checks): connected, closed, nothing said.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(%peer, "connection closed before its TLS handshake");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, "rejected connection: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, "rejected connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
            None
        }
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    tls: TlsAcceptor,
    slot: OwnedSemaphorePermit,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "set_nodelay: {e}");
    }
    // One budget for both handshakes: TLS cannot stretch a peer's stay.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let Some(stream) = tls_accept(stream, peer, tls, deadline).await else {
        return;
    };
    let mut framed = Framed::new(
        stream,
        FrameCodec::<Handshake, HandshakeReply>::new(HANDSHAKE_MAX_FRAME),
    );
    let first = tokio::time::timeout_at(deadline, framed.next()).await;
    let verdict = match first {
        Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
        Ok(None) => {
            tracing::debug!(%peer, "connection closed before its handshake");
            return;
        }
        Ok(Some(Err(e))) => Err(format!("bad handshake frame: {e}")),
        Ok(Some(Ok(h))) => check(&h, &shared, peer).and_then(|who| {
            let of_peer = within_peer_limit(&shared, &who, peer)?;
            Ok((h.role, who, of_peer))
        }),
    };
    let (role, who, of_peer) = match verdict {
        Ok(accepted) => accepted,
        Err(reason) => {
            tracing::warn!(%peer, "rejected connection: {reason}");
            let reply = HandshakeReply::Rejected { reason };
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_secs(1), framed.send(reply)).await
            {
                linger(framed.into_inner(), shared.max_frame).await;
            }
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
    let slot = Slot {
        _all: slot,
        _of_peer: of_peer,
    };
    start_connection(role, who, parts.io, parts.read_buf, peer, shared, slot);
}

/// After a refusal: says the connection is over (TLS close, then TCP
/// FIN), then reads and drops what the peer still sends, up to `most`
/// bytes or `LINGER_FOR`. A client sends its first request right behind
/// its handshake (`dial::connect_pipelined`), and a socket closed with
/// unread bytes answers with a reset: the client's send fails (Linux still
/// lets it read the refusal after that, `Client::send`), and a system that
/// drops received bytes on a reset would lose the refusal's reason.
async fn linger(mut stream: ServerStream, most: usize) {
    let deadline = tokio::time::Instant::now() + LINGER_FOR;
    if !matches!(
        tokio::time::timeout_at(deadline, stream.shutdown()).await,
        Ok(Ok(()))
    ) {
        return;
    }
    // What follows is the peer's TLS records: dropped unread, so raw.
    let (mut tcp, _) = stream.into_inner();
    let mut buf = vec![0u8; 16 * 1024];
    let mut dropped = 0;
    while dropped < most {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => break,
        }
    }
}

/// What an authenticated connection holds while it lives: one of the
/// manager's `max_connections` and one of its address's slots.
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _of_peer: OwnedSemaphorePermit,
}

/// Starts the connection actor of an authenticated peer; `leftover` is
/// what was read past the handshake.
fn start_connection(
    role: Role,
    who: Identity,
    stream: ServerStream,
    leftover: bytes::BytesMut,
    peer: SocketAddr,
    shared: Shared,
    slot: Slot,
) {
    let (read, write) = tokio::io::split(stream);
    let writer = FrameWriter::start(write, shared.max_frame, shared.max_backlog);
    match role {
        Role::Worker => {
            let id: WorkerId = shared.next_worker_id.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, id, "worker connection authenticated");
            let frames =
                reader::<WorkerToManager, ManagerToWorker>(read, leftover, shared.max_frame);
            WorkerConn::start(id, peer, who, frames, writer, shared, slot);
        }
        Role::Client => {
            tracing::debug!(%peer, "client connection authenticated");
            let frames = reader::<ClientRequest, ClientResponse>(read, leftover, shared.max_frame);
            ClientConn::start(peer, who, frames, writer, shared, slot);
        }
    }
}
