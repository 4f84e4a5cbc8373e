//! One module per `aam` command, each with a `run` that returns the exit
//! code; and what several commands share: reading session and job
//! arguments and durations, printing JSON.
//!
//! Commands that talk to a manager connect first and read their arguments
//! after, so an unreachable manager is reported (exit 3) before a typo.

pub mod accounts;
pub mod agents;
pub mod apply;
pub mod audit;
pub mod cancel;
pub mod completions;
pub mod continue_;
pub mod decide;
pub mod diff;
pub mod down;
pub mod gc;
pub mod logs;
pub mod permission;
pub mod providers;
pub mod resources;
pub mod results;
pub mod retry;
pub mod run;
pub mod say;
pub mod serve;
pub mod sessions;
pub mod status;
pub mod submit;
pub mod up;
pub mod wait;
pub mod watch;
pub mod workers;

use crate::exit::bad_input;
use aam_protocol::SessionId;

/// A session id given on the command line (exit 2 if it is not one).
pub fn session_arg(s: &str) -> anyhow::Result<SessionId> {
    s.parse::<SessionId>().map_err(|e| bad_input(e.to_string()))
}

/// A `SESSION/JOB` argument: the session and the job's name.
pub fn job_arg(job: &str) -> anyhow::Result<(SessionId, &str)> {
    let (session, name) = job.split_once('/').ok_or_else(|| {
        bad_input(match job.parse::<SessionId>() {
            Ok(_) => format!("'{job}' names a session, not a job: write {job}/JOB"),
            Err(_) => format!("'{job}' is not SESSION/JOB"),
        })
    })?;
    Ok((session_arg(session)?, name))
}

/// A cancel's target: `SESSION` or `SESSION/JOB`.
pub fn target_arg(target: &str) -> anyhow::Result<(SessionId, Option<String>)> {
    Ok(match target.split_once('/') {
        Some((s, j)) => (session_arg(s)?, Some(j.to_string())),
        None => (session_arg(target)?, None),
    })
}

/// A duration flag such as `--grace 30s`, in milliseconds.
pub fn duration_flag(flag: &str, value: Option<String>) -> anyhow::Result<Option<u64>> {
    value
        .map(|v| {
            aam_protocol::spec::parse_duration_ms(&v).map_err(|e| bad_input(format!("{flag}: {e}")))
        })
        .transpose()
}

pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}
