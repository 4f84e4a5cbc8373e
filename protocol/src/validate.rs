//! Validation of a batch, and the typed batch it yields: every check that
//! can be made without the manager's agents (names, what each job runs,
//! dependencies and cycles, durations, sizes), done once, so what comes
//! after never parses or second-guesses a field again.

use crate::model::JobStatus;
use crate::spec::{
    is_valid_name, parse_duration_ms, BatchSpec, JobSpec, Limits, SpecError, SpecErrors, When,
    MAX_RETRIES,
};
use crate::worktree::Isolation;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// A batch that passed `validate`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidBatch {
    pub name: String,
    pub max_parallel: Option<u32>,
    pub max_cost_usd: Option<f64>,
    pub jobs: Vec<ValidJob>,
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
}

/// What a worktree job's branch starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// A ref or commit of the repository (`HEAD`, `main`, a sha).
    Ref(String),
    /// The branch of this dependency of the job (`job:NAME`).
    Job(String),
}

/// Most variants of one job.
pub const MAX_VARIANTS: u32 = 10;

/// Checks everything that can be checked without the manager's agents:
/// names, command/agent choice, dependencies, cycles and sizes, and types
/// the batch, moving its values (a batch may hold 100,000 jobs: nothing is
/// copied). Reports every problem found, not just the first.
pub fn validate(batch: BatchSpec, limits: &Limits) -> Result<ValidBatch, SpecErrors> {
    let mut errors = Vec::new();
    check_batch_fields(&batch, limits, &mut errors);
    if batch.jobs.len() > limits.max_jobs {
        // Not worth checking each of a million jobs.
        return Err(SpecErrors(errors));
    }
    // Names and dependencies while the jobs are borrowed; a job's name
    // errors are listed before its other ones, dependencies' after all.
    let (mut name_errors, mut deps, dependency_errors) =
        check_names_and_dependencies(&batch, limits);
    name_errors.reverse();
    let mut jobs = Vec::with_capacity(batch.jobs.len());
    for (i, job) in batch.jobs.into_iter().enumerate() {
        while name_errors.last().is_some_and(|(at, _)| *at == i) {
            errors.push(name_errors.pop().expect("checked").1);
        }
        let mut typed = check_job(job, i, limits, &mut errors);
        typed.depends_on = std::mem::take(&mut deps[i]);
        jobs.push(typed);
    }
    errors.extend(dependency_errors);
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    Ok(ValidBatch {
        name: batch.name,
        max_parallel: batch.max_parallel,
        max_cost_usd: batch.max_cost_usd,
        jobs,
    })
}

/// What a job is called in an error: its name, or its place when it has none.
fn label_of(job: &JobSpec, index: usize) -> Cow<'_, str> {
    if job.name.is_empty() {
        Cow::Owned(format!("jobs[{index}]"))
    } else {
        Cow::Borrowed(&job.name)
    }
}

/// Each job's name checked (with the index of the job it is about), each
/// job's dependencies as batch indices, and what is wrong with them.
#[allow(clippy::type_complexity)]
fn check_names_and_dependencies(
    batch: &BatchSpec,
    limits: &Limits,
) -> (
    Vec<(usize, SpecError)>,
    Vec<Vec<(u32, When)>>,
    Vec<SpecError>,
) {
    let mut name_errors = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(batch.jobs.len());
    for (i, job) in batch.jobs.iter().enumerate() {
        let label = label_of(job, i);
        if job.name.len() > limits.max_name_len || !is_valid_name(&job.name) {
            let message = format!(
                "'{}' is not a valid job name (1-{} letters, digits, '-', '_' or '.')",
                job.name, limits.max_name_len
            );
            name_errors.push((i, SpecError::job(&label, "name", message)));
        } else if index_of.insert(&job.name, i).is_some() {
            name_errors.push((i, SpecError::job(&label, "name", "duplicate job name")));
        }
    }
    // A job of N variants runs them as jobs NAME.1 ... NAME.N.
    for (i, job) in batch.jobs.iter().enumerate() {
        for k in 1..=job.variants.unwrap_or(0).min(MAX_VARIANTS) {
            let variant = format!("{}.{k}", job.name);
            if index_of.contains_key(variant.as_str()) {
                let message = format!("its variant {variant} has the name of another job");
                name_errors.push((i, SpecError::job(&label_of(job, i), "variants", message)));
            }
        }
    }
    let mut dependency_errors = Vec::new();
    let deps = resolve_dependencies(batch, &index_of, &mut dependency_errors);
    (name_errors, deps, dependency_errors)
}

