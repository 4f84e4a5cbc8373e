//! aam-store: the manager's durable state in sled.
//!
//! Sessions, jobs (with their attempt counters) and the captured output of
//! finished jobs, under a schema version. `Store::open` gives a read handle
//! (`Store`, cheap to clone) and the one `StoreWriter`. Writes land in sled's
//! memory at once and in a write-ahead log; `StoreWriter::flush` makes
//! everything written so far durable with one fdatasync of that log, and the
//! manager calls it once for a whole group of changes (group commit). Now and
//! then a checkpoint flushes sled and empties the log. Nothing else in aam
//! touches sled.

mod wal;

use aam_protocol::codec;
use aam_protocol::model::{JobRecord, SessionRecord};
use aam_protocol::{JobKey, SessionId};
use std::path::{Path, PathBuf};

/// Version of the on-disk layout. Bump it when a record changes shape.
pub const SCHEMA_VERSION: u32 = 1;

/// Default sled page cache, set explicitly (sled's own default is 1 GB).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

const SCHEMA_KEY: &[u8] = b"schema_version";
const NEXT_SESSION_KEY: &[u8] = b"next_session";

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
    #[error("data directory {path} holds schema version {found}, older than this aam-manager's ({supported}), and there is no migration for it yet; move the directory away (or finish its sessions with the older aam)")]
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
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything the manager rebuilds its state from at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sessions: Vec<SessionRecord>,
    /// All jobs, ordered by (session, index).
    pub jobs: Vec<JobRecord>,
    pub next_session: u64,
}

/// A group of writes applied together (then made durable by `flush`).
#[derive(Debug, Default)]
pub struct Changes {
    pub sessions: Vec<SessionRecord>,
    pub jobs: Vec<JobRecord>,
    pub outputs: Vec<(JobKey, Vec<u8>)>,
    pub next_session: Option<u64>,
    /// Sessions to delete with their jobs and outputs: (id, job count).
    pub removed: Vec<(SessionId, u32)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.jobs.is_empty()
            && self.outputs.is_empty()
            && self.next_session.is_none()
            && self.removed.is_empty()
    }
}

