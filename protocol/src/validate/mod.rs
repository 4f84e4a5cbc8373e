//! Validation of a batch, and the typed batch it yields: every check that
//! can be made without the manager's agents (names, what each job runs,
//! dependencies and cycles, durations, sizes), done once, so what comes
//! after never parses or second-guesses a field again.
//!
//! The checks live beside what they check: `job` a job's own fields and
//! what it runs, `limits` sizes and values, `worktree` the worktree keys,
//! `dependencies` names, dependencies and cycles.

mod dependencies;
mod job;
pub mod job_workspace;
mod limits;
mod parts;
mod workspace;
mod worktree;

use crate::model::JobStatus;
use crate::spec::{is_valid_name, BatchSpec, JobSpec, Limits, SpecError, SpecErrors, When};
use crate::worktree::Isolation;
use dependencies::check_names_and_dependencies;
use job::check_job;
use limits::bad_budget;
use parts::JobParts;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A batch that passed `validate`: its own fields and its typed jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidBatch {
    pub head: BatchHead,
    pub jobs: Vec<ValidJob>,
}

/// A valid batch's own fields (`validate_each` hands its jobs out one by
/// one instead).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchHead {
    pub name: String,
    pub max_parallel: Option<u32>,
    pub max_cost_usd: Option<f64>,
}

/// What a job runs: exactly one of a command, an agent, or nothing (a gate).
#[derive(Clone, Debug, PartialEq)]
pub enum JobKind {
    /// An argv list; the first element is the program.
    Command(Vec<String>),
    /// An agent of the manager's config, filled with a prompt and model.
    Agent(AgentCall),
    /// Runs nothing: waits for `aam approve` / `aam reject`.
    Gate,
}

/// Which agent a job runs, and what fills its template.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentCall {
    pub agent: String,
    pub prompt: Option<String>,
    pub model: Option<String>,
    /// The agent session a follow-up resumes (`aam continue`; never from a
    /// batch file).
    pub resume: Option<String>,
}

/// One job of a valid batch, its fields parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidJob {
    pub name: String,
    pub kind: JobKind,
    /// Indices (in the batch) of the jobs it waits for, and the condition on each.
    pub depends_on: Vec<(u32, When)>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub grace_ms: Option<u64>,
    pub retries: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    /// The endings that are retried (`failed` and `timed_out` unless the job says).
    pub retry_on: Vec<JobStatus>,
    pub priority: i32,
    pub requires: BTreeMap<String, String>,
    pub max_cost_usd: Option<f64>,
    /// None: its agent's default, else none. `base`, `variants` and
    /// `verify` imply a worktree.
    pub isolation: Option<Isolation>,
    pub base: Option<Base>,
    /// 2-10 variants, each a job of its own (`NAME.1` ...), or none.
    pub variants: Option<u32>,
    pub verify: Option<Vec<String>>,
    /// TCP ports the worker reserves for it (0 to `MAX_PORTS`).
    pub ports: u8,
    /// Shared resources it holds while it runs, one entry per resource.
    pub uses: Vec<crate::resource::ResourceUse>,
    /// Its own workspace keys and container (its agent's fill the rest).
    pub workspace: crate::workspace::JobWorkspace,
    /// How long an agent that takes input waits for more (over its agent's).
    pub linger_ms: Option<u64>,
}

/// What a worktree job's branch starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// A ref or commit of the repository (`HEAD`, `main`, a sha).
    Ref(String),
    /// The branch of this dependency of the job (`job:NAME`).
    Job(String),
}

pub use workspace::MAX_PORTS;

/// Most variants of one job.
pub const MAX_VARIANTS: u32 = 10;

/// Checks everything that can be checked without the manager's agents:
/// names, command/agent choice, dependencies, cycles and sizes, and types
/// the batch, moving its values (a batch may hold 100,000 jobs: nothing is
/// copied). Reports every problem found, not just the first.
pub fn validate(batch: BatchSpec, limits: &Limits) -> Result<ValidBatch, SpecErrors> {
    validate_parts(batch, Vec::new(), limits)
}

/// `validate` of a batch streamed in parts: the jobs of `earlier` (the
/// parts that came before it, in order), then the batch's own.
fn validate_parts(
    batch: BatchSpec,
    earlier: Vec<Vec<JobSpec>>,
    limits: &Limits,
) -> Result<ValidBatch, SpecErrors> {
    let count = earlier.iter().map(Vec::len).sum::<usize>() + batch.jobs.len();
    let mut jobs = Vec::with_capacity(count.min(limits.max_jobs));
    let head = validate_each(batch, earlier, limits, |job| jobs.push(job))?;
    Ok(ValidBatch { head, jobs })
}