fn check_batch_fields(batch: &BatchSpec, limits: &Limits, errors: &mut Vec<SpecError>) {
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
    if batch.jobs.is_empty() {
        errors.push(SpecError::batch("jobs", "the batch has no jobs"));
    }
    if batch.jobs.len() > limits.max_jobs {
        errors.push(SpecError::batch(
            "jobs",
            format!(
                "{} jobs exceed the limit of {} jobs per session",
                batch.jobs.len(),
                limits.max_jobs
            ),
        ));
    }
}

/// Each job's dependencies as batch indices: known, not itself, not
/// repeated, and no cycle among them.
fn resolve_dependencies(
    batch: &BatchSpec,
    index_of: &HashMap<&str, usize>,
    errors: &mut Vec<SpecError>,
) -> Vec<Vec<(u32, When)>> {
    let mut all = vec![Vec::new(); batch.jobs.len()];
    for (i, job) in batch.jobs.iter().enumerate() {
        let deps: &mut Vec<(u32, When)> = &mut all[i];
        for dep in &job.depends_on {
            let name = &dep.job;
            match index_of.get(name.as_str()) {
                None => errors.push(SpecError::job(
                    &job.name,
                    "depends_on",
                    format!("unknown job '{name}'"),
                )),
                Some(&j) if j == i => errors.push(SpecError::job(
                    &job.name,
                    "depends_on",
                    "a job cannot depend on itself",
                )),
                Some(&j) if deps.iter().any(|&(d, _)| d as usize == j) => errors.push(
                    SpecError::job(&job.name, "depends_on", format!("'{name}' is listed twice")),
                ),
                Some(&j) => deps.push((j as u32, dep.when)),
            }
        }
    }
    if let Some(cycle) = find_cycle(&all) {
        let names: Vec<&str> = cycle.iter().map(|&i| batch.jobs[i].name.as_str()).collect();
        errors.push(SpecError::job(
            names[0],
            "depends_on",
            format!("dependency cycle: {}", names.join(" -> ")),
        ));
    }
    all
}

fn check_value(
    errors: &mut Vec<SpecError>,
    label: &str,
    limits: &Limits,
    field: &str,
    value: &str,
) {
    if value.len() > limits.max_field_bytes {
        errors.push(SpecError::job(
            label,
            field,
            format!(
                "{} bytes exceed the limit of {} bytes",
                value.len(),
                limits.max_field_bytes
            ),
        ));
    } else if value.contains('\0') {
        errors.push(SpecError::job(label, field, "contains a NUL byte"));
    }
}

/// Checks one job's own fields and types it (its dependencies are
/// resolved apart, once every job is known).
fn check_job(job: JobSpec, index: usize, limits: &Limits, errors: &mut Vec<SpecError>) -> ValidJob {
    let label = label_of(&job, index);
    let label = label.as_ref();
    check_kind(&job, label, limits, errors);
    for (field, value) in [
        ("prompt", &job.prompt),
        ("model", &job.model),
        ("workdir", &job.workdir),
    ] {
        if let Some(value) = value {
            check_value(errors, label, limits, field, value);
        }
    }
    let mut duration = |field: &str, value: &Option<String>| {
        let text = value.as_ref()?;
        match parse_duration_ms(text) {
            Err(e) => errors.push(SpecError::job(label, field, e)),
            Ok(0) if field != "grace" => {
                errors.push(SpecError::job(label, field, "must be longer than 0"))
            }
            Ok(ms) => return Some(ms),
        }
        None
    };
    let timeout_ms = duration("timeout", &job.timeout);
    let idle_timeout_ms = duration("idle_timeout", &job.idle_timeout);
    let grace_ms = duration("grace", &job.grace);
    let retry_backoff_ms = duration("retry_backoff", &job.retry_backoff);
    let mut retry_on = vec![JobStatus::Failed, JobStatus::TimedOut];
    if job.retries.is_some_and(|r| r > MAX_RETRIES) {
        errors.push(SpecError::job(
            label,
            "retries",
            format!("at most {MAX_RETRIES} retries"),
        ));
    }
    if let Some(list) = &job.retry_on {
        retry_on.clear();
        for value in list {
            match value.as_str() {
                "failed" => retry_on.push(JobStatus::Failed),
                "timed_out" => retry_on.push(JobStatus::TimedOut),
                _ => errors.push(SpecError::job(
                    label,
                    "retry_on",
                    format!("'{value}' is not retryable (use failed, timed_out)"),
                )),
            }
        }
    }
    check_env(&job, label, limits, errors);
    if let Some(message) = job.max_cost_usd.and_then(bad_budget) {
        errors.push(SpecError::job(label, "max_cost_usd", message));
    }
    let isolated = check_isolation(&job, label, limits, errors);
    ValidJob {
        kind: kind_of(job.command, job.agent, job.prompt, job.model),
        name: job.name,
        depends_on: Vec::new(),
        env: job.env,
        workdir: job.workdir,
        timeout_ms,
        idle_timeout_ms,
        grace_ms,
        retries: job.retries,
        retry_backoff_ms,
        retry_on,
        priority: job.priority,
        requires: job.requires,
        max_cost_usd: job.max_cost_usd,
        isolation: isolated.isolation,
        base: isolated.base,
        variants: job.variants,
        verify: job.verify,
    }
}

