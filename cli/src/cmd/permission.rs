//! `aam allow SESSION/JOB [REQUEST] [--always]` and `aam deny SESSION/JOB
//! [REQUEST] [--message TEXT]`: answer a permission request of a running
//! agent that relays them (`permissions = "relay"`); answered once the
//! manager stored the decision. No such request, or several open and none
//! named, is refused with exit 2.

use super::{job_arg, print_json};
use crate::args::ManagerFlags;
use crate::endpoint;
use aam_protocol::messages::ClientRequest;
use aam_protocol::SessionId;
use serde_json::{json, Value};

/// An answer to a permission request, as the CLI and MCP's `allow` /
/// `deny` give it.
pub struct Answer {
    /// The request's id; none: the job's only open one.
    pub request: Option<u32>,
    pub allow: bool,
    /// Allow the same tool for the rest of the job.
    pub always: bool,
    /// What a denied agent is told.
    pub message: Option<String>,
}

impl Answer {
    pub fn request(self, session: SessionId, job: &str) -> ClientRequest {
        ClientRequest::DecidePermission {
            session,
            job: job.to_string(),
            request: self.request,
            allow: self.allow,
            always: self.always,
            message: self.message,
        }
    }
}

/// `{"job", "request", "call", "decision"}`.
pub fn decided_json(job: &str, request: u32, call: &str, allow: bool) -> Value {
    let decision = if allow { "allowed" } else { "denied" };
    json!({ "job": job, "request": request, "call": call, "decision": decision })
}

pub async fn run(
    flags: &ManagerFlags,
    target: &str,
    answer: Answer,
    json: bool,
) -> anyhow::Result<i32> {
    let (session, job) = job_arg(target)?;
    let allow = answer.allow;
    let mut client = endpoint::connect(flags).await?;
    let (id, summary) = client
        .decide_permission(answer.request(session, job))
        .await?;
    if json {
        print_json(&decided_json(target, id, &summary, allow));
    } else {
        let verb = if allow { "allowed" } else { "denied" };
        println!("{verb} {target} request {id}: {summary}");
    }
    Ok(0)
}
