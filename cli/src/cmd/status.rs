//! `aam status [SESSION]`: one session's jobs (a page of them), or without
//! one, the newest sessions (a page of them).

use super::{print_json, session_arg};
use crate::args::ManagerFlags;
use crate::{endpoint, render};
use aam_protocol::messages::{JobPage, OutputWanted};
use aam_protocol::now_ms;

/// Jobs (or sessions) shown when `--limit` is not given: enough to read,
/// and never a million-job answer.
pub const DEFAULT_LIMIT: u32 = 1000;

/// The page `--offset` and `--limit` ask for (`--limit 0`: every job).
pub fn page(offset: u32, limit: u32) -> JobPage {
    JobPage {
        offset,
        limit: if limit == 0 { u32::MAX } else { limit },
    }
}

pub async fn run(
    flags: &ManagerFlags,
    session: Option<String>,
    json: bool,
    offset: u32,
    limit: u32,
) -> anyhow::Result<i32> {
    let Some(id) = session else {
        return super::sessions::run(flags, json, offset, limit).await;
    };
    let page = page(offset, limit);
    let mut client = endpoint::connect(flags).await?;
    let view = client
        .session_page(session_arg(&id)?, OutputWanted::None, Some(page))
        .await?;
    if json {
        print_json(&render::session_json(&view, false));
    } else {
        print!("{}", render::session_table(&view, now_ms()));
    }
    Ok(0)
}