/// A job's isolation and what goes with it, checked.
struct Isolated {
    isolation: Option<Isolation>,
    base: Option<Base>,
}

/// `isolation`, `base`, `variants` and `verify`: known values, and a
/// worktree wherever the others are given.
fn check_isolation(
    job: &JobSpec,
    label: &str,
    limits: &Limits,
    errors: &mut Vec<SpecError>,
) -> Isolated {
    let mut isolation = match job.isolation.as_deref().map(Isolation::parse) {
        None => None,
        Some(Ok(isolation)) => Some(isolation),
        Some(Err(message)) => {
            errors.push(SpecError::job(label, "isolation", message));
            None
        }
    };
    let needs_worktree = [
        ("base", job.base.is_some()),
        ("variants", job.variants.is_some()),
        ("verify", job.verify.is_some()),
    ];
    for (field, given) in needs_worktree {
        if !given {
            continue;
        }
        match isolation {
            Some(Isolation::None) => errors.push(SpecError::job(
                label,
                field,
                format!("'{field}' needs isolation = \"worktree\""),
            )),
            _ => isolation = Some(Isolation::Worktree),
        }
    }
    if job.gate && isolation == Some(Isolation::Worktree) {
        errors.push(SpecError::job(
            label,
            "isolation",
            "a gate runs nothing: it needs no worktree",
        ));
    }
    if let Some(n) = job.variants {
        if !(2..=MAX_VARIANTS).contains(&n) {
            let message = format!("{n} variants: give 2 to {MAX_VARIANTS}");
            errors.push(SpecError::job(label, "variants", message));
        }
    }
    if let Some(verify) = &job.verify {
        if verify.first().is_none_or(|program| program.is_empty()) {
            errors.push(SpecError::job(
                label,
                "verify",
                "the argv list is empty; the first element is the program",
            ));
        }
        for arg in verify {
            check_value(errors, label, limits, "verify", arg);
        }
    }
    let base = job
        .base
        .as_deref()
        .and_then(|base| check_base(job, label, limits, base, errors));
    Isolated { isolation, base }
}

/// `base`: `job:NAME` naming one of the job's dependencies, or a ref that
/// git cannot take for an option.
fn check_base(
    job: &JobSpec,
    label: &str,
    limits: &Limits,
    base: &str,
    errors: &mut Vec<SpecError>,
) -> Option<Base> {
    check_value(errors, label, limits, "base", base);
    if let Some(name) = base.strip_prefix("job:") {
        if !job.depends_on.iter().any(|d| d.job == name) {
            let message =
                format!("'{name}' is not among the job's depends_on: a base job must be one");
            errors.push(SpecError::job(label, "base", message));
            return None;
        }
        return Some(Base::Job(name.to_string()));
    }
    if base.is_empty() || base.starts_with('-') || base.chars().any(char::is_whitespace) {
        let message = format!("'{base}' is not a ref or commit (nor job:NAME)");
        errors.push(SpecError::job(label, "base", message));
        return None;
    }
    Some(Base::Ref(base.to_string()))
}

/// What is wrong with a budget in USD, if anything.
fn bad_budget(usd: f64) -> Option<String> {
    (!usd.is_finite() || usd <= 0.0)
        .then(|| format!("{usd} is not a budget (a positive number of USD)"))
}

