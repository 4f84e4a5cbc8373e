//! `aam say SESSION[/JOB] "TEXT"` (or `--file FILE`): a message to a
//! running agent that takes input, or to every such agent of a session;
//! answered once the manager stored it (it reaches the agents' stdin in
//! order, once each). A job that takes no input, or is not running, is
//! refused with exit 2, pointing to `aam continue`.

use super::{print_json, target_arg};
use crate::args::ManagerFlags;
use crate::endpoint;
use crate::exit::bad_input;
use std::path::PathBuf;

pub async fn run(
    flags: &ManagerFlags,
    target: &str,
    text: Option<String>,
    file: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<i32> {
    let text = match (text, file) {
        (Some(text), None) => text,
        (None, Some(file)) => std::fs::read_to_string(&file)
            .map_err(|e| bad_input(format!("{}: {e}", file.display())))?,
        (Some(_), Some(_)) => return Err(bad_input("give the message or --file, not both")),
        (None, None) => return Err(bad_input("nothing to say: give the message or --file FILE")),
    };
    if text.trim().is_empty() {
        return Err(bad_input("the message is empty"));
    }
    let (session, job) = target_arg(target)?;
    let mut client = endpoint::connect(flags).await?;
    let jobs = client.say(session, job, text).await?;
    if json {
        print_json(&serde_json::json!({ "said_to": jobs }));
    } else {
        for job in &jobs {
            println!("said to {job}");
        }
    }
    Ok(0)
}
