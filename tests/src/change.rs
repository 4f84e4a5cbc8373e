//! What a worktree job changed, as clients see it: a job's `change` (and a
//! job of variants' `pick`) in `aam status --json`, and in a dependent's
//! `AAM_INPUTS`, read back into the protocol's own types, so a test
//! compares whole records and a field renamed on one side fails loudly
//! here rather than reading as "no change".
//!
//! The JSON is the protocol type as serde writes it:
//! `"change": {"repo", "branch", "base", "commit" (null when the job changed
//! nothing), "stat": {"files", "insertions", "deletions"}, "patch_bytes",
//! "patch_cut", "verify": null or {"exit_code", "passed", "duration_ms",
//! "output_tail"}}`, `"pick": {"winner", "reason"}`; a job that is not a
//! worktree job has `"change": null`.

use crate::Cluster;
use aam_protocol::worktree::{DiffStat, JobChange, VariantPick};
use serde_json::Value;

/// The job named `name` of a `status --json` or `results --json` document.
pub fn job_named<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array in {doc}"))
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {doc}"))
}

/// A field of `item` read as `T`; `None` when it is null. Panics when the
/// field is missing or does not read as `T`.
fn field<T: serde::de::DeserializeOwned>(item: &Value, key: &str) -> Option<T> {
    let value = item
        .get(key)
        .unwrap_or_else(|| panic!("no field '{key}' in {item}"));
    if value.is_null() {
        return None;
    }
    Some(
        serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            panic!("'{key}' does not read as the protocol's type ({e}): {value}")
        }),
    )
}

/// A job's (or an input's) `change`: `None` when it is null.
pub fn change_of(item: &Value) -> Option<JobChange> {
    field(item, "change")
}

/// The change of a job that committed one, and that commit; panics when
/// it has no change or its change has no commit.
pub fn committed_change(job: &Value) -> (JobChange, String) {
    let change = change_of(job).unwrap_or_else(|| panic!("no change in {job}"));
    let commit = change
        .commit
        .clone()
        .unwrap_or_else(|| panic!("the change has no commit: {job}"));
    (change, commit)
}

/// A job of variants' `pick`: `None` when it is null.
pub fn pick_of(job: &Value) -> Option<VariantPick> {
    field(job, "pick")
}

/// A job of variants' `variants`: the names of its variant jobs.
pub fn variants_of(job: &Value) -> Vec<String> {
    field(job, "variants").unwrap_or_default()
}

impl Cluster {
    /// The `change` of job `job` of `session`, from `aam status --json`.
    pub fn change(&self, session: &str, job: &str) -> Option<JobChange> {
        change_of(job_named(&self.status(session), job))
    }
}

/// The ways a diffstat is written: as git words it (`1 file changed, 3
/// insertions(+), 1 deletion(-)`, a zero count left out) and in short
/// (`+3 -1`, `+3/-1`, `+3 −1`).
pub fn diffstat_texts(stat: &DiffStat) -> Vec<String> {
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut git = plural(stat.files, "file changed", "files changed");
    if stat.insertions > 0 || stat.deletions == 0 {
        git.push_str(&format!(
            ", {}(+)",
            plural(stat.insertions, "insertion", "insertions")
        ));
    }
    if stat.deletions > 0 || stat.insertions == 0 {
        git.push_str(&format!(
            ", {}(-)",
            plural(stat.deletions, "deletion", "deletions")
        ));
    }
    let (i, d) = (stat.insertions, stat.deletions);
    vec![
        git,
        format!("+{i} -{d}"),
        format!("+{i}/-{d}"),
        format!("+{i} \u{2212}{d}"),
    ]
}

/// Whether `text` shows the diffstat `stat` in one of [`diffstat_texts`]'
/// ways.
pub fn mentions_diffstat(text: &str, stat: &DiffStat) -> bool {
    diffstat_texts(stat)
        .iter()
        .any(|s| text.contains(s.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::worktree::VerifyOutcome;
    use serde_json::json;

    fn change() -> JobChange {
        JobChange {
            repo: "/work/repo".into(),
            branch: "aam/s1/fix".into(),
            base: "a".repeat(40),
            commit: Some("b".repeat(40)),
            stat: DiffStat {
                files: 1,
                insertions: 3,
                deletions: 1,
            },
            patch_bytes: 420,
            patch_cut: false,
            verify: Some(VerifyOutcome {
                exit_code: Some(0),
                passed: true,
                duration_ms: 12,
                output_tail: "ok\n".into(),
            }),
        }
    }

    #[test]
    fn a_jobs_change_and_pick_read_back_as_the_protocols_types() {
        let doc = json!({ "jobs": [
            { "name": "fix", "change": serde_json::to_value(change()).unwrap(),
              "variants": ["fix.1", "fix.2"],
              "pick": { "winner": "fix.2", "reason": "the only one that passed" } },
            { "name": "plain", "change": null, "variants": [], "pick": null },
        ]});
        let fix = job_named(&doc, "fix");
        assert_eq!(change_of(fix), Some(change()));
        assert_eq!(committed_change(fix), (change(), "b".repeat(40)));
        assert_eq!(
            pick_of(fix),
            Some(VariantPick {
                winner: Some("fix.2".into()),
                reason: "the only one that passed".into(),
            })
        );
        assert_eq!(variants_of(fix), ["fix.1", "fix.2"]);
        let plain = job_named(&doc, "plain");
        assert_eq!(change_of(plain), None);
        assert_eq!(pick_of(plain), None);
        assert!(variants_of(plain).is_empty());
    }

    #[test]
    fn a_change_missing_or_of_another_shape_is_an_error_not_none() {
        let missing = std::panic::catch_unwind(|| change_of(&json!({ "name": "x" })));
        assert!(missing.is_err(), "a missing field read as no change");
        let flat = json!({ "change": { "branch": "aam/s1/x", "files": 1 } });
        assert!(std::panic::catch_unwind(|| change_of(&flat)).is_err());
        let uncommitted = json!({ "change": serde_json::to_value(JobChange {
            commit: None,
            ..change()
        }).unwrap() });
        assert!(std::panic::catch_unwind(|| committed_change(&uncommitted)).is_err());
    }

    #[test]
    fn a_diffstat_is_found_as_git_words_it_or_in_short() {
        let stat = DiffStat {
            files: 1,
            insertions: 3,
            deletions: 1,
        };
        for text in [
            "aam/s1/fix  1 file changed, 3 insertions(+), 1 deletion(-)",
            "branch aam/s1/fix (+3 -1)",
            "+3/-1",
            "+3 \u{2212}1 in 1 file",
        ] {
            assert!(mentions_diffstat(text, &stat), "{text}");
        }
        assert!(!mentions_diffstat("+1 -3", &stat));
        assert!(!mentions_diffstat("3 insertions", &stat));
        let added = DiffStat {
            files: 2,
            insertions: 1,
            deletions: 0,
        };
        assert_eq!(diffstat_texts(&added)[0], "2 files changed, 1 insertion(+)");
        let removed = DiffStat {
            files: 1,
            insertions: 0,
            deletions: 2,
        };
        assert_eq!(
            diffstat_texts(&removed)[0],
            "1 file changed, 2 deletions(-)"
        );
    }
}
