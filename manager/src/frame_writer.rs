//! A connection's writer, bounded: the connection actor encodes each frame,
//! a task writes them to the socket, and the bytes not yet written are
//! counted. A frame that would take that backlog past its limit is refused
//! (the actor then closes the peer, with a log line), and a peer that takes
//! no byte for `STALL` is given up on; so a peer that reads slowly, or not
//! at all, cannot grow the manager (ARCHITECTURE.md invariant 7).

use aam_protocol::codec::{encode_frame, CodecError};
use actix::prelude::*;
use bytes::{Buf, Bytes};
use serde::Serialize;
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

/// A peer that accepts no byte of a pending write for this long is given up on.
pub const STALL: Duration = Duration::from_secs(60);

/// Most frames handed to the socket in one vectored write.
const FRAMES_PER_WRITE: usize = 64;

/// Why a frame was not queued.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// It cannot be encoded, or not within a frame.
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("{backlog} bytes would wait to be written to this peer, past the limit of {limit}")]
    Backlog { backlog: usize, limit: usize },
}

/// Bytes queued and not yet written, shared by the actor and the task (one
/// thread: an actix arbiter).
#[derive(Default)]
struct Backlog {
    bytes: Cell<usize>,
    /// Told after every write.
    drained: Notify,
}

pub struct FrameWriter {
    frames: mpsc::UnboundedSender<Bytes>,
    backlog: Rc<Backlog>,
    limit: usize,
    max_frame: usize,
    task: JoinHandle<()>,
}

impl FrameWriter {
    /// Starts the writing task on the current arbiter. The receiver gets
    /// why, if the task gives up on the peer (a write error or a stall).
    pub fn start(
        write: impl AsyncWrite + Unpin + 'static,
        max_frame: usize,
        limit: usize,
    ) -> (FrameWriter, oneshot::Receiver<String>) {
        let (frames, queued) = mpsc::unbounded_channel();
        let (failed, failure) = oneshot::channel();
        let backlog = Rc::new(Backlog::default());
        let task = actix::spawn(write_frames(write, queued, backlog.clone(), failed));
        let writer = FrameWriter {
            frames,
            backlog,
            limit,
            max_frame,
            task,
        };
        (writer, failure)
    }

    /// Queues a message; refused (nothing queued) when it does not fit in
    /// a frame, or when the peer is too far behind.
    pub fn write<T: Serialize>(&self, msg: &T) -> Result<(), WriteError> {
        let frame = encode_frame(msg, self.max_frame)?;
        let backlog = self.backlog.bytes.get().saturating_add(frame.len());
        if backlog > self.limit {
            return Err(WriteError::Backlog {
                backlog,
                limit: self.limit,
            });
        }
        self.backlog.bytes.set(backlog);
        // A task that is gone has reported why; the actor stops on that.
        let _ = self.frames.send(Bytes::from(frame));
        Ok(())
    }

    /// Bytes queued and not yet written to the socket.
    pub fn backlog(&self) -> usize {
        self.backlog.bytes.get()
    }

    /// Resolves once at most `bytes` wait to be written.
    pub fn drained(&self, bytes: usize) -> impl Future<Output = ()> + 'static {
        let backlog = self.backlog.clone();
        async move {
            loop {
                // Created before the check: a write in between still wakes it.
                let written = backlog.drained.notified();
                if backlog.bytes.get() <= bytes {
                    return;
                }
                written.await;
            }
        }
    }

    /// Drops whatever is queued and closes the socket's write side now,
    /// for a peer being closed for reading too little. (Dropping the
    /// writer instead lets what is queued go out first.)
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Stops the actor, with a log line naming the peer, if its writer gives up.
pub fn stop_when_failed<A>(
    failure: oneshot::Receiver<String>,
    peer: SocketAddr,
    ctx: &mut A::Context,
) where
    A: Actor<Context = Context<A>>,
{
    let watch =
        actix::fut::wrap_future::<_, A>(failure).map(move |why, _act, ctx: &mut Context<A>| {
            if let Ok(why) = why {
                tracing::warn!(%peer, "closing the connection: {why}");
                ctx.stop();
            }
        });
    ctx.spawn(watch);
}