/// Handle to the store; cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    sessions: sled::Tree,
    jobs: sled::Tree,
    outputs: sled::Tree,
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
    /// Opens (or creates) the store in `dir`, replaying its log.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<(Store, StoreWriter)> {
        let path = dir.join("store");
        let sled_err = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes)
            // Durability comes from our own group-committed flushes.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StoreError::Locked(dir.to_path_buf())
                }
                other => sled_err(other),
            })?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        match meta.get(SCHEMA_KEY).map_err(sled_err)? {
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("schema version".into()))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: dir.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    // Records are bincode: an older layout cannot be read as
                    // the new one. Say so rather than fail on a record.
                    return Err(StoreError::OlderSchema {
                        path: dir.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        let store = Store {
            sessions: db.open_tree("sessions").map_err(sled_err)?,
            jobs: db.open_tree("jobs").map_err(sled_err)?,
            outputs: db.open_tree("outputs").map_err(sled_err)?,
            meta,
            db,
            path,
        };
        // sled's lock is held: this process alone owns the log.
        let (wal, frames) = wal::Wal::open(&dir.join("store.wal"))?;
        let replayed = frames.len();
        for items in frames {
            store.replay(items)?;
        }
        let mut writer = StoreWriter {
            store: store.clone(),
            wal,
        };
        if replayed > 0 {
            tracing::info!(frames = replayed, "replayed the store's write-ahead log");
            writer.checkpoint()?;
        }
        Ok((store, writer))
    }

    fn replay(&self, items: Vec<wal::Item>) -> Result<()> {
        for item in items {
            let result = match item {
                wal::Item::Job(k, v) => self.jobs.insert(k, v),
                wal::Item::Output(k, v) => self.outputs.insert(k, v),
                wal::Item::Session(k, v) => self.sessions.insert(k, v),
                wal::Item::NextSession(n) => self.meta.insert(NEXT_SESSION_KEY, &n.to_be_bytes()),
                wal::Item::Removed(id, count) => {
                    self.remove_session(SessionId(id), count)?;
                    Ok(None)
                }
            };
            result.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Deletes a session record (first, so a crash midway leaves only
    /// orphan jobs, which load ignores), its jobs and their outputs.
    fn remove_session(&self, id: SessionId, job_count: u32) -> Result<()> {
        self.sessions
            .remove(session_key(id))
            .map_err(|e| self.err(e))?;
        for index in 0..job_count {
            let key = job_key(JobKey { session: id, index });
            self.jobs.remove(key).map_err(|e| self.err(e))?;
            self.outputs.remove(key).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Applies a group of writes to sled's memory.
    ///
    /// Keys are inserted one by one: a single sled batch of 100,000 inserts
    /// holds about 470 MB while it applies, one-by-one inserts about 35 MB.
    /// Jobs go before their session record, so a crash between the two never
    /// leaves a session with missing jobs (orphan jobs are ignored on load).
    fn apply_to_sled(&self, changes: Changes) -> Result<()> {
        let corrupt = |e: codec::CodecError| StoreError::Corrupt(e.to_string());
        for j in &changes.jobs {
            self.jobs
                .insert(job_key(j.key), codec::encode(j).map_err(corrupt)?)
                .map_err(|e| self.err(e))?;
        }
        for (key, out) in changes.outputs {
            self.outputs
                .insert(job_key(key), out)
                .map_err(|e| self.err(e))?;
        }
        for s in &changes.sessions {
            self.sessions
                .insert(session_key(s.id), codec::encode(s).map_err(corrupt)?)
                .map_err(|e| self.err(e))?;
        }
        if let Some(next) = changes.next_session {
            self.meta
                .insert(NEXT_SESSION_KEY, &next.to_be_bytes())
                .map_err(|e| self.err(e))?;
        }
        for (id, count) in changes.removed {
            self.remove_session(id, count)?;
        }
        Ok(())
    }

    /// Reads everything back, for the manager's start.
    pub fn load(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        for item in self.sessions.iter() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            snap.sessions
                .push(codec::decode(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        snap.jobs.reserve(self.jobs.len());
        for item in self.jobs.iter() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            snap.jobs
                .push(codec::decode(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        snap.next_session = match self.meta.get(NEXT_SESSION_KEY).map_err(|e| self.err(e))? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("next session id".into()))?,
            ),
            None => 1,
        };
        Ok(snap)
    }

    /// The stored output of a finished job (an encoded `OutputCapture`).
    pub fn output(&self, key: JobKey) -> Result<Option<Vec<u8>>> {
        Ok(self
            .outputs
            .get(job_key(key))
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }
}

/// Log size past which `flush` also checkpoints.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// The single writer of the store. Blocking: use it off the actors' threads.
pub struct StoreWriter {
    store: Store,
    wal: wal::Wal,
}

impl StoreWriter {
    /// Applies a group of writes; durable only after `flush`.
    pub fn apply(&mut self, changes: Changes) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.wal.append(&wal::encode_changes(&changes)?)?;
        self.store.apply_to_sled(changes)
    }

    /// Makes every write applied so far durable (one fdatasync of the log);
    /// checkpoints when the log has grown past `CHECKPOINT_BYTES`.
    pub fn flush(&mut self) -> Result<()> {
        self.wal.sync()?;
        if self.wal.len() > CHECKPOINT_BYTES {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Flushes sled, then empties the log.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.store.db.flush().map_err(|e| self.store.err(e))?;
        self.wal.truncate()
    }

    /// A read handle on the same store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::model::SessionStatus;

    fn session(id: u64) -> SessionRecord {
        SessionRecord {
            id: SessionId(id),
            name: format!("s{id}"),
            status: SessionStatus::Running,
            job_count: 1,
            created_at_ms: 1,
            finished_at_ms: None,
            max_parallel: None,
            idempotency_key: None,
        }
    }

    fn job(session: u64, index: u32) -> JobRecord {
        let key = JobKey {
            session: SessionId(session),
            index,
        };
        JobRecord::new(key, format!("j{index}"), vec!["true".into()])
    }

    #[test]
    fn flushed_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer
                .apply(Changes {
                    sessions: vec![session(2), session(1)],
                    jobs: vec![job(2, 1), job(1, 0), job(2, 0)],
                    outputs: vec![(job(1, 0).key, b"out".to_vec())],
                    next_session: Some(3),
                    removed: Vec::new(),
                })
                .unwrap();
            writer.flush().unwrap();
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.next_session, 3);
        assert_eq!(snap.sessions.len(), 2);
        let keys: Vec<_> = snap
            .jobs
            .iter()
            .map(|j| (j.key.session.0, j.key.index))
            .collect();
        assert_eq!(keys, vec![(1, 0), (2, 0), (2, 1)]);
        assert_eq!(store.output(job(1, 0).key).unwrap().unwrap(), b"out");
    }

    #[test]
    fn removed_sessions_are_gone_with_their_jobs_and_outputs_after_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer
                .apply(Changes {
                    sessions: vec![session(1), session(2)],
                    jobs: vec![job(1, 0), job(2, 0)],
                    outputs: vec![(job(1, 0).key, b"out".to_vec())],
                    ..Default::default()
                })
                .unwrap();
            writer
                .apply(Changes {
                    removed: vec![(SessionId(1), 1)],
                    ..Default::default()
                })
                .unwrap();
            writer.flush().unwrap();
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.sessions.len(), 1);
        assert_eq!(snap.sessions[0].id, SessionId(2));
        assert_eq!(snap.jobs.len(), 1);
        assert!(store.output(job(1, 0).key).unwrap().is_none());
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
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            store
                .meta
                .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
            store.db.flush().unwrap();
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
