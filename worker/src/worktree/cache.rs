//! Warm caches of worktree jobs: a workspace's `cache = [{ path, key }]`.
//! After a setup that passed, each `path` of the worktree is saved in the
//! worker's cache directory under a key: the SHA-256 of the repository
//! (its top directory on this machine), the path, and each key file's
//! name and contents in the new worktree as it was before the setup (a
//! setup that rewrites its lock file still saves under the key the next
//! job computes). A later job whose key is the same gets the saved copy
//! placed in its worktree before its setup, which `AAM_CACHE_HIT` tells
//! (`1`: every path was placed). With no setup nothing is saved: what a
//! job leaves is its work, not a cache (it may be half done).
//!
//! The directory, shared by every worker that names it:
//! `entries/KEY/{copy, used, about}` (the saved path, a stamp whose time
//! is the entry's last use, what it is), and `tmp/` where saves are made
//! and renamed into `entries/` whole, so a crash or two savers at once
//! never leave half an entry. Each entry's `used` is locked (flock)
//! shared while it is placed and exclusively by whoever saves or removes
//! it; a `tmp/` directory whose lock is free is a dead saver's, removed.
//! Over the size cap, least recently used entries go first (not ones in
//! use). Copies in and out are `clone.rs`'s: reflinks, else copies.

mod size;

pub use size::{format_size, parse_size};

use super::clone::{clone_tree, Copied};
use super::workspace::CachePath;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The cache's size cap when none is given (10 GiB).
pub const DEFAULT_MAX: u64 = 10 << 30;
/// The variable that tells setup, job and teardown whether every path hit.
pub const HIT_VAR: &str = "AAM_CACHE_HIT";
const ENTRIES: &str = "entries";
const TMP: &str = "tmp";
const COPY: &str = "copy";
const USED: &str = "used";
const ABOUT: &str = "about";

/// Where a worker's cache is and how much it may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl CacheConfig {
    /// `$XDG_DATA_HOME/aam/cache`, else `~/.local/share/aam/cache`, capped
    /// at 10 GiB: one per user, kept across the worker's restarts (its
    /// worktree root is per worker name and cleared at each start).
    pub fn default_for_user() -> Option<CacheConfig> {
        Some(CacheConfig {
            dir: default_dir()?,
            max_bytes: DEFAULT_MAX,
        })
    }
}

/// The default cache directory (see `CacheConfig::default_for_user`).
pub fn default_dir() -> Option<PathBuf> {
    Some(super::data_home()?.join("aam/cache"))
}

/// What became of one cache path of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The saved copy was placed.
    Hit,
    /// None saved: saved after the setup, if it passes.
    Miss,
    /// Not placed, and not to be saved (its log line says why).
    Unusable,
}

/// One cache path of a job and its key.
#[derive(Clone, Debug)]
pub struct Slot {
    pub path: String,
    pub key: String,
    pub outcome: Outcome,
}

/// A job's cache paths after placing, and the log lines for before its
/// setup.
#[derive(Clone, Debug, Default)]
pub struct Placed {
    pub slots: Vec<Slot>,
    pub lines: Vec<String>,
}

impl Placed {
    /// `AAM_CACHE_HIT=1` when every path hit, `0` otherwise; none when the
    /// workspace caches nothing.
    pub fn env(&self) -> Option<(String, String)> {
        if self.slots.is_empty() {
            return None;
        }
        let hit = self.slots.iter().all(|s| s.outcome == Outcome::Hit);
        Some((HIT_VAR.to_string(), if hit { "1" } else { "0" }.to_string()))
    }
}

/// How a job's setup ended, as saving needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupEnd {
    Passed,
    NotPassed,
    /// The workspace has none.
    None,
}

/// A worker's cache.
#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
}

