//! `aam cancel SESSION[/JOB]`: jobs not started end at once; running ones
//! are stopped (by default, the command returns once they have).

use super::{duration_flag, print_json, target_arg};
use crate::args::ManagerFlags;
use crate::client::Cancelled;
use crate::endpoint;

pub async fn run(
    flags: &ManagerFlags,
    target: &str,
    grace: Option<String>,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let (session, job) = target_arg(target)?;
    let grace_ms = duration_flag("--grace", grace)?;
    let ended = client.cancel(session, job, grace_ms, !no_wait).await?;
    if json {
        print_json(&cancelled_json(&ended));
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

/// `aam cancel --json` (and the MCP tool `cancel`): the jobs cancelled
/// before they started, and the running ones stopped.
pub fn cancelled_json(ended: &Cancelled) -> serde_json::Value {
    serde_json::json!({"cancelled": ended.cancelled, "stopped": ended.stopped})
}