/// `validate` of a batch streamed in parts (the jobs of `earlier`, the
/// parts that came before it, then the batch's own), handing each typed
/// job to `take`, in batch order, as soon as it is typed, rather than
/// gathering them: what the caller makes of them is then the only array of
/// a big batch held whole (a million typed jobs are 624 MB). `take` gets
/// jobs only while the batch is valid so far; when this returns errors,
/// what it took is to be dropped.
pub fn validate_each(
    mut batch: BatchSpec,
    earlier: Vec<Vec<JobSpec>>,
    limits: &Limits,
    take: impl FnMut(ValidJob),
) -> Result<BatchHead, SpecErrors> {
    let mut parts = earlier;
    parts.push(std::mem::take(&mut batch.jobs));
    let parts = JobParts::new(parts);
    let across = check_across(&batch, &parts, limits)?;
    type_jobs(across, parts.into_jobs(), limits, take)?;
    Ok(BatchHead {
        name: batch.name,
        max_parallel: batch.max_parallel,
        max_cost_usd: batch.max_cost_usd,
    })
}

/// The checks of `validate`, leaving the batch as written: each job is
/// copied alone to be typed, then dropped (a client checks a batch before
/// it sends it, and must not hold a big one twice to do so).
pub fn check_batch(batch: &mut BatchSpec, limits: &Limits) -> Result<(), SpecErrors> {
    let parts = JobParts::new(vec![std::mem::take(&mut batch.jobs)]);
    let checked = check_across(batch, &parts, limits)
        .and_then(|across| type_jobs(across, parts.iter().cloned(), limits, drop));
    batch.jobs = parts.into_vec();
    checked
}

/// The checks of one job that need none of the others (its own fields;
/// not its name against the others', nor its dependencies), on a copy of
/// it: a client that streams a big batch finds a bad job before it sends
/// the jobs after it. `validate` of its batch reports the same errors.
pub fn check_job_alone(job: &JobSpec, index: usize, limits: &Limits) -> Vec<SpecError> {
    let mut errors = Vec::new();
    check_job(job.clone(), index, limits, &mut errors);
    errors
}

/// What is checked across a batch's jobs, before each is typed.
struct Across {
    /// The batch's own fields' problems.
    errors: Vec<SpecError>,
    /// Names' problems, by job index, last job first.
    name_errors: Vec<(usize, SpecError)>,
    /// Each job's dependencies as batch indices.
    deps: Vec<Vec<(u32, When)>>,
    dependency_errors: Vec<SpecError>,
}

/// The batch's fields, its size, and its jobs' names and dependencies
/// (the jobs borrowed). Past the job limit, nothing more is checked.
fn check_across(
    batch: &BatchSpec,
    parts: &JobParts,
    limits: &Limits,
) -> Result<Across, SpecErrors> {
    let mut errors = Vec::new();
    check_batch_fields(batch, parts.len(), limits, &mut errors);
    if parts.len() > limits.max_jobs {
        // Not worth checking each of a million jobs.
        return Err(SpecErrors(errors));
    }
    let (mut name_errors, deps, dependency_errors) = check_names_and_dependencies(parts, limits);
    name_errors.reverse();
    Ok(Across {
        errors,
        name_errors,
        deps,
        dependency_errors,
    })
}

/// Types each job in batch order, handing it to `take` while the batch is
/// valid so far; a job's name errors are listed before its other ones,
/// dependencies' after all.
fn type_jobs(
    across: Across,
    jobs: impl Iterator<Item = JobSpec>,
    limits: &Limits,
    mut take: impl FnMut(ValidJob),
) -> Result<(), SpecErrors> {
    let Across {
        mut errors,
        mut name_errors,
        mut deps,
        dependency_errors,
    } = across;
    let names_and_dependencies_valid = name_errors.is_empty() && dependency_errors.is_empty();
    for (i, job) in jobs.enumerate() {
        while name_errors.last().is_some_and(|(at, _)| *at == i) {
            errors.push(name_errors.pop().expect("checked").1);
        }
        let mut typed = check_job(job, i, limits, &mut errors);
        typed.depends_on = std::mem::take(&mut deps[i]);
        if names_and_dependencies_valid && errors.is_empty() {
            take(typed);
        }
    }
    errors.extend(dependency_errors);
    match errors.is_empty() {
        true => Ok(()),
        false => Err(SpecErrors::listed(errors)),
    }
}

