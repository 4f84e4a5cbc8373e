//! `aam gc`: removes finished sessions past the retention (or
//! `--older-than`) now, and says what was freed.

use super::duration_flag;
use crate::args::ManagerFlags;
use crate::endpoint;

pub async fn run(flags: &ManagerFlags, older_than: Option<String>) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let older_than_ms = duration_flag("--older-than", older_than)?;
    let removed = client.gc(older_than_ms).await?;
    let ids: Vec<String> = removed.sessions.iter().map(|s| s.to_string()).collect();
    println!(
        "removed {} sessions ({} jobs, {} bytes of output){}{}",
        ids.len(),
        removed.jobs,
        removed.output_bytes,
        if ids.is_empty() { "" } else { ": " },
        ids.join(", ")
    );
    Ok(0)
}
