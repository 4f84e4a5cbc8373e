//! Permission prompts relayed from a running agent (issue 16, agent key
//! `permissions = "relay"`): each tool call the agent's CLI asks about
//! becomes a request on its job, decided by the job's rules (`allow`,
//! `deny`: a tool name, optionally with a glob on its command or path;
//! deny wins), by someone (`aam allow` / `aam deny`), or by the timeout.
//! The job keeps every request with its decision, so a restart loses none.

use serde::{Deserialize, Serialize};

/// Most requests one job keeps (a job past it is denied the rest).
pub const MAX_REQUESTS: usize = 1000;
/// Largest tool input kept and relayed, in bytes (JSON text).
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
/// Default time a request waits for an answer (`permission_timeout`).
pub const DEFAULT_TIMEOUT_MS: u64 = 3_600_000;
/// The MCP server name and tool the worker gives the agent's CLI.
pub const MCP_SERVER: &str = "aam";
pub const MCP_TOOL: &str = "permission";

/// What a job whose agent relays its permission prompts carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobPermissions {
    /// Rules that allow without asking (`Read`, `Bash(git status*)`).
    pub allow: Vec<String>,
    /// Rules that deny without asking; they win over `allow`.
    pub deny: Vec<String>,
    /// How long a request waits before it is denied.
    pub timeout_ms: u64,
    /// Tools allowed for the rest of the job (`aam allow --always`).
    pub always: Vec<String>,
    /// Every request, oldest first (`id` 1, 2, ...).
    pub requests: Vec<PermissionRequest>,
}

impl JobPermissions {
    /// Requests still waiting for an answer.
    pub fn open(&self) -> impl Iterator<Item = &PermissionRequest> {
        self.requests.iter().filter(|r| r.decision.is_none())
    }

    /// How the job's rules decide a call, without asking: `(allow, rule)`.
    pub fn by_rule(&self, tool: &str, input: &serde_json::Value) -> Option<(bool, String)> {
        if let Some(rule) = self.deny.iter().find(|r| rule_matches(r, tool, input)) {
            return Some((false, format!("rule deny {rule}")));
        }
        if let Some(rule) = self.allow.iter().find(|r| rule_matches(r, tool, input)) {
            return Some((true, format!("rule allow {rule}")));
        }
        if self.always.iter().any(|t| t == tool) {
            return Some((true, format!("always {tool}")));
        }
        None
    }
}

/// One permission prompt of the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PermissionRequest {
    pub id: u32,
    /// The attempt whose agent asked, and its worker's number for the ask.
    pub attempt: u32,
    pub ask: u64,
    pub tool: String,
    /// Short form of the call: `Write src/lib.rs`, `Bash: cargo publish`.
    pub summary: String,
    pub asked_at_ms: u64,
    pub decision: Option<PermissionDecision>,
}

/// How a request was answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDecision {
    pub allow: bool,
    /// For a denial: what the agent is told.
    pub message: Option<String>,
    /// The token's name, `rule allow X`, `timeout`, or `job ended`.
    pub by: String,
    pub at_ms: u64,
}

