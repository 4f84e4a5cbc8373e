//! Files and directories only their owner may read, making a directory
//! entry durable, and asking the disk whether it takes writes again.
//!
//! The data directory holds every session's commands, prompts and outputs,
//! and the manager's token: it is created 0700 and the files aam writes in
//! it 0600, whatever the umask. A new file is durable only once the entry
//! in its directory is: `sync_dir` after creating or renaming one.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the directories aam creates for its state.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files aam writes there.
pub const FILE_MODE: u32 = 0o600;

/// The mode bits of `path` that let group or others in, if any.
pub fn open_to_others(path: &Path) -> io::Result<Option<u32>> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// Creates `dir` (and missing parents) 0700. One that already exists is
/// left as its owner set it, with a warning when group or others may
/// enter it: aam does not change a directory it did not create.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    if let Some(mode) = open_to_others(dir)? {
        tracing::warn!(
            "data directory {} is open to group or others (mode {mode:04o}); it holds every \
             session's commands and outputs: `chmod 700 {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Creates aam's own subdirectory `dir` 0700, or narrows it to 0700.
pub(crate) fn private_subdir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Opens (creating it if needed) a file only its owner may read; one that
/// existed with looser bits is narrowed to 0600.
pub fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options.mode(FILE_MODE).open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Writes `bytes` to `path` (replacing what it held), readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = open_private(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )?;
    file.write_all(bytes)
}

/// Makes the entries of `dir` durable (a file created or renamed in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Narrows the files sled created in `dir` (and its subdirectories) to
/// 0600 and the directories to 0700: sled creates them with the umask.
pub(crate) fn narrow_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let (mode, is_dir) = match entry.file_type()? {
            t if t.is_dir() => (DIR_MODE, true),
            t if t.is_file() => (FILE_MODE, false),
            _ => continue,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        if is_dir {
            narrow_tree(&path)?;
        }
    }
    Ok(())
}

/// Writes `bytes` of filler to a scratch file in `dir`, syncs it and
/// removes it: whether the disk takes writes again (after ENOSPC, EIO).
pub(crate) fn probe_space(dir: &Path, bytes: u64) -> io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = open_private(
            &path,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
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
    fn created_private_and_a_loose_file_is_narrowed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(open_to_others(&dir).unwrap(), None);
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&file, b"y").unwrap();
        assert_eq!(open_to_others(&file).unwrap(), None);
        assert_eq!(std::fs::read(&file).unwrap(), b"y");
    }

    #[test]
    fn the_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        probe_space(dir.path(), 100_000).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
