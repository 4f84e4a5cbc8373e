//! The manager's CPU scheduling policy: `SCHED_BATCH` for its own threads,
//! the normal policy for every process it starts.
//!
//! Why: the manager wakes up for every frame a worker sends. On a machine
//! it shares with a worker and the worker's jobs (one box, the short-job
//! bench), Linux put the woken manager on the sender's CPU and let it
//! preempt the sender while the other CPU idled: the worker started its
//! next job only after the manager's turn. A batch thread never preempts
//! anything when it wakes up, so the sender finishes its turn first (53%
//! -> 68% of the raw spawn rate, BENCHMARKS.md, issue 18's tenth session).
//! On a host of its own, or an idle one, nothing changes; on a saturated
//! one, an answer may wait for the running task's time slice (a few ms).
//!
//! A policy is inherited across fork and exec: the processes the manager
//! starts (a provider's commands, notification commands) are put back to
//! the normal policy first, so that neither they nor what they start run
//! as batch.

use std::io;

/// Makes the calling thread, and every thread it starts afterwards, a
/// batch thread. For the `aam-manager` binary, first thing in `main`; the
/// manager embedded with a worker (`aam up`, `aam run`) keeps the normal
/// policy, which its jobs would inherit.
pub fn run_as_batch() -> io::Result<()> {
    set_policy(libc::SCHED_BATCH)
}

/// Starts `command` with the normal policy, whatever the manager's.
pub fn normal_for_children(command: &mut tokio::process::Command) {
    // SAFETY: the hook runs in the child between fork and exec and makes
    // one system call (async-signal-safe), touching nothing shared. A
    // failure leaves the child as it was rather than failing the start.
    unsafe {
        command.pre_exec(|| {
            let _ = set_policy(libc::SCHED_OTHER);
            Ok(())
        });
    }
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

    #[test]
    fn a_started_process_runs_with_the_normal_policy_under_a_batch_thread() {
        // On a thread of its own: the policy is per thread.
        let policies = std::thread::spawn(|| {
            run_as_batch().unwrap();
            // SAFETY: reads the calling thread's policy.
            let own = unsafe { libc::sched_getscheduler(0) };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let child = |normal: bool| {
                let mut command = tokio::process::Command::new("sh");
                command.args(["-c", "cut -d' ' -f41 /proc/self/stat"]);
                if normal {
                    normal_for_children(&mut command);
                }
                let out = runtime.block_on(async { command.output().await }).unwrap();
                String::from_utf8(out.stdout).unwrap().trim().to_owned()
            };
            (own, child(false), child(true))
        })
        .join()
        .unwrap();
        // /proc/PID/stat's 41st field is the policy: 3 is SCHED_BATCH.
        assert_eq!(policies, (libc::SCHED_BATCH, "3".into(), "0".into()));
    }
}
