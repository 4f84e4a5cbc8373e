//! Batch files: the session a user submits, how it is parsed from TOML or
//! JSON, and the validation every batch passes before anything is stored.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A submitted batch: a named session and its jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub name: String,
    /// Most jobs of this session running at once (none: no limit).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    #[serde(default)]
    pub jobs: Vec<JobSpec>,
}

/// One job of a batch: either a plain `command` or an `agent` with a prompt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// Jobs this one waits for: a name (after it succeeded) or
    /// `{ job = "x", when = "succeeded" | "failed" | "finished" }`.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Longest the job may run (`"10m"`); past it the job is stopped, `timed_out`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Longest the job may print nothing; past it the job is stopped as wedged.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Between SIGTERM and SIGKILL when the job is stopped.
    #[serde(default)]
    pub grace: Option<String>,
    /// Attempts after the first when one ends failed or timed out.
    #[serde(default)]
    pub retries: Option<u32>,
    /// First wait before a retry; doubles each time, with jitter, capped.
    #[serde(default)]
    pub retry_backoff: Option<String>,
    /// Which endings are retried: `failed`, `timed_out` (default both).
    #[serde(default)]
    pub retry_on: Option<Vec<String>>,
    /// A gate runs nothing: it waits for `aam approve` (then counts as
    /// succeeded) or `aam reject` (failed).
    #[serde(default)]
    pub gate: bool,
    /// Higher runs first; equal priorities run in submission order.
    #[serde(default)]
    pub priority: i32,
    /// Worker labels this job needs (`{ gpu = "true" }`).
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
}

/// What a dependency must have done for its dependent to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// It succeeded (the default).
    #[default]
    Succeeded,
    /// It failed or timed out.
    Failed,
    /// It ended, however (succeeded, failed, timed out, cancelled, skipped).
    Finished,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::Succeeded => "succeeded",
            When::Failed => "failed",
            When::Finished => "finished",
        }
    }
}

/// One entry of `depends_on`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub job: String,
    pub when: When,
}

impl Dependency {
    /// After `job` succeeded.
    pub fn after(job: &str) -> Dependency {
        Dependency {
            job: job.to_string(),
            when: When::Succeeded,
        }
    }
}

/// Batch files (TOML, JSON) may write a dependency as a bare name or as a
/// table; the wire (bincode, not self-describing) always has the struct.
impl<'de> Deserialize<'de> for Dependency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            job: String,
            #[serde(default)]
            when: When,
        }
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Dependency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"a job name or { job = "NAME", when = "succeeded" | "failed" | "finished" }"#,
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dependency, E> {
                Ok(Dependency::after(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Dependency, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Dependency {
                    job: t.job,
                    when: t.when,
                })
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(Either)
        } else {
            let t = <(String, When)>::deserialize(d)?;
            Ok(Dependency {
                job: t.0,
                when: t.1,
            })
        }
    }
}

/// Most retries one job may ask for.
pub const MAX_RETRIES: u32 = 100;

/// Parses a duration such as `90s`, `10m` or `1h30m` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    humantime::parse_duration(text.trim())
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 90s, 10m, 1h30m)"))
}

/// Size limits a batch must respect (DESIGN.md invariant 7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_jobs: usize,
    pub max_name_len: usize,
    /// Largest single value: one argv element, a prompt, an env value, a workdir.
    pub max_field_bytes: usize,
    pub max_argv_len: usize,
    pub max_env_vars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_jobs: 100_000,
            max_name_len: 128,
            max_field_bytes: 256 * 1024,
            max_argv_len: 4096,
            max_env_vars: 256,
        }
    }
}

/// One problem in a batch, located as precisely as we can.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecError {
    /// Name of the job (or `jobs[N]` when it has no usable name).
    pub job: Option<String>,
    pub field: Option<String>,
    /// 1-based line in the file, for syntax and type errors.
    pub line: Option<usize>,
    pub message: String,
}

impl SpecError {
    fn new(job: Option<&str>, field: Option<&str>, message: impl Into<String>) -> Self {
        SpecError {
            job: job.map(str::to_string),
            field: field.map(str::to_string),
            line: None,
            message: message.into(),
        }
    }

    pub fn batch(field: &str, message: impl Into<String>) -> Self {
        Self::new(None, Some(field), message)
    }

    pub fn job(job: &str, field: &str, message: impl Into<String>) -> Self {
        Self::new(Some(job), Some(field), message)
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(job) = &self.job {
            write!(f, "job '{job}': ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field '{field}': ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a batch (never empty).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        SpecErrors(vec![e])
    }
}

/// The format of a batch file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    pub fn for_path(path: &str) -> Format {
        if path.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Toml
        }
    }
}

