//! Exit codes (DESIGN.md): 0 all jobs succeeded, 1 some job did not,
//! 2 bad input or usage, 3 cannot reach or authenticate to the manager.

use std::fmt;

/// An error that carries the process's exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

pub const FAILED: i32 = 1;
pub const BAD_INPUT: i32 = 2;
pub const UNREACHABLE: i32 = 3;

pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    Exit {
        code: BAD_INPUT,
        message: message.into(),
    }
    .into()
}

pub fn unreachable(message: impl Into<String>) -> anyhow::Error {
    Exit {
        code: UNREACHABLE,
        message: message.into(),
    }
    .into()
}

/// An established connection to the manager broke (it may be restarting):
/// commands that follow a session reconnect; others exit 3.
#[derive(Debug)]
pub struct Lost(pub String);

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Lost {}

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
