//! `aam continue SESSION/JOB "PROMPT"`: a follow-up to an agent job, a new
//! session of one job that resumes the agent's conversation (on the same
//! worker when it is connected); prints the new session's id as soon as it
//! is durably stored, like `aam submit`.

use super::{job_arg, print_json};
use crate::args::ManagerFlags;
use crate::exit::bad_input;
use crate::{endpoint, render};

pub async fn run(
    flags: &ManagerFlags,
    job: &str,
    prompt: String,
    json: bool,
) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let (session, name) = job_arg(job)?;
    if prompt.trim().is_empty() {
        return Err(bad_input("the follow-up prompt is empty"));
    }
    // A job without an agent conversation to resume is refused by the
    // manager: exit 2 with its message.
    let submitted = client.continue_job(session, name, prompt).await?;
    let new = submitted.session;
    if json {
        print_json(&serde_json::json!({
            "session": new.to_string(),
            "continues": format!("{session}/{name}"),
            "jobs": submitted.jobs,
            "estimate": render::estimate_json(&submitted.estimate),
        }));
    } else {
        println!("{new}");
        // The id alone on stdout (for scripts); what it continues aside.
        stderr_line!(
            "{new}: continues {session}/{name}; {}",
            render::estimate_line(&submitted.estimate)
        );
    }
    Ok(0)
}
