//! Making a directory entry durable, asking the disk whether it takes
//! writes, and how much room is left.
//!
//! A new file is durable only once the entry in its directory is:
//! `sync_dir` after creating or renaming one.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Makes the entries of `dir` durable (a file created or renamed in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` of filler to a scratch file in `dir`, syncs it and
/// removes it: whether the disk takes writes again (after ENOSPC, EIO).
pub(crate) fn probe_space(dir: &Path, bytes: u64) -> io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = File::create(&path)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_data()
    })();
    let removed = match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    written.and(removed)
}

/// Bytes free for an unprivileged writer on the file system holding `dir`.
pub fn available_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we own; path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The scratch file of `probe_space` (removed at once; one left by a
/// crash is removed at the next open).
pub(crate) const PROBE_FILE: &str = "store.probe";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        probe_space(dir.path(), 100_000).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
