//! What worktree jobs changed, as the CLI shows it: a change at a glance
//! (`aam/s4/fix +12 -3 (2 files)`), a variant's verify, which variant won,
//! the `change` and `pick` JSON objects, and the variants table of the
//! results summary.

use super::agent::usd;
use super::{human_duration, job_duration, mark};
use aam_protocol::model::{JobView, SessionView};
use aam_protocol::worktree::{DiffStat, JobChange, VariantPick, VerifyOutcome};
use std::fmt::Write as _;

/// A diffstat at a glance: `+12 -3 (2 files)`.
pub fn diffstat(stat: &DiffStat) -> String {
    let files = if stat.files == 1 {
        "1 file".to_string()
    } else {
        format!("{} files", stat.files)
    };
    format!("+{} -{} ({files})", stat.insertions, stat.deletions)
}

/// A change at a glance: `aam/s4/fix +12 -3 (2 files)`, or `no change`
/// when the job committed nothing (and so left no branch).
pub fn change_line(change: &JobChange) -> String {
    match change.commit {
        Some(_) => format!("{} {}", change.branch, diffstat(&change.stat)),
        None => "no change".into(),
    }
}

/// How a verify ended: `verify passed`, `verify failed: exit 1`, or
/// `verify failed: no exit code` (it was killed).
pub fn verify_line(verify: &VerifyOutcome) -> String {
    match (verify.passed, verify.exit_code) {
        (true, _) => "verify passed".into(),
        (false, Some(code)) => format!("verify failed: exit {code}"),
        (false, None) => "verify failed: no exit code".into(),
    }
}

/// Whether `job` is the variant that won its job of variants.
fn won(view: &SessionView, job: &JobView) -> bool {
    job.variant.is_some()
        && view.jobs.iter().any(|parent| {
            parent.variants.contains(&job.name)
                && parent
                    .pick
                    .as_ref()
                    .is_some_and(|p| p.winner.as_deref() == Some(job.name.as_str()))
        })
}

