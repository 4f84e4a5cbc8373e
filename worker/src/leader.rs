//! Starting a job's leader process without copying the worker: a
//! vfork-style `clone` (the child borrows the worker's memory until it
//! execs), with the job's guards set up in the child before its command
//! runs, and a pidfd to wait on.
//!
//! Why not `std::process::Command`: the guards (`PR_SET_PDEATHSIG`, the
//! move into the job's cgroup where it cannot be born there:
//! `born_in_cgroup.rs`) need a `pre_exec` hook, and with one std
//! forks, which copies the page tables of the whole worker and then makes
//! both sides fault the copied pages back in. That was over half of the
//! worker's CPU per short job (issue 18); without the copy the guards
//! cost a few syscalls.
//!
//! What the child may do: it shares the worker's memory while the worker's
//! thread waits in `clone`, so between `clone` and `execve` it calls only
//! async-signal-safe functions on data prepared beforehand (no allocation,
//! no lock, no panic), and runs with every signal blocked (but SIGCHLD
//! when the worker does not handle it) until it has put each handled
//! signal back to its default (a worker's handler must never run on the
//! child's stack). It reports a failed step through memory the two share,
//! then exits 127.
//!
//! Architecture invariant: every job or verify process the worker starts
//! goes through here, so every one of them gets the guards.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::OnceLock;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// Stack of the child between `clone` and `execve`: a few frames of
/// syscall wrappers need far less; a guard page below catches a mistake.
const CHILD_STACK: usize = 64 * 1024;

/// Below the child's stack: a write there faults instead of corrupting.
const GUARD_PAGE: usize = 4096;

/// Where the search for a bare program name looks when no PATH is set
/// (glibc's `execvp` default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// How a leader is started: the program, its arguments, the variables set
/// over the worker's own environment, its directory, its stdin, and the
/// guards that tie it to the worker.
#[derive(Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    stdin_piped: bool,
    cgroup: Option<CgroupFds>,
}

/// A job's cgroup v2, open: its directory (for a leader born in it) and its
/// `cgroup.procs` (for one that moves itself in where that cannot be done).
#[derive(Clone, Copy, Debug)]
pub struct CgroupFds {
    pub dir: RawFd,
    pub procs: RawFd,
}

impl Command {
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            stdin_piped: false,
            cgroup: None,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets a variable over the worker's environment (the last one set wins).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// A pipe to the leader's stdin instead of /dev/null.
    pub fn stdin_piped(&mut self, piped: bool) -> &mut Command {
        self.stdin_piped = piped;
        self
    }

    /// The leader runs in this cgroup: born there, or where the kernel
    /// cannot do that, moving itself in before it execs. Both fds must stay
    /// open until `spawn` returns.
    pub fn into_cgroup(&mut self, cgroup: CgroupFds) -> &mut Command {
        self.cgroup = Some(cgroup);
        self
    }

    /// The program as given, for messages.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// Starts the leader: in a process group of its own, dying with the
    /// calling thread (`PR_SET_PDEATHSIG`), in its cgroup if one is given,
    /// stdout and stderr piped. Call it from the thread that lives as long
    /// as the worker (`orphans.rs` says why).
    pub fn spawn(&self) -> io::Result<Leader> {
        let prepared = Prepared::new(self)?;
        let pid = prepared.start()?;
        let Prepared { stdio, .. } = prepared;
        // The child's ends close here; the parent keeps its own.
        let Stdio {
            stdin_parent,
            stdout_parent,
            stderr_parent,
            ..
        } = stdio;
        let mut leader = Leader {
            pid,
            status: None,
            exits: None,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        // From here on a failure must still reap the child: `leader` does
        // that when dropped.
        leader.exits = Some(Exits::watch(pid)?);
        leader.stdin = stdin_parent.map(pipe::Sender::from_owned_fd).transpose()?;
        leader.stdout = Some(pipe::Receiver::from_owned_fd(stdout_parent)?);
        leader.stderr = Some(pipe::Receiver::from_owned_fd(stderr_parent)?);
        Ok(leader)
    }
}

/// A started leader: its pipes and its end.
#[derive(Debug)]
pub struct Leader {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
    exits: Option<Exits>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// How the end of a leader is noticed: its pidfd becomes readable, or
/// (kernels before 5.3) a SIGCHLD arrives and the leader is checked.
#[derive(Debug)]
enum Exits {
    PidFd(AsyncFd<OwnedFd>),
    ChildSignals(tokio::signal::unix::Signal),
}

impl Exits {
    fn watch(pid: libc::pid_t) -> io::Result<Exits> {
        // SAFETY: pidfd_open takes a pid and flags; the child is not reaped
        // yet (only `Leader` reaps it), so the pid is still this child's.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the syscall returned a new fd that nothing else owns;
            // the `OwnedFd` keeps it open, and the same, for the `AsyncFd`.
            let watched = unsafe {
                let fd = OwnedFd::from_raw_fd(fd as RawFd);
                AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)?
            };
            return Ok(Exits::PidFd(watched));
        }
        let signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        Ok(Exits::ChildSignals(signals))
    }

