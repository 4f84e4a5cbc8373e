//! Following work as it happens: `aam logs --follow` and `aam watch`. Both
//! poll the manager (cheap, and they ride over a manager restart by
//! reconnecting and asking again).

use crate::client::Client;
use crate::render::{counts_line, estimate_line, human_duration};
use aam_protocol::messages::OutputWanted;
use aam_protocol::model::{JobStatus, JobView, SessionSummary};
use aam_protocol::{now_ms, SessionId};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);

/// Prints a job's output; with `follow`, keeps printing what it prints
/// until it ends.
pub async fn logs(
    client: &mut Client,
    session: SessionId,
    job: &str,
    follow: bool,
) -> anyhow::Result<()> {
    let mut from = 0u64;
    let mut attempt = None;
    let mut stdout = std::io::stdout();
    loop {
        let chunk = client.logs(session, job, from).await?;
        if attempt.is_some_and(|a| a != chunk.attempt) {
            // A new attempt: its output starts over.
            eprintln!("[aam: attempt {} of {job}]", chunk.attempt);
            from = 0;
            attempt = Some(chunk.attempt);
            continue;
        }
        if chunk.output_bytes < from {
            // The manager has not caught up yet (a restart, before the
            // worker resent the output): ask again from where we are.
            tokio::time::sleep(POLL).await;
            continue;
        }
        attempt = Some(chunk.attempt);
        stdout.write_all(&chunk.output)?;
        stdout.flush()?;
        from = chunk.output_bytes;
        if !follow || chunk.status.is_terminal() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One line of `aam watch` for a job.
fn job_line(j: &JobView, now: u64) -> String {
    let elapsed = match (j.started_at_ms, j.finished_at_ms) {
        (Some(s), Some(f)) if j.status.is_terminal() => human_duration(f.saturating_sub(s)),
        (Some(s), _) if j.status == JobStatus::Running => human_duration(now.saturating_sub(s)),
        _ => "-".into(),
    };
    let progress = match (j.status, j.progress) {
        (JobStatus::Running, Some(p)) => format!("{p:>3}%"),
        _ => "    ".into(),
    };
    let text = String::from_utf8_lossy(&j.output);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let last: String = last.chars().take(60).collect();
    format!(
        "{:<24} {:<10} {:>3} {:<16} {:>8} {} {}",
        j.name,
        j.status.as_str(),
        j.attempts,
        j.worker.as_deref().unwrap_or("-"),
        elapsed,
        progress,
        j.progress_message
            .as_deref()
            .filter(|_| j.status == JobStatus::Running)
            .unwrap_or(&last)
    )
}

/// A live view of every job until the session ends: redrawn in place on a
/// terminal, one line per change otherwise.
pub async fn watch(client: &mut Client, session: SessionId) -> anyhow::Result<SessionSummary> {
    let terminal = std::io::stdout().is_terminal();
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut stdout = std::io::stdout();
    loop {
        let view = client.session(session, OutputWanted::Tail(256)).await?;
        let now = now_ms();
        let s = &view.summary;
        let mut header = format!("{} ({}): {} — {}", s.id, s.name, s.status, counts_line(s));
        if !s.status.is_terminal() {
            header.push_str(&format!(
                " — {}",
                estimate_line(&view.eta).replacen("estimate", "ETA", 1)
            ));
        }
        if terminal {
            let mut screen = format!("\x1b[H\x1b[2J{header}\n\n");
            screen.push_str(&format!(
                "{:<24} {:<10} {:>3} {:<16} {:>8} {:>4} LAST OUTPUT\n",
                "JOB", "STATUS", "TRY", "WORKER", "ELAPSED", "PROG"
            ));
            for j in &view.jobs {
                screen.push_str(&job_line(j, now));
                screen.push('\n');
            }
            stdout.write_all(screen.as_bytes())?;
        } else {
            for j in &view.jobs {
                // Elapsed time changes every poll; only other changes print.
                let key = format!(
                    "{:?}{}{:?}{:?}",
                    j.status, j.attempts, j.progress, j.progress_message
                );
                if shown.get(&j.name) != Some(&key) {
                    shown.insert(j.name.clone(), key);
                    writeln!(stdout, "{}", job_line(j, now))?;
                }
            }
        }
        stdout.flush()?;
        if s.status.is_terminal() {
            writeln!(stdout, "{header}")?;
            return Ok(view.summary);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
