//! `aam cancel SESSION[/JOB]`: jobs not started end at once; running ones
//! are stopped (by default, the command returns once they have).

use super::{duration_flag, print_json, session_arg};
use crate::args::ManagerFlags;
use crate::endpoint;

pub async fn run(
    flags: &ManagerFlags,
    target: &str,
    grace: Option<String>,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let (session, job) = match target.split_once('/') {
        Some((s, j)) => (session_arg(s)?, Some(j.to_string())),
        None => (session_arg(target)?, None),
    };
    let grace_ms = duration_flag("--grace", grace)?;
    let ended = client.cancel(session, job, grace_ms, !no_wait).await?;
    if json {
        print_json(&serde_json::json!({"cancelled": ended.cancelled, "stopped": ended.stopped}));
        return Ok(0);
    }
    let verb = if no_wait { "stopping" } else { "stopped" };
    println!(
        "{target}: {} cancelled before they started, {} {verb}",
        ended.cancelled.len(),
        ended.stopped.len()
    );
    for name in &ended.stopped {
        println!("  {verb}: {name}");
    }
    Ok(0)
}