    async fn next(&mut self) -> io::Result<()> {
        match self {
            Exits::PidFd(fd) => fd.readable().await.map(|mut ready| ready.clear_ready()),
            Exits::ChildSignals(signals) => match signals.recv().await {
                Some(()) => Ok(()),
                None => Err(io::Error::other("the SIGCHLD stream ended")),
            },
        }
    }
}

impl Leader {
    /// The leader's pid (the id of its process group too).
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Its exit status if it has ended (reaping it), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own unreaped child, WNOHANG.
        match unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) } {
            0 => Ok(None),
            -1 => Err(io::Error::last_os_error()),
            _ => {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                Ok(Some(status))
            }
        }
    }

    /// Waits for the leader's end. Cancel-safe: dropping the future loses
    /// nothing, the next call picks up.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match &mut self.exits {
                Some(exits) => exits.next().await?,
                None => return Err(io::Error::other("the leader's end cannot be watched")),
            }
        }
    }
}

impl Drop for Leader {
    /// A leader dropped before its end (its task cut short) is reaped by a
    /// thread of its own, so it never stays a zombie. Stopping it is the
    /// caller's business (`teardown.rs`), as with std's `Child`.
    fn drop(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        let pid = self.pid;
        let reaper = std::thread::Builder::new().name("aam-reap".into());
        let _ = reaper.spawn(move || {
            let mut raw = 0;
            // SAFETY: blocking waitpid on a child nobody else reaps.
            unsafe { libc::waitpid(pid, &mut raw, 0) };
        });
    }
}

/// The pipes of a leader: the child's ends (made its 0, 1 and 2) and the
/// parent's.
struct Stdio {
    stdin_child: OwnedFd,
    stdout_child: OwnedFd,
    stderr_child: OwnedFd,
    stdin_parent: Option<OwnedFd>,
    stdout_parent: OwnedFd,
    stderr_parent: OwnedFd,
}

impl Stdio {
    fn new(stdin_piped: bool) -> io::Result<Stdio> {
        let (stdin_child, stdin_parent) = if stdin_piped {
            let (read, write) = pipe_pair()?;
            (read, Some(write))
        } else {
            let null = std::fs::File::open("/dev/null")?;
            (above_stdio(OwnedFd::from(null))?, None)
        };
        let (stdout_parent, stdout_child) = pipe_pair()?;
        let (stderr_parent, stderr_child) = pipe_pair()?;
        Ok(Stdio {
            stdin_child,
            stdout_child,
            stderr_child,
            stdin_parent,
            stdout_parent,
            stderr_parent,
        })
    }
}

/// A close-on-exec pipe (read end, write end), both above 2 so that
/// making them the child's 0, 1 and 2 never overwrites one another.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are new and owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// The fd itself, or a close-on-exec copy of it above 2 when the worker
/// runs with one of 0, 1, 2 closed and the kernel handed that number out.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd >= 3 for an open fd.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Everything the child reads, made before `clone`: C strings and the
/// arrays of pointers into them (kept alive by the owning vectors, and,
/// for the variables the worker's own environment passes on, by
/// `own_environment`, which lives as long as the process).
struct Prepared {
    /// Where the program may be, in search order. The `_` fields own the
    /// strings that the pointer arrays point into.
    _candidates: Vec<CString>,
    candidate_ptrs: Vec<*const libc::c_char>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// `/bin/sh FILE ARGS...` for a file without a `#!` line (as
    /// `execvp` does); slot 1 is set to the candidate by the child.
    sh_argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    dir: Option<CString>,
    sh: CString,
    cgroup: Option<CgroupFds>,
    stdio: Stdio,
}

