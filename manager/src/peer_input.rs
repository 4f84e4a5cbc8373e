//! What the manager takes from its peers, checked for size and shape at
//! the connection, before it reaches the scheduler: a worker's
//! registration (name, slots, prefetch, labels, the attempts it reports),
//! the free text of its reports (an agent's run and a worktree job's
//! change included), and a client's gate comment. Text that only informs
//! is cut to its limit (a progress message, a spawn error, a worktree's
//! failure, what an agent said, a change's paths and verify output);
//! what configures a worker or is recorded as someone's word is refused,
//! naming the field and the limit.

use aam_protocol::agent_run::AgentRun;
use aam_protocol::messages::{AttemptRef, ClientRequest, Prefetch, WorkerToManager};
use aam_protocol::spec::is_valid_name;
use aam_protocol::worktree::JobChange;
use std::collections::BTreeMap;

/// Most slots one worker may offer (and most assignments a fixed prefetch
/// may ask for; `auto` gives at most four a slot).
pub const MAX_SLOTS: u32 = 4096;
/// Longest worker name.
pub const MAX_WORKER_NAME_BYTES: usize = 128;
/// Most labels one worker may carry, and their sizes.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_BYTES: usize = 128;
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Most attempts a registering worker may report holding. A worker holds
/// at most its slots and prefetch (at most `MAX_SLOTS` and four times
/// that) and the ends not yet acknowledged; this is far past that.
pub const MAX_REPORTED_ATTEMPTS: usize = 100_000;
/// A progress message is cut to this.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;
/// Why a job could not start is cut to this.
pub const MAX_SPAWN_ERROR_BYTES: usize = 4096;
/// A gate decision's comment longer than this is refused.
pub const MAX_GATE_COMMENT_BYTES: usize = 4096;
/// An agent's final answer is cut to this (it is kept with every attempt).
pub const MAX_AGENT_RESULT_BYTES: usize = 256 * 1024;
/// The other texts of an agent's run (its last words, its error, a limit's
/// message) are cut to this.
pub const MAX_AGENT_TEXT_BYTES: usize = 4096;
/// An id or a name in an agent's run (its session id, a model) is cut to this.
pub const MAX_AGENT_NAME_BYTES: usize = 256;
/// Most models an agent's usage is counted under; more are dropped.
pub const MAX_AGENT_MODELS: usize = 32;
/// A worktree job's change: its repository's path, branch and commits are
/// cut to this (a path is at most 4 KiB on Linux), and its verify's output
/// tail to `MAX_AGENT_TEXT_BYTES`.
pub const MAX_CHANGE_NAME_BYTES: usize = 4096;

/// Checks a `Register`; the reason it is refused otherwise.
pub fn check_register(
    name: &str,
    slots: u32,
    prefetch: Prefetch,
    labels: &BTreeMap<String, String>,
    assigned: &[AttemptRef],
) -> Result<(), String> {
    if name.len() > MAX_WORKER_NAME_BYTES || !is_valid_name(name) {
        let shown: String = name.chars().take(MAX_WORKER_NAME_BYTES).collect();
        return Err(format!(
            "'{shown}' is not a valid worker name (letters, digits, '-', '_', '.'; at most {MAX_WORKER_NAME_BYTES} bytes)"
        ));
    }
    if slots == 0 || slots > MAX_SLOTS {
        return Err(format!("slots must be 1-{MAX_SLOTS}, not {slots}"));
    }
    if let Prefetch::Fixed(n) = prefetch {
        if n > MAX_SLOTS {
            return Err(format!("prefetch must be auto or 0-{MAX_SLOTS}, not {n}"));
        }
    }
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "labels: {} labels, more than the {MAX_LABELS} allowed",
            labels.len()
        ));
    }
    for (key, value) in labels {
        if key.len() > MAX_LABEL_KEY_BYTES || value.len() > MAX_LABEL_VALUE_BYTES {
            let shown: String = key.chars().take(32).collect();
            return Err(format!(
                "label '{shown}': keys may have {MAX_LABEL_KEY_BYTES} bytes and values {MAX_LABEL_VALUE_BYTES}, not {} and {}",
                key.len(),
                value.len()
            ));
        }
    }
    if assigned.len() > MAX_REPORTED_ATTEMPTS {
        return Err(format!(
            "assigned: {} attempts reported, more than the {MAX_REPORTED_ATTEMPTS} allowed",
            assigned.len()
        ));
    }
    Ok(())
}

