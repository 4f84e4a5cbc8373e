//! Agents defined in the manager's config, and how a job's prompt fills their
//! command template: whole argv elements only, never a shell string.

use crate::agent_run::AgentFormat;
use crate::spec::SpecError;
use crate::validate::AgentCall;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[agents.NAME]` in the manager's config. Its `Debug` hides secrets
/// (`secret::debug_redacted`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// argv template; elements may contain `{prompt}`, `{model}`, `{job}`, `{agent}`, `{session}`.
    pub command: Vec<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables the worker passes its jobs from its own environment at
    /// spawn time (API keys): only these names reach the manager, the
    /// store and the wire, never a value.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Default `timeout` of this agent's jobs.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Default `idle_timeout` of this agent's jobs.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// What `{system_prompt}` becomes (a definition file's body).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// What `{tools}` becomes ("Read,Grep").
    #[serde(default)]
    pub tools: Option<String>,
    /// How its output is read: `claude-stream-json`, `text`, or `auto`
    /// (the default: stream-json when the command asks for it).
    #[serde(default)]
    pub format: Option<String>,
    /// Agents that share a provider's usage limit (default: the agent's name).
    #[serde(default)]
    pub limit_group: Option<String>,
    /// Accounts (`[accounts.NAME]`) its jobs may run on, in the order
    /// preferred; each is its own limit group, in place of `limit_group`.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// The isolation of this agent's jobs that set none (`none`,
    /// `worktree`, `container`).
    #[serde(default)]
    pub isolation: Option<String>,
    // Workspace keys its jobs get where they give none (the job keys of
    // the same names, `spec::JobSpec`).
    #[serde(default)]
    pub setup: Option<Vec<String>>,
    #[serde(default)]
    pub setup_timeout: Option<String>,
    #[serde(default)]
    pub teardown: Option<Vec<String>>,
    #[serde(default)]
    pub teardown_timeout: Option<String>,
    #[serde(default)]
    pub copy: Option<Vec<String>>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub egress: Option<Vec<String>>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub memory: Option<String>,
    /// Whether its command reads messages on stdin: `stream-json`, `none`,
    /// or `auto` (the default: when it has `--input-format stream-json`).
    #[serde(default)]
    pub input: Option<String>,
    /// How long an agent that takes input waits for more after it
    /// answered (`aam say`), before its stdin is closed (default 0).
    #[serde(default)]
    pub linger: Option<String>,
    /// `relay`: its permission prompts become requests on its job,
    /// answered with `aam allow` / `aam deny` (its command must be Claude
    /// Code's: it gets `--permission-prompt-tool`).
    #[serde(default)]
    pub permissions: Option<String>,
    /// Calls allowed without asking (`Read`, `Bash(git status*)`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Calls denied without asking (wins over `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// How long a permission request waits before it is denied (default 1h).
    #[serde(default)]
    pub permission_timeout: Option<String>,
}

impl std::fmt::Debug for AgentDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::secret::debug_redacted("AgentDef", self, f)
    }
}

/// Whether `name` may be listed in `secret_env`: a variable name (letters,
/// digits, `_`, not starting with a digit), so a value pasted there by
/// mistake is refused rather than sent around as a name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// What `{inputs}` and `{inputs_md}` become in the manager: markers the
/// worker replaces with the paths of the files it writes. They hold a NUL,
/// which no user value may contain, so a prompt cannot forge one.
pub const INPUTS_MARKER: &str = "\0aam:inputs\0";
pub const INPUTS_MD_MARKER: &str = "\0aam:inputs_md\0";

/// The values a template's placeholders take for one job.
pub struct TemplateValues<'a> {
    pub prompt: &'a str,
    pub model: &'a str,
    pub job: &'a str,
    pub agent: &'a str,
    pub session: &'a str,
    pub system_prompt: &'a str,
    pub tools: &'a str,
    /// The agent session a follow-up resumes (empty for a first run).
    pub resume: &'a str,
}

