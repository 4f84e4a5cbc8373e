//! Tests of starting leaders: what the child gets (arguments, variables,
//! directory, pipes, group, signals, death signal, cgroup) and how
//! failures come back (named, reaped, nothing left running).

use super::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the command to its end: its stdout and exit code.
async fn output(command: &Command) -> (String, Option<i32>) {
    let mut leader = command.spawn().expect("spawn");
    let mut out = String::new();
    let mut stdout = leader.stdout.take().unwrap();
    stdout.read_to_string(&mut out).await.unwrap();
    let status = leader.wait().await.unwrap();
    (out, status.code())
}

/// A field of /proc/PID/status (`SigBlk`, ...).
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Polls until `done` holds, failing after five seconds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_leader_gets_its_arguments_variables_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "printf '%s|%s|%s|%s' \"$1\" \"$AAM_T\" \"$(pwd)\" \"$HOME\"; exit 3",
            "sh",
            "one two",
        ])
        .env("AAM_T", "first")
        .env("AAM_T", "last")
        .current_dir(dir.path());
    let (out, code) = runtime().block_on(output(&command));
    let home = std::env::var("HOME").unwrap_or_default();
    let here = dir.path().canonicalize().unwrap();
    assert_eq!(out, format!("one two|last|{}|{home}", here.display()));
    assert_eq!(code, Some(3));
}

#[test]
fn a_variable_the_worker_has_is_passed_on_once_with_the_job_s_value() {
    assert!(std::env::var_os("PATH").is_some(), "the test needs a PATH");
    let mut command = Command::new("/usr/bin/env");
    command.env("PATH", "/job/bin:/usr/bin:/bin");
    let (out, code) = runtime().block_on(output(&command));
    let paths: Vec<&str> = out.lines().filter(|l| l.starts_with("PATH=")).collect();
    assert_eq!(paths, ["PATH=/job/bin:/usr/bin:/bin"], "{out}");
    // The worker's other variables are passed on as they are.
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(out.lines().any(|l| l == format!("HOME={home}")), "{out}");
    assert_eq!(code, Some(0));
}

#[test]
fn a_bare_name_is_looked_up_on_the_path_the_job_sets() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("only-here");
    std::fs::write(&tool, "#!/bin/sh\necho found\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // An unreadable-for-exec file earlier on the PATH does not stop the search.
    let earlier = tempfile::tempdir().unwrap();
    std::fs::write(earlier.path().join("only-here"), "not a program").unwrap();
    let path = format!("{}:{}", earlier.path().display(), dir.path().display());
    let mut command = Command::new("only-here");
    command.env("PATH", &path);
    let (out, code) = runtime().block_on(output(&command));
    assert_eq!((out.as_str(), code), ("found\n", Some(0)));
}

#[test]
fn a_script_without_a_shebang_runs_under_sh() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("plain");
    std::fs::write(&script, "echo \"plain $1\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = Command::new(&script);
    command.arg("works");
    let (out, code) = runtime().block_on(output(&command));
    assert_eq!((out.as_str(), code), ("plain works\n", Some(0)));
}

#[test]
fn stdin_is_a_pipe_when_asked_and_dev_null_otherwise() {
    let rt = runtime();
    rt.block_on(async {
        let mut command = Command::new("cat");
        command.stdin_piped(true);
        let mut leader = command.spawn().unwrap();
        let mut stdin = leader.stdin.take().unwrap();
        stdin.write_all(b"through the pipe").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        let mut stdout = leader.stdout.take().unwrap();
        stdout.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "through the pipe");
        assert!(leader.wait().await.unwrap().success());

        // Not piped: cat reads /dev/null and ends at once.
        let (out, code) = output(&Command::new("cat")).await;
        assert_eq!((out.as_str(), code), ("", Some(0)));
    });
}

#[test]
fn stderr_is_its_own_pipe() {
    let rt = runtime();
    rt.block_on(async {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2"]);
        let mut leader = command.spawn().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        leader
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        leader
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        leader.wait().await.unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    });
}

#[test]
fn a_leader_leads_its_group_with_no_signal_blocked_and_sigpipe_at_its_default() {
    let rt = runtime();
    rt.block_on(async {
        // Rust ignores SIGPIPE in the worker; a job must not inherit that.
        // SAFETY: setting the test process's own disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let mut leader = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = leader.id();
        eventually("sleep exec'd", || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        let pgrp: u32 = after_name
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pgrp, pid, "the leader leads a process group of its own");
        assert_eq!(status_field(pid, "SigBlk"), "0000000000000000");
        let ignored = u64::from_str_radix(&status_field(pid, "SigIgn"), 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored");
        assert_eq!(leader.try_wait().unwrap(), None);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let status = leader.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    });
}

#[test]
fn a_leader_dies_with_the_thread_that_started_it() {
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async {
            let leader = Command::new("sleep").arg("30").spawn().unwrap();
            pid_tx.send(leader.id()).unwrap();
            // Dropped unreaped: a reaper thread of the process waits for it.
        });
    })
    .join()
    .unwrap();
    let pid = pid_rx.recv().unwrap();
    eventually("the leader killed and reaped", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
}

