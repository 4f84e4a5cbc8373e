//! aam-store: the manager's durable state in sled.
//!
//! Sessions, jobs (with their attempt counters), the captured output of
//! finished jobs, the patches of worktree jobs, the pauses of
//! usage-limit groups and the outbox of notifications not yet delivered,
//! under a schema version (an older one is migrated at
//! open: `migrate`). `Store::open` gives a read handle (`Store`, cheap to
//! clone) and the one `StoreWriter`. A group of changes is
//! committed by appending it to a write-ahead log and syncing that once
//! (group commit); only then is it written into sled's memory, so sled never
//! holds what is not durable. Now and then a checkpoint flushes sled and
//! empties the log. When sled fails to write, the log still holds every
//! committed change, and the writer reopens sled from it. Nothing else in
//! aam touches sled.

pub mod files;
mod migrate;
mod trees;
mod wal;
mod writer;

pub use wal::Recovery;
pub use writer::{Logged, StoreWriter, CHECKPOINT_BYTES, RESERVE_BYTES};

use aam_protocol::agent_run::LimitPause;
use aam_protocol::model::{JobRecord, SessionRecord};
use aam_protocol::{JobKey, SessionId};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use trees::Trees;
use wal::Item;

/// Version of the on-disk layout. Bump it when a record changes shape, and
/// teach `migrate` the old shape.
///
/// 2: agents understood (issue 9): jobs gained their agent's format, limit
/// group, budget, pinned worker and run; attempts their outcome as an
/// `AttemptOutcome` and their run; sessions a budget; a tree of pauses.
/// Before it shipped, worktrees (issue 10) added jobs' isolation, base,
/// verify, variants, pick, change and continued branch, and a tree of
/// patches (a log item kind of its own).
///
/// 3: workspaces, ports and shared resources (issue 15): jobs gained
/// `ports` and `uses`, attempts `setup_ms` and `teardown_ms`.
///
/// 4: containers (issue 15): jobs gained `workspace`, their own workspace
/// keys and container.
///
/// 5: say (issue 16): jobs gained `input`, what an agent that takes input
/// was told.
///
/// 6: permission prompts (issue 16): jobs gained `permissions`, their
/// rules and relayed requests.
///
/// Additions that old stores open without a migration (a new, empty tree;
/// a missing meta key reads as its default) keep the version: issue 11's
/// outbox of notifications (`notices`, `next_notice`).
pub const SCHEMA_VERSION: u32 = 6;

/// Default sled page cache, set explicitly (sled's own default is 1 GB).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The write-ahead log's file name in the data directory.
pub const LOG_FILE: &str = "store.wal";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {0} is in use by another aam-manager (its lock is held); stop that manager or choose another --data-dir")]
    Locked(PathBuf),
    #[error("data directory {path} holds schema version {found}, newer than this aam-manager understands ({supported}); upgrade aam")]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("data directory {path} holds schema version {found}, older than this aam-manager's ({supported}), and there is no migration from it; move the directory away (or finish its sessions with the older aam)")]
    OlderSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store at {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("corrupt record in store: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", damaged_log(path, *offset, *next_intact))]
    DamagedLog {
        path: PathBuf,
        offset: u64,
        next_intact: Option<u64>,
    },
    #[error("store at {0} is closed after a failed write; it is reopened once the disk takes writes again")]
    Closed(PathBuf),
    #[error("{} has {} free; this write needs {}, and the store keeps {} more free so that its own files never run out of room mid-write", dir.display(), size(*available), size(*needed), size(writer::RESERVE_BYTES))]
    NoRoom {
        dir: PathBuf,
        available: u64,
        needed: u64,
    },
}

