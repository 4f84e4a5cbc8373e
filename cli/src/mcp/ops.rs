//! What each MCP tool does, as a client of the manager: one connection per
//! call (opened after the arguments are checked), one or a few requests,
//! and the answer as the JSON document `aam ... --json` prints. Errors are
//! the CLI's own (`exit::Exit` and friends): the tool layer turns them into
//! tool errors with the same message.

use super::args::{tail_start, Source};
use crate::args::ManagerFlags;
use crate::batch::{self, ToSubmit};
use crate::client::Client;
use crate::cmd::{cancel, job_arg, session_arg, target_arg};
use crate::exit::is_lost;
use crate::{endpoint, render};
use aam_protocol::agent_output::transcript;
use aam_protocol::messages::OutputWanted;
use aam_protocol::SessionId;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// `submit`: the batch is checked here as `aam submit` checks a file, then
/// stored; answers as `aam submit --json` at once, without waiting.
pub async fn submit(
    flags: &ManagerFlags,
    source: Source,
    idempotency_key: Option<String>,
) -> anyhow::Result<Value> {
    let (label, loaded) = match &source {
        Source::Inline(value) => (
            Path::new(batch::INLINE),
            ToSubmit::Whole(batch::from_json(value)?),
        ),
        // A big JSON file is streamed, as by `aam submit`.
        Source::File(path) => (path.as_path(), batch::load_to_submit(path)?),
    };
    let mut client = endpoint::connect(flags).await?;
    let (submitted, name) = client.submit_loaded(label, loaded, idempotency_key).await?;
    Ok(aam_protocol::json::submitted_json(
        submitted.session,
        &name,
        submitted.jobs,
        submitted.existing,
        &submitted.estimate,
    ))
}

/// Sessions `status` lists without one: an assistant reads the newest.
pub const SESSIONS_LISTED: u32 = 100;

/// `status`: one session as `aam status ID --json`; without one, the
/// newest `SESSIONS_LISTED` sessions (`total` counts them all), the paused
/// limit groups and the running jobs waiting for someone (as the HTTP
/// API's `/api/sessions`).
pub async fn status(flags: &ManagerFlags, session: Option<&str>) -> anyhow::Result<Value> {
    let session = session.map(session_arg).transpose()?;
    let mut client = endpoint::connect(flags).await?;
    match session {
        Some(id) => {
            let view = client.session(id, OutputWanted::None).await?;
            Ok(render::session_json(&view, false))
        }
        None => {
            let list = client.sessions(SESSIONS_LISTED, 0).await?;
            Ok(json!({
                "sessions": list.sessions.iter().map(render::summary_json).collect::<Vec<_>>(),
                "total": list.total,
                "paused": aam_protocol::json::paused_json(&list.paused),
                "waiting": list.waiting.iter().map(aam_protocol::json::waiting_json).collect::<Vec<_>>(),
            }))
        }
    }
}

/// `wait`: the session's status (as `status`) once it has ended or once
/// `timeout` has passed, with `"finished"` saying which.
pub async fn wait(flags: &ManagerFlags, session: &str, timeout: Duration) -> anyhow::Result<Value> {
    let session = session_arg(session)?;
    let deadline = Instant::now() + timeout;
    let mut watcher = endpoint::connect(flags).await?;
    follow(&mut watcher, session, deadline).await?;
    // The watching connection keeps receiving progress: ask on a new one.
    drop(watcher);
    let mut client = endpoint::connect(flags).await?;
    let view = client.session(session, OutputWanted::None).await?;
    let mut doc = render::session_json(&view, false);
    doc["finished"] = json!(view.summary.status.is_terminal());
    Ok(doc)
}

