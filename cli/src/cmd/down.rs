//! `aam down`: stops what `aam up` started here.

use crate::local::{wait_until, Local, DOWN_DRAIN};
use std::time::Duration;

/// Stops the background manager and worker gracefully.
pub fn run() -> anyhow::Result<i32> {
    let local = Local::here();
    let Some(pid) = local.running_pid() else {
        let _ = std::fs::remove_file(local.pid_file());
        println!("aam is not up here");
        return Ok(0);
    };
    // SAFETY: sending SIGTERM to the process `aam up` started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let gone = wait_until(DOWN_DRAIN + Duration::from_secs(30), || {
        local.running_pid().is_none()
    });
    if !gone {
        return Err(anyhow::anyhow!(
            "the background manager (pid {pid}) did not stop; see {}",
            local.log_file().display()
        ));
    }
    let _ = std::fs::remove_file(local.pid_file());
    let _ = std::fs::remove_file(local.addr_file());
    println!("aam is down");
    Ok(0)
}
