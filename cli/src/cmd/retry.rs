//! `aam retry SESSION`: the jobs that did not succeed run again as new
//! attempts; what succeeded is kept.

use super::session_arg;
use crate::args::ManagerFlags;
use crate::endpoint;

pub async fn run(flags: &ManagerFlags, session: &str) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let session = session_arg(session)?;
    let jobs = client.retry(session).await?;
    println!(
        "{session}: running {} jobs again: {}",
        jobs.len(),
        jobs.join(", ")
    );
    Ok(0)
}
