//! Group commit: one thread applies queued changes to the store and makes
//! them durable with a single flush per group, however many arrived while
//! the previous flush ran (ARCHITECTURE.md, invariant 1: durable before
//! acknowledged, group commit). It keeps disk I/O off the
//! actors' threads.

use aam_store::{Changes, StoreError, StoreWriter};
use std::sync::mpsc;
use tokio::sync::oneshot;

type Request = (Changes, oneshot::Sender<Result<(), String>>);

/// Handle to the commit thread. Dropping every handle ends the thread once
/// it has committed what it was given.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    pub fn start(writer: StoreWriter) -> Committer {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("aam-commit".into())
            .spawn(move || run(writer, rx))
            .expect("spawning the commit thread");
        Committer { tx }
    }

    /// Queues changes; the receiver resolves once they are durable.
    pub fn commit(&self, changes: Changes) -> oneshot::Receiver<Result<(), String>> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::SendError((_, reply))) = self.tx.send((changes, reply)) {
            let _ = reply.send(Err("the commit thread has stopped".into()));
        }
        rx
    }
}

fn run(mut writer: StoreWriter, rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let result = commit_group(&mut writer, &mut group);
        if let Err(e) = &result {
            tracing::error!("store commit failed: {e}");
        }
        for (_, reply) in group {
            let _ = reply.send(result.clone().map_err(|e| e.to_string()));
        }
    }
    // Every handle is gone (shutdown): leave a short log behind.
    if let Err(e) = writer.checkpoint() {
        tracing::warn!("final checkpoint failed: {e}");
    }
}

fn commit_group(
    writer: &mut StoreWriter,
    group: &mut [Request],
) -> Result<(), std::sync::Arc<StoreError>> {
    let mut wrote = false;
    for (changes, _) in group.iter_mut() {
        if !changes.is_empty() {
            wrote = true;
            writer
                .apply(std::mem::take(changes))
                .map_err(std::sync::Arc::new)?;
        }
    }
    if wrote {
        writer.flush().map_err(std::sync::Arc::new)?;
    }
    Ok(())
}