/// What a job runs (meaningful once `check_kind` found nothing wrong).
fn kind_of(
    command: Option<Vec<String>>,
    agent: Option<String>,
    prompt: Option<String>,
    model: Option<String>,
) -> JobKind {
    match (command, agent) {
        (Some(argv), _) => JobKind::Command(argv),
        (None, Some(agent)) => JobKind::Agent(AgentCall {
            agent,
            prompt,
            model,
            resume: None,
        }),
        (None, None) => JobKind::Gate,
    }
}

/// Exactly one of `command`, `agent` and `gate`, and the fields that go with it.
fn check_kind(job: &JobSpec, label: &str, limits: &Limits, errors: &mut Vec<SpecError>) {
    match (&job.command, &job.agent, job.gate) {
        (Some(_), Some(_), _) => errors.push(SpecError::job(
            label,
            "command",
            "give either 'command' or 'agent', not both",
        )),
        (Some(_), None, true) | (None, Some(_), true) => errors.push(SpecError::job(
            label,
            "gate",
            "a gate runs nothing: give it no 'command' or 'agent'",
        )),
        (None, None, false) => errors.push(SpecError::job(
            label,
            "command",
            "each job needs 'command' (an argv list), 'agent', or 'gate = true'",
        )),
        _ => {}
    }
    if let Some(command) = &job.command {
        if command.is_empty() || command[0].is_empty() {
            errors.push(SpecError::job(
                label,
                "command",
                "the argv list is empty; the first element is the program",
            ));
        }
        if command.len() > limits.max_argv_len {
            errors.push(SpecError::job(
                label,
                "command",
                format!(
                    "{} arguments exceed the limit of {}",
                    command.len(),
                    limits.max_argv_len
                ),
            ));
        }
        for arg in command {
            check_value(errors, label, limits, "command", arg);
        }
        for (field, value) in [("prompt", &job.prompt), ("model", &job.model)] {
            if value.is_some() {
                errors.push(SpecError::job(
                    label,
                    field,
                    format!("'{field}' is only used with 'agent'"),
                ));
            }
        }
    }
    if let Some(agent) = &job.agent {
        if !is_valid_name(agent) {
            errors.push(SpecError::job(
                label,
                "agent",
                format!("'{agent}' is not a valid agent name"),
            ));
        }
    }
}

fn check_env(job: &JobSpec, label: &str, limits: &Limits, errors: &mut Vec<SpecError>) {
    if job.env.len() > limits.max_env_vars {
        errors.push(SpecError::job(
            label,
            "env",
            format!(
                "{} variables exceed the limit of {}",
                job.env.len(),
                limits.max_env_vars
            ),
        ));
    }
    for (key, value) in &job.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            errors.push(SpecError::job(
                label,
                "env",
                format!("'{key}' is not a valid variable name"),
            ));
        }
        check_value(errors, label, limits, "env", value);
    }
}

