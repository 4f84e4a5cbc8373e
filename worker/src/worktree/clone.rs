//! Copying a tree of files for the warm cache (`cache.rs`), into it and
//! out of it: each file a reflink (`FICLONE`: shared blocks, copied on
//! write, on btrfs, XFS and the like) where the filesystem can, else a
//! copy of its bytes (`copy_file_range`). Never a hard link: a job that
//! rewrites a placed file in place (a build's fingerprint, a package's
//! post-install step) would change the cached copy of every later job
//! with it, and read-only modes would not stop a worker running as root.
//! Links are copied as links; modes are kept, times are not: a copy
//! placed in a new worktree is newer than the sources git just wrote
//! there, which is what make- and cargo-style freshness checks want.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a copy held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Files and links.
    pub files: u64,
    /// Their space on disk, directories included (what the cache's cap counts).
    pub bytes: u64,
}

/// Copies `source` (a file, a link or a directory with what it holds) to
/// `target`, which must not exist; its parent is made. Blocking.
pub fn clone_tree(source: &Path, target: &Path) -> io::Result<Copied> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut copied = Copied::default();
    // Until one file says the filesystem cannot.
    let mut reflink = true;
    let mut todo: Vec<(PathBuf, PathBuf)> = vec![(source.to_path_buf(), target.to_path_buf())];
    while let Some((from, to)) = todo.pop() {
        let meta = std::fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        copied.bytes += meta.blocks() * 512;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            copied.files += 1;
        } else if kind.is_dir() {
            // Writable by us whatever its mode, to fill it.
            std::fs::DirBuilder::new()
                .mode(meta.mode() & 0o7777 | 0o700)
                .create(&to)?;
            for entry in std::fs::read_dir(&from)? {
                let name = entry?.file_name();
                todo.push((from.join(&name), to.join(&name)));
            }
        } else if kind.is_file() {
            copy_file(&from, &to, &meta, &mut reflink)?;
            copied.files += 1;
        }
        // Sockets, fifos and devices are no cache's business.
    }
    Ok(copied)
}

/// Copies one file: a reflink while they work, else its bytes.
fn copy_file(
    from: &Path,
    to: &Path,
    meta: &std::fs::Metadata,
    reflink: &mut bool,
) -> io::Result<()> {
    let mut source = File::open(from)?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let mut cloned = false;
    if *reflink {
        // SAFETY: FICLONE reads the two open descriptors it is given.
        let done = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
        if done == 0 {
            cloned = true;
        } else {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(
                    libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY | libc::ENOSYS,
                ) => *reflink = false,
                _ => return Err(error),
            }
        }
    }
    if !cloned {
        io::copy(&mut source, &mut target)?;
    }
    target.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_copied_with_links_and_modes_and_counted() {
        let from = tempfile::tempdir().unwrap();
        let top = from.path().join("node_modules");
        std::fs::create_dir_all(top.join("pkg/bin")).unwrap();
        std::fs::write(top.join("pkg/index.js"), "module.exports = 1\n").unwrap();
        std::fs::write(top.join("pkg/bin/run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(top.join("pkg/bin/run"), PermissionsExt::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("../pkg/bin/run", top.join("run")).unwrap();
        let to = tempfile::tempdir().unwrap();
        let target = to.path().join("deep/node_modules");
        let copied = clone_tree(&top, &target).unwrap();
        assert_eq!(copied.files, 3);
        assert!(copied.bytes > 0);
        assert_eq!(
            std::fs::read_to_string(target.join("pkg/index.js")).unwrap(),
            "module.exports = 1\n"
        );
        let mode = std::fs::metadata(target.join("pkg/bin/run"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(target.join("run")).unwrap(),
            Path::new("../pkg/bin/run")
        );
        // A copy, not a link: changing it leaves the source as it was.
        std::fs::write(target.join("pkg/index.js"), "changed").unwrap();
        assert_eq!(
            std::fs::read_to_string(top.join("pkg/index.js")).unwrap(),
            "module.exports = 1\n"
        );
        // The target must be new.
        assert!(clone_tree(&top, &target).is_err());
    }
}
