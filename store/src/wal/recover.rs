//! `aam-manager --recover`: a damaged log is kept aside (never deleted) and
//! replaced by one holding every intact frame found before and after the
//! damage, and the report says what could not be read.
//!
//! The damaged file is hard-linked to `store.wal.damaged-<unix time>` and
//! the new log renamed over `store.wal`, each step followed by a sync of the
//! directory: a crash at any point leaves either the old log or the new one
//! at `store.wal`, never none.

use super::io_err;
use super::scan::{self, Damage};
use crate::files::{open_private, sync_dir};
use crate::{Result, StoreError};
use std::fs::OpenOptions;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What `recover` did to a log.
#[derive(Debug)]
pub struct Recovery {
    pub log: PathBuf,
    /// Where the damaged log was kept; None when it was not damaged.
    pub damaged_copy: Option<PathBuf>,
    pub log_bytes: u64,
    pub kept_frames: usize,
    pub kept_bytes: u64,
    /// Byte ranges of the damaged log that held no intact frame.
    pub lost: Vec<Range<u64>>,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(copy) = &self.damaged_copy else {
            return write!(
                f,
                "{} is not damaged ({} intact frames); nothing to recover",
                self.log.display(),
                self.kept_frames
            );
        };
        writeln!(
            f,
            "{} was damaged; it is kept, unchanged, as {}",
            self.log.display(),
            copy.display()
        )?;
        writeln!(
            f,
            "kept {} intact frames ({} of its {} bytes), from before and after the damage",
            self.kept_frames, self.kept_bytes, self.log_bytes
        )?;
        for range in &self.lost {
            let what = if range.end == self.log_bytes {
                "an unfinished last write, or damage up to the end"
            } else {
                "damaged"
            };
            writeln!(
                f,
                "could not read bytes {}..{} ({} bytes, {what}): the changes they held are lost",
                range.start,
                range.end,
                range.end - range.start
            )?;
        }
        write!(
            f,
            "a session whose records were in those bytes comes back without them (or not at all; the manager's log says which)"
        )
    }
}

/// Salvages the log at `path` if it is damaged (see the module's doc).
pub(crate) fn recover(path: &Path) -> Result<Recovery> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut report = Recovery {
        log: path.to_path_buf(),
        damaged_copy: None,
        log_bytes: bytes.len() as u64,
        kept_frames: 0,
        kept_bytes: 0,
        lost: Vec::new(),
    };
    match scan::replayable(&bytes) {
        // Intact, or a torn tail a normal start drops.
        Ok((frames, _)) => {
            report.kept_frames = frames.len();
            return Ok(report);
        }
        Err(damage @ Damage::Unknown { .. }) => return Err(damage.into_error(path)),
        Err(Damage::Corrupt { .. }) => {}
    }
    let salvage = scan::salvage(&bytes).map_err(|d| d.into_error(path))?;
    let mut kept = Vec::with_capacity(bytes.len());
    for range in &salvage.kept {
        kept.extend_from_slice(&bytes[range.clone()]);
    }
    report.kept_frames = salvage.kept.len();
    report.kept_bytes = kept.len() as u64;
    report.lost = salvage
        .lost
        .iter()
        .map(|r| r.start as u64..r.end as u64)
        .collect();
    report.damaged_copy = Some(replace(path, &kept)?);
    Ok(report)
}

/// Keeps the log at `path` aside and puts `kept` in its place; returns
/// where the old one is.
fn replace(path: &Path, kept: &[u8]) -> Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fresh = path.with_extension("wal.recovered");
    let mut file = open_private(
        &fresh,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
    .map_err(|e| io_err(&fresh, e))?;
    file.write_all(kept)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err(&fresh, e))?;
    let copy = keep_aside(path)?;
    sync_dir(dir).map_err(|e| io_err(dir, e))?;
    std::fs::rename(&fresh, path).map_err(|e| io_err(path, e))?;
    sync_dir(dir).map_err(|e| io_err(dir, e))?;
    Ok(copy)
}

/// A second name for the damaged log, `<log>.damaged-<unix time>[-n]`:
/// a hard link (no copy, no space needed), else a synced copy.
fn keep_aside(path: &Path) -> Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for n in 0..1000 {
        let suffix = match n {
            0 => format!("damaged-{now}"),
            n => format!("damaged-{now}-{n}"),
        };
        let copy = PathBuf::from(format!("{}.{suffix}", path.display()));
        if copy.exists() {
            continue;
        }
        if std::fs::hard_link(path, &copy).is_err() {
            std::fs::copy(path, &copy)
                .and_then(|_| std::fs::File::open(&copy)?.sync_all())
                .map_err(|e| io_err(&copy, e))?;
        }
        return Ok(copy);
    }
    Err(StoreError::Corrupt(format!(
        "{}: too many damaged copies beside it already",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::super::testing::log;
    use super::*;

    #[test]
    fn the_damaged_log_is_kept_and_every_intact_frame_survives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.wal");
        let (mut bytes, starts) = log(4);
        bytes[starts[1] + 9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let report = recover(&path).unwrap();
        let copy = report.damaged_copy.clone().expect("a damaged copy");
        assert_eq!(std::fs::read(&copy).unwrap(), bytes, "the copy changed");
        assert_eq!(report.kept_frames, 3);
        assert_eq!(
            report.lost,
            vec![starts[1] as u64..starts[2] as u64],
            "{report}"
        );
        let (frames, valid) = scan::replayable(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!((frames.len(), valid as u64), (3, report.kept_bytes));
        let text = report.to_string();
        assert!(
            text.contains(&format!("bytes {}..{}", starts[1], starts[2])),
            "{text}"
        );
        // Recovering again finds nothing to do.
        assert!(recover(&path).unwrap().damaged_copy.is_none());
    }
}
