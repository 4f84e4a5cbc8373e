//! Starting a job's leader process without copying the worker: a
//! vfork-style `clone` (the child borrows the worker's memory until it
//! execs), with the job's guards set up in the child before its command
//! runs, and a pidfd to wait on.
//!
//! Why not `std::process::Command`: the guards (`PR_SET_PDEATHSIG`, the
//! move into the job's cgroup) need a `pre_exec` hook, and with one std
//! forks, which copies the page tables of the whole worker and then makes
//! both sides fault the copied pages back in. That was over half of the
//! worker's CPU per short job (issue 18); without the copy the guards
//! cost a few syscalls.
//!
//! Leaders are cloned on one thread of their own (`spawner`), which lives
//! as long as the process: the death signal is tied to the thread that made
//! a process, and the wait in `clone` (the child's guards, the cgroup move,
//! the start of its exec: a few hundred microseconds) is not the event
//! loop's. `start.rs` does the cloning.
//!
//! What the child may do: it shares the worker's memory while the spawner
//! thread waits in `clone`, so between `clone` and `execve` it calls only
//! async-signal-safe functions on data prepared beforehand (no allocation,
//! no lock, no panic), and runs with every signal blocked until it has put
//! each handled signal back to its default (a worker's handler must never
//! run on the child's stack). It reports a failed step through memory the
//! two share, then exits 127.
//!
//! Architecture invariant: every job or verify process the worker starts
//! goes through here, so every one of them gets the guards.

mod start;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// How a leader is started: the program, its arguments, the variables set
/// over the worker's own environment, its directory, its stdin, and the
/// guards that tie it to the worker.
#[derive(Clone, Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    stdin_piped: bool,
    cgroup_procs: Option<Arc<OwnedFd>>,
}

impl Command {
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            stdin_piped: false,
            cgroup_procs: None,
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

    /// The leader writes itself into this open `cgroup.procs` before it
    /// execs.
    pub fn into_cgroup(&mut self, procs: Arc<OwnedFd>) -> &mut Command {
        self.cgroup_procs = Some(procs);
        self
    }

    /// The program as given, for messages.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// Starts the leader: in a process group of its own, dying with the
    /// worker (`PR_SET_PDEATHSIG`), in its cgroup if one is given, stdout
    /// and stderr piped. The clone happens on the spawner thread, so the
    /// caller's thread runs on while the child gets to its exec.
    pub async fn spawn(&self) -> io::Result<Leader> {
        let (reply, started) = tokio::sync::oneshot::channel();
        spawner::send(self.clone(), reply)?;
        let started = started
            .await
            .map_err(|_| io::Error::other("the leader spawner thread is gone"))??;
        Leader::new(started)
    }
}

/// What the spawner thread hands back: the leader's pid and the parent's
/// ends of its pipes.
#[derive(Debug)]
pub(crate) struct Started {
    pid: libc::pid_t,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl Started {
    /// Stops and reaps a leader nobody took (its spawn was cancelled).
    fn abandon(self) {
        // SAFETY: the leader leads its own group; we reap our own child.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut 0, 0);
        }
    }
}

/// The thread that clones every leader. `PR_SET_PDEATHSIG` fires when the
/// thread that made a process ends, so leaders are made by one thread that
/// lives as long as the worker process (never one of a pool, whose threads
/// end when idle); and while a child runs up to its exec (with a vfork the
/// parent waits), only this thread waits, not the worker's event loop.
mod spawner {
    use super::{start, Command, Started};
    use std::io;
    use std::sync::mpsc;
    use std::sync::OnceLock;
    use tokio::sync::oneshot;

    type Reply = oneshot::Sender<io::Result<Started>>;

    static REQUESTS: OnceLock<io::Result<mpsc::Sender<(Command, Reply)>>> = OnceLock::new();

    pub(super) fn send(command: Command, reply: Reply) -> io::Result<()> {
        let requests = REQUESTS.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<(Command, Reply)>();
            std::thread::Builder::new()
                .name("aam-spawner".into())
                .spawn(move || {
                    for (command, reply) in rx {
                        if let Err(Ok(started)) = reply.send(start::start(&command)) {
                            started.abandon();
                        }
                    }
                })?;
            Ok(tx)
        });
        let requests = requests
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), format!("starting the spawner thread: {e}")))?;
        requests
            .send((command, reply))
            .map_err(|_| io::Error::other("the leader spawner thread is gone"))
    }
}

impl Leader {
    fn new(started: Started) -> io::Result<Leader> {
        let Started {
            pid,
            stdin,
            stdout,
            stderr,
        } = started;
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
        leader.stdin = stdin.map(pipe::Sender::from_owned_fd).transpose()?;
        leader.stdout = Some(pipe::Receiver::from_owned_fd(stdout)?);
        leader.stderr = Some(pipe::Receiver::from_owned_fd(stderr)?);
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

#[cfg(test)]
mod tests;