/// Cuts the free text of a report to its limit.
pub fn trim_report(report: &mut WorkerToManager) {
    match report {
        WorkerToManager::Progress {
            message: Some(message),
            ..
        } => truncate(message, MAX_PROGRESS_MESSAGE_BYTES),
        WorkerToManager::SpawnFailed { error, .. }
        | WorkerToManager::WorktreeFailed { reason: error, .. } => {
            truncate(error, MAX_SPAWN_ERROR_BYTES)
        }
        WorkerToManager::AgentUpdate { run, .. } => trim_agent_run(run),
        WorkerToManager::Finished {
            agent,
            change,
            workspace,
            ..
        } => {
            if let Some(reason) = workspace.as_mut().and_then(|w| w.setup_failed.as_mut()) {
                truncate(reason, MAX_SPAWN_ERROR_BYTES);
            }
            if let Some(run) = agent {
                trim_agent_run(run);
            }
            if let Some(change) = change {
                trim_change(change);
            }
        }
        _ => {}
    }
}

/// Cuts what a worktree job's change says to its limits.
fn trim_change(change: &mut JobChange) {
    for text in [&mut change.repo, &mut change.branch, &mut change.base] {
        truncate(text, MAX_CHANGE_NAME_BYTES);
    }
    if let Some(commit) = &mut change.commit {
        truncate(commit, MAX_CHANGE_NAME_BYTES);
    }
    if let Some(verify) = &mut change.verify {
        truncate(&mut verify.output_tail, MAX_AGENT_TEXT_BYTES);
    }
}

/// Cuts what an agent's run says to its limits, and drops a cost that is
/// no amount (negative, or not a number).
fn trim_agent_run(run: &mut AgentRun) {
    for text in [&mut run.session_id, &mut run.model].into_iter().flatten() {
        truncate(text, MAX_AGENT_NAME_BYTES);
    }
    let texts = [&mut run.last_tool, &mut run.last_text, &mut run.error];
    for text in texts.into_iter().flatten() {
        truncate(text, MAX_AGENT_TEXT_BYTES);
    }
    if let Some(limit) = &mut run.limit {
        truncate(&mut limit.message, MAX_AGENT_TEXT_BYTES);
    }
    if let Some(result) = &mut run.result {
        truncate(result, MAX_AGENT_RESULT_BYTES);
    }
    if run.usage.len() > MAX_AGENT_MODELS
        || run.usage.keys().any(|m| m.len() > MAX_AGENT_NAME_BYTES)
    {
        run.usage = std::mem::take(&mut run.usage)
            .into_iter()
            .filter(|(model, _)| model.len() <= MAX_AGENT_NAME_BYTES)
            .take(MAX_AGENT_MODELS)
            .collect();
    }
    run.reported_cost_usd = run.reported_cost_usd.filter(|c| c.is_finite() && *c >= 0.0);
}

