//! Exit codes (README.md, "Exit codes"): 0 all jobs succeeded, 1 some job
//! did not, 2 bad input or usage, 3 cannot reach or authenticate to the
//! manager, the token may not do it (its role, a quota), or the manager
//! could not do it (its store took no writes).

use aam_protocol::model::{SessionStatus, SessionSummary};

/// An error that carries the process's exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

pub const FAILED: i32 = 1;
pub const BAD_INPUT: i32 = 2;
pub const UNREACHABLE: i32 = 3;

fn exit(code: i32, message: impl Into<String>) -> anyhow::Error {
    Exit {
        code,
        message: message.into(),
    }
    .into()
}

/// The session did not end well, or not in time (exit 1).
pub fn failed(message: impl Into<String>) -> anyhow::Error {
    exit(FAILED, message)
}

pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    exit(BAD_INPUT, message)
}

pub fn unreachable(message: impl Into<String>) -> anyhow::Error {
    exit(UNREACHABLE, message)
}

/// The manager could not do it: nothing was done, like a manager that
/// cannot be reached (exit 3). Its message says why.
pub fn manager_failed(message: impl Into<String>) -> anyhow::Error {
    exit(UNREACHABLE, message)
}

/// An established connection to the manager broke (it may be restarting):
/// commands that follow a session reconnect; others exit 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Lost(pub String);

pub fn is_lost(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Lost>().is_some()
}

/// The exit code for an error: its own, or 1.
pub fn code_of(err: &anyhow::Error) -> i32 {
    if is_lost(err) {
        return UNREACHABLE;
    }
    err.downcast_ref::<Exit>().map(|e| e.code).unwrap_or(FAILED)
}

/// The exit code for an ended session: 0 if every job succeeded, else 1.
pub fn verdict(summary: &SessionSummary) -> i32 {
    if summary.status == SessionStatus::Succeeded {
        0
    } else {
        FAILED
    }
}
