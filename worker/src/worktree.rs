//! Jobs isolated in git worktrees: the worker's root of worktrees (its own
//! directory, 0700, locked by one worker process at a time and cleared of
//! leftovers at start), set-up and removal serialised per repository (git's
//! own locks fail under concurrency), and the branches `aam gc` removes.
//! The git steps themselves are blocking and run on the blocking pool:
//! `setup.rs`, `finish.rs`, `leftovers.rs`; `job.rs` strings them around a
//! job's process, with `verify.rs` in between; `workspace.rs` and
//! `steps.rs` are the repository's `.aam/workspace.toml` (setup, teardown,
//! copied files, `globs.rs` for copies by pattern), `cache.rs` (with
//! `clone.rs`) its warm caches,
//! `overrides.rs` a job's own keys over the file.

pub mod cache;
pub mod clone;
pub mod finish;
pub mod git;
pub mod globs;
pub mod job;
pub mod leftovers;
pub mod overrides;
pub mod setup;
pub mod steps;
pub mod verify;
pub mod workspace;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// The file in the root that one worker process holds locked.
const LOCK_FILE: &str = ".aam-worker.lock";

/// The worktree root of a worker named `name` when `--worktrees` is not
/// given: `$XDG_DATA_HOME/aam/worktrees/NAME`, else
/// `~/.local/share/aam/worktrees/NAME`; None without either variable. A
/// character of the name other than a letter, digit, `-`, `_` or `.` is
/// `-` there (a name is no path).
pub fn default_root(name: &str) -> Option<PathBuf> {
    let data = data_home()?;
    let mut name: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '-',
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        name = format!("worker{name}");
    }
    Some(data.join("aam/worktrees").join(name))
}

/// `$XDG_DATA_HOME`, else `~/.local/share`; None without either variable.
fn data_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_DATA_HOME").filter(|d| Path::new(d).is_absolute()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(
            PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".local/share"),
        ),
    }
}

/// The worktree root of the worker embedded with a manager whose state is
/// in `data_dir` (`aam run`, `aam up`): one per data directory, so two
/// embedded workers in two directories never share one (and the data
/// directory, often inside the user's checkout, never holds worktrees).
pub fn embedded_root(data_dir: &Path) -> Option<PathBuf> {
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    // FNV-1a: the same number for the same directory in every build.
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
    default_root(&format!("local-{hash:016x}"))
}

/// The worker's worktrees: where they go, and what keeps their set-up and
/// removal in order. Shared by the worker actor and its jobs' tasks.
pub struct Worktrees {
    root: PathBuf,
    /// Most bytes of patch sent, whatever an order asks (a `Finished` must
    /// fit in a frame).
    patch_limit: usize,
    /// Whether the root is open (made, locked, cleared of leftovers), or
    /// why it cannot be used; set once, by the first to ask.
    ready: OnceCell<Result<(), String>>,
    /// The root's lock file, held open (and locked) for the process's life.
    lock: Mutex<Option<File>>,
    /// One async mutex per repository (its git directory): worktree
    /// set-up and removal there take it (and then, across processes, a
    /// lock file in that directory: `setup::repo_turn`).
    repo_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Worktree paths of jobs running now.
    in_use: Mutex<HashSet<PathBuf>>,
    /// Held shared while worktrees are added, and exclusive to remove the
    /// directories a removal left empty (`ROOT/s4`), so a directory is
    /// never removed under a worktree being added in it.
    dirs: tokio::sync::RwLock<()>,
    /// The worker is exiting: jobs' ends leave their worktrees to the
    /// clean-up at the next start rather than hold up the exit.
    exiting: AtomicBool,
    /// The warm caches of workspaces' `cache` paths; None: not kept.
    cache: Option<Arc<cache::Cache>>,
}

impl Worktrees {
    pub fn new(root: PathBuf, patch_limit: usize) -> Arc<Worktrees> {
        Worktrees::with_cache(root, patch_limit, None)
    }

    /// The same, with a warm cache for workspaces' `cache` paths.
    pub fn with_cache(
        root: PathBuf,
        patch_limit: usize,
        cache: Option<cache::CacheConfig>,
    ) -> Arc<Worktrees> {
        Arc::new(Worktrees {
            root,
            patch_limit,
            ready: OnceCell::new(),
            lock: Mutex::new(None),
            repo_locks: Mutex::new(HashMap::new()),
            in_use: Mutex::new(HashSet::new()),
            dirs: tokio::sync::RwLock::new(()),
            exiting: AtomicBool::new(false),
            cache: cache.map(|config| Arc::new(cache::Cache::new(config))),
        })
    }

