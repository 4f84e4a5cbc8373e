//! The open sled database and its trees: opening it (its lock, the schema
//! version), writing a group of changes or a replayed log frame into it,
//! and reading records back. Only the store's own modules use it.
//!
//! Trees: `sessions` and `jobs` (encoded records by id), `outputs` (an
//! ended attempt's encoded capture by job), `patches` (a worktree job's
//! patch by job, as its worker sent it), `pauses` (an encoded
//! `LimitPause` by group name), `notices` (the outbox: an undelivered
//! notification's event by seq and target), `audit` (an encoded audit
//! record by time and seq), `owners` (the name of the token that submitted
//! a session, by session) and `meta` (the schema version, the next session
//! id, the next notification's seq).

use crate::files::{narrow_tree, private_subdir};
use crate::migrate::OLDEST_MIGRATED;
use crate::wal::Item;
use crate::{
    job_key, session_key, AuditEntry, Changes, Notice, Result, Snapshot, StoreError, SCHEMA_VERSION,
};
use aam_protocol::codec;
use aam_protocol::model::{JobRecord, SharedPolicies};
use aam_protocol::{JobKey, SessionId};
use std::path::{Path, PathBuf};

const SCHEMA_KEY: &[u8] = b"schema_version";
const NEXT_SESSION_KEY: &[u8] = b"next_session";
const NEXT_NOTICE_KEY: &[u8] = b"next_notice";

pub(crate) struct Trees {
    path: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) meta: sled::Tree,
    pub(crate) sessions: sled::Tree,
    pub(crate) jobs: sled::Tree,
    outputs: sled::Tree,
    patches: sled::Tree,
    pauses: sled::Tree,
    notices: sled::Tree,
    audit: sled::Tree,
    owners: sled::Tree,
}

fn corrupt(e: codec::CodecError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// How long an open waits for sled's lock to be let go. A `sled::Db`
/// dropped in this process releases its file lock only when sled's own
/// threads drop their handles, a moment later; a second manager holding
/// the directory keeps it for good and is refused after this wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn is_lock_error(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock")
}