/// What a job is called in an error: its name, or its place when it has none.
fn label_of(job: &JobSpec, index: usize) -> Cow<'_, str> {
    if job.name.is_empty() {
        Cow::Owned(format!("jobs[{index}]"))
    } else {
        Cow::Borrowed(&job.name)
    }
}

/// The batch's own fields, and its job count (`jobs`).
fn check_batch_fields(
    batch: &BatchSpec,
    jobs: usize,
    limits: &Limits,
    errors: &mut Vec<SpecError>,
) {
    if batch.name.is_empty()
        || batch.name.len() > limits.max_name_len
        || !is_valid_name(&batch.name)
    {
        errors.push(SpecError::batch(
            "name",
            format!(
                "session name '{}' must be 1-{} letters, digits, '-', '_' or '.'",
                batch.name, limits.max_name_len
            ),
        ));
    }
    if batch.max_parallel == Some(0) {
        errors.push(SpecError::batch("max_parallel", "must be at least 1"));
    }
    if let Some(message) = batch.max_cost_usd.and_then(bad_budget) {
        errors.push(SpecError::batch("max_cost_usd", message));
    }
    if jobs == 0 {
        errors.push(SpecError::batch("jobs", "the batch has no jobs"));
    }
    if jobs > limits.max_jobs {
        errors.push(SpecError::batch(
            "jobs",
            format!(
                "{jobs} jobs exceed the limit of {} jobs per session",
                limits.max_jobs
            ),
        ));
    }
}

#[cfg(test)]
mod test_support {
    use super::validate;
    use crate::spec::{BatchSpec, Dependency, JobSpec, Limits};

    pub(super) fn job(name: &str, deps: &[&str]) -> JobSpec {
        JobSpec {
            name: name.into(),
            command: Some(vec!["true".into()]),
            depends_on: deps.iter().map(|d| Dependency::after(d)).collect(),
            ..Default::default()
        }
    }

    pub(super) fn batch(jobs: Vec<JobSpec>) -> BatchSpec {
        BatchSpec {
            max_cost_usd: None,
            name: "b".into(),
            max_parallel: None,
            jobs,
        }
    }