/// The writing task: every frame queued so far goes out in one vectored
/// write (or a few), then the backlog shrinks by what was written.
async fn write_frames(
    mut write: impl AsyncWrite + Unpin,
    mut queued: mpsc::UnboundedReceiver<Bytes>,
    backlog: Rc<Backlog>,
    failed: oneshot::Sender<String>,
) {
    let mut frames = VecDeque::new();
    while let Some(frame) = queued.recv().await {
        frames.push_back(frame);
        while let Ok(more) = queued.try_recv() {
            frames.push_back(more);
        }
        let size: usize = frames.iter().map(Bytes::len).sum();
        let written = write_all(&mut write, &mut frames).await;
        backlog.bytes.set(backlog.bytes.get().saturating_sub(size));
        backlog.drained.notify_waiters();
        if let Err(e) = written {
            let _ = failed.send(e);
            return;
        }
    }
    // The actor is gone and everything it queued is written.
    let _ = tokio::time::timeout(STALL, write.shutdown()).await;
}

/// Writes every frame, giving up on a peer that takes nothing for `STALL`.
async fn write_all(
    write: &mut (impl AsyncWrite + Unpin),
    frames: &mut VecDeque<Bytes>,
) -> Result<(), String> {
    while !frames.is_empty() {
        let slices: Vec<IoSlice<'_>> = frames
            .iter()
            .take(FRAMES_PER_WRITE)
            .map(|f| IoSlice::new(f))
            .collect();
        let mut n = match tokio::time::timeout(STALL, write.write_vectored(&slices)).await {
            Err(_) => return Err(format!("the peer read nothing for {STALL:?}")),
            Ok(Err(e)) => return Err(format!("writing: {e}")),
            Ok(Ok(0)) => return Err("writing: the peer is gone".into()),
            Ok(Ok(n)) => n,
        };
        while n > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            let taken = n.min(front.len());
            front.advance(taken);
            n -= taken;
            if front.is_empty() {
                frames.pop_front();
            }
        }
    }
    // A TLS stream may hold the last records back until flushed.
    match tokio::time::timeout(STALL, write.flush()).await {
        Err(_) => Err(format!("the peer read nothing for {STALL:?}")),
        Ok(Err(e)) => Err(format!("writing: {e}")),
        Ok(Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[actix::test]
    async fn frames_arrive_whole_and_in_order() {
        let (mut peer, ours) = pair().await;
        let (_read, write) = ours.into_split();
        let (writer, _failure) = FrameWriter::start(write, 1 << 20, 1 << 20);
        let messages: Vec<String> = (0..500).map(|i| format!("message {i}")).collect();
        for m in &messages {
            writer.write(m).unwrap();
        }
        for m in &messages {
            let mut len = [0u8; 4];
            peer.read_exact(&mut len).await.unwrap();
            let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
            peer.read_exact(&mut payload).await.unwrap();
            assert_eq!(&aam_protocol::codec::decode::<String>(&payload).unwrap(), m);
        }
        writer.drained(0).await;
        assert_eq!(writer.backlog(), 0);
    }

    #[actix::test]
    async fn a_peer_that_reads_nothing_is_refused_past_the_limit() {
        let (_peer, ours) = pair().await;
        let (_read, write) = ours.into_split();
        let limit = 1 << 20;
        let (writer, _failure) = FrameWriter::start(write, 1 << 20, limit);
        let chunk = vec![7u8; 64 * 1024];
        let mut refused = None;
        // The socket's buffers take some; the backlog then grows to the limit.
        for _ in 0..100_000 {
            if let Err(e) = writer.write(&chunk) {
                refused = Some(e);
                break;
            }
            tokio::task::yield_now().await;
        }
        match refused {
            Some(WriteError::Backlog { backlog, limit: l }) => {
                assert_eq!(l, limit);
                assert!(backlog > limit);
                assert!(writer.backlog() <= limit);
            }
            other => panic!("expected the backlog limit, got {other:?}"),
        }
    }

    #[actix::test]
    async fn a_frame_past_the_limit_is_refused_before_it_is_queued() {
        let (_peer, ours) = pair().await;
        let (_read, write) = ours.into_split();
        let (writer, _failure) = FrameWriter::start(write, 1024, 1 << 20);
        let big = "x".repeat(4096);
        assert!(matches!(
            writer.write(&big),
            Err(WriteError::Codec(CodecError::FrameTooLarge { .. }))
        ));
        assert_eq!(writer.backlog(), 0);
    }
}