impl Prepared {
    fn new(command: &Command) -> io::Result<Prepared> {
        let c = |what: &str, bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{what} holds a NUL byte: {}",
                        String::from_utf8_lossy(bytes)
                    ),
                )
            })
        };
        let program = command.program.as_bytes();
        let mut argv = vec![c("the program", program)?];
        for arg in &command.args {
            argv.push(c("an argument", arg.as_bytes())?);
        }
        let envp = overrides(&command.env)
            .map(|(k, v)| c("a variable", &entry(k, v)))
            .collect::<io::Result<Vec<_>>>()?;
        let overridden = |key: &OsStr| command.env.iter().any(|(k, _)| k == key);
        let inherited = own_environment()
            .iter()
            .filter(|(key, _)| !overridden(key))
            .map(|(_, entry)| entry.as_ptr());
        let envp_ptrs = inherited
            .chain(envp.iter().map(|entry| entry.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let path = command
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str())
            .or_else(|| own_path());
        let candidates = candidates(program, path)
            .into_iter()
            .map(|p| c("the program", &p))
            .collect::<io::Result<Vec<_>>>()?;
        let dir = match &command.dir {
            Some(dir) => Some(c("the directory", dir.as_os_str().as_bytes())?),
            None => None,
        };
        let mut prepared = Prepared {
            candidate_ptrs: null_terminated(&candidates),
            _candidates: candidates,
            argv_ptrs: null_terminated(&argv),
            sh_argv_ptrs: Vec::new(),
            _argv: argv,
            envp_ptrs,
            _envp: envp,
            dir,
            sh: CString::from(c"/bin/sh"),
            cgroup: command.cgroup,
            stdio: Stdio::new(command.stdin_piped)?,
        };
        let mut sh_argv = vec![prepared.sh.as_ptr(), std::ptr::null()];
        sh_argv.extend_from_slice(&prepared.argv_ptrs[1..]);
        prepared.sh_argv_ptrs = sh_argv;
        Ok(prepared)
    }

    /// Clones the child and waits for it to exec (or fail): its pid.
    fn start(&self) -> io::Result<libc::pid_t> {
        let mut report = Report {
            errno: AtomicI32::new(0),
            step: AtomicU8::new(Step::None as u8),
        };
        let mut sh_argv = self.sh_argv_ptrs.clone();
        let mut child = ChildArgs {
            candidates: self.candidate_ptrs.as_ptr(),
            argv: self.argv_ptrs.as_ptr(),
            sh_argv: sh_argv.as_mut_ptr(),
            envp: self.envp_ptrs.as_ptr(),
            dir: self.dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
            sh: self.sh.as_ptr(),
            stdio: [
                self.stdio.stdin_child.as_raw_fd(),
                self.stdio.stdout_child.as_raw_fd(),
                self.stdio.stderr_child.as_raw_fd(),
            ],
            // Set below: only a leader not born in its cgroup moves in.
            cgroup_procs: -1,
            // SAFETY: getpid only reads this process's id.
            worker: unsafe { libc::getpid() },
            report: &mut report,
        };
        let pid = CHILD_STACK_TOP.with(|top| -> io::Result<libc::pid_t> {
            let top = top
                .as_ref()
                .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
            // SAFETY: every handled signal is blocked across the clone so
            // that no handler of the worker runs in the child before it
            // resets them; the mask is put back right after.
            let old_mask = unsafe { block_signals() };
            let started = self.clone_child(top, &mut child);
            // SAFETY: restores this thread's own mask.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            started
        })?;
        let errno = report.errno.load(Ordering::Acquire);
        if errno == 0 {
            return Ok(pid);
        }
        // The child exited at once: reap it and say which step failed.
        let mut raw = 0;
        // SAFETY: our own child, which has exited.
        unsafe { libc::waitpid(pid, &mut raw, 0) };
        let error = io::Error::from_raw_os_error(errno);
        let step = report.step.load(Ordering::Acquire);
        Err(match step {
            s if s == Step::Exec as u8 => error,
            s if s == Step::Dir as u8 => {
                io::Error::new(error.kind(), format!("entering the directory: {error}"))
            }
            s if s == Step::Cgroup as u8 => io::Error::new(
                error.kind(),
                format!("moving into the job's cgroup: {error}"),
            ),
            s if s == Step::WorkerGone as u8 => {
                io::Error::other("the worker ended while the job was starting")
            }
            _ => io::Error::new(error.kind(), format!("preparing the process: {error}")),
        })
    }

    /// Starts the child (`child_main` on `child`) born in its cgroup where
    /// the kernel can (`born_in_cgroup`), else with `clone`, moving itself
    /// into its cgroup if it has one.
    fn clone_child(&self, top: &StackTop, child: &mut ChildArgs) -> io::Result<libc::pid_t> {
        if let Some(cgroup) = self.cgroup.filter(|_| born_in_cgroup::usable()) {
            let arg = (child as *mut ChildArgs).cast();
            // SAFETY: as for `clone` below; the stack is this thread's
            // child stack, unused while no child of this thread runs.
            let born =
                unsafe { born_in_cgroup::start(child_main, arg, top.0, CHILD_STACK, cgroup.dir) };
            match born {
                Ok(pid) => return Ok(pid),
                // Whatever the reason, the older way either works or says
                // which step failed, as it always has.
                Err(e) => tracing::debug!("a leader not born in its cgroup: {e}"),
            }
        }
        child.cgroup_procs = self.cgroup.map_or(-1, |c| c.procs);
        let arg = (child as *mut ChildArgs).cast();
        // SAFETY: CLONE_VFORK suspends this thread until the child has
        // exec'd or exited, so `child`, the strings it points into and
        // the stack (this thread's own) outlive the child's use of them.
        // The child runs `child_main` only (see its rules).
        let pid = unsafe {
            libc::clone(
                child_main,
                top.0.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                arg,
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pid)
    }
}