/// Parses a batch file's text. Errors name the line, and the job and field
/// where the problem sits inside one.
pub fn parse_batch(text: &str, format: Format) -> Result<BatchSpec, SpecError> {
    match format {
        Format::Toml => {
            let de = toml::Deserializer::new(text);
            serde_path_to_error::deserialize::<_, BatchSpec>(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = inner
                    .span()
                    .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
                // toml's own message repeats the source excerpt; keep its first line.
                let message = inner.message().to_string();
                located(text, format, &path, line, message)
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize::<_, BatchSpec>(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = (inner.line() > 0).then_some(inner.line());
                let mut message = inner.to_string();
                if let Some(cut) = message.find(" at line ") {
                    message.truncate(cut);
                }
                located(text, format, &path, line, message)
            })
        }
    }
}

/// Turns a serde path such as `jobs[2].command[0]` into (job name, field).
fn located(
    text: &str,
    format: Format,
    path: &str,
    line: Option<usize>,
    message: String,
) -> SpecError {
    let mut err = SpecError {
        job: None,
        field: None,
        line,
        message,
    };
    if path.is_empty() || path == "." {
        return err;
    }
    if let Some(rest) = path.strip_prefix("jobs[") {
        if let Some((index, field)) = rest.split_once(']') {
            let index: usize = index.parse().unwrap_or(0);
            err.job = Some(job_name_at(text, format, index).unwrap_or(format!("jobs[{index}]")));
            let field = field.trim_start_matches('.');
            if !field.is_empty() {
                err.field = Some(field.to_string());
            }
            return err;
        }
    }
    err.field = Some(path.to_string());
    err
}

/// The name of the N-th job, read leniently, for error messages.
fn job_name_at(text: &str, format: Format, index: usize) -> Option<String> {
    let name = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    match format {
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).ok()?;
            let job = table.get("jobs")?.as_array()?.get(index)?;
            job.get("name")?.as_str().map(str::to_string)
        }
        Format::Json => {
            let value: serde_json::Value = serde_json::from_str(text).ok()?;
            name(value.get("jobs")?.get(index)?.get("name"))
        }
    }
}

/// Whether a session or job name is made of letters, digits, `-`, `_` and `.`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks everything that can be checked without the manager's agents:
/// names, command/agent choice, dependencies, cycles and sizes.
pub fn validate(batch: &BatchSpec, limits: &Limits) -> Result<(), SpecErrors> {
    let mut errors = Vec::new();
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
        return Err(SpecErrors(errors));
    }

    let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(batch.jobs.len());
    for (i, job) in batch.jobs.iter().enumerate() {
        let label = if job.name.is_empty() {
            format!("jobs[{i}]")
        } else {
            job.name.clone()
        };
        if job.name.len() > limits.max_name_len || !is_valid_name(&job.name) {
            errors.push(SpecError::job(
                &label,
                "name",
                format!(
                    "'{}' is not a valid job name (1-{} letters, digits, '-', '_' or '.')",
                    job.name, limits.max_name_len
                ),
            ));
        } else if index_of.insert(&job.name, i).is_some() {
            errors.push(SpecError::job(&label, "name", "duplicate job name"));
        }
        validate_job_fields(job, &label, limits, &mut errors);
    }

    // Dependencies: known, not self, not repeated.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); batch.jobs.len()];
    for (i, job) in batch.jobs.iter().enumerate() {
        for dep in &job.depends_on {
            let dep = &dep.job;
            match index_of.get(dep.as_str()) {
                None => errors.push(SpecError::job(
                    &job.name,
                    "depends_on",
                    format!("unknown job '{dep}'"),
                )),
                Some(&j) if j == i => errors.push(SpecError::job(
                    &job.name,
                    "depends_on",
                    "a job cannot depend on itself",
                )),
                Some(&j) if deps[i].contains(&j) => errors.push(SpecError::job(
                    &job.name,
                    "depends_on",
                    format!("'{dep}' is listed twice"),
                )),
                Some(&j) => deps[i].push(j),
            }
        }
    }
    if let Some(cycle) = find_cycle(&deps) {
        let names: Vec<&str> = cycle.iter().map(|&i| batch.jobs[i].name.as_str()).collect();
        errors.push(SpecError::job(
            names[0],
            "depends_on",
            format!("dependency cycle: {}", names.join(" -> ")),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errors))
    }
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

