//! Session ids and job keys, with the textual forms users type (`s42`, `s42/tests`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A session's id: a counter the manager persists, shown as `s<N>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Error for a session id that is neither `s<N>` nor `<N>`.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a session id (expected something like s42)")]
pub struct BadSessionId(pub String);

impl FromStr for SessionId {
    type Err = BadSessionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('s').unwrap_or(s);
        digits
            .parse::<u64>()
            .map(SessionId)
            .map_err(|_| BadSessionId(s.to_string()))
    }
}

/// A job inside the manager: its session and its position in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobKey {
    pub session: SessionId,
    pub index: u32,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.session, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_parse_with_or_without_prefix() {
        assert_eq!("s42".parse::<SessionId>().unwrap(), SessionId(42));
        assert_eq!("7".parse::<SessionId>().unwrap(), SessionId(7));
        assert!("x1".parse::<SessionId>().is_err());
        assert_eq!(SessionId(9).to_string(), "s9");
    }
}