/// Returns one dependency cycle (as job indices, first repeated at the end), if any.
fn find_cycle(deps: &[Vec<(u32, When)>]) -> Option<Vec<usize>> {
    // Iterative three-colour DFS, so a 100,000-long chain cannot overflow the stack.
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut colour = vec![WHITE; deps.len()];
    let mut parent = vec![usize::MAX; deps.len()];
    for root in 0..deps.len() {
        if colour[root] != WHITE {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = GREY;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(dep, _)) = deps[node].get(*next) {
                let dep = dep as usize;
                *next += 1;
                match colour[dep] {
                    WHITE => {
                        colour[dep] = GREY;
                        parent[dep] = node;
                        stack.push((dep, 0));
                    }
                    GREY => {
                        let mut cycle = vec![dep];
                        let mut at = node;
                        while at != dep {
                            cycle.push(at);
                            at = parent[at];
                        }
                        cycle.push(dep);
                        cycle.reverse();
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[node] = BLACK;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Dependency;

    fn job(name: &str, deps: &[&str]) -> JobSpec {
        JobSpec {
            name: name.into(),
            command: Some(vec!["true".into()]),
            depends_on: deps.iter().map(|d| Dependency::after(d)).collect(),
            ..Default::default()
        }
    }

    fn batch(jobs: Vec<JobSpec>) -> BatchSpec {
        BatchSpec {
            max_cost_usd: None,
            name: "b".into(),
            max_parallel: None,
            jobs,
        }
    }

    fn errors(b: &BatchSpec) -> String {
        validate(b.clone(), &Limits::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn accepts_a_diamond() {
        let b = batch(vec![
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["a"]),
            job("d", &["b", "c"]),
        ]);
        validate(b, &Limits::default()).unwrap();
    }

    #[test]
    fn names_a_cycle() {
        let b = batch(vec![job("a", &["c"]), job("b", &["a"]), job("c", &["b"])]);
        let e = errors(&b);
        assert!(e.contains("dependency cycle: a -> c -> b -> a"), "{e}");
    }

    #[test]
    fn rejects_duplicates_unknown_deps_and_bad_names() {
        let b = batch(vec![job("a", &[]), job("a", &[]), job("x y", &["zz"])]);
        let e = errors(&b);
        assert!(
            e.contains("job 'a': field 'name': duplicate job name"),
            "{e}"
        );
        assert!(e.contains("job 'x y': field 'name'"), "{e}");
        assert!(
            e.contains("job 'x y': field 'depends_on': unknown job 'zz'"),
            "{e}"
        );
    }

    #[test]
    fn needs_exactly_one_of_command_and_agent() {
        let mut both = job("a", &[]);
        both.agent = Some("r".into());
        let neither = JobSpec {
            name: "b".into(),
            ..Default::default()
        };
        let e = errors(&batch(vec![both, neither]));
        assert!(e.contains("job 'a': field 'command': give either"), "{e}");
        assert!(
            e.contains("job 'b': field 'command': each job needs"),
            "{e}"
        );
    }

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_jobs: 2,
            max_field_bytes: 8,
            ..Limits::default()
        };
        let b = batch(vec![job("a", &[]), job("b", &[]), job("c", &[])]);
        assert!(validate(b, &limits)
            .unwrap_err()
            .to_string()
            .contains("3 jobs exceed"));
        let mut long = job("a", &[]);
        long.command = Some(vec!["x".repeat(9)]);
        let e = validate(batch(vec![long]), &limits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field 'command': 9 bytes exceed"), "{e}");
    }

    #[test]
    fn durations_and_retries_are_checked() {
        let mut j = job("a", &[]);
        j.timeout = Some("10 parsecs".into());
        j.idle_timeout = Some("0s".into());
        j.retries = Some(1000);
        j.retry_on = Some(vec!["skipped".into()]);
        let e = errors(&batch(vec![j]));
        assert!(
            e.contains("field 'timeout': '10 parsecs' is not a duration"),
            "{e}"
        );
        assert!(
            e.contains("field 'idle_timeout': must be longer than 0"),
            "{e}"
        );
        assert!(e.contains("field 'retries': at most 100"), "{e}");
        assert!(
            e.contains("field 'retry_on': 'skipped' is not retryable"),
            "{e}"
        );
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let mut jobs = vec![job("j0", &[])];
        for i in 1..100_000 {
            jobs.push(job(&format!("j{i}"), &[&format!("j{}", i - 1)]));
        }
        validate(batch(jobs), &Limits::default()).unwrap();
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

    #[test]
    fn worktree_keys_are_checked_and_imply_a_worktree() {
        let mut fix = job("fix", &["scan"]);
        fix.variants = Some(3);
        fix.verify = Some(vec!["cargo".into(), "test".into()]);
        fix.base = Some("job:scan".into());
        let valid = validate(batch(vec![job("scan", &[]), fix]), &Limits::default()).unwrap();
        let fix = &valid.jobs[1];
        assert_eq!(fix.isolation, Some(Isolation::Worktree));
        assert_eq!(fix.base, Some(Base::Job("scan".into())));
        assert_eq!(fix.variants, Some(3));

        let mut bad = job("bad", &[]);
        bad.isolation = Some("none".into());
        bad.base = Some("job:elsewhere".into());
        bad.variants = Some(11);
        bad.verify = Some(vec![]);
        let mut opt = job("opt", &[]);
        opt.base = Some("--upload-pack=x".into());
        let mut clash = job("clash", &[]);
        clash.variants = Some(2);
        let e = errors(&batch(vec![bad, opt, clash, job("clash.2", &[])]));
        for expected in [
            "job 'bad': field 'base': 'base' needs isolation = \"worktree\"",
            "job 'bad': field 'variants': 11 variants: give 2 to 10",
            "job 'bad': field 'verify': the argv list is empty",
            "job 'bad': field 'base': 'elsewhere' is not among the job's depends_on",
            "job 'opt': field 'base': '--upload-pack=x' is not a ref or commit",
            "job 'clash': field 'variants': its variant clash.2 has the name of another job",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }
}