#[test]
fn waiting_is_cancel_safe() {
    let rt = runtime();
    rt.block_on(async {
        let mut leader = Command::new("sh")
            .args(["-c", "sleep 0.2; exit 7"])
            .spawn()
            .unwrap();
        let early = tokio::time::timeout(Duration::from_millis(10), leader.wait()).await;
        assert!(early.is_err(), "ended before its time");
        assert_eq!(leader.wait().await.unwrap().code(), Some(7));
        // Asked again: the same answer, not an error about a reaped child.
        assert_eq!(leader.wait().await.unwrap().code(), Some(7));
    });
}

#[test]
fn a_failed_start_names_the_step_and_leaves_no_child() {
    let rt = runtime();
    rt.block_on(async {
        let missing = Command::new("/nonexistent/aam-program")
            .spawn()
            .unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");

        let not_on_path = Command::new("aam-no-such-program-anywhere")
            .spawn()
            .unwrap_err();
        assert_eq!(not_on_path.kind(), io::ErrorKind::NotFound, "{not_on_path}");

        let mut command = Command::new("true");
        command.current_dir("/nonexistent/dir");
        let bad_dir = command.spawn().unwrap_err();
        assert!(
            bad_dir.to_string().contains("entering the directory"),
            "{bad_dir}"
        );

        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "echo no").unwrap();
        let denied = Command::new(&plain).spawn().unwrap_err();
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied, "{denied}");

        let nul = Command::new("echo").arg("a\0b").spawn().unwrap_err();
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
        assert!(nul.to_string().contains("NUL"), "{nul}");

        // Each failed child was reaped: this thread has none left.
        // SAFETY: gettid only reads this thread's id.
        let tid = unsafe { libc::gettid() };
        let children = std::fs::read_to_string(format!("/proc/self/task/{tid}/children"));
        assert_eq!(children.unwrap().trim(), "", "unreaped children");
    });
}

#[test]
fn the_search_tries_each_directory_of_the_path_in_turn() {
    let found = candidates(b"tool", Some(OsStr::new("/a::/b")));
    assert_eq!(
        found,
        vec![b"/a/tool".to_vec(), b"./tool".to_vec(), b"/b/tool".to_vec()]
    );
    assert_eq!(
        candidates(b"./tool", Some(OsStr::new("/a"))),
        vec![b"./tool".to_vec()]
    );
    assert_eq!(
        candidates(b"tool", None),
        vec![b"/bin/tool".to_vec(), b"/usr/bin/tool".to_vec()]
    );
}

/// The mask `block_signals` sets, read back, with this thread's own put
/// back at once.
fn mask_while_cloning() -> libc::sigset_t {
    // SAFETY: this thread's mask, read and restored; nothing else runs on
    // this thread in between.
    unsafe {
        let old = block_signals();
        let mut during: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut during);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        during
    }
}

/// In a forked child (so that no thread of the test process has its
/// SIGCHLD disposition changed, and other tests' SIGCHLD watches do not
/// matter): SIGCHLD set to `disposition`, then which of `signals` the
/// mask across a clone blocks, as a bit each; 255 if the disposition was
/// refused.
fn blocked_across_clone(disposition: libc::sighandler_t, signals: &[libc::c_int]) -> i32 {
    // SAFETY: the child calls only async-signal-safe functions (sigaction,
    // the mask's calls, sigismember), then `_exit`; the parent reaps it.
    let status = unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = disposition;
            if libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()) != 0 {
                libc::_exit(255);
            }
            let during = mask_while_cloning();
            let mut bits = 0;
            for (i, signal) in signals.iter().enumerate() {
                if libc::sigismember(&during, *signal) == 1 {
                    bits |= 1 << i;
                }
            }
            libc::_exit(bits);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        status
    };
    assert!(libc::WIFEXITED(status), "{status}");
    libc::WEXITSTATUS(status)
}

