//! The write-ahead log that makes a group of changes durable with one
//! append and one fdatasync, instead of a sled flush (which hands its I/O to
//! a pool of threads and costs several times more).
//!
//! Each change set is one frame: `[len: u32][crc32: u32][items]`, and each
//! item is a kind byte and a length-prefixed body. A group of frames is
//! committed by appending them and syncing; when either fails, the file is
//! cut back to its last synced length, so a frame is never written behind a
//! torn one. On open, every whole frame is replayed into sled (upserts, so
//! replaying twice is harmless); an unfinished last write was never
//! acknowledged and is dropped, but damage followed by intact frames is not
//! a torn tail: the log is refused (`scan`) until `recover` salvages it. A
//! checkpoint flushes sled and empties the log.

mod recover;
mod scan;

pub(crate) use recover::recover;
pub use recover::Recovery;

use crate::files::{open_private, sync_dir};
use crate::{job_key, session_key, Changes, Notice, Result, StoreError};
use aam_protocol::codec;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const KIND_JOB: u8 = 1;
const KIND_OUTPUT: u8 = 2;
const KIND_SESSION: u8 = 3;
const KIND_NEXT_SESSION: u8 = 4;
const KIND_REMOVED: u8 = 5;
const KIND_PAUSE: u8 = 6;
const KIND_PAUSE_ENDED: u8 = 7;
const KIND_SCHEMA: u8 = 8;
const KIND_PATCH: u8 = 9;
const KIND_NOTICE: u8 = 10;
const KIND_NOTICE_DONE: u8 = 11;
const KIND_NEXT_NOTICE: u8 = 12;
const KIND_AUDIT: u8 = 13;
const KIND_AUDIT_BEFORE: u8 = 14;
const KIND_OWNER: u8 = 15;

/// One decoded item of a frame.
pub(crate) enum Item {
    Job([u8; 12], Vec<u8>),
    Output([u8; 12], Vec<u8>),
    /// A worktree job's patch, by job (empty: it has none any more).
    Patch([u8; 12], Vec<u8>),
    Session([u8; 8], Vec<u8>),
    NextSession(u64),
    /// A session deleted with its jobs and outputs: (id, job count).
    Removed(u64, u32),
    /// A limit group's pause: (group, encoded `LimitPause`).
    Pause(Vec<u8>, Vec<u8>),
    /// A limit group whose pause record is gone (its backoff reset).
    PauseEnded(Vec<u8>),
    /// The records before it in the log are of this schema version (the
    /// last item of a migration).
    Schema(u32),
    /// A notification put in the outbox: (seq and target, event).
    Notice([u8; 16], Vec<u8>),
    /// A notification taken out of the outbox (delivered or given up).
    NoticeDone([u8; 16]),
    NextNotice(u64),
    /// An audit record: (time and seq, record).
    Audit([u8; 16], Vec<u8>),
    /// Audit records older than this time go.
    AuditBefore(u64),
    /// The token a session was submitted by: (session, name).
    Owner([u8; 8], Vec<u8>),
}

fn push_item(buf: &mut Vec<u8>, kind: u8, body: &[u8]) {
    push_parts(buf, kind, &[body]);
}