/// Substitutes the known placeholders in one argv element, in a single pass,
/// so a value that itself contains `{model}` is left as written.
pub fn fill_placeholders(element: &str, values: &TemplateValues<'_>) -> String {
    let mut out = String::with_capacity(element.len());
    let mut rest = element;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let known = [
            ("{prompt}", values.prompt),
            ("{model}", values.model),
            ("{job}", values.job),
            ("{agent}", values.agent),
            ("{session}", values.session),
            ("{system_prompt}", values.system_prompt),
            ("{tools}", values.tools),
            ("{resume}", values.resume),
            ("{inputs}", INPUTS_MARKER),
            ("{inputs_md}", INPUTS_MD_MARKER),
        ]
        .into_iter()
        .find(|(key, _)| after.starts_with(key));
        match known {
            Some((key, value)) => {
                out.push_str(value);
                rest = &after[key.len()..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether any element of a template uses `{model}`.
fn uses_model(template: &[String]) -> bool {
    template.iter().any(|e| e.contains("{model}"))
}

/// The argv and extra environment an agent job runs with, how its output
/// is read, and the usage-limit group it belongs to.
pub struct ExpandedAgent {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub format: AgentFormat,
    pub limit_group: String,
}

impl std::fmt::Debug for ExpandedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpandedAgent")
            .field("argv", &crate::secret::redact_argv(&self.argv))
            .field("env", &crate::secret::redact_env(&self.env))
            .field("format", &self.format)
            .field("limit_group", &self.limit_group)
            .finish()
    }
}

impl AgentDef {
    /// How this agent's output is read: its `format`, else what its command
    /// implies. (An unknown format name is refused when the config loads.)
    pub fn output_format(&self) -> AgentFormat {
        let named = AgentFormat::parse(self.format.as_deref().unwrap_or("auto"));
        named
            .ok()
            .flatten()
            .unwrap_or_else(|| AgentFormat::detect(&self.command))
    }
}

/// Expands the agent job `job` against the configured agents.
pub fn expand_agent_job(
    job: &str,
    call: &AgentCall,
    agents: &BTreeMap<String, AgentDef>,
    session: &str,
) -> Result<ExpandedAgent, SpecError> {
    let name = call.agent.as_str();
    let Some(def) = agents.get(name) else {
        let known: Vec<&str> = agents.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "the manager defines no agents".to_string()
        } else {
            format!("known agents: {}", known.join(", "))
        };
        return Err(SpecError::job(
            job,
            "agent",
            format!("unknown agent '{name}' ({known})"),
        ));
    };
    let model = call.model.as_deref().or(def.model.as_deref());
    if model.is_none() && uses_model(&def.command) {
        return Err(SpecError::job(
            job,
            "model",
            format!("agent '{name}' needs a model (its command uses {{model}}) and has no default"),
        ));
    }
    let values = TemplateValues {
        prompt: call.prompt.as_deref().unwrap_or_default(),
        model: model.unwrap_or_default(),
        job,
        agent: name,
        session,
        system_prompt: def.system_prompt.as_deref().unwrap_or_default(),
        tools: def.tools.as_deref().unwrap_or_default(),
        resume: call.resume.as_deref().unwrap_or_default(),
    };
    let mut argv: Vec<String> = def
        .command
        .iter()
        .map(|e| fill_placeholders(e, &values))
        .collect();
    let format = def.output_format();
    let template_resumes = def.command.iter().any(|e| e.contains("{resume}"));
    if let (Some(id), false, AgentFormat::ClaudeStreamJson) =
        (&call.resume, template_resumes, format)
    {
        // Right after the program: behind a `--` or a variadic option it
        // would be read as part of the prompt.
        let at = 1.min(argv.len());
        argv.splice(at..at, ["--resume".to_string(), id.clone()]);
    }
    Ok(ExpandedAgent {
        argv,
        env: def.env.clone(),
        format,
        limit_group: def.limit_group.clone().unwrap_or_else(|| name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> BTreeMap<String, AgentDef> {
        let mut m = BTreeMap::new();
        m.insert(
            "reviewer".to_string(),
            AgentDef {
                command: vec![
                    "claude".into(),
                    "-p".into(),
                    "--model".into(),
                    "{model}".into(),
                    "{prompt}".into(),
                    "job={job}/{session}".into(),
                ],
                model: Some("sonnet".into()),
                ..Default::default()
            },
        );
        m
    }

    fn job(prompt: &str, model: Option<&str>) -> AgentCall {
        AgentCall {
            agent: "reviewer".into(),
            prompt: Some(prompt.into()),
            model: model.map(str::to_string),
            resume: None,
        }
    }

    #[test]
    fn hostile_prompt_stays_one_argument() {
        let prompt = "$(touch /tmp/pwned); rm -rf ~ {model} `id` \"quoted\" 'single'";
        let out = expand_agent_job("review", &job(prompt, Some("haiku")), &agents(), "s1").unwrap();
        assert_eq!(
            out.argv,
            vec!["claude", "-p", "--model", "haiku", prompt, "job=review/s1"]
        );
    }

    #[test]
    fn default_model_and_unknown_agent() {
        let out = expand_agent_job("review", &job("hi", None), &agents(), "s1").unwrap();
        assert_eq!(out.argv[3], "sonnet");
        let mut other = job("hi", None);
        other.agent = "nobody".into();
        let e = expand_agent_job("review", &other, &agents(), "s1").unwrap_err();
        assert!(e
            .to_string()
            .contains("unknown agent 'nobody' (known agents: reviewer)"));
    }

    #[test]
    fn a_follow_up_of_a_stream_json_agent_resumes_its_session_right_after_the_program() {
        let mut agents = agents();
        let def = agents.get_mut("reviewer").unwrap();
        def.command = [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--",
            "{prompt}",
        ]
        .map(String::from)
        .to_vec();
        let mut call = job("more", None);
        let first = expand_agent_job("review", &call, &agents, "s1").unwrap();
        assert_eq!(first.format, AgentFormat::ClaudeStreamJson);
        assert_eq!(first.limit_group, "reviewer");
        assert!(!first.argv.contains(&"--resume".to_string()));
        call.resume = Some("abc-123".into());
        let again = expand_agent_job("review", &call, &agents, "s2").unwrap();
        assert_eq!(
            again.argv,
            [
                "claude",
                "--resume",
                "abc-123",
                "-p",
                "--output-format",
                "stream-json",
                "--",
                "more"
            ]
        );
        // A template that places {resume} itself is filled, nothing added.
        let def = agents.get_mut("reviewer").unwrap();
        def.command = [
            "claude",
            "-r",
            "{resume}",
            "-p",
            "--output-format=stream-json",
            "{prompt}",
        ]
        .map(String::from)
        .to_vec();
        let own = expand_agent_job("review", &call, &agents, "s3").unwrap();
        assert_eq!(own.argv[..3], ["claude", "-r", "abc-123"]);
        assert_eq!(own.argv.iter().filter(|a| *a == "abc-123").count(), 1);
        // Text agents have no session to resume.
        let def = agents.get_mut("reviewer").unwrap();
        def.command = ["my-agent", "{prompt}"].map(String::from).to_vec();
        let text = expand_agent_job("review", &call, &agents, "s4").unwrap();
        assert_eq!(text.format, AgentFormat::Text);
        assert_eq!(text.argv, ["my-agent", "more"]);
    }

    #[test]
    fn unknown_braces_are_kept() {
        let v = TemplateValues {
            prompt: "p",
            model: "m",
            job: "j",
            agent: "a",
            session: "s",
            system_prompt: "sp",
            tools: "t",
            resume: "r",
        };
        assert_eq!(fill_placeholders("{x}{prompt}{", &v), "{x}p{");
    }
}