impl StoreError {
    /// What went wrong, in capitals, for the person who has to act on it:
    /// DISK FULL, DISK QUOTA EXCEEDED, READ-ONLY FILE SYSTEM, I/O ERROR, or
    /// STORE ERROR for anything that is not the disk's.
    pub fn headline(&self) -> &'static str {
        let io = match self {
            StoreError::Io { source, .. } => source,
            StoreError::Sled {
                source: sled::Error::Io(source),
                ..
            } => source,
            StoreError::Closed(_) => return "STORE CLOSED",
            StoreError::NoRoom { .. } => return "DISK FULL",
            _ => return "STORE ERROR",
        };
        match io.raw_os_error() {
            Some(libc::ENOSPC) => return "DISK FULL",
            Some(libc::EDQUOT) => return "DISK QUOTA EXCEEDED",
            Some(libc::EROFS) => return "READ-ONLY FILE SYSTEM",
            Some(libc::EIO) => return "I/O ERROR",
            _ => {}
        }
        // sled hands out copies of its errors that keep only the kind.
        match format!("{:?}", io.kind()).as_str() {
            "StorageFull" => "DISK FULL",
            "QuotaExceeded" => "DISK QUOTA EXCEEDED",
            "ReadOnlyFilesystem" => "READ-ONLY FILE SYSTEM",
            _ => "I/O ERROR",
        }
    }
}

/// Why a damaged log stops the manager, and how to recover.
fn damaged_log(path: &Path, offset: u64, next_intact: Option<u64>) -> String {
    let next = next_intact
        .map(|n| format!(" but one does at byte {n}"))
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    format!(
        "{} is damaged at byte {offset}: no intact entry starts there{next}, so this is not an \
         unfinished last write, and entries acknowledged to clients may follow it. The manager \
         does not start on a damaged log. Run `aam-manager --recover --data-dir {}`: it keeps \
         the damaged log aside (never deleted), keeps every intact entry before and after the \
         damage, and reports what it could not read",
        path.display(),
        dir.display()
    )
}

/// A byte count for people: `812 bytes`, `23.8 KiB`, `4.0 MiB`.
fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything the manager rebuilds its state from.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sessions: Vec<SessionRecord>,
    /// All jobs, ordered by (session, index).
    pub jobs: Vec<JobRecord>,
    pub next_session: u64,
    /// Limit groups paused after a usage limit (or whose backoff is still
    /// raised), by group.
    pub pauses: Vec<LimitPause>,
    /// Notifications not yet delivered (nor given up), by (seq, target).
    pub notices: Vec<Notice>,
    /// The sequence number the next notification gets.
    pub next_notice: u64,
    /// Which token submitted each session (by its name), where known.
    pub owners: Vec<(SessionId, String)>,
    /// The sequence number the next audit record gets.
    pub next_audit: u64,
}

/// One notification in the outbox: an event for one `[[notify]]` target,
/// written with the change that caused it and removed once delivered or
/// given up. The store keeps the event's bytes as given (JSON the manager
/// rendered); it never reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The event's number, unique in this store (its `id` derives from it).
    pub seq: u64,
    /// Which target it is for (a fingerprint of the target's config: no
    /// URL or command, which may hold a secret, is stored).
    pub target: u64,
    pub event: Vec<u8>,
}

impl Notice {
    /// Its key in the outbox: seq, then target, both big-endian, so the
    /// outbox reads back in the order the events were made.
    pub fn key(seq: u64, target: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&seq.to_be_bytes());
        k[8..].copy_from_slice(&target.to_be_bytes());
        k
    }
}

/// One audit record: its time and a sequence number (together its key, so
/// the log reads back oldest first and a range of time goes at once), and
/// the record as the manager encoded it (the store never reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub seq: u64,
    pub record: Vec<u8>,
}

impl AuditEntry {
    pub fn key(at_ms: u64, seq: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&at_ms.to_be_bytes());
        k[8..].copy_from_slice(&seq.to_be_bytes());
        k
    }
}

/// A job record as the store writes it: its key and its bincode bytes,
/// encoded once by whoever changed it (the scheduler, where a copy of the
/// record would otherwise be made) and written as they are to the log and
/// to sled.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredJob {
    pub key: JobKey,
    /// An encoding that failed fails the commit that carries it.
    bytes: std::result::Result<Vec<u8>, String>,
}

