//! `aam up`: a manager and a local worker in the background (`aam
//! __serve`), so a person or an assistant can submit and go on.

use crate::exit::{bad_input, unreachable};
use crate::local::{wait_until, Local};
use anyhow::Context as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The end of a log, to show why the background manager exited.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(10).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Starts `aam __serve` in the background and waits until it listens.
pub fn run(slots: Option<u32>, config: Option<PathBuf>) -> anyhow::Result<i32> {
    let local = Local::here();
    if let Some(pid) = local.running_pid() {
        println!(
            "aam is already up here: manager at {} (pid {pid})",
            local.addr().unwrap_or_default()
        );
        if let Some(http) = local.http_addr() {
            println!("  dashboard: https://{http}/");
        }
        print_certificate(&local);
        return Ok(0);
    }
    // Its store, token and log are the manager's: for this user only.
    aam_store::files::ensure_private_dir(&local.dir)
        .with_context(|| format!("creating {}", local.dir.display()))?;
    let _ = std::fs::remove_file(local.addr_file());
    let _ = std::fs::remove_file(local.http_addr_file());
    let log = aam_store::files::open_private(
        &local.log_file(),
        std::fs::OpenOptions::new().create(true).append(true),
    )
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
    aam_store::files::write_private(&local.pid_file(), format!("{}\n", child.id()).as_bytes())?;
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
    // Written before manager.addr: there by now, unless `http = "off"`.
    if let Some(http) = local.http_addr() {
        println!("  dashboard: https://{http}/ (sign in with the token)");
    }
    print_certificate(&local);
    println!("  token: {}", local.token_file().display());
    println!("  logs:  {}", local.log_file().display());
    println!("aam commands run in this directory use it; `aam down` stops it.");
    Ok(0)
}

/// The manager's certificate and its fingerprint: what a browser shows
/// for the dashboard, and what a worker elsewhere pins (`--fingerprint`).
fn print_certificate(local: &Local) {
    let cert = local.dir.join(aam_protocol::tls::CERT_FILE);
    match aam_protocol::tls::load_certs(&cert) {
        Ok(certs) => println!(
            "  TLS certificate: {} (SHA-256 fingerprint {}; workers and clients elsewhere pass --fingerprint with it)",
            cert.display(),
            aam_protocol::tls::Fingerprint::of(certs[0].as_ref())
        ),
        Err(e) => println!("  TLS certificate: {e}"),
    }
}