/// The short form of a call: the tool and its command or path.
pub fn summary(tool: &str, input: &serde_json::Value) -> String {
    let text = match subject(input) {
        Some((true, command)) => format!("{tool}: {command}"),
        Some((false, path)) => format!("{tool} {path}"),
        None => tool.to_string(),
    };
    let line = text.lines().next().unwrap_or_default();
    let mut short: String = line.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// What a rule's glob applies to: `(true, command)` or `(false, path)`.
fn subject(input: &serde_json::Value) -> Option<(bool, &str)> {
    if let Some(command) = input.get("command").and_then(|c| c.as_str()) {
        return Some((true, command));
    }
    ["file_path", "path", "notebook_path", "url", "pattern"]
        .iter()
        .find_map(|k| input.get(k).and_then(|p| p.as_str()))
        .map(|p| (false, p))
}

/// Whether a rule (`Read`, `Bash(git status*)`, `Write(src/*)`) matches a
/// call: the tool's name, and the glob on its command or path if it has one.
pub fn rule_matches(rule: &str, tool: &str, input: &serde_json::Value) -> bool {
    let (name, glob) = match rule.split_once('(') {
        Some((name, rest)) => (name, rest.strip_suffix(')')),
        None => (rule, None),
    };
    if name.trim() != tool {
        return false;
    }
    match glob {
        None => true,
        Some(glob) => {
            subject(input).is_some_and(|(_, s)| glob_matches(glob.as_bytes(), s.as_bytes()))
        }
    }
}

/// Why a rule is malformed (checked at config load), if it is.
pub fn check_rule(rule: &str) -> Result<(), String> {
    let name = match rule.split_once('(') {
        Some((name, rest)) if rest.ends_with(')') => name,
        Some(_) => return Err(format!("rule '{rule}' opens '(' without closing it")),
        None => rule,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    {
        return Err(format!(
            "rule '{rule}': expected a tool name, optionally with (GLOB)"
        ));
    }
    Ok(())
}

/// `*` any run of characters, `?` one; everything else itself.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && (glob[g] == b'?' || glob[g] == text[t]) {
            g += 1;
            t += 1;
        } else if g < glob.len() && glob[g] == b'*' {
            star = Some((g, t));
            g += 1;
        } else if let Some((sg, st)) = star {
            g = sg + 1;
            t = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

/// The text the permission tool answers the agent's CLI with: allowed
/// with its input unchanged, or denied with `message`.
pub fn answer_text(allow: bool, input: &serde_json::Value, message: &str) -> String {
    let answer = if allow {
        serde_json::json!({ "behavior": "allow", "updatedInput": input })
    } else {
        serde_json::json!({ "behavior": "deny", "message": message })
    };
    answer.to_string()
}

/// `1h`, `90s`, `1500ms`: a timeout as the denial says it.
pub fn duration_text(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_reads_short() {
        assert_eq!(
            summary("Write", &json!({"file_path": "src/lib.rs", "content": "x"})),
            "Write src/lib.rs"
        );
        assert_eq!(
            summary("Bash", &json!({"command": "cargo publish\nrm -rf /"})),
            "Bash: cargo publish…"
        );
        assert_eq!(summary("WebSearch", &json!({"query": "q"})), "WebSearch");
    }

    #[test]
    fn rules_match_the_tool_and_its_glob_and_deny_wins() {
        let perms = JobPermissions {
            allow: vec![
                "Read".into(),
                "Bash(git status*)".into(),
                "Bash(rm *)".into(),
            ],
            deny: vec!["Bash(rm *)".into()],
            ..JobPermissions::default()
        };
        let bash = |c: &str| json!({ "command": c });
        assert_eq!(
            perms.by_rule("Read", &json!({"file_path": "/etc/passwd"})),
            Some((true, "rule allow Read".into()))
        );
        assert_eq!(
            perms
                .by_rule("Bash", &bash("git status --short"))
                .map(|d| d.0),
            Some(true)
        );
        assert_eq!(
            perms.by_rule("Bash", &bash("rm -rf target")),
            Some((false, "rule deny Bash(rm *)".into()))
        );
        assert_eq!(perms.by_rule("Bash", &bash("git push")), None);
        assert_eq!(perms.by_rule("Write", &json!({"file_path": "a"})), None);
        assert!(rule_matches(
            "Write(src/*.rs)",
            "Write",
            &json!({"file_path": "src/a.rs"})
        ));
        assert!(!rule_matches(
            "Write(src/*.rs)",
            "Write",
            &json!({"file_path": "src/a.txt"})
        ));
        assert!(check_rule("Bash(git *)").is_ok());
        assert!(check_rule("Bash(git *").is_err());
        assert!(check_rule("").is_err());
    }

    #[test]
    fn answers_are_the_json_the_cli_reads() {
        let input = json!({"file_path": "a"});
        let allow: serde_json::Value =
            serde_json::from_str(&answer_text(true, &input, "")).unwrap();
        assert_eq!(
            allow,
            json!({"behavior": "allow", "updatedInput": {"file_path": "a"}})
        );
        let deny: serde_json::Value =
            serde_json::from_str(&answer_text(false, &input, "no")).unwrap();
        assert_eq!(deny, json!({"behavior": "deny", "message": "no"}));
        assert_eq!(duration_text(3_600_000), "1h");
        assert_eq!(duration_text(1500), "1500ms");
        assert_eq!(duration_text(2000), "2s");
    }
}
