//! Reading a batch (a file, or the JSON form of one given inline, as the
//! MCP tool `submit` takes it) and checking it before anything is sent.

use crate::client::PART_BYTES;
use crate::exit::bad_input;
use aam_protocol::spec::{check_batch, parse_batch, BatchSpec, Format, Limits, SpecErrors};
use std::path::Path;

/// What an inline batch is called in messages, where a file's path would be.
pub const INLINE: &str = "batch";

/// Prefixes each problem with the file it is in, one per line.
pub fn describe(path: &Path, errors: &SpecErrors) -> String {
    errors
        .0
        .iter()
        .map(|e| format!("{}: {e}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A batch file as `aam submit` sends it.
pub enum ToSubmit {
    /// Parsed and checked here.
    Whole(BatchSpec),
    /// The text of a JSON file bigger than one part: read job by job as
    /// its parts go out (`Client::submit_streamed`), each job's own fields
    /// checked as it is read and the batch across its jobs by the manager,
    /// so that its jobs are never all held.
    Streamed(String),
}

/// Loads a batch file: parsed and checked (exit 2 on any problem), or, a
/// big JSON file, left to be streamed.
pub fn load_to_submit(path: &Path) -> anyhow::Result<ToSubmit> {
    let text = read(path)?;
    let format = Format::for_path(&path.to_string_lossy());
    if format == Format::Json && text.len() > PART_BYTES {
        return Ok(ToSubmit::Streamed(text));
    }
    parse_and_check(path, &text, format).map(ToSubmit::Whole)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| bad_input(format!("{}: cannot read: {e}", path.display())))
}

fn parse_and_check(path: &Path, text: &str, format: Format) -> anyhow::Result<BatchSpec> {
    let batch =
        parse_batch(text, format).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    check(path, batch)
}

/// Parses and validates a batch given as the JSON form of a batch file;
/// problems are described as in a file named [`INLINE`], without line
/// numbers (the caller sent a value, not a text with lines).
pub fn from_json(value: &serde_json::Value) -> anyhow::Result<BatchSpec> {
    let label = Path::new(INLINE);
    let batch = parse_batch(&value.to_string(), Format::Json).map_err(|mut e| {
        e.line = None;
        bad_input(format!("{INLINE}: {e}"))
    })?;
    check(label, batch)
}

/// The checks that need no manager: structure (the manager enforces the
/// size limits it is configured with). A batch too big for one frame goes
/// in parts (`Client::submit`).
fn check(path: &Path, mut batch: BatchSpec) -> anyhow::Result<BatchSpec> {
    // Checked in place (a million jobs are not copied): the batch goes to
    // the manager as written.
    check_batch(&mut batch, &Limits::structural()).map_err(|e| bad_input(describe(path, &e)))?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_inline_batch_is_read_like_a_json_file() {
        let batch = from_json(&json!({
            "name": "inline",
            "jobs": [{"name": "a", "command": ["true"]}],
        }))
        .unwrap();
        assert_eq!(batch.name, "inline");
        assert_eq!(batch.jobs.len(), 1);
    }

    #[test]
    fn an_inline_batch_s_problems_name_the_job_and_field_but_no_line() {
        let err = from_json(&json!({
            "name": "inline",
            "jobs": [{"name": "a", "command": "cargo test"}],
        }))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("batch: job 'a': field 'command': "),
            "{text}"
        );
        assert!(!text.contains("line"), "{text}");
        assert_eq!(crate::exit::code_of(&err), crate::exit::BAD_INPUT);
    }

    #[test]
    fn an_inline_batch_is_validated_as_a_file_is() {
        let err = from_json(&json!({
            "name": "inline",
            "jobs": [{"name": "a", "command": ["true"], "depends_on": ["nope"]}],
        }))
        .unwrap_err();
        assert!(err.to_string().starts_with("batch: "), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
