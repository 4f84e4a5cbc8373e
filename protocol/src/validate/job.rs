//! One job's own fields: what it runs (a command, an agent or a gate),
//! its durations and retries, typed into a [`ValidJob`].

use super::limits::{bad_budget, check_env, check_value};
use super::worktree::check_isolation;
use super::{label_of, AgentCall, JobKind, ValidJob};
use crate::model::JobStatus;
use crate::spec::{is_valid_name, parse_duration_ms, JobSpec, Limits, SpecError, MAX_RETRIES};

/// Checks one job's own fields and types it (its dependencies are
/// resolved apart, once every job is known).
pub(super) fn check_job(
    mut job: JobSpec,
    index: usize,
    limits: &Limits,
    errors: &mut Vec<SpecError>,
) -> ValidJob {
    let uses_spec = std::mem::take(&mut job.uses);
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
    let linger_ms = match job.linger.as_deref().map(parse_duration_ms) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            errors.push(SpecError::job(label, "linger", e));
            None
        }
    };
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
    let workspace = super::job_workspace::check_job_keys(&job, label, limits, errors);
    let isolated = check_isolation(&job, label, limits, errors);
    let ports = super::workspace::check_ports(&job, label, errors);
    let uses = crate::resource::check_uses(uses_spec, label, errors);
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
        ports,
        uses,
        workspace,
        linger_ms,
    }
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{batch, errors, job};
    use crate::spec::{parse_duration_ms, JobSpec};

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
}
