//! The manager's configuration: defaults < config file < `AAM_*` environment < flags.

use aam_protocol::agent::AgentDef;
use aam_protocol::codec::DEFAULT_MAX_FRAME;
use aam_protocol::output::DEFAULT_OUTPUT_CAP;
use aam_protocol::spec::{parse_duration_ms, Limits};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every key of the manager's config file (documented in deploy/aam.example.toml).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerConfig {
    /// TCP address to listen on.
    pub listen: String,
    /// Directory of the sled store and the generated token.
    pub data_dir: PathBuf,
    /// Shared secret every connection must present; generated when absent.
    pub token: Option<String>,
    /// The name `token` goes by in audit records (who approved a gate).
    pub token_name: String,
    /// More tokens, by name (e.g. one per person or system), each as good
    /// as `token`; their names are recorded with the decisions they make.
    pub tokens: BTreeMap<String, String>,
    /// Largest frame accepted or sent, in bytes.
    pub max_frame_bytes: usize,
    /// Most jobs in one session.
    pub max_jobs_per_session: usize,
    /// Largest single value in a batch (an argument, a prompt, an env value).
    pub max_field_bytes: usize,
    /// Output bytes kept per job (head and tail).
    pub output_cap_bytes: usize,
    /// How often workers heartbeat.
    pub heartbeat_ms: u64,
    /// A worker silent this long is lost.
    pub lease_ms: u64,
    /// How long a running job whose worker vanished waits for it to reconnect.
    pub reconnect_grace_ms: u64,
    /// Connections open at once (clients and workers, authenticated or not);
    /// lowered to what the process's file limit allows.
    pub max_connections: usize,
    /// sled's page cache.
    pub sled_cache_bytes: u64,
    /// Default `timeout` of jobs whose spec and agent set none (none: no limit).
    pub job_timeout: Option<String>,
    /// Default `idle_timeout` of jobs whose spec and agent set none.
    pub job_idle_timeout: Option<String>,
    /// Default time between SIGTERM and SIGKILL when a job is stopped.
    pub job_grace: String,
    /// Default first wait before a retry.
    pub retry_backoff: String,
    /// Longest wait between retries.
    pub retry_backoff_max: String,
    /// Losses of its worker after which a job fails with `worker lost`.
    pub max_worker_losses: u32,
    /// Finished sessions older than this are removed with their outputs.
    pub retention: String,
    /// Agents jobs can name with `agent = "NAME"`.
    pub agents: BTreeMap<String, AgentDef>,
    /// Directories of Claude Code agent definitions (`*.md`); default
    /// `.claude/agents` (under the manager's working directory) and
    /// `~/.claude/agents`.
    pub agents_dirs: Option<Vec<String>>,
    /// Command template the definitions run with; may use
    /// `{system_prompt}`, `{tools}`, `{model}`, `{prompt}`, `{agent}`.
    pub runner: Option<Vec<String>>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            listen: aam_protocol::DEFAULT_MANAGER_ADDR.to_string(),
            data_dir: PathBuf::from("aam-data"),
            token: None,
            token_name: "admin".into(),
            tokens: BTreeMap::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_jobs_per_session: Limits::default().max_jobs,
            max_field_bytes: Limits::default().max_field_bytes,
            output_cap_bytes: DEFAULT_OUTPUT_CAP,
            heartbeat_ms: 1000,
            lease_ms: 5000,
            reconnect_grace_ms: 10_000,
            max_connections: 4096,
            sled_cache_bytes: aam_store::DEFAULT_CACHE_BYTES,
            job_timeout: None,
            job_idle_timeout: None,
            job_grace: "10s".into(),
            retry_backoff: "5s".into(),
            retry_backoff_max: "5m".into(),
            max_worker_losses: 3,
            retention: "30d".into(),
            agents: BTreeMap::new(),
            agents_dirs: None,
            runner: None,
        }
    }
}

/// Scalar keys that may come from `AAM_<KEY>` environment variables.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "token",
    "token_name",
    "max_frame_bytes",
    "max_jobs_per_session",
    "max_field_bytes",
    "output_cap_bytes",
    "heartbeat_ms",
    "lease_ms",
    "reconnect_grace_ms",
    "max_connections",
    "sled_cache_bytes",
    "job_timeout",
    "job_idle_timeout",
    "job_grace",
    "retry_backoff",
    "retry_backoff_max",
    "max_worker_losses",
    "retention",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

