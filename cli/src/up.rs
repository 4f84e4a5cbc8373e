//! `aam up` and `aam down`: a manager and a local worker in the background,
//! so a person or an assistant can submit and go on. Everything lives under
//! `./.aam` (address, token, store, log, pid), and every `aam` command
//! started in that directory finds them without flags.

use crate::exit::{bad_input, unreachable};
use aam_worker::agent::{Drain, KillAll};
use anyhow::Context as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `aam down` lets running jobs finish before they are stopped.
const DOWN_DRAIN: Duration = Duration::from_secs(10);

/// The files of a background manager in one directory.
pub struct Local {
    dir: PathBuf,
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

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("aam.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("aam.log")
    }

    pub fn addr(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.addr_file())
            .map_err(|e| unreachable(format!("reading {}: {e}", self.addr_file().display())))?;
        Ok(text.trim().to_string())
    }

    /// The pid of the background process, if it is alive and still ours
    /// (a pid file left by a crash may name some other process by now).
    fn running_pid(&self) -> Option<i32> {
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

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(10).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Starts `aam __serve` in the background and waits until it listens.
pub fn up(slots: Option<u32>, config: Option<PathBuf>) -> anyhow::Result<i32> {
    let local = Local::here();
    if let Some(pid) = local.running_pid() {
        println!(
            "aam is already up here: manager at {} (pid {pid})",
            local.addr().unwrap_or_default()
        );
        return Ok(0);
    }
    std::fs::create_dir_all(&local.dir)
        .with_context(|| format!("creating {}", local.dir.display()))?;
    let _ = std::fs::remove_file(local.addr_file());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(local.log_file())
        .with_context(|| format!("opening {}", local.log_file().display()))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("__serve").arg("--data-dir").arg(&local.dir).env(
        "AAM_LOG",
        std::env::var("AAM_LOG").unwrap_or_else(|_| "info".into()),
    );
    if let Some(slots) = slots {
        cmd.arg("--slots").arg(slots.to_string());
    }
    if let Some(config) = &config {
        cmd.arg("--config").arg(config);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal must not reach it.
        .process_group(0)
        .spawn()
        .context("starting the background manager")?;
    std::fs::write(local.pid_file(), format!("{}\n", child.id()))?;
    let listening = wait_until(Duration::from_secs(20), || {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        local
            .addr()
            .is_ok_and(|a| std::net::TcpStream::connect(a).is_ok())
    });
    if let Ok(Some(status)) = child.try_wait() {
        let _ = std::fs::remove_file(local.pid_file());
        return Err(bad_input(format!(
            "the background manager exited ({status}); the end of {}:\n{}",
            local.log_file().display(),
            log_tail(&local.log_file())
        )));
    }
    if !listening {
        return Err(unreachable(format!(
            "the background manager did not start listening; see {}",
            local.log_file().display()
        )));
    }
    println!("aam is up: manager at {}", local.addr()?);
    println!("  token: {}", local.token_file().display());
    println!("  logs:  {}", local.log_file().display());
    println!("aam commands run in this directory use it; `aam down` stops it.");
    Ok(0)
}

/// Stops the background manager and worker gracefully.
pub fn down() -> anyhow::Result<i32> {
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

/// The background process itself: manager and local worker until SIGTERM.
pub fn serve(
    data_dir: PathBuf,
    slots: Option<u32>,
    config: Option<PathBuf>,
) -> anyhow::Result<i32> {
    aam_manager::logging::init(
        &std::env::var("AAM_LOG").unwrap_or_else(|_| "info".into()),
        false,
    );
    let config = crate::run::embedded_config(config.as_deref(), &data_dir)?;
    let slots = slots.unwrap_or_else(crate::run::default_slots);
    let system = actix::System::new();
    system.block_on(async move {
        let (manager, worker) = crate::run::start_embedded(config, slots).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: draining the local worker");
        let (done, drained) = tokio::sync::oneshot::channel();
        worker.do_send(Drain {
            timeout: DOWN_DRAIN,
            grace: Duration::from_secs(5),
            done,
        });
        let _ = tokio::time::timeout(DOWN_DRAIN + Duration::from_secs(10), drained).await;
        let _ = worker.send(KillAll).await;
        manager.shutdown().await;
        anyhow::Ok(0)
    })
}