fn validate_job_fields(job: &JobSpec, label: &str, limits: &Limits, errors: &mut Vec<SpecError>) {
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
        if job.prompt.is_some() {
            errors.push(SpecError::job(
                label,
                "prompt",
                "'prompt' is only used with 'agent'",
            ));
        }
        if job.model.is_some() {
            errors.push(SpecError::job(
                label,
                "model",
                "'model' is only used with 'agent'",
            ));
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
    if let Some(prompt) = &job.prompt {
        check_value(errors, label, limits, "prompt", prompt);
    }
    if let Some(model) = &job.model {
        check_value(errors, label, limits, "model", model);
    }
    if let Some(workdir) = &job.workdir {
        check_value(errors, label, limits, "workdir", workdir);
    }
    for (field, value) in [
        ("timeout", &job.timeout),
        ("idle_timeout", &job.idle_timeout),
        ("grace", &job.grace),
        ("retry_backoff", &job.retry_backoff),
    ] {
        if let Some(text) = value {
            match parse_duration_ms(text) {
                Err(e) => errors.push(SpecError::job(label, field, e)),
                Ok(0) if field != "grace" => {
                    errors.push(SpecError::job(label, field, "must be longer than 0"))
                }
                Ok(_) => {}
            }
        }
    }
    if job.retries.is_some_and(|r| r > MAX_RETRIES) {
        errors.push(SpecError::job(
            label,
            "retries",
            format!("at most {MAX_RETRIES} retries"),
        ));
    }
    for value in job.retry_on.iter().flatten() {
        if !matches!(value.as_str(), "failed" | "timed_out") {
            errors.push(SpecError::job(
                label,
                "retry_on",
                format!("'{value}' is not retryable (use failed, timed_out)"),
            ));
        }
    }
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
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
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
            if let Some(&dep) = deps[node].get(*next) {
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
            name: "b".into(),
            max_parallel: None,
            jobs,
        }
    }

    fn errors(b: &BatchSpec) -> String {
        validate(b, &Limits::default()).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_diamond() {
        let b = batch(vec![
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["a"]),
            job("d", &["b", "c"]),
        ]);
        validate(&b, &Limits::default()).unwrap();
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
        assert!(validate(&b, &limits)
            .unwrap_err()
            .to_string()
            .contains("3 jobs exceed"));
        let mut long = job("a", &[]);
        long.command = Some(vec!["x".repeat(9)]);
        let e = validate(&batch(vec![long]), &limits)
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
        validate(&batch(jobs), &Limits::default()).unwrap();
    }

    #[test]
    fn toml_type_errors_name_line_job_and_field() {
        let text = "name = \"x\"\n[[jobs]]\nname = \"ok\"\ncommand = [\"true\"]\n[[jobs]]\nname = \"bad\"\ncommand = \"cargo test\"\n";
        let e = parse_batch(text, Format::Toml).unwrap_err();
        assert_eq!(e.job.as_deref(), Some("bad"));
        assert_eq!(e.field.as_deref(), Some("command"));
        assert_eq!(e.line, Some(7));
    }

    #[test]
    fn toml_syntax_errors_carry_the_line() {
        let e = parse_batch("name = \"x\"\n[[jobs]\n", Format::Toml).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn dependencies_are_names_or_tables_in_files_and_plain_on_the_wire() {
        let text = "name = \"x\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n[[jobs]]\nname = \"b\"\ncommand = [\"true\"]\ndepends_on = [\"a\", { job = \"a\", when = \"failed\" }]\n";
        let batch = parse_batch(text, Format::Toml).unwrap();
        assert_eq!(
            batch.jobs[1].depends_on,
            vec![
                Dependency::after("a"),
                Dependency {
                    job: "a".into(),
                    when: When::Failed
                }
            ]
        );
        let wire = crate::codec::encode(&batch).unwrap();
        assert_eq!(crate::codec::decode::<BatchSpec>(&wire).unwrap(), batch);
        let bad = "name = \"x\"\n[[jobs]]\nname = \"b\"\ncommand = [\"true\"]\ndepends_on = [{ job = \"a\", when = \"sometimes\" }]\n";
        let e = parse_batch(bad, Format::Toml).unwrap_err();
        assert_eq!(e.job.as_deref(), Some("b"));
        assert!(e.message.contains("sometimes"), "{e}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = r#"{"name":"x","jobs":[{"name":"a","comand":["true"]}]}"#;
        let e = parse_batch(text, Format::Json).unwrap_err();
        assert_eq!(e.job.as_deref(), Some("a"));
        assert!(e.message.contains("unknown field `comand`"), "{e}");
    }
}