impl ManagerConfig {
    /// Loads the layers. `overrides` are (key, value) pairs from flags.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<ManagerConfig, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::File {
                    path: path.to_path_buf(),
                    message: "no such file".into(),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env_map: config::Map<String, String> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("AAM_")?.to_ascii_lowercase();
                ENV_KEYS.contains(&key.as_str()).then_some((key, v))
            })
            .collect();
        for (key, value) in env_map {
            builder = builder
                .set_override(key, value)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        for (key, value) in overrides {
            builder = builder
                .set_override(*key, value.clone())
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let built = builder.build().map_err(|e| match file {
            Some(path) => ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            None => ConfigError::Invalid(e.to_string()),
        })?;
        let mut cfg: ManagerConfig = built.try_deserialize().map_err(|e| match file {
            Some(path) => ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            None => ConfigError::Invalid(e.to_string()),
        })?;
        // The config crate folds key case; agent env names must keep theirs,
        // so agents are read from the file as written.
        if let Some(path) = file {
            (cfg.agents, cfg.tokens) = read_case_sensitive(path)?;
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.lease_ms <= self.heartbeat_ms {
            return bad(format!(
                "lease_ms ({}) must be longer than heartbeat_ms ({})",
                self.lease_ms, self.heartbeat_ms
            ));
        }
        let frame_range = 64 * 1024..=aam_protocol::codec::MAX_FRAME_CEILING;
        if !frame_range.contains(&self.max_frame_bytes) {
            return bad(format!(
                "max_frame_bytes ({}) must be between {} and {}",
                self.max_frame_bytes,
                frame_range.start(),
                frame_range.end()
            ));
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.output_cap_bytes < 1024 {
            return bad("output_cap_bytes must be at least 1024".into());
        }
        let durations = [
            ("job_timeout", self.job_timeout.as_deref()),
            ("job_idle_timeout", self.job_idle_timeout.as_deref()),
            ("job_grace", Some(self.job_grace.as_str())),
            ("retry_backoff", Some(self.retry_backoff.as_str())),
            ("retry_backoff_max", Some(self.retry_backoff_max.as_str())),
            ("retention", Some(self.retention.as_str())),
        ];
        for (key, value) in durations {
            if let Some(text) = value {
                if let Err(e) = parse_duration_ms(text) {
                    return bad(format!("{key}: {e}"));
                }
            }
        }
        for (name, token) in &self.tokens {
            if token.trim().len() < 16 {
                return bad(format!(
                    "tokens.{name}: a token needs at least 16 characters"
                ));
            }
        }
        if self.runner.as_ref().is_some_and(|r| r.is_empty()) {
            return bad("runner: the template is empty".into());
        }
        if self.max_worker_losses == 0 {
            return bad("max_worker_losses must be at least 1".into());
        }
        for (name, agent) in &self.agents {
            for (key, value) in [
                ("timeout", &agent.timeout),
                ("idle_timeout", &agent.idle_timeout),
            ] {
                if let Some(Err(e)) = value.as_deref().map(parse_duration_ms) {
                    return bad(format!("agents.{name}.{key}: {e}"));
                }
            }
            if !aam_protocol::spec::is_valid_name(name) {
                return bad(format!("agents.{name}: not a valid agent name"));
            }
            if agent.command.is_empty() {
                return bad(format!("agents.{name}.command: the template is empty"));
            }
        }
        Ok(())
    }

    /// The directories agent definitions are loaded from.
    pub fn definition_dirs(&self) -> Vec<std::path::PathBuf> {
        match &self.agents_dirs {
            Some(dirs) => dirs
                .iter()
                .map(|d| crate::definitions::expand_home(d))
                .collect(),
            None => vec![
                std::path::PathBuf::from(".claude/agents"),
                crate::definitions::expand_home("~/.claude/agents"),
            ],
        }
    }

    /// The model's settings, with agents from definition files added to
    /// the configured ones (which win on a name clash). Call after `load`.
    pub fn state_config(&self) -> crate::state::StateConfig {
        let ms = |t: &str| parse_duration_ms(t).unwrap_or(0);
        let loaded = crate::definitions::load(&self.definition_dirs());
        let runner = self
            .runner
            .clone()
            .unwrap_or_else(crate::definitions::default_runner);
        let mut agents = self.agents.clone();
        let mut agent_sources: BTreeMap<String, String> = agents
            .keys()
            .map(|k| (k.clone(), "config".to_string()))
            .collect();
        let mut agent_problems: Vec<(String, String)> = loaded
            .problems
            .into_iter()
            .map(|(p, why)| (p.display().to_string(), why))
            .collect();
        for def in loaded.definitions {
            if agents.contains_key(&def.name) {
                agent_problems.push((
                    def.path.display().to_string(),
                    format!(
                        "'{}' is already defined in the config, which wins",
                        def.name
                    ),
                ));
                continue;
            }
            agent_sources.insert(def.name.clone(), def.path.display().to_string());
            agents.insert(def.name.clone(), def.agent(&runner));
        }
        for (path, why) in &agent_problems {
            tracing::warn!(path = %path, "skipping an agent definition: {why}");
        }
        crate::state::StateConfig {
            limits: self.limits(),
            output_cap: self.output_cap_bytes,
            agents,
            agent_sources,
            agent_problems,
            reconnect_grace_ms: self.reconnect_grace_ms,
            disconnect_grace_ms: self.lease_ms,
            default_timeout_ms: self.job_timeout.as_deref().map(ms),
            default_idle_timeout_ms: self.job_idle_timeout.as_deref().map(ms),
            default_grace_ms: ms(&self.job_grace),
            default_retry_backoff_ms: ms(&self.retry_backoff).max(1),
            retry_backoff_max_ms: ms(&self.retry_backoff_max).max(1),
            max_losses: self.max_worker_losses,
        }
    }

    pub fn retention_ms(&self) -> u64 {
        parse_duration_ms(&self.retention).unwrap_or(30 * 24 * 3600 * 1000)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_jobs: self.max_jobs_per_session,
            max_field_bytes: self.max_field_bytes,
            ..Limits::default()
        }
    }
}

type AgentsAndTokens = (BTreeMap<String, AgentDef>, BTreeMap<String, String>);

/// The tables whose keys are names the user chose, read as written.
fn read_case_sensitive(path: &Path) -> Result<AgentsAndTokens, ConfigError> {
    #[derive(Deserialize)]
    struct AgentsOnly {
        #[serde(default)]
        agents: BTreeMap<String, AgentDef>,
        #[serde(default)]
        tokens: BTreeMap<String, String>,
    }
    let err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let parsed: AgentsOnly = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok((parsed.agents, parsed.tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aam.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:1\"\nlease_ms = 9000\n[agents.Rev]\ncommand = [\"echo\", \"{prompt}\"]\nenv = { RUST_LOG = \"info\" }\n",
        )
        .unwrap();
        let env = vec![
            ("AAM_LEASE_MS".to_string(), "7000".to_string()),
            ("AAM_LISTEN".to_string(), "127.0.0.1:2".to_string()),
            ("AAM_MANAGER".to_string(), "ignored".to_string()),
        ];
        let cfg =
            ManagerConfig::load(Some(&path), env, &[("listen", "127.0.0.1:3".into())]).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:3");
        assert_eq!(cfg.lease_ms, 7000);
        assert_eq!(cfg.heartbeat_ms, 1000);
        let agent = &cfg.agents["Rev"];
        assert_eq!(agent.env["RUST_LOG"], "info");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aam.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let e = ManagerConfig::load(Some(&path), vec![], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("aam.toml") && e.contains("lisen"), "{e}");
        let e = ManagerConfig::load(None, vec![], &[("lease_ms", "10".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lease_ms"), "{e}");
    }

    #[test]
    fn the_example_config_loads_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aam.example.toml");
        let cfg = ManagerConfig::load(Some(&path), vec![], &[]).unwrap();
        assert!(cfg.agents.contains_key("echo"), "{:?}", cfg.agents.keys());
        let text = std::fs::read_to_string(&path).unwrap();
        for key in ENV_KEYS {
            let documented = text
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} =")));
            assert!(
                documented,
                "deploy/aam.example.toml does not document '{key}'"
            );
        }
    }
}
