//! Batch files: the session a user submits and how it is parsed from TOML
//! or JSON, with errors located by line, job and field. `validate` (in
//! `validate.rs`) checks a parsed batch and types it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A submitted batch: a named session and its jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub name: String,
    /// Most jobs of this session running at once (none: no limit).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// Most the session's agents may spend, in USD: past it, no new agent
    /// job starts (none: the manager's default, if any).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub jobs: Vec<JobSpec>,
}

/// One job of a batch: either a plain `command` or an `agent` with a prompt.
/// Its `Debug` hides secrets (`secret::debug_redacted`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Most this job's agent may spend, in USD: past it, it is stopped.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// `worktree`: runs in a git worktree of its workdir's repository, on a
    /// branch of its own (`aam/SESSION/JOB`); `none` (the default, unless
    /// its agent says otherwise): in the workdir as it is.
    #[serde(default)]
    pub isolation: Option<String>,
    /// What a worktree job's branch starts from: a ref or commit (default
    /// `HEAD`), or `job:NAME`, a dependency's branch.
    #[serde(default)]
    pub base: Option<String>,
    /// Runs 2-10 variants side by side, each in its own worktree and
    /// branch; the job keeps the best (see `verify`).
    #[serde(default)]
    pub variants: Option<u32>,
    /// argv run in each variant's worktree after it ends: a variant passes
    /// when it exits 0; the smallest passing change wins.
    #[serde(default)]
    pub verify: Option<Vec<String>>,
    // Workspace keys (issue 15; `validate/workspace.rs`).
    /// TCP ports (0-16) the worker reserves for the job: `AAM_PORT` (the
    /// first) and `AAM_PORTS` (all, comma-separated).
    #[serde(default)]
    pub ports: Option<u32>,
    /// Shared resources it holds while it runs (issue 15): `["db"]` or
    /// `[{ name = "emulator", count = 2 }]`.
    #[serde(default)]
    pub uses: Vec<crate::resource::UseSpec>,
    /// argv run in the job's new worktree before it (over the
    /// repository's `.aam/workspace.toml`), and its time limit.
    #[serde(default)]
    pub setup: Option<Vec<String>>,
    #[serde(default)]
    pub setup_timeout: Option<String>,
    /// argv run when the job ends, however it ends, and its time limit.
    #[serde(default)]
    pub teardown: Option<Vec<String>>,
    #[serde(default)]
    pub teardown_timeout: Option<String>,
    /// Paths or globs of the worker's checkout copied into the worktree.
    #[serde(default)]
    pub copy: Option<Vec<String>>,
    /// The image of an `isolation = "container"` job (implies it).
    #[serde(default)]
    pub image: Option<String>,
    /// A container's network: `none` (the default) or `open`.
    #[serde(default)]
    pub network: Option<String>,
    /// A container's only ways out, `host:port`, through its worker's proxy.
    #[serde(default)]
    pub egress: Option<Vec<String>>,
    /// A container's CPUs and memory (`2`, `"4g"`).
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub memory: Option<String>,
    /// How long an agent that takes input waits for more after it
    /// answered (over its agent's `linger`).
    #[serde(default)]
    pub linger: Option<String>,
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::secret::debug_redacted("JobSpec", self, f)
    }
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
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 90s, 10m, 1h30m)"))
}

/// Size limits a batch must respect (ARCHITECTURE.md, invariant 7: everything bounded).
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
            max_jobs: 1_000_000,
            max_name_len: 128,
            max_field_bytes: 256 * 1024,
            max_argv_len: 4096,
            max_env_vars: 256,
        }
    }
}

