//! Group commit: one thread commits queued changes to the store with a
//! single log sync per group, however many arrived while the previous sync
//! ran (ARCHITECTURE.md, invariant 1: durable before acknowledged, group
//! commit). It keeps disk I/O off the actors' threads.
//!
//! A group is answered as soon as the log holds it (durable), before sled
//! takes it: sled's inserts are most of a commit's time (a million-job
//! submission's ack waited seconds on them). sled takes the groups up to a
//! few milliseconds later (`APPLY_AFTER`), several at once (sooner past
//! `APPLY_AT` change sets, before a request that reads sled, at shutdown):
//! a job assigned and ended meanwhile is written to sled once, and the next
//! group's sync does not wait for sled's inserts. What is
//! read back from sled therefore waits for the second answer, `applied`:
//! the scheduler keeps a job's output and patch in memory until then, and
//! reads the audit log through this thread (`audit`), in its place after
//! every commit queued before it.
//!
//! After a group fails, every group queued behind it fails too (each was
//! built on the one that failed), and so does every later one, until a
//! `probe` finds the store taking writes again. The scheduler sends that
//! probe only after rolling its model back to `snapshot`, what is durable.

use crate::memory;
use crate::metrics::Observer;
use aam_store::{AuditEntry, Changes, Snapshot, StoreError, StoreWriter};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Why the store took no write: the error, shared by every request it failed.
#[derive(Clone, Debug)]
pub struct StoreFailure(Arc<StoreError>);

impl StoreFailure {
    /// The cause in capitals (`DISK FULL`, `I/O ERROR`, ...).
    pub fn headline(&self) -> &'static str {
        self.0.headline()
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<StoreError> for StoreFailure {
    fn from(e: StoreError) -> StoreFailure {
        StoreFailure(Arc::new(e))
    }
}

/// What resolves once the commit thread has done as asked (an error on
/// the receiver: the thread is gone).
pub type Answer<T> = oneshot::Receiver<Result<T, StoreFailure>>;

/// What a commit answers: `durable` once the log holds it (it may be
/// acknowledged), `applied` once sled holds it too (what is read back from
/// sled, outputs and patches, may be dropped from memory).
pub struct Committed {
    pub durable: Answer<()>,
    pub applied: oneshot::Receiver<()>,
}

struct Commit {
    // Boxed: a change set is hundreds of bytes.
    changes: Box<Changes>,
    durable: oneshot::Sender<Result<(), StoreFailure>>,
    applied: oneshot::Sender<()>,
}

enum Request {
    Commit(Commit),
    Other(Other),
}

/// Audit records from `since_ms` on, at most `limit`, and whether older
/// ones were left out.
type AuditRead = (Vec<AuditEntry>, bool);

/// Requests served one at a time, in their place among the commits (after
/// every commit queued before them is in sled).
enum Other {
    Snapshot(oneshot::Sender<Result<Snapshot, StoreFailure>>),
    Probe(oneshot::Sender<Result<(), StoreFailure>>),
    Audit {
        since_ms: u64,
        limit: usize,
        reply: oneshot::Sender<Result<AuditRead, StoreFailure>>,
    },
}

/// Handle to the commit thread. Dropping every handle ends the thread once
/// it has committed what it was given.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the thread; each group's size and time go to `metrics`.
    pub fn start(writer: StoreWriter, metrics: Observer) -> Committer {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("aam-commit".into())
            .spawn(move || run(writer, metrics, rx))
            .expect("spawning the commit thread");
        Committer { tx }
    }

    /// Queues changes; `durable` resolves once they are durable, or
    /// failed; `applied` once sled holds them (never, if they failed).
    pub fn commit(&self, changes: Changes) -> Committed {
        let (durable, durable_rx) = oneshot::channel();
        let (applied, applied_rx) = oneshot::channel();
        let _ = self.tx.send(Request::Commit(Commit {
            changes: Box::new(changes),
            durable,
            applied,
        }));
        Committed {
            durable: durable_rx,
            applied: applied_rx,
        }
    }

