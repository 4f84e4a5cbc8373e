//! `aam allow SESSION/JOB [REQUEST] [--always]` and `aam deny SESSION/JOB
//! [REQUEST] [--message TEXT]`: answer a permission request of a running
//! agent that relays them (`permissions = "relay"`); answered once the
//! manager stored the decision. No such request, or several open and none
//! named, is refused with exit 2.

use super::{job_arg, print_json};
use crate::args::ManagerFlags;
use crate::endpoint;
use aam_protocol::messages::ClientRequest;

pub async fn run(
    flags: &ManagerFlags,
    target: &str,
    request: Option<u32>,
    allow: bool,
    always: bool,
    message: Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    let (session, job) = job_arg(target)?;
    let call = ClientRequest::DecidePermission {
        session,
        job: job.to_string(),
        request,
        allow,
        always,
        message,
    };
    let mut client = endpoint::connect(flags).await?;
    let (id, summary) = client.decide_permission(call).await?;
    let verb = if allow { "allowed" } else { "denied" };
    if json {
        print_json(
            &serde_json::json!({ "job": target, "request": id, "call": summary, "decision": verb }),
        );
    } else {
        println!("{verb} {target} request {id}: {summary}");
    }
    Ok(0)
}
