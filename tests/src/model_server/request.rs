//! One request the stand-in received, and what a rule or a test reads
//! from it: the model, the conversation's texts, tool results, the agent's
//! working directory.

use serde_json::Value;
use std::time::SystemTime;

/// Where Claude Code's system prompt names the agent's working directory.
const WORKING_DIRECTORY_LABEL: &str = "Primary working directory: ";

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// With its query: `/v1/messages?beta=true`.
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when there was none or it did not parse).
    pub body: Value,
    /// When it was read.
    pub received_at: SystemTime,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The model the client asked for.
    pub fn model(&self) -> &str {
        self.body["model"].as_str().unwrap_or_default()
    }

    /// Whether the client asked for a stream of events.
    pub fn is_stream(&self) -> bool {
        self.body["stream"].as_bool().unwrap_or(false)
    }

    /// The conversation's messages (`role` and `content`).
    pub fn messages(&self) -> &[Value] {
        self.body["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every text a user wrote, in order: the prompts of this turn and of
    /// earlier ones, without the CLI's `<system-reminder>` blocks.
    pub fn user_texts(&self) -> Vec<String> {
        self.texts_of("user")
            .into_iter()
            .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
            .collect()
    }

    /// Every text the assistant said earlier in the conversation.
    pub fn assistant_texts(&self) -> Vec<String> {
        self.texts_of("assistant")
    }

    /// The agent's working directory, as Claude Code states it in its
    /// system prompt (` - Primary working directory: PATH`).
    pub fn working_directory(&self) -> Option<std::path::PathBuf> {
        let texts: Vec<&str> = match &self.body["system"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
            _ => Vec::new(),
        };
        texts.iter().flat_map(|t| t.lines()).find_map(|line| {
            let path = line.split_once(WORKING_DIRECTORY_LABEL)?.1.trim();
            (!path.is_empty()).then(|| std::path::PathBuf::from(path))
        })
    }

    /// The last prompt a user wrote (what this turn answers, or, after a
    /// tool call, what the tool call was for).
    pub fn last_prompt(&self) -> Option<String> {
        self.user_texts().pop()
    }

    /// Whether the last user message carries a tool's result (the request
    /// goes on after a tool call).
    pub fn has_tool_result(&self) -> bool {
        let Some(last) = self.messages().iter().rev().find(|m| m["role"] == "user") else {
            return false;
        };
        last["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
    }

    /// The text of every `tool_result` block of the conversation.
    pub fn tool_results(&self) -> Vec<String> {
        let mut out = Vec::new();
        for message in self.messages() {
            for block in message["content"].as_array().into_iter().flatten() {
                if block["type"] == "tool_result" {
                    out.push(match &block["content"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                }
            }
        }
        out
    }

    fn texts_of(&self, role: &str) -> Vec<String> {
        let mut out = Vec::new();
        for message in self.messages().iter().filter(|m| m["role"] == role) {
            match &message["content"] {
                Value::String(s) => out.push(s.clone()),
                Value::Array(blocks) => out.extend(
                    blocks
                        .iter()
                        .filter(|b| b["type"] == "text")
                        .filter_map(|b| b["text"].as_str().map(str::to_string)),
                ),
                _ => {}
            }
        }
        out
    }
}
