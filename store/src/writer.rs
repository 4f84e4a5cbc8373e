//! The single writer of the store: commits groups of changes (log append,
//! one fdatasync, then sled), checkpoints, and gets back on its feet after
//! a failed write.
//!
//! A commit either is durable or leaves no trace: when the append or the
//! sync fails, the log is cut back to its last synced length and sled is
//! not touched, so what is durable is what was there before. A commit that
//! would leave less than `RESERVE_BYTES` free fails before it writes
//! anything: sled writes its own files after the log, and must not be the
//! one to meet a full disk, because a sled that failed to write cannot even
//! be read (nor reopened) until there is room again. Once the sync
//! succeeded the group is durable whatever sled does next; if sled fails
//! anyway, its memory may lack part of the log, so the log is not emptied,
//! and sled is closed and reopened from the log before it is used again
//! (`restore_sled`).

use crate::files::{self, PROBE_FILE};
use crate::migrate;
use crate::trees::Trees;
use crate::wal::{self, Wal};
use crate::{Behind, Changes, Result, Snapshot, Store, StoreError, SCHEMA_VERSION};
use overlay::overlay;
use std::sync::PoisonError;

mod overlay;

/// Log size past which a commit also checkpoints.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// Free space a commit leaves on the data directory's file system, for
/// sled's writes (512 KiB segments) and a checkpoint's.
pub const RESERVE_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes the disk must take (beyond the reserve) before writes resume.
const PROBE_BYTES: u64 = 1024 * 1024;

/// Change sets the log holds (durable) that sled has not taken yet: from
/// `StoreWriter::log`, for `StoreWriter::apply` or `defer`.
#[must_use = "what the log holds goes to sled through `apply` or `defer`"]
pub struct Logged {
    groups: Vec<Changes>,
    bytes: u64,
}

impl Logged {
    /// Bytes the log took for them: about what encoding them allocated.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The single writer of the store. Blocking: use it off the actors' threads.
pub struct StoreWriter {
    store: Store,
    wal: Wal,
    /// Change sets the log holds that sled is yet to take (`defer`).
    deferred: Vec<Changes>,
    /// sled failed to write since it was opened: it may lack part of the
    /// log, or refuse even reads. The log is kept until sled is reopened.
    sled_failed: bool,
    /// A due checkpoint was put off (said once, not at every commit).
    checkpoint_postponed: bool,
    /// How long the last commit's fdatasync took.
    last_sync: std::time::Duration,
}

impl StoreWriter {
    pub(crate) fn new(store: Store, wal: Wal) -> StoreWriter {
        StoreWriter {
            store,
            wal,
            deferred: Vec::new(),
            sled_failed: false,
            checkpoint_postponed: false,
            last_sync: std::time::Duration::ZERO,
        }
    }

    /// How long the last commit's fdatasync of the log took (for metrics).
    pub fn last_sync(&self) -> std::time::Duration {
        self.last_sync
    }

    /// Commits a group of change sets: one log frame each, one fdatasync,
    /// then sled. `Ok`: all of it is durable. `Err`: none of it is, and
    /// nothing of it reached sled.
    pub fn commit(&mut self, groups: Vec<Changes>) -> Result<()> {
        let logged = self.log(groups)?;
        self.apply(logged);
        Ok(())
    }