#[test]
fn an_unhandled_sigchld_stays_open_across_the_clone_and_a_handled_one_is_blocked() {
    extern "C" fn ignore(_: libc::c_int) {}
    let handler = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SIGCHLD first, then signals that are always blocked.
    let signals = [
        libc::SIGCHLD,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGPIPE,
        libc::SIGUSR1,
    ];
    let all = (1 << signals.len()) - 1;
    assert_eq!(
        blocked_across_clone(libc::SIG_DFL, &signals),
        all & !1,
        "unhandled: SIGCHLD open, the others blocked"
    );
    assert_eq!(
        blocked_across_clone(handler, &signals),
        all,
        "handled: SIGCHLD blocked too"
    );
}

/// A cgroup of its own for a test, removed when dropped (empty by then).
struct TestCgroup {
    dir: PathBuf,
    dir_fd: OwnedFd,
    procs: OwnedFd,
}

impl TestCgroup {
    /// Needs job cgroups (root, cgroup v2), as the cgroup tests do.
    fn new(name: &str) -> TestCgroup {
        let own = crate::cgroup::detect().unwrap_or_else(|why| {
            panic!("this test needs job cgroups (root and a writable cgroup v2): {why}")
        });
        let dir = own.join(format!("aam-leadertest-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let dir_fd = OwnedFd::from(std::fs::File::open(&dir).unwrap());
        // Read-only: a leader that tried to move itself in would fail.
        let procs = OwnedFd::from(std::fs::File::open(dir.join("cgroup.procs")).unwrap());
        TestCgroup { dir, dir_fd, procs }
    }

    fn writable_procs(&self) -> OwnedFd {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .unwrap();
        OwnedFd::from(file)
    }

    fn members(&self) -> String {
        std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let removed = std::fs::remove_dir(&self.dir);
        if !std::thread::panicking() {
            removed.unwrap_or_else(|e| panic!("{} left behind: {e}", self.dir.display()));
        }
    }
}

/// The leader's cgroup v2 path as it sees it, and its exit code.
async fn cgroup_seen(cgroup: CgroupFds) -> io::Result<(String, Option<i32>)> {
    let mut command = Command::new("sh");
    command
        .args(["-c", "grep '^0::' /proc/self/cgroup"])
        .into_cgroup(cgroup);
    let mut leader = command.spawn()?;
    let mut out = String::new();
    leader
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await?;
    Ok((out, leader.wait().await?.code()))
}

#[test]
fn a_leader_is_born_in_its_cgroup_and_moves_in_where_it_cannot_be() {
    let rt = runtime();
    // Born there (x86_64 only): it never writes to cgroup.procs, open
    // read-only here, so a leader that tried would fail to start.
    let born = TestCgroup::new("born");
    if cfg!(target_arch = "x86_64") {
        let (seen, code) = rt
            .block_on(cgroup_seen(CgroupFds {
                dir: born.dir_fd.as_raw_fd(),
                procs: born.procs.as_raw_fd(),
            }))
            .unwrap_or_else(|e| {
                panic!("not born in its cgroup (does this kernel refuse clone3's CLONE_INTO_CGROUP?): {e}")
            });
        assert_eq!(code, Some(0));
        let name = born.dir.file_name().unwrap().to_str().unwrap();
        assert!(seen.trim().ends_with(&format!("/{name}")), "{seen}");
        assert!(born_in_cgroup::usable());
    }

    // A directory clone3 refuses (not a cgroup): the leader moves itself
    // in, as before; with no way to write it in, it fails naming the step.
    let moved = TestCgroup::new("moved");
    let not_a_cgroup = tempfile::tempdir().unwrap();
    let not_a_cgroup = OwnedFd::from(std::fs::File::open(not_a_cgroup.path()).unwrap());
    let procs = moved.writable_procs();
    let (seen, code) = rt
        .block_on(cgroup_seen(CgroupFds {
            dir: not_a_cgroup.as_raw_fd(),
            procs: procs.as_raw_fd(),
        }))
        .unwrap();
    assert_eq!(code, Some(0));
    let name = moved.dir.file_name().unwrap().to_str().unwrap();
    assert!(seen.trim().ends_with(&format!("/{name}")), "{seen}");
    let refused = rt
        .block_on(cgroup_seen(CgroupFds {
            dir: not_a_cgroup.as_raw_fd(),
            procs: moved.procs.as_raw_fd(),
        }))
        .unwrap_err();
    assert!(
        refused.to_string().contains("moving into the job's cgroup"),
        "{refused}"
    );
    // The kernel's refusal of one directory is not taken for good.
    assert_eq!(born_in_cgroup::usable(), cfg!(target_arch = "x86_64"));
    assert_eq!(born.members(), "");
    assert_eq!(moved.members(), "");
}
