//! `aam status [SESSION]`: one session's jobs, or without one, every session.

use super::{print_json, session_arg};
use crate::args::ManagerFlags;
use crate::{endpoint, render};
use aam_protocol::messages::OutputWanted;
use aam_protocol::now_ms;

pub async fn run(flags: &ManagerFlags, session: Option<String>, json: bool) -> anyhow::Result<i32> {
    let Some(id) = session else {
        return super::sessions::run(flags, json).await;
    };
    let mut client = endpoint::connect(flags).await?;
    let view = client
        .session(session_arg(&id)?, OutputWanted::None)
        .await?;
    if json {
        print_json(&render::session_json(&view, false));
    } else {
        print!("{}", render::session_table(&view, now_ms()));
    }
    Ok(0)
}