/// Checks a client's request; the reason it is refused otherwise.
pub fn check_request(request: &ClientRequest) -> Result<(), String> {
    match request {
        ClientRequest::Decide {
            comment: Some(comment),
            ..
        } if comment.len() > MAX_GATE_COMMENT_BYTES => Err(format!(
            "comment: {} bytes, more than the {MAX_GATE_COMMENT_BYTES} allowed",
            comment.len()
        )),
        _ => Ok(()),
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::{JobKey, SessionId};

    fn attempt(index: u32) -> AttemptRef {
        AttemptRef {
            job: JobKey {
                session: SessionId(1),
                index,
            },
            attempt: 1,
        }
    }

    #[test]
    fn a_registration_within_the_limits_passes() {
        let labels = BTreeMap::from([("gpu".to_string(), "a100".to_string())]);
        let assigned: Vec<AttemptRef> = (0..10).map(attempt).collect();
        assert_eq!(
            check_register("w-1", 4, Prefetch::Fixed(8), &labels, &assigned),
            Ok(())
        );
    }

    #[test]
    fn an_oversized_registration_is_refused_naming_the_field() {
        let none = BTreeMap::new();
        let refused = |name: &str, labels: &BTreeMap<String, String>, assigned: &[AttemptRef]| {
            check_register(name, 1, Prefetch::Auto, labels, assigned).unwrap_err()
        };
        assert!(refused(&"w".repeat(129), &none, &[]).contains("worker name"));
        let many: BTreeMap<String, String> = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(refused("w", &many, &[]).starts_with("labels:"));
        let huge = BTreeMap::from([("k".to_string(), "v".repeat(1 << 20))]);
        assert!(refused("w", &huge, &[]).starts_with("label 'k'"));
        let assigned = vec![attempt(0); MAX_REPORTED_ATTEMPTS + 1];
        assert!(refused("w", &none, &assigned).starts_with("assigned:"));
        assert!(check_register("w", 0, Prefetch::Auto, &none, &[]).is_err());
        assert!(check_register("w", 1, Prefetch::Fixed(MAX_SLOTS + 1), &none, &[]).is_err());
    }

    #[test]
    fn long_report_texts_are_cut_at_a_character_boundary() {
        let mut progress = WorkerToManager::Progress {
            attempt: attempt(0),
            percent: 5,
            message: Some(format!("a{}", "é".repeat(1000))),
        };
        trim_report(&mut progress);
        let WorkerToManager::Progress {
            message: Some(m), ..
        } = progress
        else {
            unreachable!()
        };
        // 1024 bytes would split an 'é' in two.
        assert_eq!(m.len(), MAX_PROGRESS_MESSAGE_BYTES - 1);
        let mut failed = WorkerToManager::SpawnFailed {
            attempt: attempt(0),
            error: "x".repeat(10_000),
        };
        trim_report(&mut failed);
        let WorkerToManager::SpawnFailed { error, .. } = failed else {
            unreachable!()
        };
        assert_eq!(error.len(), MAX_SPAWN_ERROR_BYTES);
    }

    #[test]
    fn an_agent_run_is_cut_to_its_limits_and_a_bad_cost_dropped() {
        let mut run = AgentRun {
            session_id: Some("s".repeat(1000)),
            result: Some("r".repeat(MAX_AGENT_RESULT_BYTES + 1)),
            last_text: Some("t".repeat(10_000)),
            reported_cost_usd: Some(f64::INFINITY),
            ..AgentRun::default()
        };
        for i in 0..40 {
            run.usage.insert(format!("m{i}"), Default::default());
        }
        let mut update = WorkerToManager::AgentUpdate {
            attempt: attempt(0),
            run,
        };
        trim_report(&mut update);
        let WorkerToManager::AgentUpdate { run, .. } = update else {
            unreachable!()
        };
        assert_eq!(run.session_id.unwrap().len(), MAX_AGENT_NAME_BYTES);
        assert_eq!(run.result.unwrap().len(), MAX_AGENT_RESULT_BYTES);
        assert_eq!(run.last_text.unwrap().len(), MAX_AGENT_TEXT_BYTES);
        assert_eq!(run.usage.len(), MAX_AGENT_MODELS);
        assert_eq!(run.reported_cost_usd, None);
    }

    #[test]
    fn a_worktree_s_failure_and_change_are_cut_to_their_limits() {
        let mut failed = WorkerToManager::WorktreeFailed {
            attempt: attempt(0),
            reason: "x".repeat(10_000),
        };
        trim_report(&mut failed);
        let WorkerToManager::WorktreeFailed { reason, .. } = failed else {
            unreachable!()
        };
        assert_eq!(reason.len(), MAX_SPAWN_ERROR_BYTES);
        let change = JobChange {
            repo: "/".repeat(10_000),
            branch: "b".repeat(10_000),
            base: "c".into(),
            commit: Some("d".repeat(10_000)),
            stat: Default::default(),
            patch_bytes: 0,
            patch_cut: false,
            verify: Some(aam_protocol::worktree::VerifyOutcome {
                exit_code: Some(1),
                passed: false,
                duration_ms: 1,
                output_tail: "o".repeat(100_000),
            }),
        };
        let mut finished = WorkerToManager::Finished {
            attempt: attempt(0),
            exit: aam_protocol::model::ExitInfo::not_started(),
            stopped: None,
            agent: None,
            change: Some(Box::new(change)),
            patch: Vec::new(),
            workspace: None,
        };
        trim_report(&mut finished);
        let WorkerToManager::Finished {
            change: Some(change),
            ..
        } = finished
        else {
            unreachable!()
        };
        assert_eq!(change.repo.len(), MAX_CHANGE_NAME_BYTES);
        assert_eq!(change.branch.len(), MAX_CHANGE_NAME_BYTES);
        assert_eq!(change.commit.unwrap().len(), MAX_CHANGE_NAME_BYTES);
        assert_eq!(change.base, "c");
        let tail = change.verify.unwrap().output_tail;
        assert_eq!(tail.len(), MAX_AGENT_TEXT_BYTES);
    }

    #[test]
    fn a_long_gate_comment_is_refused() {
        let decide = |comment: String| ClientRequest::Decide {
            session: SessionId(1),
            job: "gate".into(),
            approve: true,
            comment: Some(comment),
        };
        assert_eq!(check_request(&decide("ok".into())), Ok(()));
        let e = check_request(&decide("x".repeat(5000))).unwrap_err();
        assert!(e.starts_with("comment: 5000 bytes"), "{e}");
    }
}