    /// The first half of `commit`: the group's log frames and their
    /// fdatasync. `Ok`: all of it is durable (it may be acknowledged), and
    /// what it returns goes to `apply`, or to `defer` and later
    /// `apply_deferred`, before what it changed is read from sled. `Err`:
    /// none of it is durable.
    pub fn log(&mut self, groups: Vec<Changes>) -> Result<Logged> {
        let groups: Vec<Changes> = groups.into_iter().filter(|c| !c.is_empty()).collect();
        if groups.is_empty() {
            return Ok(Logged { groups, bytes: 0 });
        }
        if self.sled_failed {
            self.restore_sled()?;
        }
        // sled takes the log's frames before any new one.
        self.catch_up()?;
        let bodies = groups
            .iter()
            .map(wal::encode_changes)
            .collect::<Result<Vec<_>>>()?;
        let frames: u64 = bodies.iter().map(|b| b.len() as u64 + 8).sum();
        // The log's frames (and the room it may grow into), then sled's
        // writes of the same records.
        self.ensure_room(Wal::growth(frames).saturating_add(frames.saturating_mul(2)))?;
        self.wal.append(&bodies)?;
        let syncing = std::time::Instant::now();
        self.wal.sync()?;
        self.last_sync = syncing.elapsed();
        Ok(Logged {
            groups,
            bytes: frames,
        })
    }

    /// The second half of `commit`: sled takes what the log holds (and
    /// whatever was deferred before it). It cannot lose anything: when
    /// sled fails, it is reopened from the log.
    pub fn apply(&mut self, logged: Logged) {
        self.defer(logged);
        self.apply_deferred();
    }

    /// Keeps what the log holds for a later `apply_deferred`, so that a
    /// job written twice in the meantime (assigned, then ended) goes to
    /// sled once. Nothing is at risk meanwhile: the log holds it, and a
    /// checkpoint, which empties the log, applies it first.
    pub fn defer(&mut self, logged: Logged) {
        self.deferred.extend(logged.groups);
    }

    /// Change sets logged and deferred, not in sled yet.
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }

