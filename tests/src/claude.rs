//! The real Claude Code CLI as a test agent: where its binary is, and the
//! `[agents.NAME]` table that runs it headless against a [`ModelServer`].
//!
//! The CLI is installed from npm into `tests/agent-cli` (`.ci/run` does it:
//! `npm ci --prefix tests/agent-cli`); `AAM_CLAUDE_BIN` names another
//! binary. Tests that need it fail, saying how to install it, when it is
//! missing: they never skip, the issue wants the real agent in CI.

use crate::model_server::{ModelServer, Usage};
use crate::{workspace_root, Cluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where `.ci/run` installs the agent CLIs the tests run.
pub fn agent_cli_dir() -> PathBuf {
    workspace_root().join("tests/agent-cli")
}

/// The Claude Code binary the tests run: `$AAM_CLAUDE_BIN`, else the one
/// installed under `tests/agent-cli`. Panics, saying how to install it,
/// when there is none.
pub fn claude_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("AAM_CLAUDE_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "AAM_CLAUDE_BIN={} is not an executable file",
            path.display()
        );
        return path;
    }
    let modules = agent_cli_dir().join("node_modules");
    if installed_claude(&modules).is_none() {
        install_claude();
    }
    installed_claude(&modules).unwrap_or_else(|| {
        panic!(
            "the Claude Code CLI is not installed in {}: run `.ci/run`, or \
             `npm ci --prefix tests/agent-cli` (needs node and npm: \
             `apt-get install nodejs npm`), or set AAM_CLAUDE_BIN to a claude binary",
            modules.display()
        )
    })
}

/// Installs the pinned CLI with npm, once per test process, so that
/// `cargo test` alone works wherever npm does (`.ci/run` installs it first).
fn install_claude() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = agent_cli_dir();
        let out = std::process::Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "npm ci --prefix {} failed:\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run npm to install the Claude Code CLI: {e}"),
        }
    });
}

