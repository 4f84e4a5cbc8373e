//! `aam results SESSION`: the results summary in Markdown, or every job's
//! whole output with `--json`; `aam run` prints the same at its end.

use super::{print_json, session_arg};
use crate::args::ManagerFlags;
use crate::client::Client;
use crate::{endpoint, render};
use aam_protocol::messages::OutputWanted;
use aam_protocol::SessionId;

pub async fn run(
    flags: &ManagerFlags,
    session: &str,
    json: bool,
    failed: bool,
) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    show(&mut client, session_arg(session)?, json, failed).await?;
    Ok(0)
}

/// Prints a session's results: Markdown with each job's output tail, or
/// JSON with the whole captured outputs.
pub async fn show(
    client: &mut Client,
    session: SessionId,
    json: bool,
    only_failed: bool,
) -> anyhow::Result<()> {
    let output = if json {
        OutputWanted::All
    } else {
        OutputWanted::Tail(4096)
    };
    let view = client.session(session, output).await?;
    if json {
        print_json(&aam_protocol::json::results_json(&view, only_failed));
    } else {
        print!("{}", render::results_markdown(&view, only_failed));
    }
    Ok(())
}