    /// The warm cache, if this worker keeps one.
    pub fn cache(&self) -> Option<&Arc<cache::Cache>> {
        self.cache.as_ref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens the root once (the first call does it, later ones wait for
    /// it): made 0700, locked for this process, and every worktree left
    /// in it removed. Ok, or why worktree jobs cannot run here.
    pub async fn ready(&self) -> Result<(), String> {
        let opened = self.ready.get_or_init(|| async {
            let root = self.root.clone();
            let opened = tokio::task::spawn_blocking(move || open_root(&root))
                .await
                .map_err(|e| format!("opening the worktree root: {e}"))
                .and_then(|opened| opened);
            match opened {
                Ok(lock) => {
                    *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(lock);
                    Ok(())
                }
                Err(why) => {
                    tracing::error!(root = %self.root.display(), "worktree jobs cannot run here: {why}");
                    Err(why)
                }
            }
        });
        opened.await.clone()
    }

    /// From now on, jobs' ends leave their worktrees (the worker exits).
    pub fn set_exiting(&self) {
        self.exiting.store(true, Ordering::Relaxed);
    }

    pub fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::Relaxed)
    }

    /// Waits for the repository's turn (`git_dir`: its git directory) to
    /// add or remove a worktree or delete branches, within this process.
    pub async fn lock_repo(&self, git_dir: &Path) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.repo_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(git_dir.to_path_buf()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Claims a worktree path for a job; None when another job of this
    /// worker has it. The claim ends when dropped.
    fn claim(self: &Arc<Self>, path: &Path) -> Option<PathClaim> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        in_use.insert(path.to_path_buf()).then(|| PathClaim {
            worktrees: self.clone(),
            path: path.to_path_buf(),
        })
    }

    /// Deletes branches of a repository for `aam gc` (its turn taken, off
    /// the actor's thread), and logs what could not be deleted.
    pub async fn delete_branches(&self, repo: PathBuf, branches: Vec<String>) {
        let shown = repo.display().to_string();
        let found = tokio::task::spawn_blocking(move || setup::find_repo(&repo)).await;
        let place = match found {
            Ok(Ok(place)) => place,
            Ok(Err(why)) => return tracing::warn!(repo = %shown, "branches not deleted: {why}"),
            Err(e) => return tracing::warn!(repo = %shown, "branches not deleted: {e}"),
        };
        let _turn = self.lock_repo(&place.git_dir).await;
        let count = branches.len();
        let failed = tokio::task::spawn_blocking(move || {
            let _turn = setup::repo_turn(&place.git_dir);
            leftovers::delete_branches(&place.top, &branches)
        })
        .await
        .unwrap_or_default();
        for (branch, why) in &failed {
            tracing::warn!(repo = %shown, branch, "branch not deleted: {why}");
        }
        tracing::info!(repo = %shown, deleted = count - failed.len(), "deleted branches");
    }
}

/// A worktree path a running job holds.
struct PathClaim {
    worktrees: Arc<Worktrees>,
    path: PathBuf,
}

impl Drop for PathClaim {
    fn drop(&mut self) {
        let mut in_use = self
            .worktrees
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        in_use.remove(&self.path);
    }
}

/// Makes the root (0700), takes its lock (a second worker process on the
/// same root would remove this one's worktrees at its start), and removes
/// what earlier processes left. The lock file, to keep open.
fn open_root(root: &Path) -> Result<File, String> {
    let shown = root.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| format!("cannot make {shown}: {e}"))?;
    let meta = std::fs::metadata(root).map_err(|e| format!("{shown}: {e}"))?;
    // SAFETY: geteuid only reads this process's effective user id.
    if std::os::unix::fs::MetadataExt::uid(&meta) != unsafe { libc::geteuid() } {
        return Err(format!("{shown} belongs to another user"));
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {shown} private: {e}"))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(root.join(LOCK_FILE))
        .map_err(|e| format!("cannot open {shown}/{LOCK_FILE}: {e}"))?;
    // SAFETY: flock only locks the open file it is given.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if locked != 0 {
        return Err(format!(
            "{shown} is in use by another worker process (give each worker its own --worktrees)"
        ));
    }
    log_cleanup(root, &leftovers::remove_leftovers(root));
    Ok(lock)
}

fn log_cleanup(root: &Path, cleanup: &leftovers::Cleanup) {
    let root = root.display();
    if !cleanup.killed.is_empty() {
        tracing::info!(%root, pids = ?cleanup.killed, "killed processes left working in old worktrees");
    }
    for path in &cleanup.removed {
        tracing::info!(path = %path.display(), "removed a worktree left by an earlier worker process");
    }
    for path in &cleanup.pruned {
        tracing::info!(repo = %path.display(), "pruned the repository's worktree list");
    }
    for (path, why) in &cleanup.failed {
        tracing::warn!(path = %path.display(), "could not clean up: {why}");
    }
}

#[cfg(test)]
mod job_tests;
#[cfg(test)]
mod test_repo;
#[cfg(test)]
mod tests;
