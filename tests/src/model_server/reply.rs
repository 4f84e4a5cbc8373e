//! What a rule answers with: a [`Message`] (built block by block, with
//! its [`Usage`]) or an error [`Reply`].

use super::Request;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Stands for the requesting agent's working directory in a tool call's
/// input (see [`Message::write_file_in_cwd`]): a test that does not know
/// where its agent runs (a worktree the worker made) can still name a file
/// there.
pub const CWD: &str = "{cwd}";

/// Tokens a reply reports using (`usage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    pub fn new(input: u64, output: u64) -> Usage {
        Usage {
            input,
            output,
            cache_read: 0,
            cache_write: 0,
        }
    }

    pub fn cache(self, read: u64, write: u64) -> Usage {
        Usage {
            cache_read: read,
            cache_write: write,
            ..self
        }
    }

    /// The `usage` object of a message. A stream's `message_start` reports
    /// one output token, as the real API does; its `message_delta` the
    /// total.
    pub(super) fn json(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.input,
            "output_tokens": output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
        })
    }
}

impl Default for Usage {
    /// 10 input and 5 output tokens: what the recorded samples used.
    fn default() -> Self {
        Usage::new(10, 5)
    }
}

/// One content block of an assistant message.
#[derive(Clone, Debug)]
pub enum Block {
    Text(String),
    Thinking(String),
    ToolUse { name: String, input: Value },
}

/// An assistant message to answer with.
#[derive(Clone, Debug)]
pub struct Message {
    pub blocks: Vec<Block>,
    pub usage: Usage,
    /// The model named in the reply (default: the one asked for).
    pub model: Option<String>,
    /// Hold a stream open after this many blocks (sending `ping` events)
    /// until [`ModelServer::release`](super::ModelServer::release), the client leaves or the server
    /// stops.
    pub hold_after: Option<usize>,
}

impl Message {
    pub fn new() -> Message {
        Message {
            blocks: Vec::new(),
            usage: Usage::default(),
            model: None,
            hold_after: None,
        }
    }

    /// A message of one text block.
    pub fn answer(text: &str) -> Message {
        Message::new().text(text)
    }

    /// A short text, then a call of the `Write` tool that writes `content`
    /// to `path` (Claude Code wants an absolute path).
    pub fn write_file(path: &std::path::Path, content: &str) -> Message {
        Message::write_call(path.to_str().expect("utf-8 path"), content)
    }

    /// Like [`Message::write_file`], for a file at `relative` under the
    /// working directory of the agent that asks (the stand-in puts it in
    /// when it answers, see [`CWD`]).
    pub fn write_file_in_cwd(relative: &str, content: &str) -> Message {
        Message::write_call(&format!("{CWD}/{relative}"), content)
    }

    /// A short text naming the file, then the `Write` call.
    fn write_call(file_path: &str, content: &str) -> Message {
        let name = std::path::Path::new(file_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        Message::new()
            .text(&format!(
                "I will write {}.",
                name.as_deref().unwrap_or("the file")
            ))
            .tool_use(
                "Write",
                json!({ "file_path": file_path, "content": content }),
            )
    }

    /// This message as sent to `request`: [`CWD`] in the strings of its
    /// tool calls' inputs becomes the request's working directory (left as
    /// it is when the request names none, so the tool call fails visibly).
    pub fn for_request(&self, request: &Request) -> Message {
        let Some(cwd) = request.working_directory() else {
            return self.clone();
        };
        let cwd = cwd.to_string_lossy().into_owned();
        let mut message = self.clone();
        for block in &mut message.blocks {
            if let Block::ToolUse { input, .. } = block {
                replace_in_strings(input, CWD, &cwd);
            }
        }
        message
    }

    pub fn text(mut self, text: &str) -> Message {
        self.blocks.push(Block::Text(text.to_string()));
        self
    }

    pub fn thinking(mut self, text: &str) -> Message {
        self.blocks.push(Block::Thinking(text.to_string()));
        self
    }

    pub fn tool_use(mut self, name: &str, input: Value) -> Message {
        self.blocks.push(Block::ToolUse {
            name: name.to_string(),
            input,
        });
        self
    }

    pub fn usage(mut self, usage: Usage) -> Message {
        self.usage = usage;
        self
    }

    pub fn model(mut self, model: &str) -> Message {
        self.model = Some(model.to_string());
        self
    }

    /// Hold the stream open after `blocks` blocks (see [`Message::hold_after`]).
    pub fn hold_after(mut self, blocks: usize) -> Message {
        self.hold_after = Some(blocks);
        self
    }

    pub(super) fn stop_reason(&self) -> &'static str {
        if self
            .blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }))
        {
            "tool_use"
        } else {
            "end_turn"
        }
    }
}

impl Default for Message {
    fn default() -> Self {
        Message::new()
    }
}

/// What a rule answers with.
#[derive(Clone, Debug)]
pub enum Reply {
    Message(Message),
    /// An HTTP error: its status, extra headers and JSON body.
    Error {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    },
}

impl From<Message> for Reply {
    fn from(m: Message) -> Reply {
        Reply::Message(m)
    }
}

impl Reply {
    /// An API error (`{"type": "error", "error": {type, message}}`).
    pub fn error(status: u16, error_type: &str, message: &str) -> Reply {
        Reply::Error {
            status,
            headers: Vec::new(),
            body: json!({
                "type": "error",
                "error": { "type": error_type, "message": message },
            }),
        }
    }

    /// A 429 rate limit that resets at `resets_at`: `retry-after` (the
    /// seconds left) and the headers of the unified limit
    /// (`anthropic-ratelimit-unified-status: rejected`, `-reset` in epoch
    /// seconds).
    pub fn rate_limited(resets_at: SystemTime) -> Reply {
        let reset = epoch_secs(resets_at);
        let left = reset.saturating_sub(epoch_secs(SystemTime::now())).max(1);
        Reply::error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        )
        .header("retry-after", &left.to_string())
        .header("anthropic-ratelimit-unified-status", "rejected")
        .header("anthropic-ratelimit-unified-reset", &reset.to_string())
    }

    /// A 529: the API is overloaded.
    pub fn overloaded() -> Reply {
        Reply::error(529, "overloaded_error", "Overloaded")
    }

    /// A 429 whose message is a plan's usage-limit text, e.g. `Claude AI
    /// usage limit reached|<epoch>`.
    pub fn plan_limit(text: &str) -> Reply {
        Reply::error(429, "rate_limit_error", text)
    }

    /// Adds a header to an error reply.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        match &mut self {
            Reply::Error { headers, .. } => headers.push((name.to_string(), value.to_string())),
            Reply::Message(_) => panic!("headers are for error replies"),
        }
        self
    }
}

/// Replaces `from` with `to` in every string of a JSON value.
fn replace_in_strings(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_in_strings(v, from, to)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|v| replace_in_strings(v, from, to)),
        _ => {}
    }
}

/// Seconds since the epoch.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
