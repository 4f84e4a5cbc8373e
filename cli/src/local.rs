//! The background manager `aam up` starts in a directory: its files under
//! `./.aam` (address, token, store, log, pid), whether it runs, and how long
//! it lets running jobs finish when it stops. Every `aam` command started in
//! that directory finds it through these files.

use crate::exit::unreachable;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long `aam down` lets running jobs finish before they are stopped.
pub const DOWN_DRAIN: Duration = Duration::from_secs(10);

/// The files of a background manager in one directory.
pub struct Local {
    pub dir: PathBuf,
}

impl Local {
    pub fn here() -> Local {
        Local {
            dir: PathBuf::from(".aam"),
        }
    }

    pub fn addr_file(&self) -> PathBuf {
        self.dir.join("manager.addr")
    }

    pub fn http_addr_file(&self) -> PathBuf {
        self.dir.join("http.addr")
    }

    /// The dashboard's address, when the background manager serves HTTP.
    pub fn http_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.http_addr_file()).ok()?;
        Some(text.trim().to_string()).filter(|a| !a.is_empty())
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("aam.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("aam.log")
    }

    pub fn addr(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.addr_file())
            .map_err(|e| unreachable(format!("reading {}: {e}", self.addr_file().display())))?;
        Ok(text.trim().to_string())
    }

    /// The pid of the background process, if it is alive and still ours
    /// (a pid file left by a crash may name some other process by now).
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = cmdline.split(|&b| b == 0).any(|arg| arg == b"__serve");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        (pid > 0 && ours && !zombie).then_some(pid)
    }
}

/// Polls `done` until it holds or `timeout` passes; whether it holds.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}