/// An item whose body is `parts` one after the other, written in place
/// (no body assembled apart first).
fn push_parts(buf: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(ITEM_HEAD + len);
    buf.push(kind);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// An item's kind byte and body length.
const ITEM_HEAD: usize = 5;

/// Encodes a group of changes as one frame body, in the order they must be
/// applied (jobs before their session, as `Store::apply` does).
pub(crate) fn encode_changes(changes: &Changes) -> Result<Vec<u8>> {
    let corrupt = |e: codec::CodecError| StoreError::Corrupt(e.to_string());
    // The bulk of a commit, sized up front: the buffer is not regrown
    // for each record (the commit thread's share of a short job).
    let records: usize = changes
        .jobs
        .iter()
        .map(|j| j.bytes().map_or(0, <[u8]>::len) + 12 + ITEM_HEAD)
        .chain(
            changes
                .outputs
                .iter()
                .map(|(_, o)| o.len() + 12 + ITEM_HEAD),
        )
        .chain(
            changes
                .patches
                .iter()
                .map(|(_, p)| p.len() + 12 + ITEM_HEAD),
        )
        .sum();
    let mut buf = Vec::with_capacity(records);
    for j in &changes.jobs {
        push_parts(&mut buf, KIND_JOB, &[&job_key(j.key), j.bytes()?]);
    }
    for (key, out) in &changes.outputs {
        push_parts(&mut buf, KIND_OUTPUT, &[&job_key(*key), out]);
    }
    for (key, patch) in &changes.patches {
        push_parts(&mut buf, KIND_PATCH, &[&job_key(*key), patch]);
    }
    for s in &changes.sessions {
        let session = codec::encode(s).map_err(corrupt)?;
        push_parts(&mut buf, KIND_SESSION, &[&session_key(s.id), &session]);
    }
    if let Some(next) = changes.next_session {
        push_item(&mut buf, KIND_NEXT_SESSION, &next.to_be_bytes());
    }
    for (id, count) in &changes.removed {
        push_parts(
            &mut buf,
            KIND_REMOVED,
            &[&id.0.to_be_bytes(), &count.to_be_bytes()],
        );
    }
    for pause in &changes.pauses {
        let group = pause.group.as_bytes();
        let group_len = u16::try_from(group.len()).map_err(|_| {
            StoreError::Corrupt(format!("limit group name of {} bytes", group.len()))
        })?;
        let record = codec::encode(pause).map_err(corrupt)?;
        push_parts(
            &mut buf,
            KIND_PAUSE,
            &[&group_len.to_be_bytes(), group, &record],
        );
    }
    for group in &changes.pauses_ended {
        push_item(&mut buf, KIND_PAUSE_ENDED, group.as_bytes());
    }
    for notice in &changes.notices {
        let key = Notice::key(notice.seq, notice.target);
        push_parts(&mut buf, KIND_NOTICE, &[&key, &notice.event]);
    }
    for &(seq, target) in &changes.notices_done {
        push_item(&mut buf, KIND_NOTICE_DONE, &Notice::key(seq, target));
    }
    if let Some(next) = changes.next_notice {
        push_item(&mut buf, KIND_NEXT_NOTICE, &next.to_be_bytes());
    }
    for entry in &changes.audit {
        let key = crate::AuditEntry::key(entry.at_ms, entry.seq);
        push_parts(&mut buf, KIND_AUDIT, &[&key, &entry.record]);
    }
    if let Some(before) = changes.audit_before {
        push_item(&mut buf, KIND_AUDIT_BEFORE, &before.to_be_bytes());
    }
    for (session, name) in &changes.owners {
        push_parts(
            &mut buf,
            KIND_OWNER,
            &[&session_key(*session), name.as_bytes()],
        );
    }
    Ok(buf)
}

/// One frame body rewriting every record in the current schema, then
/// marking the schema version: a migration, durable (or not) as a whole.
pub(crate) fn encode_migration(changes: &Changes, version: u32) -> Result<Vec<u8>> {
    let mut buf = encode_changes(changes)?;
    push_item(&mut buf, KIND_SCHEMA, &version.to_be_bytes());
    if u32::try_from(buf.len()).is_err() {
        return Err(StoreError::Corrupt(format!(
            "a migration of {} bytes does not fit one log frame",
            buf.len()
        )));
    }
    Ok(buf)
}

/// A pause item's body: the group's length and name, then the record.
fn decode_pause(data: &[u8]) -> Option<Item> {
    let len = u16::from_be_bytes(data.get(..2)?.try_into().ok()?) as usize;
    let group = data.get(2..2 + len)?.to_vec();
    Some(Item::Pause(group, data[2 + len..].to_vec()))
}

fn decode_items(mut body: &[u8]) -> Option<Vec<Item>> {
    let mut items = Vec::new();
    while !body.is_empty() {
        let kind = body[0];
        let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
        let data = body.get(5..5 + len)?;
        body = &body[5 + len..];
        items.push(match kind {
            KIND_JOB => Item::Job(data.get(..12)?.try_into().ok()?, data[12..].to_vec()),
            KIND_OUTPUT => Item::Output(data.get(..12)?.try_into().ok()?, data[12..].to_vec()),
            KIND_PATCH => Item::Patch(data.get(..12)?.try_into().ok()?, data[12..].to_vec()),
            KIND_SESSION => Item::Session(data.get(..8)?.try_into().ok()?, data[8..].to_vec()),
            KIND_NEXT_SESSION => Item::NextSession(u64::from_be_bytes(data.try_into().ok()?)),
            KIND_REMOVED if data.len() == 12 => Item::Removed(
                u64::from_be_bytes(data[..8].try_into().ok()?),
                u32::from_be_bytes(data[8..].try_into().ok()?),
            ),
            KIND_PAUSE => decode_pause(data)?,
            KIND_PAUSE_ENDED => Item::PauseEnded(data.to_vec()),
            KIND_SCHEMA => Item::Schema(u32::from_be_bytes(data.try_into().ok()?)),
            KIND_NOTICE => Item::Notice(data.get(..16)?.try_into().ok()?, data[16..].to_vec()),
            KIND_NOTICE_DONE => Item::NoticeDone(data.try_into().ok()?),
            KIND_NEXT_NOTICE => Item::NextNotice(u64::from_be_bytes(data.try_into().ok()?)),
            KIND_AUDIT => Item::Audit(data.get(..16)?.try_into().ok()?, data[16..].to_vec()),
            KIND_AUDIT_BEFORE => Item::AuditBefore(u64::from_be_bytes(data.try_into().ok()?)),
            KIND_OWNER => Item::Owner(data.get(..8)?.try_into().ok()?, data[8..].to_vec()),
            _ => return None,
        });
    }
    Some(items)
}

/// Appends one frame holding `body` to `buf`.
pub(crate) fn push_frame(buf: &mut Vec<u8>, body: &[u8]) {
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    buf.extend_from_slice(body);
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// The log file grows this much at a time, zero-filled ahead of the
/// frames: a sync that leaves the file's size as it was writes no inode,
/// which takes about a third off each commit's sync (ext4, measured in
/// BENCHMARKS.md). A region of zeros is never a frame (`scan`).
const GROWTH: u64 = 256 * 1024;

/// The open log. Its file is `len` bytes of synced frames, then the
/// `pending` bytes appended since the last sync, then zeros up to `size`,
/// unless `dirty`.
pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
    pending: u64,
    size: u64,
    /// A failed write, sync or cut may have left the file at another
    /// length than `len`: it is cut back before anything else is written.
    dirty: bool,
}

impl Wal {
    /// Opens (or creates, 0600) the log and returns what it holds, to be
    /// replayed. A torn tail is cut; a damaged log is refused, untouched.
    pub(crate) fn open(path: &Path) -> Result<(Wal, Vec<Vec<Item>>)> {
        let mut file = open_private(path, OpenOptions::new().read(true).write(true).create(true))
            .map_err(|e| io_err(path, e))?;
        // The log may have just been created: its directory entry must be
        // durable before anything written to it is acknowledged.
        let dir = path.parent().unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| io_err(dir, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io_err(path, e))?;
        let (frames, valid) = scan::replayable(&bytes).map_err(|d| d.into_error(path))?;
        let mut size = bytes.len() as u64;
        // Zeros after the frames are the room the log grew into.
        if bytes[valid..].iter().any(|b| *b != 0) {
            // An unfinished last write was never acknowledged. Cut it, or
            // frames appended after it would look like damage.
            tracing::warn!(path = %path.display(), offset = valid, dropped = bytes.len() - valid,
                "dropping an unfinished write at the end of the store's log");
            file.set_len(valid as u64).map_err(|e| io_err(path, e))?;
            file.sync_all().map_err(|e| io_err(path, e))?;
            size = valid as u64;
        }
        let wal = Wal {
            path: path.to_path_buf(),
            file,
            len: valid as u64,
            pending: 0,
            size,
            dirty: false,
        };
        Ok((wal, frames))
    }

    /// Bytes of synced frames.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one frame per body (durable only after `sync`), growing the
    /// file by `GROWTH` when they reach its end. On an error the file is
    /// cut back to its last synced length.
    pub(crate) fn append(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        self.repair()?;
        let frames: usize = bodies.iter().map(|b| b.len() + 8).sum();
        let at = self.len + self.pending;
        let end = at + frames as u64;
        // Grown in the same write: the zeros become durable with the frames.
        let size = if end > self.size {
            (end / GROWTH + 1) * GROWTH
        } else {
            self.size
        };
        let mut buf = Vec::with_capacity(frames + (size.max(end) - end) as usize);
        for body in bodies {
            push_frame(&mut buf, body);
        }
        if size > self.size {
            buf.resize(buf.len() + (size - end) as usize, 0);
        }
        if let Err(e) = self.file.write_all_at(&buf, at) {
            self.rewind();
            return Err(io_err(&self.path, e));
        }
        self.pending += frames as u64;
        self.size = size;
        Ok(())
    }

    /// Bytes an append of `frames` bytes may add to the file.
    pub(crate) fn growth(frames: u64) -> u64 {
        frames + GROWTH
    }

    /// Makes every appended frame durable. On an error the file is cut
    /// back to its last synced length: those frames were never durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if let Err(e) = self.file.sync_data() {
            self.rewind();
            return Err(io_err(&self.path, e));
        }
        self.len += self.pending;
        self.pending = 0;
        Ok(())
    }

    /// After a failed append or sync: drops what was appended since the
    /// last sync. If even the cut fails, the next write retries it first.
    fn rewind(&mut self) {
        self.pending = 0;
        self.dirty = true;
        if let Err(e) = self.repair() {
            tracing::error!(
                "{e}; cutting the log back to {} bytes is retried before its next write",
                self.len
            );
        }
    }

    /// Cuts the file back to `len` (and syncs that) after a failure.
    pub(crate) fn repair(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.file
            .set_len(self.len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| io_err(&self.path, e))?;
        self.size = self.len;
        self.dirty = false;
        Ok(())
    }

    /// Empties the log (after sled holds everything durably).
    pub(crate) fn truncate(&mut self) -> Result<()> {
        self.repair()?;
        if let Err(e) = self.file.set_len(0) {
            self.dirty = true;
            return Err(io_err(&self.path, e));
        }
        // Cut: whatever the sync says, the frames are in sled and must
        // never come back as a region of zeros ahead of new frames.
        self.len = 0;
        self.size = 0;
        if let Err(e) = self.file.sync_all() {
            self.dirty = true;
            return Err(io_err(&self.path, e));
        }
        Ok(())
    }

    /// The synced frames, read back from the file (to rebuild what is
    /// durable, or replay it into a reopened sled).
    pub(crate) fn frames(&self) -> Result<Vec<Vec<Item>>> {
        let mut bytes = vec![0u8; self.len as usize];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| io_err(&self.path, e))?;
        match scan::replayable(&bytes) {
            Ok((frames, valid)) if valid == bytes.len() => Ok(frames),
            Ok((_, valid)) => Err(scan::Damage::Corrupt {
                at: valid,
                next: None,
            }
            .into_error(&self.path)),
            Err(damage) => Err(damage.into_error(&self.path)),
        }
    }
}