/// The worker's own environment, read once: it does not change while the
/// worker runs, and copying it for every job was a tenth of the worker's
/// CPU per short job (issue 18). Each variable's name and its `K=V`.
fn own_environment() -> &'static [(OsString, CString)] {
    static OWN: OnceLock<Vec<(OsString, CString)>> = OnceLock::new();
    OWN.get_or_init(|| {
        std::env::vars_os()
            // The system's variables hold no NUL byte.
            .filter_map(|(k, v)| Some((k.clone(), CString::new(entry(&k, &v)).ok()?)))
            .collect()
    })
}

/// The worker's own `PATH`, if it has one.
fn own_path() -> Option<&'static OsStr> {
    let mut vars = own_environment().iter();
    let (_, entry) = vars.find(|(key, _)| key == "PATH")?;
    Some(OsStr::from_bytes(&entry.as_bytes()["PATH=".len()..]))
}

/// The variables a job sets over the worker's environment, each key once:
/// the last setting of a key wins, as with std's `Command::env`.
fn overrides(overrides: &[(OsString, OsString)]) -> impl Iterator<Item = (&OsStr, &OsStr)> + '_ {
    overrides.iter().enumerate().filter_map(|(i, (k, v))| {
        let later = overrides[i + 1..].iter().any(|(later, _)| later == k);
        (!later).then_some((k.as_os_str(), v.as_os_str()))
    })
}

fn entry(key: &OsStr, value: &OsStr) -> Vec<u8> {
    let mut entry = key.to_owned().into_vec();
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    entry
}

/// Where to look for `program`: itself when it names a path, else each
/// directory of `path` in turn (an empty one is the current directory).
fn candidates(program: &[u8], path: Option<&OsStr>) -> Vec<Vec<u8>> {
    if program.contains(&b'/') || program.is_empty() {
        return vec![program.to_vec()];
    }
    let path = path.map_or(DEFAULT_PATH.as_bytes(), OsStr::as_bytes);
    path.split(|b| *b == b':')
        .map(|dir| {
            let mut candidate = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            candidate.push(b'/');
            candidate.extend_from_slice(program);
            candidate
        })
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Blocks every signal on this thread but an unhandled SIGCHLD: the mask
/// it had.
///
/// SIGCHLD stays open unless the worker handles it (the SIGCHLD watch of
/// kernels without pidfds): a job that ends before this thread has run
/// again after `clone` (it may wait behind the job on its CPU) would
/// otherwise have its SIGCHLD queued, not dropped, and delivered to
/// another thread of the worker, woken for nothing. The child may take it
/// unblocked: with no handler, nothing of the worker's runs.
///
/// # Safety
/// The caller puts the returned mask back.
unsafe fn block_signals() -> libc::sigset_t {
    let mut blocked: libc::sigset_t = std::mem::zeroed();
    let mut old: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut blocked);
    let mut child: libc::sigaction = std::mem::zeroed();
    let handled = libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut child) != 0
        || (child.sa_sigaction != libc::SIG_DFL && child.sa_sigaction != libc::SIG_IGN);
    if !handled {
        libc::sigdelset(&mut blocked, libc::SIGCHLD);
    }
    libc::pthread_sigmask(libc::SIG_SETMASK, &blocked, &mut old);
    old
}

/// The step of the child that failed.
#[repr(u8)]
enum Step {
    None,
    Signals,
    Group,
    DeathSignal,
    WorkerGone,
    Cgroup,
    Stdio,
    Dir,
    Exec,
}