impl StoredJob {
    pub fn encode(job: &JobRecord) -> StoredJob {
        StoredJob {
            key: job.key,
            bytes: aam_protocol::codec::encode(job).map_err(|e| e.to_string()),
        }
    }

    /// The record's bytes.
    pub fn bytes(&self) -> Result<&[u8]> {
        self.bytes
            .as_deref()
            .map_err(|e| StoreError::Corrupt(format!("job {} does not encode: {e}", self.key)))
    }

    /// The record again (for tests and checks: the model keeps its own).
    pub fn decode(&self) -> Result<JobRecord> {
        aam_protocol::codec::decode(self.bytes()?).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// A group of writes committed together.
#[derive(Debug, Default)]
pub struct Changes {
    pub sessions: Vec<SessionRecord>,
    pub jobs: Vec<StoredJob>,
    pub outputs: Vec<(JobKey, Vec<u8>)>,
    /// Worktree jobs' patches, kept like outputs (empty: the job has none
    /// any more, so an earlier attempt's goes).
    pub patches: Vec<(JobKey, Vec<u8>)>,
    pub next_session: Option<u64>,
    /// Sessions to delete with their jobs and outputs: (id, job count).
    pub removed: Vec<(SessionId, u32)>,
    /// Pauses of limit groups to write (a group's record replaces its last).
    pub pauses: Vec<LimitPause>,
    /// Limit groups whose pause record is to go (their backoff is reset).
    pub pauses_ended: Vec<String>,
    /// Notifications to put in the outbox.
    pub notices: Vec<Notice>,
    /// Notifications to take out of it: (seq, target).
    pub notices_done: Vec<(u64, u64)>,
    /// The sequence number the next notification gets.
    pub next_notice: Option<u64>,
    /// Audit records to append.
    pub audit: Vec<AuditEntry>,
    /// Audit records older than this time (ms) are to go (retention).
    pub audit_before: Option<u64>,
    /// Which token submitted a session (removed with the session).
    pub owners: Vec<(SessionId, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.jobs.is_empty()
            && self.outputs.is_empty()
            && self.patches.is_empty()
            && self.next_session.is_none()
            && self.removed.is_empty()
            && self.pauses.is_empty()
            && self.pauses_ended.is_empty()
            && self.notices.is_empty()
            && self.notices_done.is_empty()
            && self.next_notice.is_none()
            && self.audit.is_empty()
            && self.audit_before.is_none()
            && self.owners.is_empty()
    }
}

/// Read handle on the store; cheap to clone. The writer may reopen sled
/// underneath it (after sled failed to write), so it reaches sled through
/// a lock that only that reopening takes for writing.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    cache_bytes: u64,
    trees: RwLock<Option<Trees>>,
    /// Log frames sled has not taken in yet (`Behind`).
    behind: Mutex<Behind>,
    /// sled holds the whole log: read without the lock on the way to
    /// every read.
    caught_up: AtomicBool,
}

/// Where sled stands against the log at a start after a crash that came
/// between a commit's sync and sled's taking it in. A start does not wait
/// for sled: the manager's model is built from sled with the log laid over
/// it (`StoreWriter::start_snapshot`), and the frames go into sled after,
/// on the commit thread, or on the way to the first read that comes first.
pub(crate) enum Behind {
    /// sled holds everything the log does.
    No,
    /// The log's frames, in order, that sled lacks.
    Frames(Vec<Vec<Item>>),
    /// sled took the frames in; the log is to be emptied (a checkpoint).
    Replayed,
}

pub(crate) fn session_key(id: SessionId) -> [u8; 8] {
    id.0.to_be_bytes()
}

pub(crate) fn job_key(key: JobKey) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&key.session.0.to_be_bytes());
    k[8..].copy_from_slice(&key.index.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the store in `dir`, reading its log. A damaged
    /// log is refused (`StoreError::DamagedLog`; see `recover`).
    ///
    /// The log's frames are not replayed into sled here: a million-job
    /// commit takes sled seconds to take in, and the manager can start
    /// from the log meanwhile (`Behind`). Only a log that holds a migration,
    /// or a store of an older schema, is replayed at once.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<(Store, StoreWriter)> {
        let trees = Trees::open(dir, cache_bytes)?;
        let _ = std::fs::remove_file(dir.join(files::PROBE_FILE));
        // sled's lock is held: this process alone owns the log.
        let (wal, frames) = wal::Wal::open(&dir.join(LOG_FILE))?;
        let migration_logged = frames
            .iter()
            .flatten()
            .any(|item| matches!(item, Item::Schema(_)));
        let old_schema = trees.schema_version()? < SCHEMA_VERSION;
        let store = Store {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                cache_bytes,
                trees: RwLock::new(Some(trees)),
                caught_up: AtomicBool::new(frames.is_empty()),
                behind: Mutex::new(match frames.is_empty() {
                    true => Behind::No,
                    false => Behind::Frames(frames),
                }),
            }),
        };
        let mut writer = StoreWriter::new(store.clone(), wal);
        if migration_logged || old_schema {
            // The log may hold records of the old schema, or a migration
            // sled had not taken in: the version is read after it.
            writer.catch_up()?;
            let version = store.with(Trees::schema_version)?;
            if version < SCHEMA_VERSION {
                // Migrates and checkpoints, so the log holds no old record.
                writer.migrate(version)?;
            }
        }
        Ok((store, writer))
    }

    /// `aam-manager --recover`: keeps a damaged log aside and replaces it
    /// by its intact frames (see `Recovery`), then opens the store once,
    /// which replays them into sled. Holds sled's lock throughout, so no
    /// manager writes the log meanwhile.
    pub fn recover(dir: &Path, cache_bytes: u64) -> Result<Recovery> {
        let report = {
            let _lock = Trees::open(dir, cache_bytes)?;
            wal::recover(&dir.join(LOG_FILE))?
        };
        Store::open(dir, cache_bytes)?.1.catch_up()?;
        Ok(report)
    }

    /// Runs `read` on sled, once sled holds what the log does (see
    /// `Behind`: the first read after such a start may wait for it).
    fn with<T>(&self, read: impl FnOnce(&Trees) -> Result<T>) -> Result<T> {
        self.catch_up()?;
        self.with_sled(read)
    }

    /// Replays into sled the log frames it lacks, if any (`Behind`).
    fn catch_up(&self) -> Result<()> {
        if self.shared.caught_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut behind = self.behind();
        if let Behind::Frames(frames) = &*behind {
            self.with_sled(|trees| frames.iter().try_for_each(|items| trees.replay(items)))?;
            tracing::info!(
                frames = frames.len(),
                "replayed the store's write-ahead log"
            );
            *behind = Behind::Replayed;
        }
        self.shared.caught_up.store(true, Ordering::Release);
        Ok(())
    }

    /// Where sled stands against the log (held while replaying into it).
    pub(crate) fn behind(&self) -> std::sync::MutexGuard<'_, Behind> {
        self.shared
            .behind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `read` on sled as it is, unless the writer has it closed.
    fn with_sled<T>(&self, read: impl FnOnce(&Trees) -> Result<T>) -> Result<T> {
        let trees = self
            .shared
            .trees
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match trees.as_ref() {
            Some(trees) => read(trees),
            None => Err(StoreError::Closed(self.shared.dir.join("store"))),
        }
    }

    /// Reads everything back, for the manager's start. (After a failed
    /// write, `StoreWriter::durable_snapshot` is what is durable.)
    pub fn load(&self) -> Result<Snapshot> {
        self.with(Trees::load)
    }

    /// The stored output of a finished job (an encoded `OutputCapture`).
    pub fn output(&self, key: JobKey) -> Result<Option<Vec<u8>>> {
        self.with(|trees| trees.output(key))
    }

    /// Audit records from `since_ms` on, oldest first, at most `limit` (the
    /// newest ones); and whether older ones in range were left out.
    pub fn audit(&self, since_ms: u64, limit: usize) -> Result<(Vec<AuditEntry>, bool)> {
        self.with(|trees| trees.audit(since_ms, limit))
    }

    /// The sequence number after the last audit record's (0 when none);
    /// the manager learns it from `load`, so only tests ask.
    #[cfg(test)]
    pub(crate) fn next_audit_seq(&self) -> Result<u64> {
        self.with(Trees::next_audit_seq)
    }

    /// The stored patch of a worktree job (`git format-patch` of its commit,
    /// as its worker sent it).
    pub fn patch(&self, key: JobKey) -> Result<Option<Vec<u8>>> {
        self.with(|trees| trees.patch(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::model::SessionStatus;

    pub(crate) fn session(id: u64) -> SessionRecord {
        SessionRecord {
            id: SessionId(id),
            name: format!("s{id}"),
            status: SessionStatus::Running,
            job_count: 1,
            created_at_ms: 1,
            finished_at_ms: None,
            max_parallel: None,
            idempotency_key: None,
            max_cost_usd: None,
        }
    }

    fn pause(group: &str) -> LimitPause {
        LimitPause {
            group: group.into(),
            until_ms: 1000,
            backoff_ms: 120_000,
            message: "usage limit".into(),
        }
    }

    fn notice(seq: u64, target: u64) -> Notice {
        Notice {
            seq,
            target,
            event: format!("{{\"id\":\"n{seq}\"}}").into_bytes(),
        }
    }

    pub(crate) fn job(session: u64, index: u32) -> JobRecord {
        let key = JobKey {
            session: SessionId(session),
            index,
        };
        JobRecord::new(key, format!("j{index}"), vec!["true".into()])
    }

    /// `job` as a commit carries it.
    pub(crate) fn stored(session: u64, index: u32) -> StoredJob {
        StoredJob::encode(&job(session, index))
    }

    #[test]
    fn flushed_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer
                .commit(vec![Changes {
                    sessions: vec![session(2), session(1)],
                    jobs: vec![stored(2, 1), stored(1, 0), stored(2, 0)],
                    outputs: vec![(job(1, 0).key, b"out".to_vec())],
                    patches: vec![
                        (job(1, 0).key, b"From 1".to_vec()),
                        (job(2, 0).key, b"From 2".to_vec()),
                    ],
                    next_session: Some(3),
                    removed: Vec::new(),
                    pauses: vec![pause("claude"), pause("codex")],
                    pauses_ended: Vec::new(),
                    notices: vec![notice(1, 7), notice(1, 8), notice(2, 7)],
                    notices_done: Vec::new(),
                    next_notice: Some(3),
                    ..Default::default()
                }])
                .unwrap();
            // A later attempt that left no patch takes the earlier one's away.
            writer
                .commit(vec![Changes {
                    notices_done: vec![(1, 7)],
                    pauses_ended: vec!["codex".into()],
                    patches: vec![(job(2, 0).key, Vec::new())],
                    ..Default::default()
                }])
                .unwrap();
            let durable = writer.durable_snapshot().unwrap();
            assert_eq!(durable.pauses, [pause("claude")]);
            assert_eq!(durable.notices, [notice(1, 8), notice(2, 7)]);
            assert_eq!(durable.next_notice, 3);
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.pauses, [pause("claude")]);
        assert_eq!(snap.notices, [notice(1, 8), notice(2, 7)]);
        assert_eq!(snap.next_notice, 3);
        assert_eq!(snap.next_session, 3);
        assert_eq!(snap.sessions.len(), 2);
        let keys: Vec<_> = snap
            .jobs
            .iter()
            .map(|j| (j.key.session.0, j.key.index))
            .collect();
        assert_eq!(keys, vec![(1, 0), (2, 0), (2, 1)]);
        // Read back, jobs with equal run policies hold one copy of it.
        let [a, b, c] = [0, 1, 2].map(|i| std::sync::Arc::clone(&snap.jobs[i].policy));
        assert!(std::sync::Arc::ptr_eq(&a, &b) && std::sync::Arc::ptr_eq(&b, &c));
        assert_eq!(store.output(job(1, 0).key).unwrap().unwrap(), b"out");
        assert_eq!(store.patch(job(1, 0).key).unwrap().unwrap(), b"From 1");
        assert_eq!(store.patch(job(2, 0).key).unwrap(), None);
    }

    #[test]
    fn removed_sessions_are_gone_with_their_jobs_outputs_and_patches_after_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer
                .commit(vec![
                    Changes {
                        sessions: vec![session(1), session(2)],
                        jobs: vec![stored(1, 0), stored(2, 0)],
                        outputs: vec![(job(1, 0).key, b"out".to_vec())],
                        patches: vec![(job(1, 0).key, b"From 1".to_vec())],
                        ..Default::default()
                    },
                    Changes {
                        removed: vec![(SessionId(1), 1)],
                        ..Default::default()
                    },
                ])
                .unwrap();
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.sessions.len(), 1);
        assert_eq!(snap.sessions[0].id, SessionId(2));
        assert_eq!(snap.jobs.len(), 1);
        assert!(store.output(job(1, 0).key).unwrap().is_none());
        assert!(store.patch(job(1, 0).key).unwrap().is_none());
    }

    fn entry(at_ms: u64, seq: u64) -> AuditEntry {
        AuditEntry {
            at_ms,
            seq,
            record: format!("r{seq}").into_bytes(),
        }
    }

    #[test]
    fn audit_records_and_owners_survive_reopening_and_retention_prunes_by_time() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer
                .commit(vec![Changes {
                    sessions: vec![session(1), session(2)],
                    jobs: vec![stored(1, 0), stored(2, 0)],
                    owners: vec![(SessionId(1), "ci".into()), (SessionId(2), "ann".into())],
                    audit: vec![entry(10, 0), entry(20, 1), entry(30, 2)],
                    ..Default::default()
                }])
                .unwrap();
            // Retention: records before 20 go; a removed session's owner too.
            writer
                .commit(vec![Changes {
                    audit_before: Some(20),
                    removed: vec![(SessionId(2), 1)],
                    audit: vec![entry(40, 3)],
                    ..Default::default()
                }])
                .unwrap();
            let durable = writer.durable_snapshot().unwrap();
            assert_eq!(durable.owners, [(SessionId(1), "ci".to_string())]);
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(
            store.load().unwrap().owners,
            [(SessionId(1), "ci".to_string())]
        );
        let (all, truncated) = store.audit(0, 10).unwrap();
        assert_eq!(all, [entry(20, 1), entry(30, 2), entry(40, 3)]);
        assert!(!truncated);
        // The newest within the limit, oldest first.
        let (newest, truncated) = store.audit(25, 1).unwrap();
        assert_eq!(newest, [entry(40, 3)]);
        assert!(truncated);
        assert_eq!(store.next_audit_seq().unwrap(), 4);
    }

    #[test]
    fn a_second_open_of_the_same_dir_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        match Store::open(dir.path(), DEFAULT_CACHE_BYTES) {
            Err(StoreError::Locked(p)) => assert_eq!(p, dir.path()),
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("second open succeeded"),
        }
    }

    #[test]
    fn a_store_from_before_the_outbox_opens_with_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer
                .commit(vec![Changes {
                    sessions: vec![session(1)],
                    jobs: vec![stored(1, 0)],
                    ..Default::default()
                }])
                .unwrap();
            writer.checkpoint().unwrap();
            // As issue 10's aam left it: no outbox tree, no counter.
            store
                .with(|t| {
                    t.db.drop_tree("notices").unwrap();
                    t.flush()
                })
                .unwrap();
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.sessions.len(), 1);
        assert!(snap.notices.is_empty());
        assert_eq!(snap.next_notice, 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            store
                .with(|t| {
                    t.meta
                        .insert(b"schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
                        .unwrap();
                    t.flush()
                })
                .unwrap();
        }
        let err = Store::open(dir.path(), DEFAULT_CACHE_BYTES).err().unwrap();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
            "{err}"
        );
    }
}
