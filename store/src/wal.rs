//! The write-ahead log that makes a group of changes durable with one
//! append and one fdatasync, instead of a sled flush (which hands its I/O to
//! a pool of threads and costs several times more).
//!
//! Each group is one frame: `[len: u32][crc32: u32][items]`, and each item
//! is a kind byte and a length-prefixed body. On open, every whole frame is
//! replayed into sled (upserts, so replaying twice is harmless); a torn
//! frame at the tail was never acknowledged and is dropped. A checkpoint
//! flushes sled and empties the log.

use crate::{job_key, session_key, Changes, Result, StoreError};
use aam_protocol::codec;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const KIND_JOB: u8 = 1;
const KIND_OUTPUT: u8 = 2;
const KIND_SESSION: u8 = 3;
const KIND_NEXT_SESSION: u8 = 4;
const KIND_REMOVED: u8 = 5;

/// One decoded item of a frame.
pub(crate) enum Item {
    Job([u8; 12], Vec<u8>),
    Output([u8; 12], Vec<u8>),
    Session([u8; 8], Vec<u8>),
    NextSession(u64),
    /// A session deleted with its jobs and outputs: (id, job count).
    Removed(u64, u32),
}

pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn push_item(buf: &mut Vec<u8>, kind: u8, body: &[u8]) {
    buf.push(kind);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
}

/// Encodes a group of changes as one frame body, in the order they must be
/// applied (jobs before their session, as `Store::apply` does).
pub(crate) fn encode_changes(changes: &Changes) -> Result<Vec<u8>> {
    let corrupt = |e: codec::CodecError| StoreError::Corrupt(e.to_string());
    let mut buf = Vec::new();
    for j in &changes.jobs {
        let mut body = job_key(j.key).to_vec();
        body.extend_from_slice(&codec::encode(j).map_err(corrupt)?);
        push_item(&mut buf, KIND_JOB, &body);
    }
    for (key, out) in &changes.outputs {
        let mut body = job_key(*key).to_vec();
        body.extend_from_slice(out);
        push_item(&mut buf, KIND_OUTPUT, &body);
    }
    for s in &changes.sessions {
        let mut body = session_key(s.id).to_vec();
        body.extend_from_slice(&codec::encode(s).map_err(corrupt)?);
        push_item(&mut buf, KIND_SESSION, &body);
    }
    if let Some(next) = changes.next_session {
        push_item(&mut buf, KIND_NEXT_SESSION, &next.to_be_bytes());
    }
    for (id, count) in &changes.removed {
        let mut body = id.0.to_be_bytes().to_vec();
        body.extend_from_slice(&count.to_be_bytes());
        push_item(&mut buf, KIND_REMOVED, &body);
    }
    Ok(buf)
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
            KIND_SESSION => Item::Session(data.get(..8)?.try_into().ok()?, data[8..].to_vec()),
            KIND_NEXT_SESSION => Item::NextSession(u64::from_be_bytes(data.try_into().ok()?)),
            KIND_REMOVED if data.len() == 12 => Item::Removed(
                u64::from_be_bytes(data[..8].try_into().ok()?),
                u32::from_be_bytes(data[8..].try_into().ok()?),
            ),
            _ => return None,
        });
    }
    Some(items)
}

/// Splits a log's bytes into whole, intact frames; stops at the first torn
/// one. Also returns how many bytes those frames take (the valid prefix),
/// and whether it stopped at an intact frame it cannot read (written by a
/// newer aam: not a torn tail, must not be cut).
pub(crate) fn frames(mut bytes: &[u8]) -> (Vec<Vec<Item>>, usize, bool) {
    let mut out = Vec::new();
    let mut valid = 0;
    while bytes.len() >= 8 {
        let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(8..8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        match decode_items(body) {
            Some(items) => out.push(items),
            None => return (out, valid, true),
        }
        bytes = &bytes[8 + len..];
        valid += 8 + len;
    }
    (out, valid, false)
}

impl Wal {
    /// Opens the log and returns what it holds, to be replayed.
    pub(crate) fn open(path: &Path) -> Result<(Wal, Vec<Vec<Item>>)> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io_err(path, e))?;
        let (frames, valid, unreadable) = frames(&bytes);
        if unreadable {
            return Err(StoreError::Corrupt(format!(
                "{} holds an entry this aam-manager cannot read (written by a newer one?); it was left as it is",
                path.display()
            )));
        }
        if valid < bytes.len() {
            // A torn tail was never acknowledged. Cut it, or every frame
            // appended after it would be unreachable at the next replay.
            tracing::warn!(path = %path.display(), dropped = bytes.len() - valid,
                "dropping a torn tail of the store's log");
            file.set_len(valid as u64).map_err(|e| io_err(path, e))?;
            file.sync_all().map_err(|e| io_err(path, e))?;
        }
        file.seek(SeekFrom::Start(valid as u64))
            .map_err(|e| io_err(path, e))?;
        let wal = Wal {
            path: path.to_path_buf(),
            file,
            len: valid as u64,
        };
        Ok((wal, frames))
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one frame (not yet durable).
    pub(crate) fn append(&mut self, body: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(body.len() + 8);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        frame.extend_from_slice(body);
        self.file
            .write_all(&frame)
            .map_err(|e| io_err(&self.path, e))?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Makes every appended frame durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| io_err(&self.path, e))
    }

    /// Empties the log (after sled holds everything durably).
    pub(crate) fn truncate(&mut self) -> Result<()> {
        self.file.set_len(0).map_err(|e| io_err(&self.path, e))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_err(&self.path, e))?;
        self.file.sync_all().map_err(|e| io_err(&self.path, e))?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_dropped() {
        let mut body = Vec::new();
        push_item(&mut body, KIND_NEXT_SESSION, &7u64.to_be_bytes());
        let mut log = frame(&body);
        log.extend_from_slice(&frame(&body));
        assert_eq!(frames(&log).0.len(), 2);
        let whole = log.len();
        log.extend_from_slice(&frame(&body)[..10]);
        let (found, valid, _) = frames(&log);
        assert_eq!((found.len(), valid), (2, whole), "torn tail");
        log.truncate(whole);
        let mut bad = frame(&body);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        log.extend_from_slice(&bad);
        assert_eq!(frames(&log).0.len(), 2, "bad checksum");
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
        let mut body = Vec::new();
        push_item(&mut body, KIND_NEXT_SESSION, &7u64.to_be_bytes());
        // A crash in the middle of the first frame after a checkpoint.
        std::fs::write(&path, &frame(&body)[..6]).unwrap();
        {
            let (mut wal, replay) = Wal::open(&path).unwrap();
            assert!(replay.is_empty());
            wal.append(&body).unwrap();
            wal.sync().unwrap();
        }
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(
            replay.len(),
            1,
            "the acknowledged frame was lost behind the torn tail"
        );
    }
}
