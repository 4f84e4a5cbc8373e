//! `aam sessions` (and `aam status` without a session): the newest
//! sessions (a page of them, and how many there are), and the running jobs
//! waiting for someone.

use super::print_json;
use crate::args::ManagerFlags;
use crate::{endpoint, render};
use aam_protocol::now_ms;

pub async fn run(flags: &ManagerFlags, json: bool, offset: u32, limit: u32) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let list = client.sessions(limit, offset).await?;
    let more = render::more_sessions_line(list.sessions.len(), list.total, offset);
    if json {
        // An array, as it always was: the paused limit groups are in
        // `aam status SESSION --json` (`paused`); a page that is not all
        // of them is said on stderr.
        print_json(&list.sessions.iter().map(render::summary_json).collect());
        if let Some(more) = more {
            eprintln!("aam: {more}");
        }
    } else {
        print!(
            "{}",
            render::sessions_table(&list.sessions, more.as_deref(), &list.paused, now_ms())
        );
        let waiting = render::waiting_lines(&list.waiting);
        if !waiting.is_empty() {
            print!("\n{waiting}");
        }
    }
    Ok(0)
}
