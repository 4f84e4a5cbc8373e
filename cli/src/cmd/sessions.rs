//! `aam sessions` (and `aam status` without a session): every session, and
//! the running jobs waiting for someone.

use super::print_json;
use crate::args::ManagerFlags;
use crate::{endpoint, render};
use aam_protocol::now_ms;

pub async fn run(flags: &ManagerFlags, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let list = client.sessions().await?;
    if json {
        // An array, as it always was: the paused limit groups are in
        // `aam status SESSION --json` (`paused`).
        print_json(&list.sessions.iter().map(render::summary_json).collect());
    } else {
        print!(
            "{}",
            render::sessions_table(&list.sessions, &list.paused, now_ms())
        );
        let waiting = render::waiting_lines(&list.waiting);
        if !waiting.is_empty() {
            print!("\n{waiting}");
        }
    }
    Ok(0)
}