/// The native binary of an npm install of `@anthropic-ai/claude-code`.
/// The platform package (`@anthropic-ai/claude-code-linux-x64/claude`)
/// comes first: it is there whether or not npm ran the wrapper's
/// postinstall, which copies it over `bin/claude.exe` (npm 11 may not run
/// install scripts unless allowed, and then `.bin/claude` is a stub).
fn installed_claude(modules: &Path) -> Option<PathBuf> {
    let scope = modules.join("@anthropic-ai");
    let mut platform: Vec<PathBuf> = std::fs::read_dir(&scope)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("claude-code-"))
        })
        .map(|e| e.path().join("claude"))
        .collect();
    platform.sort();
    platform
        .into_iter()
        .chain([modules.join(".bin/claude")])
        .find(|p| is_native_binary(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An executable ELF file (not the postinstall's placeholder stub).
fn is_native_binary(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    is_executable(path)
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"\x7fELF"
}

/// What Claude Code 2.1 computes as `total_cost_usd` for replies of its
/// default model, `claude-opus-4-8` (the stand-in echoes the model asked
/// for): USD 5 per million input tokens, 25 per million output tokens,
/// 0.50 per million cache reads and 6.25 per million cache writes
/// (measured against the stand-in with 2.1.197).
pub fn claude_cost_usd(replies: &[Usage]) -> f64 {
    replies
        .iter()
        .map(|u| {
            (u.input as f64 * 5.0
                + u.output as f64 * 25.0
                + u.cache_read as f64 * 0.5
                + u.cache_write as f64 * 6.25)
                / 1e6
        })
        .sum()
}

/// A `[agents.NAME]` table running Claude Code headless against a
/// stand-in model server, with its own `HOME` and `TMPDIR` (its settings,
/// conversations and temporary files live there, nowhere else).
pub struct ClaudeAgent {
    pub name: String,
    /// The argv template.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Further `key = value` lines of the table (`format`, `limit_group`).
    pub extra: Vec<String>,
}

impl ClaudeAgent {
    /// `claude -p --output-format stream-json --verbose --allowedTools=Write
    /// -- {prompt}` with `ANTHROPIC_BASE_URL` at `server`, a dummy API key,
    /// no traffic but the model's, no retries after an error, and `HOME`
    /// and `TMPDIR` under `dir` (created here).
    ///
    /// As root the CLI refuses `--dangerously-skip-permissions`;
    /// `--allowedTools=Write` lets the stand-in's `Write` calls through.
    /// `--allowedTools` takes several values, so the prompt comes after `--`.
    pub fn new(name: &str, server: &ModelServer, dir: &Path) -> ClaudeAgent {
        let (home, tmp) = (dir.join("home"), dir.join("tmp"));
        for d in [&home, &tmp] {
            std::fs::create_dir_all(d).expect("creating the agent's directories");
        }
        let claude = claude_bin();
        let command = [
            claude.to_str().expect("utf-8 path"),
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--allowedTools=Write",
            "--",
            "{prompt}",
        ]
        .map(String::from)
        .to_vec();
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let env = [
            ("ANTHROPIC_BASE_URL", server.url()),
            ("ANTHROPIC_API_KEY", "stand-in".to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
            // A 429 ends the run at once rather than after the CLI's retries.
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
            ("HOME", path(&home)),
            // The CLI makes TMPDIR/claude-UID (else /tmp/claude-UID).
            ("TMPDIR", path(&tmp)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ClaudeAgent {
            name: name.to_string(),
            command,
            env,
            extra: Vec::new(),
        }
    }

    /// The argv template with `sh -c SCRIPT` in front of the CLI: the
    /// script runs first, then `exec "$@"` runs the CLI.
    pub fn wrapped_in_shell(mut self, script: &str) -> ClaudeAgent {
        let mut argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("{script}; exec \"$@\""),
            "sh".to_string(),
        ];
        argv.append(&mut self.command);
        self.command = argv;
        self
    }

    /// Sets a variable of the agent's environment.
    pub fn env(mut self, name: &str, value: &str) -> ClaudeAgent {
        self.env.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds a `key = value` line (a TOML value, quoted as needed).
    pub fn line(mut self, key: &str, toml_value: &str) -> ClaudeAgent {
        self.extra.push(format!("{key} = {toml_value}"));
        self
    }

    /// The table, for a manager config file.
    pub fn toml(&self) -> String {
        let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let command: Vec<String> = self.command.iter().map(|a| quote(a)).collect();
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k} = {}", quote(v)))
            .collect();
        let mut out = format!(
            "[agents.{}]\ncommand = [{}]\nenv = {{ {} }}\n",
            self.name,
            command.join(", "),
            env.join(", ")
        );
        for line in &self.extra {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

impl Cluster {
    /// A cluster whose manager has one agent, `claude`, running the real
    /// CLI against `server`, after the top-level keys `config`; and one
    /// worker, `w`, of `slots` slots.
    pub fn with_claude(server: &ModelServer, config: &str, slots: u32) -> Cluster {
        let mut c = Cluster::new();
        let agent = c.claude_agent("claude", server);
        c.start_with_agents(config, &[agent], slots);
        c
    }

    /// Starts the manager with the top-level keys `config` and the tables
    /// of `agents` as its config, and one worker, `w`, of `slots` slots.
    pub fn start_with_agents(&mut self, config: &str, agents: &[ClaudeAgent], slots: u32) {
        let tables: String = agents.iter().map(ClaudeAgent::toml).collect();
        self.set_config(&format!("{config}\n{tables}"));
        self.start_manager();
        self.start_worker("w", slots);
    }

    /// A Claude Code agent named `name` against `server`, its `HOME` and
    /// `TMPDIR` under this cluster's `claude/` directory.
    pub fn claude_agent(&self, name: &str, server: &ModelServer) -> ClaudeAgent {
        ClaudeAgent::new(name, server, &self.claude_dir())
    }

    /// Where the Claude Code agents of [`Cluster::claude_agent`] keep their
    /// `HOME` (`home/`) and `TMPDIR` (`tmp/`).
    pub fn claude_dir(&self) -> PathBuf {
        self.path("claude")
    }

    /// Makes `toml` the manager's config file (before `start_manager`).
    pub fn set_config(&mut self, toml: &str) {
        self.manager_config = Some(self.write("aam.toml", toml));
    }

    /// The events of a job's captured stream-json output (`results --json`
    /// keeps it whole); every line must parse.
    pub fn stream_json_events(&self, session: &str, job: &str) -> Vec<serde_json::Value> {
        let results = self
            .aam(&["results", session, "--json"])
            .expect_code(0)
            .json();
        let output = results["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == job))
            .and_then(|j| j["output"].as_str())
            .unwrap_or_else(|| panic!("no output of {job} in {results}"));
        output
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{output}")))
            .collect()
    }

    /// Asserts that no process of the agents (none whose environment names
    /// [`Cluster::claude_dir`]) runs any more.
    pub fn assert_no_agent_left(&self) {
        let dir = self.claude_dir();
        let left = processes_mentioning(dir.to_str().expect("utf-8 path"));
        let described: Vec<String> = left
            .iter()
            .map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!(
                    "{pid}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
            .collect();
        assert!(
            left.is_empty(),
            "agent processes left running: {described:?}"
        );
    }
}

/// Processes whose environment mentions `needle` (e.g. an agent's `HOME`):
/// what an agent left running.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                !needle.is_empty()
                    && env
                        .split(|&b| b == 0)
                        .any(|var| var.windows(needle.len()).any(|w| w == needle.as_bytes()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_native_binary_is_found_whether_or_not_the_postinstall_ran() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path();
        // What npm leaves when the postinstall did not run: `.bin/claude`
        // is the package's placeholder shell script.
        executable(
            &modules.join("@anthropic-ai/claude-code/bin/claude.exe"),
            b"echo \"Error: claude native binary not installed.\" >&2\nexit 1\n",
        );
        std::fs::create_dir_all(modules.join(".bin")).unwrap();
        std::os::unix::fs::symlink(
            "../@anthropic-ai/claude-code/bin/claude.exe",
            modules.join(".bin/claude"),
        )
        .unwrap();
        assert_eq!(installed_claude(modules), None, "the stub was taken");

        let native = modules.join("@anthropic-ai/claude-code-linux-x64/claude");
        executable(&native, b"\x7fELF and the rest");
        assert_eq!(installed_claude(modules), Some(native));
    }
}