/// Follows a session until it ends or `deadline` passes, riding over a
/// manager restart (reconnecting until the deadline) as `aam wait` does.
async fn follow(client: &mut Client, session: SessionId, deadline: Instant) -> anyhow::Result<()> {
    loop {
        match client.watch(session).await {
            Ok(()) => {}
            Err(e) if is_lost(&e) => {
                client.reconnect(Some(deadline)).await?;
                continue;
            }
            Err(e) => return Err(e),
        }
        loop {
            match tokio::time::timeout_at(deadline, client.progress()).await {
                Err(_) => return Ok(()),
                Ok(Ok(summary)) if summary.status.is_terminal() => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_lost(&e) => {
                    client.reconnect(Some(deadline)).await?;
                    break;
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// `results`: as `aam results ID --json [--failed]`, every job's whole
/// captured output included.
pub async fn results(
    flags: &ManagerFlags,
    session: &str,
    failed_only: bool,
) -> anyhow::Result<Value> {
    let session = session_arg(session)?;
    let mut client = endpoint::connect(flags).await?;
    let view = client.session(session, OutputWanted::All).await?;
    Ok(aam_protocol::json::results_json(&view, failed_only))
}

/// `logs`: a job's captured output (its last `tail_bytes`), as `aam logs`
/// prints it: an agent job's as a readable transcript unless `raw`.
pub async fn logs(
    flags: &ManagerFlags,
    job: &str,
    tail_bytes: Option<u64>,
    raw: bool,
) -> anyhow::Result<Value> {
    let (session, name) = job_arg(job)?;
    let mut client = endpoint::connect(flags).await?;
    let from = match tail_bytes {
        // Past the end: only the total, to know where the tail starts.
        Some(_) => tail_start(
            client.logs(session, name, u64::MAX).await?.output_bytes,
            tail_bytes,
        ),
        None => 0,
    };
    let chunk = client.logs(session, name, from).await?;
    let output = match chunk.format.filter(|_| !raw) {
        Some(format) => transcript(format, &chunk.output),
        None => String::from_utf8_lossy(&chunk.output).into_owned(),
    };
    Ok(json!({
        "job": job,
        "status": chunk.status.as_str(),
        "attempt": chunk.attempt,
        "from": from,
        "output_bytes": chunk.output_bytes,
        "transcript": chunk.format.is_some() && !raw,
        "output": output,
    }))
}

/// `cancel`: a session or one job; answers as `aam cancel --json` once the
/// running jobs it stopped have ended.
pub async fn cancel(flags: &ManagerFlags, target: &str) -> anyhow::Result<Value> {
    let (session, job) = target_arg(target)?;
    let mut client = endpoint::connect(flags).await?;
    let ended = client.cancel(session, job, None, true).await?;
    Ok(cancel::cancelled_json(&ended))
}

/// `say`: a message to a running agent, or to a session's; answers as
/// `aam say --json`.
pub async fn say(flags: &ManagerFlags, target: &str, text: String) -> anyhow::Result<Value> {
    let (session, job) = target_arg(target)?;
    let mut client = endpoint::connect(flags).await?;
    let jobs = client.say(session, job, text).await?;
    Ok(json!({ "said_to": jobs }))
}

/// `allow` / `deny`: answers a running agent's permission request (the
/// only open one unless `request` names it); as `aam allow|deny --json`.
pub async fn permission(
    flags: &ManagerFlags,
    job: &str,
    answer: crate::cmd::permission::Answer,
) -> anyhow::Result<Value> {
    let (session, name) = job_arg(job)?;
    let allow = answer.allow;
    let mut client = endpoint::connect(flags).await?;
    let (id, call) = client
        .decide_permission(answer.request(session, name))
        .await?;
    Ok(crate::cmd::permission::decided_json(job, id, &call, allow))
}

/// `approve` / `reject`: decides a gate.
pub async fn decide(
    flags: &ManagerFlags,
    job: &str,
    approve: bool,
    comment: Option<String>,
) -> anyhow::Result<Value> {
    let (session, name) = job_arg(job)?;
    let mut client = endpoint::connect(flags).await?;
    let status = client.decide(session, name, approve, comment).await?;
    Ok(json!({
        "job": job,
        "decision": if approve { "approved" } else { "rejected" },
        "status": status.as_str(),
    }))
}

/// `agents`: as `aam agents --json`.
pub async fn agents(flags: &ManagerFlags) -> anyhow::Result<Value> {
    let mut client = endpoint::connect(flags).await?;
    let known = client.agents().await?;
    Ok(render::agents_json(&known.agents, &known.problems))
}

/// `accounts`: as `aam accounts --json`.
pub async fn accounts(flags: &ManagerFlags) -> anyhow::Result<Value> {
    let mut client = endpoint::connect(flags).await?;
    Ok(aam_protocol::json::accounts_json(&client.accounts().await?))
}

/// `resources`: as `aam resources --json`.
pub async fn resources(flags: &ManagerFlags) -> anyhow::Result<Value> {
    let mut client = endpoint::connect(flags).await?;
    Ok(aam_protocol::json::resources_json(
        &client.resources().await?,
    ))
}

pub async fn workers(flags: &ManagerFlags) -> anyhow::Result<Value> {
    let mut client = endpoint::connect(flags).await?;
    Ok(render::workers_json(&client.workers().await?))
}