fn open_when_unlocked(path: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // Durability comes from our own group-committed flushes.
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(ref io))
                if is_lock_error(io) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Trees {
    /// Opens (or creates) sled in `dir/store`, taking its lock, and checks
    /// the schema version.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Trees> {
        let path = dir.join("store");
        let sled_err = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        private_subdir(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        let db = open_when_unlocked(&path, cache_bytes).map_err(|e| match e {
            sled::Error::Io(ref io) if is_lock_error(io) => StoreError::Locked(dir.to_path_buf()),
            other => sled_err(other),
        })?;
        // sled creates its files with the process's umask.
        narrow_tree(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        let trees = Trees {
            meta: db.open_tree("meta").map_err(sled_err)?,
            sessions: db.open_tree("sessions").map_err(sled_err)?,
            jobs: db.open_tree("jobs").map_err(sled_err)?,
            outputs: db.open_tree("outputs").map_err(sled_err)?,
            patches: db.open_tree("patches").map_err(sled_err)?,
            pauses: db.open_tree("pauses").map_err(sled_err)?,
            // Absent from stores made before issue 11: created empty.
            notices: db.open_tree("notices").map_err(sled_err)?,
            // Absent from stores made before issue 12: created empty.
            audit: db.open_tree("audit").map_err(sled_err)?,
            owners: db.open_tree("owners").map_err(sled_err)?,
            db,
            path,
        };
        trees.check_schema(dir)?;
        Ok(trees)
    }

    /// Refuses a schema this build cannot read: a newer one, or one older
    /// than any migration. A new store gets the current version. An older
    /// one is migrated after the log is replayed (`Store::open`).
    fn check_schema(&self, dir: &Path) -> Result<()> {
        if self
            .meta
            .get(SCHEMA_KEY)
            .map_err(|e| self.err(e))?
            .is_none()
        {
            self.meta
                .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                .map_err(|e| self.err(e))?;
            return self.flush();
        }
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: dir.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < OLDEST_MIGRATED {
            // Records are bincode: an older layout cannot be read as the
            // new one. Say so rather than fail on a record.
            return Err(StoreError::OlderSchema {
                path: dir.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    pub(crate) fn set_schema_version(&self, version: u32) -> Result<()> {
        self.meta
            .insert(SCHEMA_KEY, &version.to_be_bytes())
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The schema version the records in sled are written in.
    pub(crate) fn schema_version(&self) -> Result<u32> {
        match self.meta.get(SCHEMA_KEY).map_err(|e| self.err(e))? {
            Some(v) => {
                Ok(u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt("schema version".into())
                })?))
            }
            None => Ok(SCHEMA_VERSION),
        }
    }

    pub(crate) fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Makes sled's own files durable.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush().map(drop).map_err(|e| self.err(e))
    }

    /// Writes one replayed log frame.
    pub(crate) fn replay(&self, items: &[Item]) -> Result<()> {
        for item in items {
            let result = match item {
                Item::Job(k, v) => self.jobs.insert(k, v.as_slice()),
                Item::Output(k, v) => self.outputs.insert(k, v.as_slice()),
                Item::Patch(k, v) => self.put_patch(*k, v),
                Item::Session(k, v) => self.sessions.insert(k, v.as_slice()),
                Item::NextSession(n) => self.meta.insert(NEXT_SESSION_KEY, &n.to_be_bytes()),
                Item::Removed(id, count) => {
                    self.remove_session(SessionId(*id), *count)?;
                    Ok(None)
                }
                Item::Pause(group, v) => self.pauses.insert(group.as_slice(), v.as_slice()),
                Item::PauseEnded(group) => self.pauses.remove(group.as_slice()),
                Item::Schema(version) => self.meta.insert(SCHEMA_KEY, &version.to_be_bytes()),
                Item::Notice(key, event) => self.notices.insert(key, event.as_slice()),
                Item::NoticeDone(key) => self.notices.remove(key),
                Item::NextNotice(n) => self.meta.insert(NEXT_NOTICE_KEY, &n.to_be_bytes()),
                Item::Audit(key, record) => self.audit.insert(key, record.as_slice()),
                Item::AuditBefore(before) => {
                    self.prune_audit(*before)?;
                    Ok(None)
                }
                Item::Owner(key, name) => self.owners.insert(key, name.as_slice()),
            };
            result.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Stores a job's patch; an empty one removes it (a later attempt that
    /// left none replaces an earlier one's).
    fn put_patch(&self, key: [u8; 12], patch: &[u8]) -> sled::Result<Option<sled::IVec>> {
        if patch.is_empty() {
            self.patches.remove(key)
        } else {
            self.patches.insert(key, patch)
        }
    }

    /// Deletes a session record (first, so a crash midway leaves only
    /// orphan jobs, which load ignores), its jobs, their outputs and patches.
    fn remove_session(&self, id: SessionId, job_count: u32) -> Result<()> {
        self.sessions
            .remove(session_key(id))
            .map_err(|e| self.err(e))?;
        self.owners
            .remove(session_key(id))
            .map_err(|e| self.err(e))?;
        for index in 0..job_count {
            let key = job_key(JobKey { session: id, index });
            self.jobs.remove(key).map_err(|e| self.err(e))?;
            self.outputs.remove(key).map_err(|e| self.err(e))?;
            self.patches.remove(key).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Writes a group of changes into sled's memory.
    ///
    /// Keys are inserted one by one: a single sled batch of 100,000 inserts
    /// holds about 470 MB while it applies, one-by-one inserts about 35 MB.
    /// Jobs go before their session record, so a crash between the two never
    /// leaves a session with missing jobs (orphan jobs are ignored on load).
    pub(crate) fn apply(&self, changes: Changes) -> Result<()> {
        for j in &changes.jobs {
            self.jobs
                .insert(job_key(j.key), j.bytes()?)
                .map_err(|e| self.err(e))?;
        }
        for (key, out) in changes.outputs {
            self.outputs
                .insert(job_key(key), out)
                .map_err(|e| self.err(e))?;
        }
        for (key, patch) in changes.patches {
            self.put_patch(job_key(key), &patch)
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
        for pause in &changes.pauses {
            self.pauses
                .insert(
                    pause.group.as_bytes(),
                    codec::encode(pause).map_err(corrupt)?,
                )
                .map_err(|e| self.err(e))?;
        }
        for group in &changes.pauses_ended {
            self.pauses
                .remove(group.as_bytes())
                .map_err(|e| self.err(e))?;
        }
        for notice in changes.notices {
            self.notices
                .insert(Notice::key(notice.seq, notice.target), notice.event)
                .map_err(|e| self.err(e))?;
        }
        for (seq, target) in changes.notices_done {
            self.notices
                .remove(Notice::key(seq, target))
                .map_err(|e| self.err(e))?;
        }
        if let Some(next) = changes.next_notice {
            self.meta
                .insert(NEXT_NOTICE_KEY, &next.to_be_bytes())
                .map_err(|e| self.err(e))?;
        }
        self.apply_audit(changes.audit, changes.audit_before, changes.owners)
    }

    /// The audit and ownership part of a group of changes.
    fn apply_audit(
        &self,
        audit: Vec<AuditEntry>,
        before: Option<u64>,
        owners: Vec<(SessionId, String)>,
    ) -> Result<()> {
        for entry in audit {
            self.audit
                .insert(AuditEntry::key(entry.at_ms, entry.seq), entry.record)
                .map_err(|e| self.err(e))?;
        }
        if let Some(before) = before {
            self.prune_audit(before)?;
        }
        for (id, name) in owners {
            self.owners
                .insert(session_key(id), name.as_bytes())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Removes the audit records older than `before` (ms).
    fn prune_audit(&self, before: u64) -> Result<()> {
        let end = AuditEntry::key(before, 0);
        for item in self.audit.range(..end) {
            let (key, _) = item.map_err(|e| self.err(e))?;
            self.audit.remove(key).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Audit records from `since_ms` on, the newest `limit` of them.
    pub(crate) fn audit(&self, since_ms: u64, limit: usize) -> Result<(Vec<AuditEntry>, bool)> {
        let mut newest_first = Vec::new();
        let mut truncated = false;
        for item in self.audit.range(AuditEntry::key(since_ms, 0)..).rev() {
            if newest_first.len() == limit {
                truncated = true;
                break;
            }
            let (key, record) = item.map_err(|e| self.err(e))?;
            let (at_ms, seq) = audit_key(&key)?;
            newest_first.push(AuditEntry {
                at_ms,
                seq,
                record: record.to_vec(),
            });
        }
        newest_first.reverse();
        Ok((newest_first, truncated))
    }

    /// One past the highest sequence number of the last audit record.
    pub(crate) fn next_audit_seq(&self) -> Result<u64> {
        match self.audit.last().map_err(|e| self.err(e))? {
            Some((key, _)) => Ok(audit_key(&key)?.1 + 1),
            None => Ok(0),
        }
    }

    /// Every job, in key order. sled's walk and the records' decoding take
    /// about as long each: this thread walks while another decodes, a
    /// batch of values at a time (half the time of a million-job start).
    fn load_jobs(&self, expected: usize) -> Result<Vec<JobRecord>> {
        const BATCH: usize = 4096;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<sled::IVec>>(4);
        std::thread::scope(|scope| {
            let decoder = scope.spawn(move || -> Result<Vec<JobRecord>> {
                let mut jobs = Vec::with_capacity(expected);
                let mut policies = SharedPolicies::default();
                for batch in rx {
                    for value in batch {
                        let mut job: JobRecord = codec::decode(&value).map_err(corrupt)?;
                        job.policy = policies.share(job.policy);
                        jobs.push(job);
                    }
                }
                Ok(jobs)
            });
            let walked = (|| {
                let mut batch = Vec::with_capacity(BATCH);
                for item in self.jobs.iter() {
                    batch.push(item.map_err(|e| self.err(e))?.1);
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        if tx.send(full).is_err() {
                            break; // the decoder stopped at a bad record
                        }
                    }
                }
                let _ = tx.send(batch);
                Ok(())
            })();
            drop(tx);
            let decoded = decoder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            walked.and(decoded)
        })
    }

    /// Reads every session and job.
    pub(crate) fn load(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        for item in self.sessions.iter() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            snap.sessions.push(codec::decode(&v).map_err(corrupt)?);
        }
        // Room for every job the sessions count (sled's `len` would walk
        // the whole tree once more: a second of a million-job start).
        snap.jobs = self.load_jobs(snap.sessions.iter().map(|s| s.job_count as usize).sum())?;
        snap.next_session = self.u64_or(NEXT_SESSION_KEY, 1, "next session id")?;
        for item in self.pauses.iter() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            snap.pauses.push(codec::decode(&v).map_err(corrupt)?);
        }
        for item in self.notices.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            snap.notices.push(notice_of(&k, v.to_vec())?);
        }
        snap.next_notice = self.u64_or(NEXT_NOTICE_KEY, 1, "next notification number")?;
        snap.next_audit = self.next_audit_seq()?;
        for item in self.owners.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("session owner key".into()))?,
            );
            let name = String::from_utf8_lossy(&v).into_owned();
            snap.owners.push((SessionId(id), name));
        }
        Ok(snap)
    }

    /// A counter in `meta`, `default` when it was never written.
    fn u64_or(&self, key: &[u8], default: u64, what: &str) -> Result<u64> {
        match self.meta.get(key).map_err(|e| self.err(e))? {
            Some(v) => Ok(u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(what.into()))?,
            )),
            None => Ok(default),
        }
    }

    pub(crate) fn output(&self, key: JobKey) -> Result<Option<Vec<u8>>> {
        Ok(self
            .outputs
            .get(job_key(key))
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    pub(crate) fn patch(&self, key: JobKey) -> Result<Option<Vec<u8>>> {
        Ok(self
            .patches
            .get(job_key(key))
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }
}

/// An outbox entry read back: its key is (seq, target).
pub(crate) fn notice_of(key: &[u8], event: Vec<u8>) -> Result<Notice> {
    let bad = || StoreError::Corrupt(format!("outbox key of {} bytes", key.len()));
    let seq = u64::from_be_bytes(
        key.get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let target = u64::from_be_bytes(
        key.get(8..)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    Ok(Notice { seq, target, event })
}

/// An audit key read back: (time, seq).
pub(crate) fn audit_key(key: &[u8]) -> Result<(u64, u64)> {
    let bad = || StoreError::Corrupt(format!("audit key of {} bytes", key.len()));
    let at = key
        .get(..8)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let seq = key
        .get(8..)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    Ok((u64::from_be_bytes(at), u64::from_be_bytes(seq)))
}