/// The key of a cache path: hex SHA-256 of the repository's top, the path
/// and each key file's name and contents in `worktree` (or that it is
/// missing), each field length-prefixed so no two inputs run together.
pub fn key(repo: &Path, worktree: &Path, cached: &CachePath) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        digest.update(&(bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    };
    field(b"aam-cache-1");
    field(repo.as_os_str().as_encoded_bytes());
    field(cached.path.as_bytes());
    for file in &cached.key {
        field(file.as_bytes());
        match std::fs::read(worktree.join(file)) {
            Ok(contents) => {
                field(b"file");
                field(&contents);
            }
            Err(_) => field(b"missing"),
        }
    }
    let hash = digest.finish();
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Places the saved copy of each cache path whose key is in the cache
/// into the worktree (blocking). `cache` None: this worker has none.
pub fn place(cache: Option<&Cache>, repo: &Path, worktree: &Path, paths: &[CachePath]) -> Placed {
    let mut placed = Placed::default();
    for cached in paths {
        let key = key(repo, worktree, cached);
        let path = &cached.path;
        let outcome = match cache {
            None => {
                placed.lines.push(format!(
                    "cache: {path}: not used (this worker has no cache directory: start it with --cache DIR)"
                ));
                Outcome::Unusable
            }
            Some(cache) => match cache.place_one(&key, &worktree.join(path)) {
                Ok(true) => {
                    placed
                        .lines
                        .push(format!("cache: {path}: hit ({})", &key[..8]));
                    Outcome::Hit
                }
                Ok(false) => Outcome::Miss,
                Err(why) => {
                    placed.lines.push(format!("cache: {path}: miss ({why})"));
                    Outcome::Unusable
                }
            },
        };
        placed.slots.push(Slot {
            path: path.clone(),
            key,
            outcome,
        });
    }
    placed
}

/// Saves the paths that missed, after a setup that passed (blocking): one
/// log line per miss, and one for what the cap made go.
pub fn save(
    cache: Option<&Cache>,
    worktree: &Path,
    repo: &Path,
    placed: &Placed,
    setup: SetupEnd,
) -> Vec<String> {
    let mut lines = Vec::new();
    let misses = placed.slots.iter().filter(|s| s.outcome == Outcome::Miss);
    let mut saved_any = false;
    for slot in misses {
        let path = &slot.path;
        let why = match (setup, cache) {
            (SetupEnd::NotPassed, _) => "the setup did not pass".to_string(),
            (SetupEnd::None, _) => "the workspace has no setup to fill it".to_string(),
            (SetupEnd::Passed, None) => "this worker has no cache directory".to_string(),
            (SetupEnd::Passed, Some(cache)) => {
                match cache.save_one(&slot.key, &worktree.join(path), repo, path) {
                    Ok(SaveEnd::Made(copied)) => {
                        saved_any = true;
                        lines.push(format!(
                            "cache: {path}: miss, saved ({} files, {})",
                            copied.files,
                            format_size(copied.bytes)
                        ));
                        continue;
                    }
                    Ok(SaveEnd::NotMade) => format!("the setup made no {path}"),
                    Ok(SaveEnd::Already) => "another job saved it first".to_string(),
                    Ok(SaveEnd::TooBig(bytes)) => format!(
                        "{} is over the cache's cap of {}",
                        format_size(bytes),
                        format_size(cache.config.max_bytes)
                    ),
                    Err(why) => why,
                }
            }
        };
        lines.push(format!("cache: {path}: miss, not saved ({why})"));
    }
    if let (true, Some(cache)) = (saved_any, cache) {
        let (count, bytes) = cache.evict();
        if count > 0 {
            lines.push(format!(
                "cache: over its cap of {}: removed {count} least recently used entries ({})",
                format_size(cache.config.max_bytes),
                format_size(bytes)
            ));
        }
    }
    lines
}

/// What saving one path did.
#[derive(Debug, PartialEq, Eq)]
enum SaveEnd {
    Made(Copied),
    /// The worktree has no such path.
    NotMade,
    /// The key is in the cache already.
    Already,
    /// Larger than the cap: not kept.
    TooBig(u64),
}

impl Cache {
    pub fn new(config: CacheConfig) -> Cache {
        Cache { config }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.config.dir.join(ENTRIES).join(key)
    }

    /// Places the entry of `key` at `target`: whether it was there (and
    /// placed), or why it could not be placed.
    fn place_one(&self, key: &str, target: &Path) -> Result<bool, String> {
        let entry = self.entry(key);
        let Ok(used) = File::options()
            .read(true)
            .write(true)
            .open(entry.join(USED))
        else {
            return Ok(false);
        };
        // Held while copying, so it is not removed under us.
        flock(&used, libc::LOCK_SH).map_err(|e| format!("cannot lock {}: {e}", entry.display()))?;
        let copy = entry.join(COPY);
        if std::fs::symlink_metadata(&copy).is_err() {
            // Removed between the open and the lock.
            return Ok(false);
        }
        if std::fs::symlink_metadata(target).is_ok() {
            return Err(
                "the new worktree has it from its commit: the cached copy is not placed"
                    .to_string(),
            );
        }
        if let Err(e) = clone_tree(&copy, target) {
            remove_any(target);
            return Err(format!("the cached copy could not be placed: {e}"));
        }
        let _ = used.set_modified(SystemTime::now());
        Ok(true)
    }

    /// Saves `source` as the entry of `key`: made in `tmp/`, renamed whole.
    fn save_one(
        &self,
        key: &str,
        source: &Path,
        repo: &Path,
        path: &str,
    ) -> Result<SaveEnd, String> {
        if std::fs::symlink_metadata(source).is_err() {
            return Ok(SaveEnd::NotMade);
        }
        let entry = self.entry(key);
        if entry.exists() {
            return Ok(SaveEnd::Already);
        }
        let (tmp, used) = self.new_tmp(&key[..8])?;
        let made = (|| {
            let copied =
                clone_tree(source, &tmp.join(COPY)).map_err(|e| format!("copying it: {e}"))?;
            if copied.bytes > self.config.max_bytes {
                return Ok(SaveEnd::TooBig(copied.bytes));
            }
            let about = format!(
                "{} {}\n{}\n{path}\n",
                copied.files,
                copied.bytes,
                repo.display()
            );
            std::fs::write(tmp.join(ABOUT), about).map_err(|e| format!("writing {ABOUT}: {e}"))?;
            make_dir(&self.config.dir.join(ENTRIES))?;
            match std::fs::rename(&tmp, &entry) {
                Ok(()) => Ok(SaveEnd::Made(copied)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                    Ok(SaveEnd::Already)
                }
                Err(e) => Err(format!("renaming it into {}: {e}", entry.display())),
            }
        })();
        if !matches!(made, Ok(SaveEnd::Made(_))) {
            remove_any(&tmp);
        }
        drop(used);
        made
    }

    /// A new directory in `tmp/` with its `used` made and locked.
    fn new_tmp(&self, short_key: &str) -> Result<(PathBuf, File), String> {
        let tmp_root = self.config.dir.join(TMP);
        make_dir(&tmp_root)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{short_key}-"))
            .tempdir_in(&tmp_root)
            .map_err(|e| format!("cannot make a directory in {}: {e}", tmp_root.display()))?
            .keep();
        let used = File::create(tmp.join(USED))
            .map_err(|e| format!("cannot make {}/{USED}: {e}", tmp.display()))?;
        flock(&used, libc::LOCK_EX).map_err(|e| format!("cannot lock {}: {e}", tmp.display()))?;
        Ok((tmp, used))
    }

    /// Removes least recently used entries not in use until the cache
    /// fits its cap, and what dead savers left: how many entries went and
    /// their size.
    pub fn evict(&self) -> (usize, u64) {
        remove_dead_tmp(&self.config.dir);
        let mut entries = list(&self.config.dir);
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        entries.sort_by_key(|e| e.used);
        let (mut count, mut bytes) = (0, 0);
        for entry in entries {
            if total <= self.config.max_bytes {
                break;
            }
            if remove_entry(&self.config.dir, &entry.dir, libc::LOCK_EX | libc::LOCK_NB) {
                tracing::info!(entry = %entry.dir.display(), bytes = entry.bytes, "cache entry evicted");
                total -= entry.bytes;
                count += 1;
                bytes += entry.bytes;
            }
        }
        (count, bytes)
    }
}

/// What `--clear-cache` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    pub entries: usize,
    pub bytes: u64,
}

