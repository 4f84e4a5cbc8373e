//! The files behind `AAM_INPUTS` (JSON) and `AAM_INPUTS_MD` (Markdown): a
//! job's dependencies as they ended, written by the worker next to the job
//! (they travel in the assignment, so this works on any machine).

use aam_protocol::agent::{INPUTS_MARKER, INPUTS_MD_MARKER};
use aam_protocol::messages::{Assignment, InputRecord};
use aam_protocol::model::JobStatus;
use serde_json::json;
use std::path::PathBuf;

/// The worker's scratch directory for input files.
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("aam-worker-{}", std::process::id()))
}

pub fn to_json(inputs: &[InputRecord]) -> String {
    let list: Vec<_> = inputs
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "when": i.when.as_str(),
                "status": i.status.as_str(),
                "exit_code": i.exit_code,
                "reason": i.reason,
                "output": String::from_utf8_lossy(&i.output),
                "output_bytes": i.output_bytes,
                "output_truncated": (i.output.len() as u64) < i.output_bytes,
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).expect("JSON values serialize")
}

pub fn to_markdown(job: &str, inputs: &[InputRecord]) -> String {
    let mut out = format!("# Inputs of {job}\n\n");
    if inputs.is_empty() {
        out.push_str("No dependencies.\n");
        return out;
    }
    for i in inputs {
        let mark = match i.status {
            JobStatus::Succeeded => "✅",
            JobStatus::Skipped => "⏭",
            _ => "❌",
        };
        out.push_str(&format!("## {mark} {} — {}", i.name, i.status));
        if let Some(code) = i.exit_code {
            out.push_str(&format!(" (exit {code})"));
        }
        out.push('\n');
        if let Some(reason) = &i.reason {
            out.push_str(&format!("\n{reason}\n"));
        }
        let text = String::from_utf8_lossy(&i.output);
        if text.trim().is_empty() {
            out.push_str("\n_(no output)_\n\n");
        } else {
            if (i.output.len() as u64) < i.output_bytes {
                out.push_str(&format!(
                    "\n_last {} of {} bytes:_\n",
                    i.output.len(),
                    i.output_bytes
                ));
            }
            out.push_str("\n```text\n");
            out.push_str(text.trim_end_matches('\n'));
            out.push_str("\n```\n\n");
        }
    }
    out
}

/// The input files of one attempt; removed when dropped.
pub struct InputFiles {
    dir: Option<PathBuf>,
    pub json: PathBuf,
    pub markdown: PathBuf,
}

impl Drop for InputFiles {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes an attempt's input files. A job with no dependencies shares one
/// empty pair per worker, so plain jobs cost no file writes.
pub fn write(assignment: &Assignment) -> std::io::Result<InputFiles> {
    let scratch = scratch_dir();
    if assignment.inputs.is_empty() {
        let json = scratch.join("no-inputs.json");
        let markdown = scratch.join("no-inputs.md");
        if !markdown.exists() {
            std::fs::create_dir_all(&scratch)?;
            std::fs::write(&json, "[]\n")?;
            std::fs::write(&markdown, "No dependencies.\n")?;
        }
        return Ok(InputFiles {
            dir: None,
            json,
            markdown,
        });
    }
    let dir = scratch.join(format!(
        "{}-{}-{}",
        assignment.job.session, assignment.job.index, assignment.attempt
    ));
    std::fs::create_dir_all(&dir)?;
    let json = dir.join("inputs.json");
    let markdown = dir.join("inputs.md");
    std::fs::write(&json, to_json(&assignment.inputs))?;
    std::fs::write(
        &markdown,
        to_markdown(&assignment.job_name, &assignment.inputs),
    )?;
    Ok(InputFiles {
        dir: Some(dir),
        json,
        markdown,
    })
}

/// Replaces the `{inputs}` / `{inputs_md}` markers of an agent's argv, in
/// one left-to-right pass: a marker's bytes are consumed as they are met, so
/// text between two markers cannot combine with their NULs into a third.
pub fn fill_paths(argv: &[String], files: &InputFiles) -> Vec<String> {
    let json = files.json.to_string_lossy();
    let markdown = files.markdown.to_string_lossy();
    argv.iter()
        .map(|a| {
            if !a.contains('\0') {
                return a.clone();
            }
            let mut out = String::with_capacity(a.len());
            let mut rest = a.as_str();
            while let Some(at) = rest.find('\0') {
                out.push_str(&rest[..at]);
                let tail = &rest[at..];
                if let Some(after) = tail.strip_prefix(INPUTS_MD_MARKER) {
                    out.push_str(&markdown);
                    rest = after;
                } else if let Some(after) = tail.strip_prefix(INPUTS_MARKER) {
                    out.push_str(&json);
                    rest = after;
                } else {
                    // A stray NUL cannot reach exec: drop it.
                    rest = &tail[1..];
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::spec::When;

    fn input(status: JobStatus, output: &str, total: u64) -> InputRecord {
        InputRecord {
            name: "tests".into(),
            when: When::Succeeded,
            status,
            exit_code: Some(1),
            reason: None,
            output: output.as_bytes().to_vec(),
            output_bytes: total,
        }
    }

    #[test]
    fn markdown_and_json_list_each_dependency() {
        let inputs = vec![input(JobStatus::Failed, "2 failed\n", 100)];
        let md = to_markdown("synth", &inputs);
        assert!(md.contains("## ❌ tests — failed (exit 1)"), "{md}");
        assert!(md.contains("_last 9 of 100 bytes:_"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&inputs)).unwrap();
        assert_eq!(json[0]["status"], "failed");
        assert_eq!(json[0]["output_truncated"], true);
    }

    #[test]
    fn markers_become_paths_and_nothing_else_changes() {
        let files = InputFiles {
            dir: None,
            json: "/tmp/i.json".into(),
            markdown: "/tmp/i.md".into(),
        };
        let argv = vec![
            "agent".to_string(),
            format!("--in={INPUTS_MARKER}"),
            format!("{INPUTS_MD_MARKER}"),
            "{inputs}".to_string(),
        ];
        assert_eq!(
            fill_paths(&argv, &files),
            vec!["agent", "--in=/tmp/i.json", "/tmp/i.md", "{inputs}"]
        );
        // Text between two markers cannot forge a third out of their NULs.
        let forged = vec![format!("{INPUTS_MARKER}aam:inputs_md{INPUTS_MARKER}")];
        assert_eq!(
            fill_paths(&forged, &files),
            vec!["/tmp/i.jsonaam:inputs_md/tmp/i.json"]
        );
    }
}
