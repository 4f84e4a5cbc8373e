//! What aam understands of an agent's run, read from its output by the
//! worker (`agent_output`): its own session id, model, turns, tool calls,
//! tokens and cost, its final answer or error, and a usage limit it ended
//! on. Stored with each attempt; shown by `status`, `results` and `watch`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How aam reads an agent's standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentFormat {
    /// Claude Code's `--output-format stream-json` (one JSON event a line).
    ClaudeStreamJson,
    /// Plain text: the answer is the output itself.
    Text,
}

impl AgentFormat {
    /// The name in a config file (`format = "claude-stream-json"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentFormat::ClaudeStreamJson => "claude-stream-json",
            AgentFormat::Text => "text",
        }
    }

    /// A format by its config name; `auto` (or none) is `None`.
    pub fn parse(name: &str) -> Result<Option<AgentFormat>, String> {
        match name {
            "auto" => Ok(None),
            "claude-stream-json" => Ok(Some(AgentFormat::ClaudeStreamJson)),
            "text" => Ok(Some(AgentFormat::Text)),
            other => Err(format!(
                "unknown format '{other}' (use auto, claude-stream-json or text)"
            )),
        }
    }

    /// The format a command template implies when the config names none:
    /// Claude Code's stream-json when it asks for it, else text.
    pub fn detect(command: &[String]) -> AgentFormat {
        let stream_json = command
            .windows(2)
            .any(|w| w[0] == "--output-format" && w[1] == "stream-json")
            || command.iter().any(|a| a == "--output-format=stream-json");
        if stream_json {
            AgentFormat::ClaudeStreamJson
        } else {
            AgentFormat::Text
        }
    }
}

/// Tokens an agent used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
}

impl TokenUsage {
    pub fn add(&mut self, other: &TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(other.cache_creation_tokens);
    }
}

/// An agent run that ended on a rate or usage limit of its provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageLimit {
    /// When the limit resets (ms since the epoch), when the agent said.
    pub resets_at_ms: Option<u64>,
    /// What the agent said about it.
    pub message: String,
}

/// What aam understands of one attempt of an agent job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    /// The agent's own conversation id (what `--resume` takes).
    pub session_id: Option<String>,
    pub model: Option<String>,
    /// Assistant turns so far.
    pub turns: u32,
    pub tool_calls: u32,
    /// The last tool call, short: `Edit src/lib.rs`.
    pub last_tool: Option<String>,
    /// The last thing the agent said (capped).
    pub last_text: Option<String>,
    /// Tokens per model, from each assistant message as it came (live).
    pub usage: BTreeMap<String, TokenUsage>,
    /// The agent's own totals, when it reported them (at its end).
    pub total: Option<TokenUsage>,
    /// The agent's own cost, when it reported it (at its end); it replaces
    /// the estimate priced from `usage`.
    pub reported_cost_usd: Option<f64>,
    /// The final answer (capped).
    pub result: Option<String>,
    /// The error the agent reported, if it ended on one.
    pub error: Option<String>,
    /// The provider's HTTP status behind that error (429, 529, ...).
    pub api_error_status: Option<u16>,
    /// It ended on a rate or usage limit.
    pub limit: Option<UsageLimit>,
    /// It is waiting to retry a request after a limit (`api_retry`).
    pub retrying: bool,
    /// Lines of its output that did not parse (kept as text).
    pub unparsed_lines: u32,
}

impl AgentRun {
    /// Tokens used: the agent's own totals, else the sum of its messages'.
    pub fn tokens(&self) -> TokenUsage {
        if let Some(total) = self.total {
            return total;
        }
        let mut sum = TokenUsage::default();
        for usage in self.usage.values() {
            sum.add(usage);
        }
        sum
    }
}

/// The price of a model's tokens, in USD per million.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

/// An agent job as clients see it (`status --json`'s `agent` object).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub turns: u32,
    pub tool_calls: u32,
    pub last_tool: Option<String>,
    pub last_text: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    /// Every attempt's cost so far (the agent's own where it reported one,
    /// else priced from its tokens).
    pub cost_usd: f64,
    pub result: Option<String>,
    pub error: Option<String>,
    pub retrying: bool,
}

/// A limit group whose jobs are held until a usage limit resets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitPause {
    /// The group: an agent's `limit_group`, by default its name.
    pub group: String,
    /// Held until then (ms since the epoch).
    pub until_ms: u64,
    /// The backoff the next limit without a reset time starts from.
    pub backoff_ms: u64,
    /// What the agent said.
    pub message: String,
}