    /// The audit log from `since_ms` on (at most `limit` records), with
    /// every commit queued before this call in it.
    pub fn audit(&self, since_ms: u64, limit: usize) -> Answer<AuditRead> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Other(Other::Audit {
            since_ms,
            limit,
            reply,
        }));
        rx
    }

    /// What is durable, once every commit queued before it is settled.
    pub fn snapshot(&self) -> Answer<Snapshot> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Other(Other::Snapshot(reply)));
        rx
    }

    /// Whether the store takes writes again; when it does, commits that
    /// follow the probe are attempted again.
    pub fn probe(&self) -> Answer<()> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Other(Other::Probe(reply)));
        rx
    }
}

/// How long a durable group may wait for sled: long enough that a short
/// job's assignment and its end usually reach sled together, as one write,
/// and that the commits a sled pass holds up are few (20 ms against 5:
/// 1.4 µs less manager CPU a dispatched job, fewer and bigger commit
/// groups, no stall past 2.6 ms in `latency`; BENCHMARKS.md, sixteenth
/// session). A pass comes sooner past `APPLY_AT` change sets.
const APPLY_AFTER: Duration = Duration::from_millis(20);

/// Change sets past which sled takes what waits at once.
const APPLY_AT: usize = 4096;

/// The commit thread's state: the writer, and why it fails commits.
struct Thread {
    writer: StoreWriter,
    failed: Option<StoreFailure>,
    metrics: Observer,
    /// Durable groups sled has not taken yet: since when the oldest has
    /// waited, and whom to tell once it has.
    deferred_since: Option<Instant>,
    /// Bytes the log took for what sled has not taken yet.
    deferred_bytes: u64,
    applied: Vec<oneshot::Sender<()>>,
}

