//! The checks of the MCP tools' arguments that need no manager: which batch
//! `submit` was given, how long `wait` may wait, where a log's tail starts.

use crate::exit::bad_input;
use std::path::PathBuf;
use std::time::Duration;

/// How long `wait` waits when not told: under the 60 s after which
/// assistants (Claude Code among them) give up on a tool call by default.
pub const WAIT_DEFAULT_SECS: u64 = 45;
/// The longest `wait` may be asked to wait; longer is refused, not cut, so
/// the assistant knows to call again rather than believe it waited longer.
pub const WAIT_MAX_SECS: u64 = 600;

/// The batch a `submit` call names.
#[derive(Debug, PartialEq)]
pub enum Source {
    /// The JSON form of a batch file, given in the call.
    Inline(serde_json::Value),
    /// A batch file (TOML, or JSON when its name ends in `.json`), relative
    /// to the directory `aam mcp` runs in.
    File(PathBuf),
}

/// The one batch a `submit` call gives: `batch` or `path`, not both.
pub fn source(
    batch: Option<serde_json::Map<String, serde_json::Value>>,
    path: Option<String>,
) -> anyhow::Result<Source> {
    match (batch, path) {
        (Some(batch), None) => Ok(Source::Inline(serde_json::Value::Object(batch))),
        (None, Some(path)) if !path.is_empty() => Ok(Source::File(PathBuf::from(path))),
        (None, Some(_)) => Err(bad_input("submit: `path` is empty: name a batch file")),
        (Some(_), Some(_)) => Err(bad_input(
            "submit: give either `batch` (the batch as JSON) or `path` (a batch file), not both",
        )),
        (None, None) => Err(bad_input(
            "submit: give `batch` (the batch as JSON: {\"name\": ..., \"jobs\": [...]}) or `path` (a batch file)",
        )),
    }
}

/// How long a `wait` call waits: `timeout_secs`, default 45, at most 600.
pub fn wait_timeout(timeout_secs: Option<u64>) -> anyhow::Result<Duration> {
    let secs = timeout_secs.unwrap_or(WAIT_DEFAULT_SECS);
    if secs > WAIT_MAX_SECS {
        return Err(bad_input(format!(
            "wait: timeout_secs {secs} is over the limit of {WAIT_MAX_SECS} seconds; wait again after it returns to wait longer"
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// Where the last `tail` bytes of `total` bytes of output start (all of it
/// without `tail`).
pub fn tail_start(total: u64, tail: Option<u64>) -> u64 {
    tail.map_or(0, |t| total.saturating_sub(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{code_of, BAD_INPUT};
    use serde_json::json;

    fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn submit_takes_exactly_one_batch() {
        let batch = object(json!({"name": "x", "jobs": []}));
        assert_eq!(
            source(Some(batch.clone()), None).unwrap(),
            Source::Inline(json!({"name": "x", "jobs": []}))
        );
        assert_eq!(
            source(None, Some("b.toml".into())).unwrap(),
            Source::File(PathBuf::from("b.toml"))
        );
        let both = source(Some(batch), Some("b.toml".into())).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        assert_eq!(code_of(&both), BAD_INPUT);
        let neither = source(None, None).unwrap_err();
        assert!(neither.to_string().contains("`batch`"), "{neither}");
        assert!(source(None, Some(String::new())).is_err());
    }

    #[test]
    fn wait_defaults_to_45_seconds_and_refuses_more_than_600() {
        assert_eq!(wait_timeout(None).unwrap(), Duration::from_secs(45));
        assert_eq!(wait_timeout(Some(0)).unwrap(), Duration::ZERO);
        assert_eq!(wait_timeout(Some(600)).unwrap(), Duration::from_secs(600));
        let over = wait_timeout(Some(601)).unwrap_err();
        assert_eq!(
            over.to_string(),
            "wait: timeout_secs 601 is over the limit of 600 seconds; wait again after it returns to wait longer"
        );
        assert_eq!(code_of(&over), BAD_INPUT);
    }

    #[test]
    fn a_tail_starts_that_many_bytes_before_the_end() {
        assert_eq!(tail_start(1000, None), 0);
        assert_eq!(tail_start(1000, Some(100)), 900);
        assert_eq!(tail_start(50, Some(100)), 0);
        assert_eq!(tail_start(1000, Some(0)), 1000);
    }
}
