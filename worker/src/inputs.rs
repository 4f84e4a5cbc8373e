//! The files behind `AAM_INPUTS` (JSON) and `AAM_INPUTS_MD` (Markdown): a
//! job's dependencies as they ended, written by the worker next to the job
//! (they travel in the assignment, so this works on any machine). An agent
//! dependency whose run was understood shows its answer and error instead
//! of its raw output (an event stream nobody should have to read); a
//! worktree dependency shows its change (branch, commits, diffstat).

use aam_protocol::agent::{INPUTS_MARKER, INPUTS_MD_MARKER};
use aam_protocol::messages::{Assignment, InputRecord};
use aam_protocol::model::JobStatus;
use aam_protocol::worktree::JobChange;
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The files every job without dependencies shares, in the scratch directory.
const NO_INPUTS_JSON: &str = "no-inputs.json";
const NO_INPUTS_MD: &str = "no-inputs.md";

/// The worker's scratch directory (`scratch.rs`), made with the shared
/// pair of jobs without dependencies in it: the one way in, so that pair
/// is there whoever asks first.
pub fn scratch_dir() -> std::io::Result<&'static Path> {
    crate::scratch::dir(|dir| {
        create_new(&dir.join(NO_INPUTS_JSON), "[]\n")?;
        create_new(&dir.join(NO_INPUTS_MD), "No dependencies.\n")
    })
}

/// Writes a new file, refusing one that is already there (or a link).
fn create_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Whether a dependency is an agent whose run was understood: its answer
/// or error stands for its output.
fn understood(input: &InputRecord) -> bool {
    input.answer.is_some() || input.agent_error.is_some()
}