/// What a job changed, for the NOTE of `aam status` and the last column of
/// `aam watch`: its branch and diffstat, a variant's verify and whether it
/// won, a job of variants' winner (or why none won). What the job's reason
/// already says is left out; `None` when there is nothing to say.
pub fn change_note(view: &SessionView, job: &JobView) -> Option<String> {
    let reason = job.reason.as_deref().unwrap_or("");
    let untold = |text: &str| !reason.contains(text);
    let mut parts = Vec::new();
    if let Some(pick) = job
        .pick
        .as_ref()
        .filter(|p| p.winner.is_some() || untold(&p.reason))
    {
        parts.push(pick_line(pick));
    }
    if let Some(change) = &job.change {
        parts.push(change_line(change));
        // A job of variants carries its winner's change, whose verify
        // passed: only the variants' own verify is news.
        let verify = change.verify.as_ref().filter(|_| job.variants.is_empty());
        if let Some(line) = verify.map(verify_line).filter(|l| untold(l)) {
            parts.push(line);
        }
    }
    if won(view, job) {
        parts.push("won".into());
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// `winner fix.2` (why is in `results` and `--json`), or `no winner:
/// REASON`.
fn pick_line(pick: &VariantPick) -> String {
    match &pick.winner {
        Some(winner) => format!("winner {winner}"),
        None => format!("no winner: {}", pick.reason),
    }
}

/// The results summary's line for a worktree job: its branch and diffstat,
/// with how to get the change (`aam diff`, `aam apply`).
pub fn change_paragraph(out: &mut String, session: &str, job: &JobView) {
    let Some(change) = &job.change else {
        return;
    };
    if change.commit.is_none() {
        out.push_str("\n**No change:** nothing committed, no branch left.\n");
        return;
    }
    let cut = if change.patch_cut {
        format!(
            " (the patch is cut, {} bytes in all: the whole change is only on the branch, in `{}` on the worker)",
            change.patch_bytes, change.repo
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\n**Branch:** `{}` {} — `aam diff {session}/{}`, `aam apply {session}/{}`{cut}",
        change.branch,
        diffstat(&change.stat),
        job.name,
        job.name
    );
}

/// The results summary's part for a job of variants: which one won and
/// why, then each variant's outcome, verify, change and cost.
pub fn variants_table(out: &mut String, view: &SessionView, parent: &JobView) {
    if parent.variants.is_empty() {
        return;
    }
    match &parent.pick {
        Some(VariantPick {
            winner: Some(winner),
            reason,
        }) => {
            let _ = writeln!(out, "\n**Winner:** {winner} — {reason}");
        }
        Some(VariantPick {
            winner: None,
            reason,
        }) => {
            let _ = writeln!(out, "\n**No winner:** {reason}");
        }
        None => out.push_str("\n_(no pick yet)_\n"),
    }
    out.push_str("\n| | Variant | Status | Verify | Change | Duration | Cost |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for name in &parent.variants {
        let Some(variant) = view.jobs.iter().find(|j| &j.name == name) else {
            let _ = writeln!(out, "| | {name} | - | - | - | - | - |");
            continue;
        };
        let change = variant.change.as_ref();
        let verify = change
            .and_then(|c| c.verify.as_ref())
            .map(|v| {
                let passed = if v.passed { "✅" } else { "❌" };
                let code = v
                    .exit_code
                    .map_or("no exit code".into(), |c| format!("exit {c}"));
                format!("{passed} {code} in {}", human_duration(v.duration_ms))
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "| {} | {}{} | {} | {verify} | {} | {} | {} |",
            mark(variant.status),
            variant.name,
            if won(view, variant) { " 🏆" } else { "" },
            variant.status,
            change.map(change_line).unwrap_or_else(|| "-".into()),
            job_duration(variant)
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            variant
                .agent
                .as_ref()
                .map(|a| usd(a.cost_usd))
                .unwrap_or_else(|| "-".into()),
        );
    }
}

/// Whether any job of these changed code in a worktree or ran as
/// variants (the results table then grows a change column).
pub fn any_change(jobs: &[&JobView]) -> bool {
    jobs.iter()
        .any(|j| j.change.is_some() || !j.variants.is_empty())
}

/// A job's cell in the results table's change column: its branch and
/// diffstat, marked 🏆 for the variant that won; for a job of variants,
/// which one won.
pub fn change_cell(view: &SessionView, job: &JobView) -> String {
    let change = job.change.as_ref().map(change_line);
    let trophy = if won(view, job) { " 🏆" } else { "" };
    let winner = job.pick.as_ref().map(|p| p.winner.as_deref());
    match (winner, change) {
        (Some(Some(winner)), Some(change)) => format!("winner {winner}: {change}"),
        (Some(Some(winner)), None) => format!("winner {winner}"),
        (Some(None), _) => "no winner".into(),
        (None, Some(change)) => format!("{change}{trophy}"),
        (None, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_views::{
        agent_view, job, session, variant_job, variants_parent, worktree_job,
    };
    use crate::render::{results_markdown, session_json, session_table};
    use aam_protocol::model::{JobStatus, SessionStatus};
    use serde_json::{json, Value};

    const PICKED: &str = "passed verify with the smallest change (3 lines)";

    /// `fix` run as 3 variants: fix.1 fails its verify, fix.2 and fix.3
    /// pass, fix.2 with the smaller change wins; fix.3 is an agent job.
    fn best_of_three() -> SessionView {
        let one = variant_job("fix", 1, JobStatus::Succeeded, 1, 2);
        let two = variant_job("fix", 2, JobStatus::Succeeded, 0, 3);
        let mut three = variant_job("fix", 3, JobStatus::Succeeded, 0, 9);
        three.agent = Some(agent_view(4, Some("Edit src/lib.rs"), 0.21));
        let parent = variants_parent(
            "fix",
            &[one.clone(), two.clone(), three.clone()],
            Some("fix.2"),
            PICKED,
        );
        session(SessionStatus::Succeeded, vec![parent, one, two, three])
    }

    #[test]
    fn status_shows_each_worktree_job_s_branch_and_diffstat() {
        let fix = worktree_job("fix", JobStatus::Succeeded, 2, 12, 3);
        let mut idle = worktree_job("idle", JobStatus::Succeeded, 0, 0, 0);
        idle.change.as_mut().unwrap().commit = None;
        let tests = job("tests", JobStatus::Succeeded, "ok\n");
        let table = session_table(
            &session(SessionStatus::Succeeded, vec![fix, idle, tests]),
            0,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[3],
            "fix                      succeeded    1     0 w1                        1.5s  aam/s7/fix +12 -3 (2 files)"
        );
        assert_eq!(
            lines[4],
            "idle                     succeeded    1     0 w1                        1.5s  no change"
        );
        assert!(lines[5].ends_with("1.5s  "), "a command as before: {table}");
    }

    #[test]
    fn status_shows_each_variant_s_verify_and_which_one_won() {
        let table = session_table(&best_of_three(), 0);
        let notes: Vec<&str> = table
            .lines()
            .skip(3)
            // The NOTE column: after the last two spaces.
            .map(|l| l.rsplit_once("  ").map_or(l, |(_, note)| note))
            .collect();
        assert_eq!(
            notes,
            [
                "winner fix.2 · aam/s7/fix.2 +3 -0 (1 file)",
                "aam/s7/fix.1 +2 -0 (1 file) · verify failed: exit 1",
                "aam/s7/fix.2 +3 -0 (1 file) · verify passed · won",
                "aam/s7/fix.3 +9 -0 (1 file) · verify passed · 4 turns · Edit src/lib.rs",
            ],
            "{table}"
        );
    }

    #[test]
    fn when_no_variant_passes_the_reason_says_it_once() {
        let one = variant_job("fix", 1, JobStatus::Succeeded, 1, 2);
        let reason = "no variant passed verify (1 ran)";
        let parent = variants_parent("fix", std::slice::from_ref(&one), None, reason);
        let view = session(SessionStatus::Failed, vec![parent, one]);
        let table = session_table(&view, 0);
        assert!(
            table
                .lines()
                .nth(3)
                .unwrap()
                .ends_with(&format!("  {reason}")),
            "{table}"
        );
        let md = results_markdown(&view, false);
        assert!(
            md.contains("| ❌ | fix | failed | 1.5s | 1 | 1 | no winner |\n"),
            "{md}"
        );
        assert!(md.contains(&format!("\n**No winner:** {reason}\n")), "{md}");
    }

    #[test]
    fn status_json_has_the_change_the_variant_and_the_pick() {
        let view = best_of_three();
        let json = session_json(&view, false);
        let parent = &json["jobs"][0];
        let read_back: JobChange = serde_json::from_value(parent["change"].clone()).unwrap();
        assert_eq!(Some(read_back), view.jobs[0].change, "the protocol's type");
        assert_eq!(
            parent["change"],
            json!({
                "repo": "/srv/repo",
                "branch": "aam/s7/fix.2",
                "base": "b0",
                "commit": "c1",
                "stat": {"files": 1, "insertions": 3, "deletions": 0},
                "patch_bytes": 900,
                "patch_cut": false,
                "verify": {
                    "exit_code": 0,
                    "passed": true,
                    "duration_ms": 2_000,
                    "output_tail": "exit 0\n",
                },
            })
        );
        assert_eq!(parent["variant"], Value::Null);
        assert_eq!(parent["variants"], json!(["fix.1", "fix.2", "fix.3"]));
        assert_eq!(parent["pick"], json!({"winner": "fix.2", "reason": PICKED}));
        let one = &json["jobs"][1];
        assert_eq!(one["variant"], 1);
        assert_eq!(one["variants"], json!([]));
        assert_eq!(one["pick"], Value::Null);
        assert_eq!(one["change"]["verify"]["passed"], false);
        assert_eq!(one["change"]["verify"]["exit_code"], 1);
        let plain = session_json(
            &session(
                SessionStatus::Succeeded,
                vec![job("t", JobStatus::Succeeded, "")],
            ),
            false,
        );
        assert_eq!(plain["jobs"][0]["change"], Value::Null);
    }

    #[test]
    fn results_show_the_winner_and_each_variant_s_verify_change_and_cost() {
        let md = results_markdown(&best_of_three(), false);
        let expected_table = "\
| | Job | Status | Duration | Exit | Attempts | Turns | Cost | Change |
|---|---|---|---|---|---|---|---|---|
| ✅ | fix | succeeded | 1.5s | 0 | 1 | - | - | winner fix.2: aam/s7/fix.2 +3 -0 (1 file) |
| ✅ | fix.1 | succeeded | 1.5s | 0 | 1 | - | - | aam/s7/fix.1 +2 -0 (1 file) |
| ✅ | fix.2 | succeeded | 1.5s | 0 | 1 | - | - | aam/s7/fix.2 +3 -0 (1 file) 🏆 |
| ✅ | fix.3 | succeeded | 1.5s | 0 | 1 | 4 | $0.21 | aam/s7/fix.3 +9 -0 (1 file) |
";
        assert!(md.contains(expected_table), "{md}");
        let expected_section = "\
### ✅ fix — succeeded in 1.5s

**Branch:** `aam/s7/fix.2` +3 -0 (1 file) — `aam diff s7/fix`, `aam apply s7/fix`

**Winner:** fix.2 — passed verify with the smallest change (3 lines)

| | Variant | Status | Verify | Change | Duration | Cost |
|---|---|---|---|---|---|---|
| ✅ | fix.1 | succeeded | ❌ exit 1 in 2.0s | aam/s7/fix.1 +2 -0 (1 file) | 1.5s | - |
| ✅ | fix.2 🏆 | succeeded | ✅ exit 0 in 2.0s | aam/s7/fix.2 +3 -0 (1 file) | 1.5s | - |
| ✅ | fix.3 | succeeded | ✅ exit 0 in 2.0s | aam/s7/fix.3 +9 -0 (1 file) | 1.5s | $0.21 |

### ✅ fix.1 — succeeded in 1.5s

**Branch:** `aam/s7/fix.1` +2 -0 (1 file) — `aam diff s7/fix.1`, `aam apply s7/fix.1`
";
        assert!(md.contains(expected_section), "{md}");
    }

    #[test]
    fn results_say_when_a_job_changed_nothing_or_its_patch_was_cut() {
        let mut idle = worktree_job("idle", JobStatus::Succeeded, 0, 0, 0);
        idle.change.as_mut().unwrap().commit = None;
        let mut big = worktree_job("big", JobStatus::Succeeded, 40, 90_000, 10);
        big.change.as_mut().unwrap().patch_cut = true;
        big.change.as_mut().unwrap().patch_bytes = 9_000_000;
        let md = results_markdown(&session(SessionStatus::Succeeded, vec![idle, big]), false);
        assert!(
            md.contains("| ✅ | idle | succeeded | 1.5s | 0 | 1 | no change |\n"),
            "{md}"
        );
        assert!(
            md.contains("### ✅ idle — succeeded in 1.5s\n\n**No change:** nothing committed, no branch left.\n"),
            "{md}"
        );
        assert!(
            md.contains("**Branch:** `aam/s7/big` +90000 -10 (40 files) — `aam diff s7/big`, `aam apply s7/big` (the patch is cut, 9000000 bytes in all: the whole change is only on the branch, in `/srv/repo` on the worker)\n"),
            "{md}"
        );
    }
}
