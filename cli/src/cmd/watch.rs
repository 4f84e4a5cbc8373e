//! `aam watch SESSION`: a live view of a session's jobs until it ends;
//! exits like `aam wait`. It polls the manager (cheap, and it rides over a
//! manager restart by reconnecting and asking again).

use super::session_arg;
use crate::args::ManagerFlags;
use crate::client::Client;
use crate::endpoint;
use crate::exit::verdict;
use crate::render::{counts_line, estimate_line, human_duration};
use aam_protocol::messages::OutputWanted;
use aam_protocol::model::{JobStatus, JobView, SessionSummary};
use aam_protocol::{now_ms, SessionId};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

pub async fn run(flags: &ManagerFlags, session: &str) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?.reconnect_when_lost();
    let summary = watch(&mut client, session_arg(session)?).await?;
    Ok(verdict(&summary))
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
async fn watch(client: &mut Client, session: SessionId) -> anyhow::Result<SessionSummary> {
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