/// What the child tells the parent, in memory they share.
struct Report {
    errno: AtomicI32,
    step: AtomicU8,
}

/// What `child_main` reads. Plain pointers: it must not touch anything
/// that could allocate or lock.
struct ChildArgs {
    candidates: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    sh_argv: *mut *const libc::c_char,
    envp: *const *const libc::c_char,
    dir: *const libc::c_char,
    sh: *const libc::c_char,
    stdio: [RawFd; 3],
    cgroup_procs: RawFd,
    worker: libc::pid_t,
    report: *mut Report,
}

/// The child between `clone` and `execve`. Async-signal-safe calls only,
/// on memory prepared by the parent; never returns on success.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the parent passes a `ChildArgs` that outlives the child's
    // use of it (the parent is suspended until exec or exit).
    let args = unsafe { &*(arg as *const ChildArgs) };
    let fail = |step: Step| -> libc::c_int {
        // SAFETY: errno location of this thread (shared with the
        // suspended parent thread, which reads `report` instead).
        let errno = unsafe { *libc::__errno_location() };
        // SAFETY: `report` lives in the suspended parent's frame.
        let report = unsafe { &*args.report };
        report.errno.store(errno.max(1), Ordering::Release);
        report.step.store(step as u8, Ordering::Release);
        // SAFETY: _exit ends the child without running anything of the
        // worker's (no atexit, no flush of shared buffers).
        unsafe { libc::_exit(127) }
    };
    // SAFETY (whole block): each call is an async-signal-safe syscall
    // wrapper on prepared data; see the module's rules.
    unsafe {
        // A handled signal goes back to its default (its handler is the
        // worker's code); SIGPIPE too, which Rust programs ignore.
        for signal in 1..libc::SIGRTMAX() + 1 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if handled || (signal == libc::SIGPIPE && old.sa_sigaction == libc::SIG_IGN) {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(signal, &default, std::ptr::null_mut()) != 0 {
                    return fail(Step::Signals);
                }
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(Step::Group);
        }
        let kill = libc::SIGKILL as libc::c_ulong;
        if libc::prctl(libc::PR_SET_PDEATHSIG, kill, 0, 0, 0) != 0 {
            return fail(Step::DeathSignal);
        }
        // The worker died before the death signal was set: none will come.
        if libc::getppid() != args.worker {
            return fail(Step::WorkerGone);
        }
        // "0" moves the writing process itself.
        if args.cgroup_procs >= 0 && libc::write(args.cgroup_procs, c"0".as_ptr().cast(), 1) != 1 {
            return fail(Step::Cgroup);
        }
        // Each fd is above 2 (see `pipe_pair`), so none overwrites another;
        // dup2 leaves the copy open across exec.
        for (target, fd) in args.stdio.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                return fail(Step::Stdio);
            }
        }
        if !args.dir.is_null() && libc::chdir(args.dir) != 0 {
            return fail(Step::Dir);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // As `execvp`: try each candidate; EACCES wins over a later
        // not-found; a file the kernel cannot run is given to /bin/sh.
        let mut denied = false;
        let mut candidate = args.candidates;
        while !(*candidate).is_null() {
            libc::execve(*candidate, args.argv, args.envp);
            match *libc::__errno_location() {
                libc::ENOEXEC => {
                    *args.sh_argv.add(1) = *candidate;
                    libc::execve(args.sh, args.sh_argv.cast_const(), args.envp);
                    return fail(Step::Exec);
                }
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return fail(Step::Exec),
            }
            candidate = candidate.add(1);
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(Step::Exec)
    }
}

/// The top of this thread's child stack (mapped once per thread, with a
/// guard page below it), or why it could not be mapped.
struct StackTop(*mut u8);

impl Drop for StackTop {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `map_child_stack`, unused by now (no
        // child runs once the thread that owns it is ending).
        unsafe {
            let base = self.0.sub(GUARD_PAGE + CHILD_STACK);
            libc::munmap(base.cast(), GUARD_PAGE + CHILD_STACK);
        }
    }
}

thread_local! {
    static CHILD_STACK_TOP: io::Result<StackTop> = map_child_stack();
}

fn map_child_stack() -> io::Result<StackTop> {
    let guard = GUARD_PAGE;
    // SAFETY: a fresh private anonymous mapping, unmapped when the thread
    // ends (`StackTop`'s drop).
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            guard + CHILD_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if libc::mprotect(base, guard, libc::PROT_NONE) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StackTop(base.cast::<u8>().add(guard + CHILD_STACK)))
    }
}

mod born_in_cgroup;

#[cfg(test)]
mod tests;