/// `AAM_INPUTS`: every dependency with its `answer` and `error` (null for
/// a command); `output` is the raw output's tail, or for an understood
/// agent its answer (so a reader of `output` gets the answer, not the
/// stream); `output_bytes` is what it printed in all either way.
pub fn to_json(inputs: &[InputRecord]) -> String {
    let list: Vec<_> = inputs
        .iter()
        .map(|i| {
            let (output, truncated) = if understood(i) {
                (i.answer.clone().unwrap_or_default(), false)
            } else {
                let raw = String::from_utf8_lossy(&i.output).into_owned();
                (raw, (i.output.len() as u64) < i.output_bytes)
            };
            json!({
                "name": i.name,
                "when": i.when.as_str(),
                "status": i.status.as_str(),
                "exit_code": i.exit_code,
                "reason": i.reason,
                "answer": i.answer,
                "error": i.agent_error,
                "output": output,
                "output_bytes": i.output_bytes,
                "output_truncated": truncated,
                "change": i.change.as_ref().map(change_json),
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".to_string())
}

/// A worktree dependency's change in `AAM_INPUTS`: the protocol's
/// `JobChange` as serde writes it (branch, the base it started from, the
/// commit it made or null, the diffstat under `stat`, the verify), the
/// same shape as in `aam status --json`.
fn change_json(change: &JobChange) -> serde_json::Value {
    serde_json::to_value(change).unwrap_or(serde_json::Value::Null)
}

/// A worktree dependency's change in `AAM_INPUTS_MD`: one line.
fn change_markdown(change: &JobChange) -> String {
    let short = |commit: &str| commit.get(..12).unwrap_or(commit).to_string();
    let Some(commit) = &change.commit else {
        return format!(
            "\nNo change (from `{}`; no branch left).\n",
            short(&change.base)
        );
    };
    let stat = &change.stat;
    let files = if stat.files == 1 { "file" } else { "files" };
    let mut line = format!(
        "\nBranch `{}` at `{}` (from `{}`): {} {files}, +{} -{}",
        change.branch,
        short(commit),
        short(&change.base),
        stat.files,
        stat.insertions,
        stat.deletions
    );
    if let Some(verify) = &change.verify {
        let verdict = if verify.passed { "passed" } else { "failed" };
        line.push_str(&format!("; verify {verdict}"));
    }
    line.push_str(".\n");
    line
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
        if let Some(change) = &i.change {
            out.push_str(&change_markdown(change));
        }
        if understood(i) {
            push_agent_markdown(&mut out, i);
            continue;
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

/// An understood agent's error, then its answer as the agent wrote it
/// (Markdown, not fenced).
fn push_agent_markdown(out: &mut String, input: &InputRecord) {
    if let Some(error) = &input.agent_error {
        out.push_str(&format!("\n**Agent error:** {}\n", error.trim()));
    }
    match input.answer.as_deref().map(str::trim) {
        Some(answer) if !answer.is_empty() => {
            out.push('\n');
            out.push_str(answer);
            out.push_str("\n\n");
        }
        _ if input.agent_error.is_some() => out.push('\n'),
        _ => out.push_str("\n_(no answer)_\n\n"),
    }
}

impl InputFiles {
    /// The attempt's own directory of them, when it has dependencies (the
    /// shared files of jobs without any are in the scratch directory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
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
    let scratch = scratch_dir()?;
    if assignment.inputs.is_empty() {
        return Ok(InputFiles {
            dir: None,
            json: scratch.join(NO_INPUTS_JSON),
            markdown: scratch.join(NO_INPUTS_MD),
        });
    }
    let dir = scratch.join(format!(
        "{}-{}-{}",
        assignment.job.session, assignment.job.index, assignment.attempt
    ));
    if dir.exists() {
        // Left by an earlier run of the same attempt that was stopped.
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let json = dir.join("inputs.json");
    let markdown = dir.join("inputs.md");
    create_new(&json, &to_json(&assignment.inputs))?;
    create_new(
        &markdown,
        &to_markdown(&assignment.job_name, &assignment.inputs),
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
            answer: None,
            agent_error: None,
            change: None,
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
    fn an_agents_answer_and_error_stand_for_its_raw_stream() {
        let stream = "{\"type\":\"assistant\"}\n{\"type\":\"result\"}\n";
        let mut answered = input(JobStatus::Succeeded, stream, 5000);
        answered.name = "review".into();
        answered.exit_code = Some(0);
        answered.answer = Some("## Findings\n\n- one bug\n".into());
        let mut failed = input(JobStatus::Failed, stream, 300);
        failed.name = "audit".into();
        failed.agent_error = Some("API Error: 529 Overloaded".into());
        let plain = input(JobStatus::Failed, "2 failed\n", 9);
        let inputs = vec![answered, failed, plain];
        let md = to_markdown("synth", &inputs);
        assert!(
            md.contains("## ✅ review — succeeded (exit 0)\n\n## Findings\n\n- one bug\n"),
            "{md}"
        );
        assert!(
            md.contains("**Agent error:** API Error: 529 Overloaded"),
            "{md}"
        );
        assert!(!md.contains("\"type\""), "no raw stream: {md}");
        assert!(
            md.contains("```text\n2 failed\n```"),
            "commands keep their output: {md}"
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&inputs)).unwrap();
        assert_eq!(json[0]["answer"], "## Findings\n\n- one bug\n");
        assert_eq!(json[0]["output"], "## Findings\n\n- one bug\n");
        assert_eq!(json[0]["output_bytes"], 5000);
        assert_eq!(json[0]["output_truncated"], false);
        assert_eq!(json[0]["error"], serde_json::Value::Null);
        assert_eq!(json[1]["error"], "API Error: 529 Overloaded");
        assert_eq!(json[1]["answer"], serde_json::Value::Null);
        assert_eq!(json[1]["output"], "");
        assert_eq!(json[2]["answer"], serde_json::Value::Null);
        assert_eq!(json[2]["output"], "2 failed\n");
    }

    #[test]
    fn a_worktree_dependency_shows_its_branch_commit_and_diffstat() {
        use aam_protocol::worktree::{DiffStat, VerifyOutcome};
        let mut fixed = input(JobStatus::Succeeded, "done\n", 5);
        fixed.name = "fix".into();
        fixed.exit_code = Some(0);
        let change = JobChange {
            repo: "/src/repo".into(),
            branch: "aam/s4/fix".into(),
            base: "a".repeat(40),
            commit: Some("b".repeat(40)),
            stat: DiffStat {
                files: 2,
                insertions: 10,
                deletions: 3,
            },
            patch_bytes: 900,
            patch_cut: false,
            verify: Some(VerifyOutcome {
                exit_code: Some(0),
                passed: true,
                duration_ms: 5,
                output_tail: "ok".into(),
            }),
        };
        fixed.change = Some(change.clone());
        let mut idle = input(JobStatus::Succeeded, "", 0);
        idle.name = "noop".into();
        idle.change = Some(JobChange {
            commit: None,
            stat: DiffStat::default(),
            verify: None,
            ..change
        });
        let plain = input(JobStatus::Failed, "2 failed\n", 9);
        let inputs = vec![fixed, idle, plain];
        let md = to_markdown("tests", &inputs);
        let line = "Branch `aam/s4/fix` at `bbbbbbbbbbbb` (from `aaaaaaaaaaaa`): 2 files, +10 -3; verify passed.";
        assert!(md.contains(line), "{md}");
        assert!(
            md.contains("No change (from `aaaaaaaaaaaa`; no branch left)."),
            "{md}"
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&inputs)).unwrap();
        let change = &json[0]["change"];
        assert_eq!(change["branch"], "aam/s4/fix");
        assert_eq!(change["commit"], "b".repeat(40));
        assert_eq!(change["base"], "a".repeat(40));
        assert_eq!(
            (
                &change["stat"]["files"],
                &change["stat"]["insertions"],
                &change["stat"]["deletions"]
            ),
            (&2.into(), &10.into(), &3.into())
        );
        assert_eq!(change["verify"]["passed"], true);
        assert_eq!(json[1]["change"]["commit"], serde_json::Value::Null);
        assert_eq!(json[2]["change"], serde_json::Value::Null);
    }

    fn assignment(inputs: Vec<InputRecord>) -> Assignment {
        Assignment {
            job: aam_protocol::JobKey {
                session: aam_protocol::SessionId(7),
                index: 1,
            },
            attempt: 2,
            session_name: "s".into(),
            job_name: "synth".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            secret_env: Vec::new(),
            workdir: None,
            timeout_ms: None,
            idle_timeout_ms: None,
            grace_ms: 0,
            format: None,
            worktree: None,
            inputs,
            ports: 0,
            input: None,
            permission_relay: false,
        }
    }

    #[test]
    fn input_files_are_private_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let scratch = scratch_dir().unwrap();
        assert_eq!(mode(scratch), 0o700);
        assert!(scratch
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("aam-worker-"));
        assert_ne!(
            scratch,
            std::env::temp_dir().join(format!("aam-worker-{}", std::process::id())),
            "the name must not be predictable"
        );
        let job = assignment(vec![input(JobStatus::Succeeded, "ok\n", 3)]);
        let files = write(&job).unwrap();
        assert_eq!(mode(&files.json), 0o600);
        assert_eq!(mode(files.json.parent().unwrap()), 0o700);
        let dir = files.json.parent().unwrap().to_path_buf();
        drop(files);
        assert!(!dir.exists(), "removed with the attempt");
        let plain = write(&assignment(Vec::new())).unwrap();
        assert_eq!(std::fs::read_to_string(&plain.json).unwrap(), "[]\n");
        assert_eq!(mode(&plain.markdown), 0o600);
        // A link planted where a file goes is refused, not written through.
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("target");
        std::fs::write(&target, "mine").unwrap();
        let planted = elsewhere.path().join("inputs.json");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let err = create_new(&planted, "forged").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
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
