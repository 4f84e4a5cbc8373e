//! The manager's configuration: defaults < config file < `AAM_*` environment < flags.

use crate::tokens::TokenConfig;
use aam_protocol::account::AccountDef;
use aam_protocol::agent::AgentDef;
use aam_protocol::agent_run::{AgentFormat, ModelPrice};
use aam_protocol::codec::DEFAULT_MAX_FRAME;
use aam_protocol::output::DEFAULT_OUTPUT_CAP;
use aam_protocol::spec::{parse_duration_ms, Limits};
use aam_protocol::worktree::Isolation;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every key of the manager's config file (documented in deploy/aam.example.toml).
/// Its `Debug` names the tokens but never shows them.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerConfig {
    /// TCP address to listen on.
    pub listen: String,
    /// Address of the HTTP API and dashboard, or "off".
    pub http: String,
    /// When `http`'s port is taken, listen on a free port instead (`aam
    /// up`: one per directory, several at once). Not a config key.
    #[serde(skip)]
    pub http_any_port: bool,
    /// Directory of the sled store and the generated token.
    pub data_dir: PathBuf,
    /// Shared secret every connection must present; generated when absent.
    pub token: Option<String>,
    /// The name `token` goes by in audit records (who approved a gate).
    pub token_name: String,
    /// More tokens, by name (one per person or system): `[tokens.NAME]`
    /// tables with a token, its role(s) and quotas (`tokens.rs`); their
    /// names are recorded with what they do. Read as written from the file
    /// by `read_case_sensitive` (the config crate folds key case).
    #[serde(skip)]
    pub tokens: BTreeMap<String, TokenConfig>,
    /// The `tokens` key as the config crate sees it: accepted, not used.
    #[serde(rename = "tokens")]
    tokens_folded: serde::de::IgnoredAny,
    /// Connections open at once from one IP address.
    pub max_connections_per_peer: usize,
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
    /// Prices of models' tokens (USD per million), by model-name prefix,
    /// over the built-in ones (`prices::DEFAULT_PRICES`).
    pub prices: Prices,
    /// First pause of a limit group after a usage limit that names no reset
    /// time; it doubles while limits continue (up to 1 h).
    pub limit_backoff: String,
    /// Budget in USD of sessions that set no `max_cost_usd` (none: no limit).
    pub max_cost_usd: Option<f64>,
    /// Most bytes of a worktree job's patch a worker sends (and the manager
    /// keeps); past it the patch is cut, with a marker.
    pub patch_cap_bytes: u64,
    /// `aam gc` and retention also delete the branches of the worktree jobs
    /// of the sessions they remove (on the workers that hold them).
    pub gc_branches: bool,
    /// `[[notify]]`: where to tell of sessions finished, gates waiting,
    /// jobs failed and limit groups paused (`notify::config`).
    pub notify: Vec<crate::notify::NotifyEntry>,
    /// `[[providers]]`: where workers are launched on demand
    /// (`providers::config`).
    pub providers: Vec<crate::providers::config::ProviderEntry>,
    /// The manager's own TLS certificate (PEM chain) and key; without
    /// them one is made at first start in `DATA_DIR/tls/` (`crate::tls`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// More names (DNS or IP) for the generated certificate.
    pub tls_san: Vec<String>,
    /// Mutual TLS: peers must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
    /// `[resources]`: shared resources jobs hold while they run (`uses`),
    /// each with its capacity, a positive integer (`db = 1`).
    pub resources: BTreeMap<String, i64>,
    /// `[accounts.NAME]`: environments an agent's jobs may run under
    /// (its `accounts`), each its own limit group (`config/accounts.rs`).
    pub accounts: BTreeMap<String, AccountDef>,
    /// After a limit group's pause ends, its jobs start at most this many
    /// at a time, every `resume_interval`, until one runs through.
    pub resume_burst: u32,
    pub resume_interval: String,
}

/// Default `http`: the dashboard on the loopback interface.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:7411";

/// Default `patch_cap_bytes`: 8 MiB.
pub const DEFAULT_PATCH_CAP: u64 = 8 * 1024 * 1024;

/// The `[prices]` table: per model-name prefix, USD per million tokens.
/// Read from the file as written (`read_case_sensitive`): the config crate
/// folds key case and splits keys at dots (`claude-3.5`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices(pub BTreeMap<String, ModelPrice>);

impl<'de> Deserialize<'de> for Prices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prices, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Prices::default())
    }
}

/// One model's prices as written in `[prices]`: cache rates default to
/// Anthropic's ratios (a cache read 0.1 × input, a cache write 1.25 × input).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input: f64,
    output: f64,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
}