fn run(mut writer: StoreWriter, metrics: Observer, rx: mpsc::Receiver<Request>) {
    // The log frames a start left for sled (see `aam_store::Store::open`)
    // go in before anything else; a failure is retried by the next commit.
    if let Err(e) = writer.catch_up() {
        tracing::error!("{e}; the log keeps every change: retried at the next commit");
    }
    let mut thread = Thread {
        writer,
        failed: None,
        metrics,
        deferred_since: None,
        deferred_bytes: 0,
        applied: Vec::new(),
    };
    loop {
        let first = match thread.deferred_since {
            None => match rx.recv() {
                Ok(first) => first,
                Err(_) => break,
            },
            Some(since) => match rx.recv_timeout(APPLY_AFTER.saturating_sub(since.elapsed())) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    thread.apply();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut group = Vec::new();
        for request in std::iter::once(first).chain(rx.try_iter()) {
            match request {
                Request::Commit(commit) => group.push(commit),
                Request::Other(other) => {
                    thread.commit(std::mem::take(&mut group));
                    // In its place: after sled has every commit before it.
                    thread.apply();
                    thread.serve(other);
                }
            }
        }
        thread.commit(group);
        if thread.writer.deferred() >= APPLY_AT
            || thread
                .deferred_since
                .is_some_and(|t| t.elapsed() >= APPLY_AFTER)
        {
            thread.apply();
        }
    }
    // Every handle is gone (shutdown): sled takes the rest, and a short
    // log is left behind.
    thread.apply();
    if let Err(e) = thread.writer.checkpoint() {
        tracing::warn!("final checkpoint failed: {e}; the log keeps every change");
    }
}

impl Thread {
    fn commit(&mut self, group: Vec<Commit>) {
        if group.is_empty() {
            return;
        }
        let mut changes = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let mut applied = Vec::with_capacity(group.len());
        for commit in group {
            changes.push(*commit.changes);
            replies.push(commit.durable);
            applied.push(commit.applied);
        }
        let (size, started) = (changes.len(), Instant::now());
        let result = match &self.failed {
            Some(failure) => Err(failure.clone()),
            None => self.writer.log(changes).map_err(|e| {
                let failure = StoreFailure::from(e);
                tracing::error!(
                    "store commit failed ({}): {failure}; nothing of it was stored",
                    failure.headline()
                );
                self.failed = Some(failure.clone());
                failure
            }),
        };
        let logged = match result {
            Ok(logged) => {
                self.metrics
                    .committed(size, started.elapsed(), self.writer.last_sync());
                logged
            }
            Err(failure) => {
                for reply in replies {
                    let _ = reply.send(Err(failure.clone()));
                }
                return;
            }
        };
        if logged.bytes() >= memory::BIG_CHANGE_BYTES {
            // Its encoding was just freed: gone before the answer is read.
            memory::give_back();
        }
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
        self.deferred_bytes += logged.bytes();
        self.writer.defer(logged);
        self.applied.extend(applied);
        self.deferred_since.get_or_insert_with(Instant::now);
    }

    /// sled takes every durable group it has not yet; who waits on them
    /// is told.
    fn apply(&mut self) {
        self.writer.apply_deferred();
        if std::mem::take(&mut self.deferred_bytes) >= memory::BIG_CHANGE_BYTES {
            memory::give_back();
        }
        self.deferred_since = None;
        for done in self.applied.drain(..) {
            let _ = done.send(());
        }
    }

    fn serve(&mut self, request: Other) {
        match request {
            Other::Snapshot(reply) => {
                let _ = reply.send(self.writer.durable_snapshot().map_err(Into::into));
            }
            Other::Probe(reply) => {
                let result = self.writer.probe().map_err(StoreFailure::from);
                match &result {
                    Ok(()) => self.failed = None,
                    Err(failure) => self.failed = Some(failure.clone()),
                }
                let _ = reply.send(result);
            }
            Other::Audit {
                since_ms,
                limit,
                reply,
            } => {
                let read = self.writer.store().audit(since_ms, limit);
                let _ = reply.send(read.map_err(StoreFailure::from));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::model::{SessionRecord, SessionStatus};
    use aam_protocol::SessionId;
    use aam_store::Store;

    fn session(id: u64) -> Changes {
        Changes {
            sessions: vec![SessionRecord {
                id: SessionId(id),
                name: format!("s{id}"),
                status: SessionStatus::Running,
                job_count: 0,
                created_at_ms: 1,
                finished_at_ms: None,
                max_parallel: None,
                idempotency_key: None,
                max_cost_usd: None,
            }],
            next_session: Some(id + 1),
            ..Changes::default()
        }
    }

    fn open(dir: &std::path::Path) -> (Store, Committer) {
        let (store, writer) = Store::open(dir, aam_store::DEFAULT_CACHE_BYTES).unwrap();
        (store, Committer::start(writer, Observer::default()))
    }

    #[tokio::test]
    async fn a_durable_group_reaches_sled_soon_though_nothing_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, committer) = open(dir.path());
        let committed = committer.commit(session(1));
        committed.durable.await.unwrap().unwrap();
        // Deferred, then applied by the thread's own timer: no later
        // commit or request comes to make it.
        tokio::time::timeout(Duration::from_secs(10), committed.applied)
            .await
            .expect("sled took it")
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.sessions.len(), 1);
    }

    #[tokio::test]
    async fn the_audit_log_is_read_after_sled_takes_every_commit_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, committer) = open(dir.path());
        let mut changes = session(1);
        changes.audit = vec![AuditEntry {
            at_ms: 5,
            seq: 1,
            record: b"r1".to_vec(),
        }];
        let committed = committer.commit(changes);
        // Asked at once, before the deferred group's time is up.
        let (records, _) = committer.audit(0, 10).await.unwrap().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].record, b"r1");
        committed.durable.await.unwrap().unwrap();
        committed.applied.await.unwrap();
    }

    #[tokio::test]
    async fn sled_holds_every_durable_group_once_the_last_handle_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_store, committer) = open(dir.path());
            let committed: Vec<_> = (1..=3).map(|id| committer.commit(session(id))).collect();
            for c in committed {
                c.durable.await.unwrap().unwrap();
            }
            drop(committer);
            // The thread applies the rest and checkpoints as it ends; the
            // store's lock goes with it.
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match Store::open(dir.path(), aam_store::DEFAULT_CACHE_BYTES) {
                Ok((store, _writer)) => break store,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert_eq!(store.load().unwrap().sessions.len(), 3);
        assert_eq!(
            std::fs::metadata(dir.path().join("store.wal")).map_or(0, |m| m.len()),
            0,
            "checkpointed: the log is empty"
        );
    }
}