/// Logs for the tests of the log.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The body of a frame holding one item (next session `n`).
    pub fn body(n: u64) -> Vec<u8> {
        let mut b = Vec::new();
        push_item(&mut b, KIND_NEXT_SESSION, &n.to_be_bytes());
        b
    }

    /// A frame holding one job record as `record` encodes it (written as
    /// an older schema would have).
    pub fn job_frame(key: [u8; 12], record: &[u8]) -> Vec<u8> {
        let mut body = key.to_vec();
        body.extend_from_slice(record);
        let mut item = Vec::new();
        push_item(&mut item, KIND_JOB, &body);
        let mut frame = Vec::new();
        push_frame(&mut frame, &item);
        frame
    }

    /// A log of `n` such frames, and the offset each starts at.
    pub fn log(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(bytes.len());
            push_frame(&mut bytes, &body(i));
        }
        (bytes, starts)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{body, log};
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        push_frame(&mut f, body);
        f
    }

    #[test]
    fn an_intact_entry_of_an_unknown_kind_is_an_error_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.wal");
        let mut body = Vec::new();
        push_item(&mut body, 99, b"from the future");
        std::fs::write(&path, frame(&body)).unwrap();
        assert!(Wal::open(&path).is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            frame(&body),
            "the log was cut"
        );
    }

    #[test]
    fn frames_appended_after_a_torn_tail_survive_the_next_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.wal");
        // A crash in the middle of the first frame after a checkpoint.
        std::fs::write(&path, &frame(&body(7))[..6]).unwrap();
        {
            let (mut wal, replay) = Wal::open(&path).unwrap();
            assert!(replay.is_empty());
            wal.append(&[body(7)]).unwrap();
            wal.sync().unwrap();
        }
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(
            replay.len(),
            1,
            "the acknowledged frame was lost behind the torn tail"
        );
    }

    #[test]
    fn a_damaged_log_is_refused_naming_the_file_and_offset_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.wal");
        let (mut bytes, starts) = log(3);
        let second = starts[1];
        bytes[second + 9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(&path).err().expect("a damaged log was opened");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&format!("byte {second}")), "{text}");
        assert!(text.contains("--recover"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the log was changed");
    }

    #[test]
    fn the_log_grows_ahead_of_its_frames_and_a_reopen_appends_right_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.wal");
        let file_len = || std::fs::metadata(&path).unwrap().len();
        {
            let (mut wal, _) = Wal::open(&path).unwrap();
            wal.append(&[body(1), body(2)]).unwrap();
            wal.sync().unwrap();
            assert_eq!(file_len(), GROWTH, "the file did not grow ahead");
            let before = file_len();
            wal.append(&[body(3)]).unwrap();
            wal.sync().unwrap();
            assert_eq!(file_len(), before, "a small append changed the size");
        }
        {
            let (mut wal, replay) = Wal::open(&path).unwrap();
            assert_eq!(replay.len(), 3);
            assert_eq!(file_len(), GROWTH, "the room was cut at open");
            // A frame bigger than the room left: the file grows past it.
            let mut output = vec![0u8; 12];
            output.resize(12 + GROWTH as usize, 0xAB);
            let mut big = Vec::new();
            push_item(&mut big, KIND_OUTPUT, &output);
            wal.append(&[body(4), big, body(5)]).unwrap();
            wal.sync().unwrap();
            assert!(wal.len() > GROWTH, "{}", wal.len());
            assert!(file_len() > wal.len() && file_len() % GROWTH == 0);
        }
        let (wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.len(), 6, "frames appended after a reopen were lost");
        assert_eq!(wal.frames().unwrap().len(), 6);

        // What a crash leaves of a frame in the room is a torn tail.
        let mut bytes = std::fs::read(&path).unwrap();
        let end = wal.len() as usize;
        drop(wal);
        bytes[end..end + 6].copy_from_slice(&frame(&body(9))[..6]);
        std::fs::write(&path, &bytes).unwrap();
        let (wal, replay) = Wal::open(&path).unwrap();
        assert_eq!((replay.len(), wal.len() as usize), (6, end));
    }

    /// Set in the child process of the test below, to the log's directory.
    const CHILD: &str = "AAM_WAL_TEST_SHORT_WRITE_DIR";

    /// A write that runs out of room (RLIMIT_FSIZE, in a child process so
    /// no other test is limited) after part of a frame: the log is cut
    /// back, and a frame appended later follows the good ones.
    #[test]
    fn a_failed_append_is_cut_back_and_later_frames_follow_the_good_ones() {
        if let Some(dir) = std::env::var_os(CHILD) {
            return short_write_child(Path::new(&dir));
        }
        let dir = tempfile::tempdir().unwrap();
        let name = "wal::tests::a_failed_append_is_cut_back_and_later_frames_follow_the_good_ones";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (_, replay) = Wal::open(&dir.path().join("store.wal")).unwrap();
        let nexts: Vec<u64> = replay
            .iter()
            .flatten()
            .map(|item| match item {
                Item::NextSession(n) => *n,
                _ => panic!("unexpected item"),
            })
            .collect();
        assert_eq!(nexts, vec![1, 2], "the frame written after the failure");
    }

    fn short_write_child(dir: &Path) {
        let path = dir.join("store.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(&[body(1)]).unwrap();
        wal.sync().unwrap();
        let good = wal.len();
        let limit = |bytes: libc::rlim_t| {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: plain syscalls on this (child) process's own limits.
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
            }
        };
        limit(good + 20);
        let big = {
            let mut b = Vec::new();
            push_item(&mut b, KIND_OUTPUT, &[7u8; 200]);
            b
        };
        assert!(wal.append(&[big]).is_err(), "the write did not fail");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            good,
            "not cut back"
        );
        limit(libc::RLIM_INFINITY);
        wal.append(&[body(2)]).unwrap();
        wal.sync().unwrap();
    }
}