impl From<PriceEntry> for ModelPrice {
    fn from(e: PriceEntry) -> ModelPrice {
        ModelPrice {
            input: e.input,
            output: e.output,
            cache_read: e.cache_read.unwrap_or(e.input * 0.1),
            cache_write: e.cache_write.unwrap_or(e.input * 1.25),
        }
    }
}

use crate::state::LIMIT_BACKOFF_CAP_MS;

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            listen: aam_protocol::DEFAULT_MANAGER_ADDR.to_string(),
            http: DEFAULT_HTTP_ADDR.to_string(),
            http_any_port: false,
            data_dir: PathBuf::from("aam-data"),
            token: None,
            token_name: "admin".into(),
            tokens: BTreeMap::new(),
            tokens_folded: serde::de::IgnoredAny,
            max_connections_per_peer: 64,
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
            prices: Prices::default(),
            limit_backoff: "60s".into(),
            max_cost_usd: None,
            patch_cap_bytes: DEFAULT_PATCH_CAP,
            gc_branches: false,
            notify: Vec::new(),
            providers: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_san: Vec::new(),
            client_ca: None,
            resources: BTreeMap::new(),
            accounts: BTreeMap::new(),
            resume_burst: 2,
            resume_interval: "10s".into(),
        }
    }
}

/// Scalar keys that may come from `AAM_<KEY>` environment variables.
const ENV_KEYS: &[&str] = &[
    "listen",
    "http",
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
    "max_connections_per_peer",
    "sled_cache_bytes",
    "job_timeout",
    "job_idle_timeout",
    "job_grace",
    "retry_backoff",
    "retry_backoff_max",
    "max_worker_losses",
    "retention",
    "limit_backoff",
    "resume_burst",
    "resume_interval",
    "max_cost_usd",
    "patch_cap_bytes",
    "gc_branches",
    "tls_cert",
    "tls_key",
    "client_ca",
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
        Self::load_with_defaults(file, env, &[], overrides)
    }

    /// `load` with some defaults of its own under every layer (`aam run`
    /// keeps HTTP off unless asked).
    pub fn load_with_defaults(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        defaults: &[(&str, String)],
        overrides: &[(&str, String)],
    ) -> Result<ManagerConfig, ConfigError> {
        let mut builder = config::Config::builder();
        for (key, value) in defaults {
            builder = builder
                .set_default(*key, value.clone())
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
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
            let named = read_case_sensitive(path)?;
            (cfg.agents, cfg.tokens, cfg.prices, cfg.resources) =
                (named.agents, named.tokens, named.prices, named.resources);
            cfg.accounts = named.accounts;
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key (--tls-cert, --tls-key) go together".into());
        }
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
        if self.http_addr().is_some_and(|a| !a.contains(':')) {
            return bad(format!(
                "http ({}) must be an address (host:port) or \"off\"",
                self.http
            ));
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.output_cap_bytes < 1024 {
            return bad("output_cap_bytes must be at least 1024".into());
        }
        // A patch travels whole in one frame (a worker's end, an answer).
        let patch_range = 1024..=(self.max_frame_bytes / 2) as u64;
        if !patch_range.contains(&self.patch_cap_bytes) {
            return bad(format!(
                "patch_cap_bytes ({}) must be between {} and half of max_frame_bytes ({})",
                self.patch_cap_bytes,
                patch_range.start(),
                patch_range.end()
            ));
        }
        let durations = [
            ("job_timeout", self.job_timeout.as_deref()),
            ("job_idle_timeout", self.job_idle_timeout.as_deref()),
            ("job_grace", Some(self.job_grace.as_str())),
            ("retry_backoff", Some(self.retry_backoff.as_str())),
            ("retry_backoff_max", Some(self.retry_backoff_max.as_str())),
            ("retention", Some(self.retention.as_str())),
            ("limit_backoff", Some(self.limit_backoff.as_str())),
            ("resume_interval", Some(self.resume_interval.as_str())),
        ];
        for (key, value) in durations {
            if let Some(text) = value {
                if let Err(e) = parse_duration_ms(text) {
                    return bad(format!("{key}: {e}"));
                }
            }
        }
        if self.max_connections_per_peer == 0 {
            return bad("max_connections_per_peer must be at least 1".into());
        }
        if self.runner.as_ref().is_some_and(|r| r.is_empty()) {
            return bad("runner: the template is empty".into());
        }
        if self.max_worker_losses == 0 {
            return bad("max_worker_losses must be at least 1".into());
        }
        self.check_agent_keys()?;
        self.check_accounts()?;
        crate::providers::config::providers(&self.providers).map_err(ConfigError::Invalid)?;
        for (name, &capacity) in &self.resources {
            if !aam_protocol::spec::is_valid_name(name) {
                return bad(format!(
                    "resources.{name}: not a valid resource name (letters, digits, '-', '_' or '.')"
                ));
            }
            if capacity < 1 || capacity > i64::from(u32::MAX) {
                return bad(format!(
                    "resources.{name}: the capacity must be a positive integer, not {capacity}"
                ));
            }
        }
        crate::notify::config::targets(&self.notify).map_err(ConfigError::Invalid)?;
        if let Ok(ms) = parse_duration_ms(&self.limit_backoff) {
            if ms == 0 || ms > LIMIT_BACKOFF_CAP_MS {
                return bad(format!(
                    "limit_backoff ({}) must be more than 0 and at most 1h",
                    self.limit_backoff
                ));
            }
        }
        if let Some(usd) = self.max_cost_usd.filter(|u| !u.is_finite() || *u <= 0.0) {
            return bad(format!(
                "max_cost_usd: {usd} is not a budget (a positive number of USD)"
            ));
        }
        Ok(())
    }

    /// An agent's `secret_env`: variable names only (a value pasted there
    /// by mistake is refused without being echoed), none also in its `env`.
    /// An agent's workspace keys: valid, and a container's only for an
    /// agent whose isolation is (or defaults to) `container`.
    fn check_agent_workspace(name: &str, agent: &AgentDef) -> Result<(), ConfigError> {
        use aam_protocol::validate::job_workspace::{check_keys, WorkspaceKeys};
        let keys = WorkspaceKeys::from(agent);
        let mut first = None;
        let limits = aam_protocol::spec::Limits::default();
        check_keys(&keys, &limits, |field, message| {
            first.get_or_insert(format!("agents.{name}.{field}: {message}"));
        });
        let isolation = agent.isolation.as_deref().map(Isolation::parse);
        if let (Some(key), Some(Ok(Isolation::None | Isolation::Worktree))) =
            (keys.container_key(), &isolation)
        {
            first.get_or_insert(format!(
                "agents.{name}.{key}: '{key}' needs isolation = \"container\""
            ));
        }
        if let (Some(key), Some(Ok(Isolation::None))) = (keys.worktree_key(), &isolation) {
            first.get_or_insert(format!(
                "agents.{name}.{key}: '{key}' needs isolation = \"worktree\" or \"container\""
            ));
        }
        match first {
            Some(message) => Err(ConfigError::Invalid(message)),
            None => Ok(()),
        }
    }

    /// An agent's `input`, `linger` and permission keys: known values, and
    /// no `{prompt}` in the command of one that takes input (it gets its
    /// prompt on stdin).
    fn check_agent_input(name: &str, agent: &AgentDef) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let takes = match aam_protocol::say::takes_input(agent.input.as_deref(), &agent.command) {
            Ok(takes) => takes,
            Err(e) => return bad(format!("agents.{name}.input: {e}")),
        };
        if let Some(Err(e)) = agent
            .linger
            .as_deref()
            .map(aam_protocol::spec::parse_duration_ms)
        {
            return bad(format!("agents.{name}.linger: {e}"));
        }
        match agent.permissions.as_deref() {
            None | Some("relay") | Some("none") => {}
            Some(other) => {
                return bad(format!(
                    "agents.{name}.permissions: unknown '{other}' (use relay or none)"
                ))
            }
        }
        for (key, rules) in [("allow", &agent.allow), ("deny", &agent.deny)] {
            for rule in rules {
                if let Err(e) = aam_protocol::permission::check_rule(rule) {
                    return bad(format!("agents.{name}.{key}: {e}"));
                }
            }
        }
        if let Some(Err(e)) = agent
            .permission_timeout
            .as_deref()
            .map(aam_protocol::spec::parse_duration_ms)
        {
            return bad(format!("agents.{name}.permission_timeout: {e}"));
        }
        if takes && agent.command.iter().any(|a| a.contains("{prompt}")) {
            return bad(format!(
                "agents.{name}.command: an agent that takes input (stream-json on stdin) gets \
                 its prompt there: leave {{prompt}} out of its command"
            ));
        }
        Ok(())
    }

    fn check_secret_env(name: &str, agent: &AgentDef) -> Result<(), ConfigError> {
        for (i, var) in agent.secret_env.iter().enumerate() {
            if !aam_protocol::agent::is_env_name(var) {
                return Err(ConfigError::Invalid(format!(
                    "agents.{name}.secret_env: entry {} is not a variable name (letters, digits and '_', \
                     not starting with a digit); list the names of the worker's variables, never their values",
                    i + 1
                )));
            }
            if agent.env.contains_key(var) {
                return Err(ConfigError::Invalid(format!(
                    "agents.{name}: {var} is in both env and secret_env (secret_env takes it from the worker)"
                )));
            }
        }
        Ok(())
    }

    /// The keys about agents: each agent's command, durations, format and
    /// limit group, and the price table.
    fn check_agent_keys(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (model, p) in &self.prices.0 {
            let rates = [p.input, p.output, p.cache_read, p.cache_write];
            if rates.iter().any(|r| !r.is_finite() || *r < 0.0) {
                return bad(format!(
                    "prices.{model}: prices are USD per million tokens, 0 or more"
                ));
            }
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
            Self::check_secret_env(name, agent)?;
            if let Some(Err(e)) = agent.format.as_deref().map(AgentFormat::parse) {
                return bad(format!("agents.{name}.format: {e}"));
            }
            if let Some(Err(e)) = agent.isolation.as_deref().map(Isolation::parse) {
                return bad(format!("agents.{name}.isolation: {e}"));
            }
            Self::check_agent_workspace(name, agent)?;
            Self::check_agent_input(name, agent)?;
            if let Some(group) = &agent.limit_group {
                if group.len() > 128 || !aam_protocol::spec::is_valid_name(group) {
                    return bad(format!(
                        "agents.{name}.limit_group: '{group}' must be 1-128 letters, digits, '-', '_' or '.'"
                    ));
                }
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

    /// The HTTP server's address; None when `http` is "off".
    pub fn http_addr(&self) -> Option<&str> {
        let http = self.http.trim();
        (!http.eq_ignore_ascii_case("off")).then_some(http)
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
            prices: crate::prices::PriceTable::with(&self.prices.0),
            limit_backoff_ms: ms(&self.limit_backoff).clamp(1, LIMIT_BACKOFF_CAP_MS),
            default_max_cost_usd: self.max_cost_usd,
            patch_cap: self.patch_cap_bytes,
            gc_branches: self.gc_branches,
            // Checked positive and at most u32::MAX in `check`.
            resources: self
                .resources
                .iter()
                .map(|(name, &capacity)| (name.clone(), capacity as u32))
                .collect(),
            accounts: self.accounts.clone(),
            resume_burst: self.resume_burst.max(1),
            resume_interval_ms: ms(&self.resume_interval).max(1),
            // `start` puts the manager's own in.
            metrics: Default::default(),
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

impl std::fmt::Debug for ManagerConfig {
    /// The keys worth seeing in a log; tokens by name only, agents with
    /// their secrets hidden (`AgentDef`'s own `Debug`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.token.as_ref().map(|_| aam_protocol::secret::REDACTED);
        f.debug_struct("ManagerConfig")
            .field("listen", &self.listen)
            .field("http", &self.http)
            .field("data_dir", &self.data_dir)
            .field("token", &token)
            .field("token_name", &self.token_name)
            .field("tokens", &self.tokens.keys().collect::<Vec<_>>())
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

/// The tables whose keys are names the user chose.
struct NamedTables {
    agents: BTreeMap<String, AgentDef>,
    tokens: BTreeMap<String, TokenConfig>,
    prices: Prices,
    resources: BTreeMap<String, i64>,
    accounts: BTreeMap<String, AccountDef>,
}

/// The tables whose keys are names the user chose, read as written.
fn read_case_sensitive(path: &Path) -> Result<NamedTables, ConfigError> {
    #[derive(Deserialize)]
    struct NamedOnly {
        #[serde(default)]
        agents: BTreeMap<String, AgentDef>,
        #[serde(default)]
        tokens: BTreeMap<String, toml::Value>,
        #[serde(default)]
        prices: BTreeMap<String, PriceEntry>,
        #[serde(default)]
        resources: BTreeMap<String, i64>,
        #[serde(default)]
        accounts: BTreeMap<String, AccountDef>,
    }
    let err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let parsed: NamedOnly = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let prices = parsed
        .prices
        .into_iter()
        .map(|(model, entry)| (model, entry.into()))
        .collect();
    let mut tokens = BTreeMap::new();
    for (name, value) in &parsed.tokens {
        tokens.insert(
            name.clone(),
            crate::tokens::parse(name, value).map_err(err)?,
        );
    }
    Ok(NamedTables {
        agents: parsed.agents,
        tokens,
        prices: Prices(prices),
        resources: parsed.resources,
        accounts: parsed.accounts,
    })
}

mod accounts;
#[cfg(test)]
mod tests;
