//! Jobs run as N variants (`variants = N`, best of N). The job becomes N
//! variant jobs of its own (`NAME.1` ... `NAME.N`: the same spec, each with
//! its own attempts, worker, worktree and branch, and `AAM_VARIANT=k`),
//! appended after the batch's jobs, and the parent `NAME`, which runs
//! nothing: it waits for its variants as for dependencies that may end any
//! way (`edge_condition`), and when the last one has ended it ends with
//! their pick (`pick`): among the variants that passed, the smallest
//! change, then the earliest. Dependents depend on the parent and see the
//! winner (its change, answer and output).

use super::State;
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::spec::{ValidJob, When};
use aam_protocol::worktree::{JobChange, VariantPick};
use aam_protocol::JobKey;

/// The environment variable that tells a variant its number.
pub const VARIANT_ENV: &str = "AAM_VARIANT";

/// Most bytes of a variant's own reason quoted in a parent's.
const QUOTED_REASON_BYTES: usize = 120;

/// The specs of a job's variants (none for a job without), each with the
/// job index it takes, from `first` on.
pub(super) fn variant_specs(
    spec: &ValidJob,
    first: u32,
) -> impl Iterator<Item = (u32, ValidJob)> + '_ {
    (1..=spec.variants.unwrap_or(0)).map(move |k| {
        let mut variant = spec.clone();
        variant.name = format!("{}.{k}", spec.name);
        variant.variants = None;
        variant.env.insert(VARIANT_ENV.into(), k.to_string());
        (first + k - 1, variant)
    })
}

/// Makes `job` the parent of `variants` (variant k at `k - 1`): it runs
/// nothing, and waits for them.
pub(super) fn become_parent(job: &mut JobRecord, variants: &mut [JobRecord]) {
    if variants.is_empty() {
        return;
    }
    for (k, variant) in (1..).zip(variants.iter_mut()) {
        variant.variant = Some(k);
    }
    job.variant_jobs = variants.iter().map(|v| v.key.index).collect();
    job.status = JobStatus::Pending;
    job.reason = None;
}

/// The condition on the edge from job `at` to `dependent`: the dependent's
/// own `when` for a dependency; `finished` from a variant to its parent
/// (a variant that failed is simply not picked).
pub(super) fn edge_condition(dependent: &JobRecord, at: u32) -> When {
    if dependent.variant_jobs.contains(&at) {
        return When::Finished;
    }
    dependent
        .depends_on
        .iter()
        .find(|(i, _)| *i == at)
        .map(|(_, w)| *w)
        .unwrap_or_default()
}

/// Whether a variant passed: it succeeded, and so did its verify if it has
/// one (a failed verify fails the job: this only says it twice).
fn passed(variant: &JobRecord) -> bool {
    variant.status == JobStatus::Succeeded
        && variant
            .change
            .as_ref()
            .and_then(|c| c.verify.as_ref())
            .is_none_or(|v| v.passed)
}

/// How a change ranks in the pick: lines added and removed; a variant that
/// reported no change at all ranks after every one that did.
fn rank(variant: &JobRecord) -> (bool, u64) {
    match &variant.change {
        Some(c) => (false, c.stat.insertions as u64 + c.stat.deletions as u64),
        None => (true, 0),
    }
}

/// A change as the pick's reason shows it: `+3 -1 in 1 file`.
fn describe(change: Option<&JobChange>) -> String {
    match change {
        None => "no change reported".into(),
        Some(c) if c.commit.is_none() => "no change".into(),
        Some(c) => {
            let files = if c.stat.files == 1 { "file" } else { "files" };
            format!(
                "+{} -{} in {} {files}",
                c.stat.insertions, c.stat.deletions, c.stat.files
            )
        }
    }
}

/// Why a variant did not pass, briefly: its status and reason.
fn failure(variant: &JobRecord) -> String {
    let reason = match variant.reason.as_deref() {
        Some(r) if variant.status != JobStatus::Succeeded => r,
        _ if variant.status == JobStatus::Succeeded => "its verify failed",
        _ => return format!("{} {}", variant.name, variant.status),
    };
    let mut end = reason.len().min(QUOTED_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < reason.len() { "…" } else { "" };
    format!(
        "{} {} ({}{cut})",
        variant.name,
        variant.status,
        &reason[..end]
    )
}

/// The pick among a parent's variants, in order (variant k at `k - 1`):
/// the index of the winner, if one passed, and why.
pub(super) fn pick(variants: &[&JobRecord]) -> (Option<usize>, VariantPick) {
    let n = variants.len();
    let passing: Vec<usize> = (0..n).filter(|&i| passed(variants[i])).collect();
    // The first of the smallest: the earliest wins a tie.
    let Some(best) = passing.iter().copied().min_by_key(|&i| rank(variants[i])) else {
        let why: Vec<String> = variants.iter().map(|v| failure(v)).collect();
        let reason = format!("none of the {n} variants passed: {}", why.join("; "));
        return (
            None,
            VariantPick {
                winner: None,
                reason,
            },
        );
    };
    let winner = variants[best];
    let change = describe(winner.change.as_deref());
    let mut reason = match passing.len() {
        1 => format!(
            "{} passed ({change}), the only one of the {n} variants that did",
            winner.name
        ),
        p => format!(
            "{} passed with the smallest change ({change}); {p} of the {n} variants passed",
            winner.name
        ),
    };
    let tied: Vec<&str> = passing
        .iter()
        .filter(|&&i| i != best && rank(variants[i]) == rank(winner))
        .map(|&i| variants[i].name.as_str())
        .collect();
    if !tied.is_empty() {
        reason.push_str(&format!(
            ", as small as {}: the earliest wins",
            tied.join(", ")
        ));
    }
    let winner = Some(winner.name.clone());
    (Some(best), VariantPick { winner, reason })
}

impl State {
    /// A parent whose variants have all ended ends with their pick:
    /// succeeded, with the winner's change, answer and exit, or failed
    /// saying why none passed. Its dependents settle.
    pub(super) fn end_variants(&mut self, parent: JobKey, now: u64) {
        let Some(entry) = self.sessions.get(parent.session) else {
            return;
        };
        let Some(job) = entry.jobs().get(parent.index as usize) else {
            return;
        };
        let variants: Vec<&JobRecord> = job
            .variant_jobs
            .iter()
            .filter_map(|&i| entry.jobs().get(i as usize))
            .collect();
        if variants.iter().any(|v| !v.status.is_terminal()) {
            return;
        }
        let started = variants.iter().filter_map(|v| v.started_at_ms).min();
        let (best, pick) = pick(&variants);
        let winner = best.map(|i| {
            let w = variants[i];
            (w.change.clone(), w.agent_run.clone(), w.exit.clone())
        });
        tracing::info!(session = %parent.session, job = %job.name, winner = ?pick.winner,
            "variants picked");
        let status = match winner {
            Some(_) => JobStatus::Succeeded,
            None => JobStatus::Failed,
        };
        if let Some(job) = self.job_mut(parent) {
            (job.change, job.agent_run, job.exit) = winner.unwrap_or_default();
            job.started_at_ms = started.or(Some(now));
            job.finished_at_ms = Some(now);
            job.set_reason(Some(pick.reason.clone()));
            job.pick = Some(Box::new(pick));
        }
        self.set_status(parent, status);
        self.settle_dependents(parent, now);
        self.maybe_finish_session(parent.session, now);
    }
}

#[cfg(test)]
mod tests;
