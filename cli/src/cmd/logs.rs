//! `aam logs SESSION/JOB [--follow]`: a job's captured output. It polls
//! the manager (cheap, and it rides over a manager restart by reconnecting
//! and asking again).

use super::job_arg;
use crate::args::ManagerFlags;
use crate::client::Client;
use crate::endpoint;
use aam_protocol::SessionId;
use std::io::Write;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);

pub async fn run(flags: &ManagerFlags, job: &str, follow: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?.reconnect_when_lost();
    let (session, name) = job_arg(job)?;
    print_logs(&mut client, session, name, follow).await?;
    Ok(0)
}

/// Prints a job's output; with `follow`, keeps printing what it prints
/// until it ends.
async fn print_logs(
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