impl Limits {
    /// The structure only, no size limits: what a client (the CLI, the
    /// HTTP API) checks before a batch goes to the scheduler, which
    /// enforces the limits it is configured with.
    pub fn structural() -> Limits {
        Limits {
            max_jobs: usize::MAX,
            max_field_bytes: usize::MAX,
            max_argv_len: usize::MAX,
            max_env_vars: usize::MAX,
            ..Limits::default()
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

/// Most problems a batch's refusal lists: a generated batch of a million
/// jobs may have a million, and its refusal must still fit in an answer
/// and be read by someone.
pub const MAX_LISTED_ERRORS: usize = 100;

impl SpecErrors {
    /// `errors` (never empty), the first `MAX_LISTED_ERRORS` of them, and
    /// then a last one that says how many more there are.
    pub fn listed(errors: Vec<SpecError>) -> SpecErrors {
        SpecErrors::listed_with(errors, 0)
    }

    /// `listed` of `errors` and `more` problems found but not kept (a
    /// reader that keeps no more than it lists).
    pub fn listed_with(mut errors: Vec<SpecError>, mut more: usize) -> SpecErrors {
        if errors.len() > MAX_LISTED_ERRORS {
            more += errors.len() - MAX_LISTED_ERRORS;
            errors.truncate(MAX_LISTED_ERRORS);
        }
        if more > 0 {
            errors.push(SpecError::new(
                None,
                None,
                format!("and {more} more problems (only the first {MAX_LISTED_ERRORS} are listed)"),
            ));
        }
        SpecErrors(errors)
    }
}

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
                // Newlines before the span, plus one: `lines()` would not
                // count the line a span at its very start (a key) opens.
                let line = inner.span().map(|span| {
                    let before = text.as_bytes().get(..span.start).unwrap_or(text.as_bytes());
                    before.iter().filter(|&&b| b == b'\n').count() + 1
                });
                // toml's own message repeats the source excerpt; keep its first line.
                let message = inner.message().to_string();
                located(text, format, &path, line, message)
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let batch = serde_path_to_error::deserialize::<_, BatchSpec>(&mut de).map_err(|e| {
                let path = e.path().to_string();
                json_error(&path, e.into_inner(), |i| job_name_at(text, format, i))
            })?;
            // Nothing after the batch: a second batch pasted after the
            // first would otherwise be dropped without a word.
            de.end().map_err(|e| json_error("", e, |_| None))?;
            Ok(batch)
        }
    }
}

/// A JSON error at `path` (`jobs[2].command`), with its line; the job
/// at an index is named by `name_of`.
pub(crate) fn json_error(
    path: &str,
    inner: serde_json::Error,
    name_of: impl FnOnce(usize) -> Option<String>,
) -> SpecError {
    let line = (inner.line() > 0).then_some(inner.line());
    let mut message = inner.to_string();
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    located_with(path, line, message, name_of)
}

/// Turns a serde path such as `jobs[2].command[0]` into (job name, field).
fn located(
    text: &str,
    format: Format,
    path: &str,
    line: Option<usize>,
    message: String,
) -> SpecError {
    located_with(path, line, message, |index| {
        job_name_at(text, format, index)
    })
}

/// `located`, naming the job at an index with `name_of` (else `jobs[N]`).
pub(crate) fn located_with(
    path: &str,
    line: Option<usize>,
    message: String,
    name_of: impl FnOnce(usize) -> Option<String>,
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
            err.job = Some(name_of(index).unwrap_or(format!("jobs[{index}]")));
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
    match format {
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).ok()?;
            let job = table.get("jobs")?.as_array()?.get(index)?;
            job.get("name")?.as_str().map(str::to_string)
        }
        // Not the whole text as values (a big file's are many times its size).
        Format::Json => crate::json_batch::job_name_at(text, index),
    }
}

/// Whether a session or job name is made of letters, digits, `-`, `_` and `.`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub use crate::validate::{
    check_batch, check_job_alone, validate, validate_each, AgentCall, Base, BatchHead, JobKind,
    ValidBatch, ValidJob,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_type_errors_name_line_job_and_field() {
        let text = "name = \"x\"\n[[jobs]]\nname = \"ok\"\ncommand = [\"true\"]\n[[jobs]]\nname = \"bad\"\ncommand = \"cargo test\"\n";
        let e = parse_batch(text, Format::Toml).unwrap_err();
        assert_eq!(e.job.as_deref(), Some("bad"));
        assert_eq!(e.field.as_deref(), Some("command"));
        assert_eq!(e.line, Some(7));
    }

    #[test]
    fn an_unknown_toml_field_names_the_line_of_its_key() {
        let text = "name = \"x\"\n[[jobs]]\nname = \"a\"\ncomand = [\"true\"]\n";
        let e = parse_batch(text, Format::Toml).unwrap_err();
        assert_eq!(e.job.as_deref(), Some("a"));
        assert_eq!(e.field.as_deref(), Some("comand"));
        assert_eq!(e.line, Some(4), "{e}");
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
    fn text_after_a_json_batch_is_refused_with_its_line() {
        let two = "{\"name\": \"a\", \"jobs\": []}\n{\"name\": \"b\", \"jobs\": []}\n";
        let e = parse_batch(two, Format::Json).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("trailing characters"), "{e}");
        assert!(parse_batch("{\"name\": \"a\", \"jobs\": []}\n\n", Format::Json).is_ok());
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = r#"{"name":"x","jobs":[{"name":"a","comand":["true"]}]}"#;
        let e = parse_batch(text, Format::Json).unwrap_err();
        assert_eq!(e.job.as_deref(), Some("a"));
        assert!(e.message.contains("unknown field `comand`"), "{e}");
    }
}