    pub(super) fn errors(b: &BatchSpec) -> String {
        validate(b.clone(), &Limits::default())
            .unwrap_err()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{batch, errors, job};
    use super::*;
    use crate::spec::Dependency;

    #[test]
    fn a_batch_with_many_problems_lists_the_first_hundred_and_counts_the_rest() {
        let b = batch(
            (0..150)
                .map(|i| job(&format!("j{i}"), &["nowhere"]))
                .collect(),
        );
        let e = validate(b, &Limits::default()).unwrap_err();
        assert_eq!(e.0.len(), crate::spec::MAX_LISTED_ERRORS + 1, "{e}");
        assert!(e.0[0].to_string().contains("j0"), "{e}");
        let last = e.0.last().unwrap().to_string();
        assert!(last.contains("and 50 more problems"), "{last}");
    }

    #[test]
    fn a_job_checked_alone_has_the_errors_its_batch_reports_of_it() {
        let mut bad = job("slow", &["missing"]);
        bad.timeout = Some("soon".into());
        bad.retries = Some(1_000);
        let alone = check_job_alone(&bad, 1, &Limits::default());
        let all = errors(&batch(vec![job("fine", &[]), bad.clone()]));
        assert_eq!(alone.len(), 2, "{alone:?}");
        for e in &alone {
            assert!(all.contains(&e.to_string()), "{e} not in {all}");
        }
        // Its dependencies are the batch's to check.
        assert!(!alone.iter().any(|e| e.to_string().contains("missing")));
        assert!(check_job_alone(&job("fine", &[]), 0, &Limits::default()).is_empty());
    }

    #[test]
    fn a_job_s_errors_come_in_field_order_and_dependencies_after_all_jobs() {
        let mut bad = job("x y", &["zz"]);
        bad.command = Some(vec![]);
        let b = batch(vec![bad, job("a", &["a"])]);
        let e = errors(&b);
        let fields: Vec<&str> = e
            .lines()
            .map(|l| {
                l.split("field '")
                    .nth(1)
                    .unwrap_or("")
                    .split('\'')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            fields,
            vec!["name", "command", "depends_on", "depends_on"],
            "{e}"
        );
    }

    #[test]
    fn a_batch_in_parts_validates_as_the_same_batch_in_one() {
        let (a, b, c) = (job("a", &[]), job("b", &["a"]), job("c", &["b", "a"]));
        let whole = validate(
            batch(vec![a.clone(), b.clone(), c.clone()]),
            &Limits::default(),
        );
        let parts = validate_parts(batch(vec![c]), vec![vec![a], vec![b]], &Limits::default());
        assert_eq!(parts.unwrap(), whole.unwrap());
        // Errors name the job across parts: a dependency on a job of none,
        // a cycle through two parts, a duplicate of an earlier part's name.
        let parts = vec![vec![job("x", &["y"])], vec![job("y", &["x"])]];
        let e = validate_parts(batch(vec![job("z", &["nope"])]), parts, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("job 'z': field 'depends_on': unknown job 'nope'"),
            "{e}"
        );
        assert!(e.contains("dependency cycle: x -> y -> x"), "{e}");
        let parts = vec![vec![job("x", &[])], vec![job("y", &[])]];
        let e = validate_parts(batch(vec![job("x", &[])]), parts, &Limits::default())
            .unwrap_err()
            .to_string();
        assert_eq!(e.trim(), "job 'x': field 'name': duplicate job name");
    }

    #[test]
    fn validate_each_takes_jobs_only_while_the_batch_is_valid() {
        let mut taken = Vec::new();
        let head = validate_each(
            batch(vec![job("b", &["a"])]),
            vec![vec![job("a", &[])]],
            &Limits::default(),
            |j| taken.push(j.name),
        );
        assert_eq!(head.unwrap().name, "b");
        assert_eq!(taken, ["a", "b"]);
        // The second job is bad: the first was taken, nothing after it.
        let mut bad = job("bad", &[]);
        bad.command = Some(vec![]);
        let mut taken = Vec::new();
        let jobs = vec![job("a", &[]), bad, job("c", &[])];
        let result = validate_each(batch(jobs), Vec::new(), &Limits::default(), |j| {
            taken.push(j.name)
        });
        assert!(result.is_err());
        assert_eq!(taken, ["a"]);
        // A dependency error is known before any job is typed: none taken.
        let mut taken = 0;
        let jobs = vec![job("a", &[]), job("b", &["nope"])];
        let result = validate_each(batch(jobs), Vec::new(), &Limits::default(), |_| taken += 1);
        assert!(result.is_err());
        assert_eq!(taken, 0);
    }

    #[test]
    fn a_valid_batch_is_typed_with_its_fields_parsed() {
        let mut agent = JobSpec {
            name: "review".into(),
            agent: Some("reviewer".into()),
            prompt: Some("look".into()),
            timeout: Some("1m30s".into()),
            retry_on: Some(vec!["timed_out".into()]),
            ..Default::default()
        };
        agent.depends_on = vec![Dependency {
            job: "tests".into(),
            when: When::Finished,
        }];
        let gate = JobSpec {
            name: "approve".into(),
            gate: true,
            grace: Some("0s".into()),
            depends_on: vec![Dependency::after("review")],
            ..Default::default()
        };
        let valid = validate(
            batch(vec![job("tests", &[]), agent, gate]),
            &Limits::default(),
        )
        .unwrap();
        let [tests, review, approve] = &valid.jobs[..] else {
            panic!("three jobs expected: {valid:?}");
        };
        assert_eq!(tests.kind, JobKind::Command(vec!["true".into()]));
        assert_eq!(tests.retry_on, vec![JobStatus::Failed, JobStatus::TimedOut]);
        assert_eq!(
            review.kind,
            JobKind::Agent(AgentCall {
                agent: "reviewer".into(),
                prompt: Some("look".into()),
                model: None,
                resume: None,
            })
        );
        assert_eq!(review.timeout_ms, Some(90_000));
        assert_eq!(review.retry_on, vec![JobStatus::TimedOut]);
        assert_eq!(review.depends_on, vec![(0, When::Finished)]);
        assert_eq!(approve.kind, JobKind::Gate);
        assert_eq!(approve.grace_ms, Some(0));
        assert_eq!(approve.depends_on, vec![(1, When::Succeeded)]);
    }
}