/// Empties the cache at `dir`: every entry (waiting for jobs placing one
/// to finish) and what dead savers left; saves under way go on.
pub fn clear(dir: &Path) -> Cleared {
    let mut cleared = Cleared::default();
    for entry in list(dir) {
        if remove_entry(dir, &entry.dir, libc::LOCK_EX) {
            cleared.entries += 1;
            cleared.bytes += entry.bytes;
        }
    }
    remove_dead_tmp(dir);
    cleared
}

/// An entry as listed.
struct Listed {
    dir: PathBuf,
    used: SystemTime,
    bytes: u64,
}

/// The cache's entries: their last use and size.
fn list(dir: &Path) -> Vec<Listed> {
    let Ok(entries) = std::fs::read_dir(dir.join(ENTRIES)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| {
            let dir = entry.path();
            let used = std::fs::metadata(dir.join(USED))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let about = std::fs::read_to_string(dir.join(ABOUT)).unwrap_or_default();
            let bytes = about
                .split_whitespace()
                .nth(1)
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            Listed { dir, used, bytes }
        })
        .collect()
}

/// Removes an entry once its lock is had (`how`): moved into `tmp/` first,
/// so nobody finds it half removed. Whether it went.
fn remove_entry(cache: &Path, entry: &Path, how: libc::c_int) -> bool {
    let Ok(used) = File::options()
        .read(true)
        .write(true)
        .open(entry.join(USED))
    else {
        return false;
    };
    if flock(&used, how).is_err() {
        return false;
    }
    let gone = cache.join(TMP).join(format!(
        "gone-{}-{}",
        std::process::id(),
        entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    if make_dir(&cache.join(TMP)).is_err() || std::fs::rename(entry, &gone).is_err() {
        return false;
    }
    remove_any(&gone);
    true
}

/// Removes the directories of `tmp/` whose lock nobody holds (a saver
/// that died, or a removal cut short).
fn remove_dead_tmp(cache: &Path) {
    let Ok(dirs) = std::fs::read_dir(cache.join(TMP)) else {
        return;
    };
    for dir in dirs.flatten() {
        let dir = dir.path();
        let free = match File::open(dir.join(USED)) {
            Ok(used) => flock(&used, libc::LOCK_EX | libc::LOCK_NB).is_ok(),
            // A saver between making its directory and its lock file, or
            // one whose lock file went: old enough, it is dead.
            Err(_) => std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600)),
        };
        if free {
            remove_any(&dir);
        }
    }
}

fn flock(file: &File, how: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock only locks the open file it is given.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), how) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))
}

/// Removes a file, a link or a directory tree, whichever it is.
fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => drop(std::fs::remove_dir_all(path)),
        Ok(_) => drop(std::fs::remove_file(path)),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests;