    /// sled takes every deferred change set, in order; of a job record
    /// written more than once among them, only the last.
    pub fn apply_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        match self.sled_takes_deferred() {
            Err(e) => self.on_sled_failure(e),
            Ok(()) => self.checkpoint_when_due(),
        }
    }

    fn sled_takes_deferred(&mut self) -> Result<()> {
        let mut groups = std::mem::take(&mut self.deferred);
        latest_job_records_only(&mut groups);
        self.store
            .with(|trees| groups.into_iter().try_for_each(|c| trees.apply(c)))
    }

    /// Rewrites every record of schema `from` in the current schema: one
    /// log frame holding them all and the new version, synced, then sled,
    /// then a checkpoint, so the log holds no old record afterwards. A
    /// crash at any point leaves either the old store (migrated again at
    /// the next open) or the whole migration in the log (replayed).
    pub(crate) fn migrate(&mut self, from: u32) -> Result<()> {
        let (changes, counts) = self.store.with(|trees| migrate::rewrite(trees, from))?;
        let body = wal::encode_migration(&changes, SCHEMA_VERSION)?;
        let frame = body.len() as u64 + 8;
        self.ensure_room(Wal::growth(frame).saturating_add(frame.saturating_mul(2)))?;
        self.wal.append(&[body])?;
        self.wal.sync()?;
        let applied = self.store.with(|trees| {
            trees.apply(changes)?;
            trees.set_schema_version(SCHEMA_VERSION)
        });
        if let Err(e) = applied.and_then(|()| self.checkpoint()) {
            self.sled_failed = true;
            return Err(e);
        }
        tracing::info!(
            from,
            to = SCHEMA_VERSION,
            sessions = counts.sessions,
            jobs = counts.jobs,
            attempts = counts.attempts,
            "migrated the store to a new schema version"
        );
        Ok(())
    }

    /// Flushes sled, then empties the log. Refused while sled may lack
    /// part of the log (the log is all there is of it then).
    pub fn checkpoint(&mut self) -> Result<()> {
        if self.sled_failed {
            return Err(StoreError::Closed(self.store.shared.dir.join("store")));
        }
        if let Err(e) = self.replay_behind() {
            self.sled_failed = true;
            return Err(e);
        }
        // The log is emptied below: sled takes what is deferred first (after
        // the older frames a start left it).
        if let Err(e) = self.sled_takes_deferred() {
            self.sled_failed = true;
            return Err(e);
        }
        if let Err(e) = self.store.with_sled(Trees::flush) {
            self.sled_failed = true;
            return Err(e);
        }
        self.wal.truncate()
    }

    /// Whether the store takes writes again after a failed one: there is
    /// room beyond the reserve and the disk takes a write, sled is
    /// reopened if it failed, and the log is cut back to its last synced
    /// length if that failed too.
    pub fn probe(&mut self) -> Result<()> {
        if self.sled_failed {
            self.restore_sled()?;
        } else {
            self.ensure_room(PROBE_BYTES)?;
            self.probe_space(PROBE_BYTES)?;
        }
        self.wal.repair()
    }

    /// Replays into sled the log frames it lacks after a start (see
    /// `Behind`), then checkpoints. The commit thread calls it first
    /// thing; until then, or if it fails, each commit tries it again.
    pub fn catch_up(&mut self) -> Result<()> {
        let replayed = matches!(*self.store.behind(), Behind::Frames(_) | Behind::Replayed);
        if replayed {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// The first part of `catch_up` (and of a checkpoint, which must never
    /// empty a log sled has not taken in): sled takes the frames it lacks.
    fn replay_behind(&mut self) -> Result<()> {
        self.store.catch_up()?;
        let mut behind = self.store.behind();
        if matches!(*behind, Behind::Replayed) {
            *behind = Behind::No;
        }
        Ok(())
    }

    /// What the manager starts from: sled, with the log frames it lacks
    /// laid over it (`Behind`), read without waiting for sled to take them.
    pub fn start_snapshot(&self) -> Result<Snapshot> {
        let behind = self.store.behind();
        let snapshot = self.store.with_sled(Trees::load)?;
        match &*behind {
            Behind::Frames(frames) => overlay(snapshot, frames),
            Behind::No | Behind::Replayed => Ok(snapshot),
        }
    }

    /// What is durable: sled, with the log's frames laid over it (sled may
    /// lack part of the log after it failed to write; otherwise the frames
    /// change nothing). After a failed commit, this is what the manager
    /// rolls its model back to.
    pub fn durable_snapshot(&mut self) -> Result<Snapshot> {
        if self.sled_failed {
            // A sled that failed to write may refuse reads too.
            self.restore_sled()?;
        }
        let snapshot = self.store.load()?;
        let frames = self.wal.frames()?;
        if frames.is_empty() {
            return Ok(snapshot);
        }
        overlay(snapshot, &frames)
    }

    /// A read handle on the same store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Fails unless writing `bytes` leaves `RESERVE_BYTES` free.
    fn ensure_room(&self, bytes: u64) -> Result<()> {
        let dir = &self.store.shared.dir;
        let available = files::available_bytes(dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        if available < bytes.saturating_add(RESERVE_BYTES) {
            return Err(StoreError::NoRoom {
                dir: dir.clone(),
                available,
                needed: bytes,
            });
        }
        Ok(())
    }

    fn probe_space(&self, bytes: u64) -> Result<()> {
        let dir = &self.store.shared.dir;
        files::probe_space(dir, bytes).map_err(|source| StoreError::Io {
            path: dir.join(PROBE_FILE),
            source,
        })
    }

    fn checkpoint_when_due(&mut self) {
        if self.wal.len() <= CHECKPOINT_BYTES {
            return;
        }
        // A checkpoint writes about the log's worth into sled's files.
        match self
            .ensure_room(self.wal.len())
            .and_then(|()| self.checkpoint())
        {
            Ok(()) => self.checkpoint_postponed = false,
            Err(e) if self.sled_failed => self.on_sled_failure(e),
            Err(e) if !self.checkpoint_postponed => {
                self.checkpoint_postponed = true;
                tracing::warn!("checkpoint postponed: {e}; the log keeps every change");
            }
            Err(_) => {}
        }
    }

    fn on_sled_failure(&mut self, e: StoreError) {
        self.sled_failed = true;
        tracing::error!(
            "{e}; nothing committed is lost (the log holds it): reopening sled from the log"
        );
        match self.restore_sled() {
            Ok(()) => tracing::info!("reopened sled from the log"),
            Err(e) => tracing::error!("{e}; sled is reopened before it is used again"),
        }
    }

    /// Closes sled and opens it again from its files and the log.
    fn restore_sled(&mut self) -> Result<()> {
        // Opening sled writes, and the reopened sled takes in the whole log
        // and checkpoints it: ask the disk for that much first, rather than
        // close sled for nothing.
        self.ensure_room(self.wal.len().saturating_mul(2).max(PROBE_BYTES))?;
        self.probe_space(PROBE_BYTES)?;
        let shared = self.store.shared.clone();
        let mut slot = shared.trees.write().unwrap_or_else(PoisonError::into_inner);
        // Closing releases sled's lock on its files, which the open takes.
        *slot = None;
        let trees = slot.insert(Trees::open(&shared.dir, shared.cache_bytes)?);
        for items in self.wal.frames()? {
            trees.replay(&items)?;
        }
        drop(slot);
        // The whole log is in sled now, whatever a start left behind.
        *self.store.behind() = Behind::Replayed;
        shared
            .caught_up
            .store(true, std::sync::atomic::Ordering::Release);
        self.sled_failed = false;
        if let Err(e) = self.checkpoint() {
            if self.sled_failed {
                return Err(e);
            }
            tracing::warn!("{e}; the log is emptied at a later checkpoint");
        }
        Ok(())
    }
}

/// Drops each job record that a later change set writes again: sled takes
/// the last one only, which leaves it as writing every one in turn would
/// (each is a whole record under its key, and nothing reads sled between).
fn latest_job_records_only(groups: &mut [Changes]) {
    if groups.len() < 2 {
        return;
    }
    let mut last = std::collections::HashMap::new();
    for (i, changes) in groups.iter().enumerate() {
        for job in &changes.jobs {
            last.insert(job.key, i);
        }
    }
    for (i, changes) in groups.iter_mut().enumerate() {
        changes.jobs.retain(|job| last.get(&job.key) == Some(&i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{session, stored};
    use crate::wal::Item;
    use crate::DEFAULT_CACHE_BYTES;
    use aam_protocol::SessionId;

    fn submission(id: u64) -> Changes {
        Changes {
            sessions: vec![session(id)],
            jobs: vec![stored(id, 0)],
            next_session: Some(id + 1),
            ..Default::default()
        }
    }

    fn ids(snapshot: &Snapshot) -> Vec<u64> {
        snapshot.sessions.iter().map(|s| s.id.0).collect()
    }

    #[test]
    fn the_durable_snapshot_lays_the_log_over_what_sled_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        writer.commit(vec![submission(1), submission(2)]).unwrap();
        writer
            .commit(vec![Changes {
                removed: vec![(SessionId(1), 1)],
                ..Default::default()
            }])
            .unwrap();
        assert_eq!(ids(&writer.durable_snapshot().unwrap()), vec![2]);
        // sled failed partway: it lacks session 2's records, still has 1's.
        store
            .with(|t| {
                t.replay(&[Item::Removed(2, 1)])?;
                t.apply(submission(1))
            })
            .unwrap();
        let durable = writer.durable_snapshot().unwrap();
        assert_eq!(ids(&durable), vec![2]);
        assert_eq!(durable.jobs.len(), 1);
        assert_eq!(durable.next_session, 3);
    }

    #[test]
    fn a_failed_sled_is_reopened_from_the_log_before_it_is_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        writer.commit(vec![submission(1)]).unwrap();
        // sled lost session 1 from its memory before it failed to write.
        store.with(|t| t.replay(&[Item::Removed(1, 1)])).unwrap();
        writer.sled_failed = true;
        assert!(writer.checkpoint().is_err(), "the log was emptied");
        assert_eq!(ids(&writer.durable_snapshot().unwrap()), vec![1]);
        writer.commit(vec![submission(2)]).unwrap();
        assert!(!writer.sled_failed);
        assert_eq!(ids(&store.load().unwrap()), vec![1, 2], "read handle");
        drop((store, writer));
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(ids(&store.load().unwrap()), vec![1, 2]);
    }

    #[test]
    fn what_the_log_holds_is_durable_before_sled_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            let logged = writer.log(vec![submission(1), submission(3)]).unwrap();
            // Acknowledged here; sled has nothing of it yet.
            assert_eq!(ids(&store.load().unwrap()), Vec::<u64>::new());
            let durable = writer.durable_snapshot().unwrap();
            assert_eq!(ids(&durable), vec![1, 3]);
            // Read from the log, equal run policies are one copy too.
            let [a, b] = [0, 1].map(|i| std::sync::Arc::clone(&durable.jobs[i].policy));
            assert!(std::sync::Arc::ptr_eq(&a, &b));
            // The process dies before `apply`.
            std::mem::forget(logged);
        }
        let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(
            ids(&store.load().unwrap()),
            vec![1, 3],
            "replayed from the log"
        );
        let logged = writer.log(vec![submission(2)]).unwrap();
        writer.apply(logged);
        assert_eq!(ids(&store.load().unwrap()), vec![1, 2, 3]);
    }

    /// A commit logged, then a crash before sled took it.
    fn crash_after_logging(dir: &std::path::Path) {
        let (_store, mut writer) = Store::open(dir, DEFAULT_CACHE_BYTES).unwrap();
        let mut changes = submission(1);
        changes.outputs = vec![(crate::tests::job(1, 0).key, b"out".to_vec())];
        changes.audit = vec![crate::AuditEntry {
            at_ms: 5,
            seq: 7,
            record: b"r7".to_vec(),
        }];
        std::mem::forget(writer.log(vec![changes]).unwrap());
    }

    fn in_sled(store: &Store) -> Vec<u64> {
        ids(&store.with_sled(Trees::load).unwrap())
    }

    #[test]
    fn a_start_serves_from_the_log_while_sled_is_behind_and_reads_wait_for_sled() {
        let dir = tempfile::tempdir().unwrap();
        crash_after_logging(dir.path());
        let (store, writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(in_sled(&store), Vec::<u64>::new(), "the open did not wait");
        let start = writer.start_snapshot().unwrap();
        assert_eq!(ids(&start), vec![1]);
        assert_eq!((start.jobs.len(), start.next_session), (1, 2));
        assert_eq!(start.next_audit, 8, "numbered after the logged record");
        // A read gets what the log holds: sled takes the frames first.
        let key = crate::tests::job(1, 0).key;
        assert_eq!(store.output(key).unwrap().as_deref(), Some(&b"out"[..]));
        assert_eq!(in_sled(&store), vec![1]);
        assert_eq!(store.next_audit_seq().unwrap(), 8);
        drop((store, writer));

        // Killed again before the commit thread caught up: nothing lost.
        let dir = tempfile::tempdir().unwrap();
        crash_after_logging(dir.path());
        drop(Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap());
        let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(ids(&writer.start_snapshot().unwrap()), vec![1]);
        // What the commit thread does first: replay, then empty the log.
        writer.catch_up().unwrap();
        assert_eq!(in_sled(&store), vec![1]);
        assert_eq!(writer.wal.len(), 0, "checkpointed");
    }

    #[test]
    fn a_checkpoint_never_empties_a_log_that_sled_has_not_taken_in() {
        let dir = tempfile::tempdir().unwrap();
        crash_after_logging(dir.path());
        {
            let (_store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer.checkpoint().unwrap();
        }
        let (store, writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(in_sled(&store), vec![1], "emptied before sled took it");
        assert_eq!(ids(&writer.start_snapshot().unwrap()), vec![1]);
    }

    #[test]
    fn a_commit_right_after_a_start_makes_sled_take_the_log_first() {
        let dir = tempfile::tempdir().unwrap();
        crash_after_logging(dir.path());
        {
            let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            writer.commit(vec![submission(2)]).unwrap();
            // Had the commit gone to sled alone, session 1 would be only in
            // the log, and sled would hold 2 without it.
            assert_eq!(in_sled(&store), vec![1, 2]);
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(in_sled(&store), vec![1, 2], "after a clean reopen too");
    }

    /// Job (1, 0) as a change set that writes it with `status`.
    fn job_now(status: aam_protocol::model::JobStatus) -> Changes {
        let mut job = crate::tests::job(1, 0);
        job.status = status;
        Changes {
            jobs: vec![crate::StoredJob::encode(&job)],
            ..Default::default()
        }
    }

    #[test]
    fn what_is_logged_counts_the_log_bytes_it_took() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let before = writer.wal.len();
        let one = writer.log(vec![submission(1)]).unwrap();
        let two = writer.log(vec![submission(2), submission(3)]).unwrap();
        assert!(one.bytes() > 8, "a frame's header and its body");
        assert!(two.bytes() > one.bytes());
        assert_eq!(writer.wal.len() - before, one.bytes() + two.bytes());
        let nothing = writer.log(vec![Changes::default()]).unwrap();
        assert_eq!(nothing.bytes(), 0, "nothing was written");
        for logged in [one, two, nothing] {
            writer.defer(logged);
        }
    }

    #[test]
    fn deferred_change_sets_reach_sled_in_order_each_job_at_its_last_record() {
        use aam_protocol::model::JobStatus;
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let groups = [
            vec![submission(1), submission(2)],
            vec![job_now(JobStatus::Running)],
            vec![
                Changes {
                    removed: vec![(SessionId(2), 1)],
                    ..Default::default()
                },
                job_now(JobStatus::Succeeded),
            ],
        ];
        for group in groups {
            let logged = writer.log(group).unwrap();
            writer.defer(logged);
        }
        assert_eq!(writer.deferred(), 5);
        assert_eq!(in_sled(&store), Vec::<u64>::new(), "deferred");
        let durable = writer.durable_snapshot().unwrap();
        assert_eq!(ids(&durable), vec![1], "from the log meanwhile");
        assert_eq!(durable.jobs[0].status, JobStatus::Succeeded);
        writer.apply_deferred();
        assert_eq!(writer.deferred(), 0);
        let in_sled = store.with_sled(Trees::load).unwrap();
        assert_eq!(ids(&in_sled), vec![1]);
        assert_eq!(in_sled.jobs.len(), 1, "session 2's job went with it");
        assert_eq!(in_sled.jobs[0].status, JobStatus::Succeeded, "the last");
    }

    #[test]
    fn a_job_written_again_later_goes_to_sled_once_as_its_last_record() {
        use aam_protocol::model::JobStatus;
        let mut groups = vec![
            submission(1),
            job_now(JobStatus::Running),
            job_now(JobStatus::Succeeded),
        ];
        latest_job_records_only(&mut groups);
        let kept: Vec<usize> = groups.iter().map(|c| c.jobs.len()).collect();
        assert_eq!(kept, vec![0, 0, 1]);
        assert_eq!(
            groups[2].jobs[0].decode().unwrap().status,
            JobStatus::Succeeded
        );
        assert_eq!(groups[0].sessions.len(), 1, "the rest is kept");
    }

    #[test]
    fn a_checkpoint_hands_sled_what_is_deferred_before_it_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, mut writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            let logged = writer.log(vec![submission(1)]).unwrap();
            writer.defer(logged);
            writer.checkpoint().unwrap();
            assert_eq!(writer.wal.len(), 0);
            assert_eq!(in_sled(&store), vec![1]);
        }
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(in_sled(&store), vec![1], "after a reopen");
    }
}
