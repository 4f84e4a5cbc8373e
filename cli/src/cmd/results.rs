//! `aam results SESSION`: the results summary in Markdown, or every job's
//! whole output with `--json`; `aam run` prints the same at its end.

use super::{print_json, session_arg};
use crate::args::ManagerFlags;
use crate::client::Client;
use crate::{endpoint, render};
use aam_protocol::messages::OutputWanted;
use aam_protocol::model::SessionView;
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
        print_json(&results_json(&view, only_failed));
    } else {
        print!("{}", render::results_markdown(&view, only_failed));
    }
    Ok(())
}

/// `aam results --json` (and the MCP tool `results`): the session with
/// every job's whole captured output (`view` asked with `OutputWanted::All`);
/// with `only_failed`, only the jobs that did not succeed.
pub fn results_json(view: &SessionView, only_failed: bool) -> serde_json::Value {
    let mut doc = render::session_json(view, true);
    if only_failed {
        if let Some(jobs) = doc["jobs"].as_array_mut() {
            jobs.retain(|j| j["status"] != "succeeded");
        }
    }
    doc
}
