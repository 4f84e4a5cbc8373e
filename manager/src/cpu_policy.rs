//! The manager's CPU scheduling policy: `SCHED_BATCH` for its own threads,
//! the normal policy for every process it starts.
//!
//! Why: the manager wakes up for every frame a worker sends. On a machine
//! it shares with a worker and the worker's jobs (one box, the short-job
//! bench), Linux put the woken manager on the sender's CPU and let it
//! preempt the sender while the other CPU idled: the worker started its
//! next job only after the manager's turn. A batch thread never preempts
//! anything when it wakes up, so the sender finishes its turn first
//! (1,537 -> 1,701 jobs/s in the short-job bench, BENCHMARKS.md, issue 18's
//! tenth session). On a host of its own, or an idle one, nothing changes;
//! on a saturated one, an answer may wait for the running task's time
//! slice (a few ms).
//!
//! A policy is inherited across fork and exec: while the manager runs as
//! batch, the processes it starts (a provider's commands, notification
//! commands) are put back to the normal policy before their exec, so that
//! neither they nor what they start run as batch. That hook makes the
//! start a fork instead of a `posix_spawn`: a copy of the manager's page
//! tables, for commands that run a few times a minute at most.
//!
//! Architecture invariant: every process the manager starts is made by
//! [`command`] (clippy's `disallowed-methods`, `manager/clippy.toml`).

use std::ffi::OsStr;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the manager's threads run as batch.
static BATCH: AtomicBool = AtomicBool::new(false);

/// Makes the calling thread, and every thread it starts afterwards, a
/// batch thread, if it has the normal policy (one set on purpose, with
/// `chrt` or systemd's `CPUSchedulingPolicy=`, is left alone). For the
/// `aam-manager` binary, first thing in `main`; the manager embedded with a
/// worker (`aam up`, `aam run`) keeps the normal policy, which its jobs
/// would inherit.
pub fn run_as_batch() -> io::Result<()> {
    // SAFETY: reads the calling thread's policy.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy != libc::SCHED_OTHER {
        return Err(io::Error::other(format!(
            "it runs with policy {policy}, left as it is"
        )));
    }
    set_policy(libc::SCHED_BATCH)?;
    BATCH.store(true, Ordering::Relaxed);
    Ok(())
}

/// A command to start a process with the normal policy, whatever the
/// manager's.
#[allow(clippy::disallowed_methods)] // the one place that may
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    if BATCH.load(Ordering::Relaxed) {
        // SAFETY: the hook runs in the child between fork and exec and
        // makes one system call (async-signal-safe), touching nothing
        // shared. A failure leaves the child as it was rather than
        // failing the start.
        unsafe {
            command.pre_exec(|| {
                let _ = set_policy(libc::SCHED_OTHER);
                Ok(())
            });
        }
    }
    command
}

fn set_policy(policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's policy from a valid parameter;
    // switching between the normal and the batch policy needs no privilege.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy of a process started by `command`, and of one started
    /// without it (the policy the thread passes on).
    fn started_policies() -> (String, String) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let policy_of = |mut command: tokio::process::Command| {
            // /proc/PID/stat's 41st field is the policy: 3 is SCHED_BATCH.
            command.args(["-c", "cut -d' ' -f41 /proc/self/stat"]);
            let out = runtime.block_on(async { command.output().await }).unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        #[allow(clippy::disallowed_methods)] // the peer without the hook
        let plain = tokio::process::Command::new("sh");
        (policy_of(command("sh")), policy_of(plain))
    }

    #[test]
    fn a_process_started_under_a_batch_manager_runs_with_the_normal_policy() {
        // On a thread of its own: the policy is per thread.
        let (own, policies) = std::thread::spawn(|| {
            let batch = run_as_batch();
            // SAFETY: reads the calling thread's policy.
            let own = unsafe { libc::sched_getscheduler(0) };
            (batch.map(|()| own), started_policies())
        })
        .join()
        .unwrap();
        match own {
            Ok(own) => {
                assert_eq!(own, libc::SCHED_BATCH);
                assert_eq!(policies, ("0".into(), "3".into()));
            }
            // A sandbox that refuses the switch, or a policy set on
            // purpose: left as it was, and passed on as it was.
            Err(e) => {
                eprintln!("no batch policy here ({e})");
                assert_eq!(policies.0, policies.1);
            }
        }
    }
}
