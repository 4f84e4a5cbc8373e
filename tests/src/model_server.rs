//! A stand-in for the Anthropic Messages API, so tests can run the real
//! Claude Code CLI (`ANTHROPIC_BASE_URL=` [`ModelServer::url`]) with
//! replies they script: text, thinking and tool calls (streamed as SSE when
//! the request asks for a stream, one JSON message otherwise; a tool call
//! may name a file under the asking agent's working directory, which the
//! test need not know: [`Message::write_file_in_cwd`]), usage figures
//! of their choosing (so the cost the CLI computes is known), 429s with a
//! reset time, 529s, error bodies, and streams held open until released.
//!
//! A test adds rules, tried in the order they were added: the first rule
//! whose [`When`] matches a Messages request, and that has uses left,
//! answers it. (Other requests, such as the CLI's `HEAD /` reachability
//! check, get an empty `200`.)
//! A request no rule answers gets a 500 naming the problem and is kept in
//! [`ModelServer::unanswered`], so a test can tell a missing rule from a
//! fault of the code under test. Every request is kept
//! ([`ModelServer::requests`]) for the test to inspect.
//!
//! The server is a small HTTP/1.1 server on 127.0.0.1 (std::net, a thread
//! per connection, keep-alive), in the test process. Dropping it stops it
//! and joins every thread it started.
//!
//! What Claude Code 2.1 sends: only `POST /v1/messages?beta=true`, `stream:
//! true`, the whole conversation in `messages` each time (user messages are
//! lists of blocks: `<system-reminder>` texts, the prompt, `tool_result`s;
//! `role: "system"` messages may sit between them).

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often an idle connection checks whether the server is stopping,
/// and how often a held stream sends a `ping` event.
const TICK: Duration = Duration::from_millis(50);

/// Largest request body taken (Claude Code's first request is ~80 KB and
/// grows with the conversation).
const MAX_BODY: usize = 32 << 20;

/// Where Claude Code's system prompt names the agent's working directory.
const WORKING_DIRECTORY_LABEL: &str = "Primary working directory: ";

/// Stands for the requesting agent's working directory in a tool call's
/// input (see [`Message::write_file_in_cwd`]): a test that does not know
/// where its agent runs (a worktree the worker made) can still name a file
/// there.
pub const CWD: &str = "{cwd}";

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

type Matcher = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

/// Which requests a rule answers.
#[derive(Clone)]
pub struct When(Matcher);

impl When {
    /// Every request.
    pub fn any() -> When {
        When::custom(|_| true)
    }

    /// A request that goes on after a tool call (its last user message
    /// holds a `tool_result`).
    pub fn tool_result() -> When {
        When::custom(Request::has_tool_result)
    }

    /// A request that does not follow a tool call: a prompt's first turn.
    pub fn first_turn() -> When {
        When::custom(|r| !r.has_tool_result())
    }

    /// The last prompt a user wrote contains `text`.
    pub fn prompt_contains(text: &str) -> When {
        let text = text.to_string();
        When::custom(move |r| r.last_prompt().is_some_and(|p| p.contains(&text)))
    }

    /// Requests received before `deadline` (e.g. a limit's reset time).
    pub fn before(deadline: SystemTime) -> When {
        When::custom(move |_| SystemTime::now() < deadline)
    }

    /// Both conditions hold.
    pub fn and(self, other: When) -> When {
        When::custom(move |r| (self.0)(r) && (other.0)(r))
    }

    pub fn custom(f: impl Fn(&Request) -> bool + Send + Sync + 'static) -> When {
        When(Arc::new(f))
    }
}

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
    fn json(&self, output: u64) -> Value {
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
    /// until [`ModelServer::release`], the client leaves or the server
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

    fn stop_reason(&self) -> &'static str {
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

struct Rule {
    when: When,
    reply: Reply,
    /// None: any number of times.
    uses_left: Option<u32>,
}

#[derive(Default)]
struct Script {
    rules: Vec<Rule>,
    requests: Vec<Request>,
    unanswered: Vec<Request>,
    others: Vec<Request>,
}

impl Script {
    fn answer(&mut self, request: &Request) -> Option<Reply> {
        let rule = self
            .rules
            .iter_mut()
            .find(|rule| rule.uses_left != Some(0) && (rule.when.0)(request))?;
        if let Some(n) = &mut rule.uses_left {
            *n -= 1;
        }
        Some(rule.reply.clone())
    }
}

struct Shared {
    script: Mutex<Script>,
    stopping: AtomicBool,
    /// Set by `release`: held streams go on, later ones are not held.
    released: AtomicBool,
    message_ids: AtomicU64,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// The running stand-in (see the module's documentation).
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl ModelServer {
    /// Starts a server on a free port of 127.0.0.1, with no rules yet.
    pub fn start() -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the model server");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            stopping: AtomicBool::new(false),
            released: AtomicBool::new(false),
            message_ids: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("model-server".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("starting the model server's thread");
        ModelServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// What `ANTHROPIC_BASE_URL` should be.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers every request `when` matches with `reply` (after the rules
    /// added before it).
    pub fn on(&self, when: When, reply: impl Into<Reply>) -> &ModelServer {
        self.add(when, reply.into(), None)
    }

    /// Answers the first request `when` matches with `reply`, then no more.
    pub fn once(&self, when: When, reply: impl Into<Reply>) -> &ModelServer {
        self.add(when, reply.into(), Some(1))
    }

    /// Answers the first `n` requests `when` matches with `reply`.
    pub fn times(&self, n: u32, when: When, reply: impl Into<Reply>) -> &ModelServer {
        self.add(when, reply.into(), Some(n))
    }

    fn add(&self, when: When, reply: Reply, uses_left: Option<u32>) -> &ModelServer {
        self.script().rules.push(Rule {
            when,
            reply,
            uses_left,
        });
        self
    }

    /// Every Messages API request (`POST /v1/messages`) received so far,
    /// in order.
    pub fn requests(&self) -> Vec<Request> {
        self.script().requests.clone()
    }

    /// The other requests received (answered `200` with no body: the CLI
    /// checks it can reach the server with `HEAD /`).
    pub fn other_requests(&self) -> Vec<Request> {
        self.script().others.clone()
    }

    /// Requests no rule answered (they got a 500).
    pub fn unanswered(&self) -> Vec<Request> {
        self.script().unanswered.clone()
    }

    /// Lets every stream held by [`Message::hold_after`] go on, and later
    /// ones pass without stopping (until [`ModelServer::hold`]).
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    /// Makes streams stop at their [`Message::hold_after`] point again.
    pub fn hold(&self) {
        self.shared.released.store(false, Ordering::SeqCst);
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        // A rule's matcher that panicked poisons the lock; the script is
        // still whole (it panicked before any change).
        self.shared
            .script
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let Ok(stream) = stream else { continue };
        connections.retain(|c| !c.is_finished());
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("model-server-conn".into())
            .spawn(move || {
                // A connection that fails mid-way (the CLI was killed) just ends.
                let _ = serve_connection(stream, &shared);
            });
        if let Ok(handle) = spawned {
            connections.push(handle);
        }
    }
    // Each connection thread sees `stopping` within a tick.
    for c in connections {
        let _ = c.join();
    }
}

/// Serves the requests of one keep-alive connection until the client closes
/// it or the server stops.
fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        // Wait for the next request, checking now and then whether to stop.
        reader.get_ref().set_read_timeout(Some(TICK))?;
        loop {
            if shared.stopping() {
                return Ok(());
            }
            match reader.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let request = read_request(&mut reader)?;
        if !(request.method == "POST" && request.path.starts_with("/v1/messages")) {
            // The CLI checks it can reach the server (`HEAD /`) first.
            shared
                .script
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .others
                .push(request);
            write_empty(&mut writer)?;
            continue;
        }
        let reply = {
            let mut script = shared.script.lock().unwrap_or_else(|p| p.into_inner());
            script.requests.push(request.clone());
            let reply = script.answer(&request);
            if reply.is_none() {
                script.unanswered.push(request.clone());
            }
            reply
        };
        let reply = reply.unwrap_or_else(|| {
            Reply::error(
                500,
                "api_error",
                &format!(
                    "the stand-in model server has no rule for this request (last prompt: {:?})",
                    request.last_prompt()
                ),
            )
        });
        match reply {
            Reply::Error {
                status,
                headers,
                body,
            } => write_json(&mut writer, status, &headers, &body)?,
            Reply::Message(message) if request.is_stream() => {
                let message = message.for_request(&request);
                write_stream(&mut writer, &message, &request, shared)?
            }
            Reply::Message(message) => {
                let message = message.for_request(&request);
                let body = message_json(&message, &request, shared);
                write_json(&mut writer, 200, &[], &body)?
            }
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Request> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let path = parts.next().ok_or_else(|| bad("no path"))?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            return Err(bad("request body too large"));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Request {
        method,
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
        received_at: SystemTime::now(),
    })
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if body.len() + size > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut end = String::new();
        reader.read_line(&mut end)?;
        if size == 0 {
            return Ok(body);
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Error",
    }
}

fn write_json(
    w: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &Value,
) -> io::Result<()> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

fn write_empty(w: &mut TcpStream) -> io::Result<()> {
    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
    w.flush()
}

fn block_json(block: &Block, tool_id: &str) -> Value {
    match block {
        Block::Text(text) => json!({ "type": "text", "text": text }),
        Block::Thinking(text) => {
            json!({ "type": "thinking", "thinking": text, "signature": "stand-in" })
        }
        Block::ToolUse { name, input } => {
            json!({ "type": "tool_use", "id": tool_id, "name": name, "input": input })
        }
    }
}

/// The ids of one reply: its message and each tool call.
fn ids(shared: &Shared) -> (String, String) {
    let n = shared.message_ids.fetch_add(1, Ordering::SeqCst) + 1;
    (format!("msg_standin_{n}"), format!("toolu_standin_{n}"))
}

fn reply_model<'a>(message: &'a Message, request: &'a Request) -> &'a str {
    message.model.as_deref().unwrap_or(request.model())
}

/// A whole message, for a request that asked for no stream.
fn message_json(message: &Message, request: &Request, shared: &Shared) -> Value {
    let (id, tool_id) = ids(shared);
    let content: Vec<Value> = message
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| block_json(b, &format!("{tool_id}_{i}")))
        .collect();
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": reply_model(message, request),
        "content": content,
        "stop_reason": message.stop_reason(),
        "stop_sequence": null,
        "usage": message.usage.json(message.usage.output),
    })
}

/// A message as server-sent events: `message_start`, each block's start,
/// deltas and stop, `message_delta` (stop reason, output tokens) and
/// `message_stop`, in chunked encoding.
fn write_stream(
    w: &mut TcpStream,
    message: &Message,
    request: &Request,
    shared: &Shared,
) -> io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    )?;
    let (id, tool_id) = ids(shared);
    write_event(
        w,
        &json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": reply_model(message, request),
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": message.usage.json(1),
            },
        }),
    )?;
    for (index, block) in message.blocks.iter().enumerate() {
        if message.hold_after == Some(index) {
            hold(w, shared)?;
        }
        let tool_id = format!("{tool_id}_{index}");
        let (start, deltas) = match block {
            Block::Text(text) => (
                json!({ "type": "text", "text": "" }),
                vec![json!({ "type": "text_delta", "text": text })],
            ),
            Block::Thinking(text) => (
                json!({ "type": "thinking", "thinking": "", "signature": "" }),
                vec![
                    json!({ "type": "thinking_delta", "thinking": text }),
                    json!({ "type": "signature_delta", "signature": "stand-in" }),
                ],
            ),
            Block::ToolUse { name, input } => (
                json!({ "type": "tool_use", "id": tool_id, "name": name, "input": {} }),
                vec![json!({ "type": "input_json_delta", "partial_json": input.to_string() })],
            ),
        };
        write_event(
            w,
            &json!({ "type": "content_block_start", "index": index, "content_block": start }),
        )?;
        for delta in deltas {
            write_event(
                w,
                &json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            )?;
        }
        write_event(w, &json!({ "type": "content_block_stop", "index": index }))?;
    }
    if message.hold_after == Some(message.blocks.len()) {
        hold(w, shared)?;
    }
    write_event(
        w,
        &json!({
            "type": "message_delta",
            "delta": { "stop_reason": message.stop_reason(), "stop_sequence": null },
            "usage": { "output_tokens": message.usage.output },
        }),
    )?;
    write_event(w, &json!({ "type": "message_stop" }))?;
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// Keeps a stream open, sending `ping` events, until `release` is called,
/// the client goes away (a write fails) or the server stops.
fn hold(w: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    while !shared.released.load(Ordering::SeqCst) {
        if shared.stopping() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopping"));
        }
        write_event(w, &json!({ "type": "ping" }))?;
        std::thread::sleep(TICK);
    }
    Ok(())
}

/// One server-sent event (`event: TYPE`, `data: JSON`) as one chunk.
fn write_event(w: &mut TcpStream, event: &Value) -> io::Result<()> {
    let name = event["type"].as_str().unwrap_or("message");
    let text = format!("event: {name}\ndata: {event}\n\n");
    write!(w, "{:x}\r\n{text}\r\n", text.len())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keep-alive HTTP/1.1 client of just what these tests need.
    struct Client {
        reader: BufReader<TcpStream>,
    }

    /// A response: status, headers (lower-case names) and body.
    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("a JSON body")
        }

        /// The `data` of each server-sent event, checked against its
        /// `event` name.
        fn events(&self) -> Vec<Value> {
            let text = String::from_utf8(self.body.clone()).unwrap();
            text.split("\n\n")
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let (name, data) = e.split_once('\n').unwrap();
                    let data: Value =
                        serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                    assert_eq!(name.strip_prefix("event: ").unwrap(), data["type"]);
                    data
                })
                .collect()
        }
    }

    impl Client {
        fn connect(server: &ModelServer) -> Client {
            let stream = TcpStream::connect(server.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Client {
                reader: BufReader::new(stream),
            }
        }

        fn send(&mut self, method: &str, path: &str, body: &Value) -> Response {
            let body = body.to_string();
            let request = format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            self.reader.get_mut().write_all(request.as_bytes()).unwrap();
            self.read_response()
        }

        fn line(&mut self) -> String {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        }

        fn read_response(&mut self) -> Response {
            let status = self.line().split(' ').nth(1).unwrap().parse().unwrap();
            let mut headers = Vec::new();
            loop {
                let line = self.line();
                if line.is_empty() {
                    break;
                }
                let (n, v) = line.split_once(':').unwrap();
                headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
            }
            let mut response = Response {
                status,
                headers,
                body: Vec::new(),
            };
            if response.header("transfer-encoding") == Some("chunked") {
                loop {
                    let size = usize::from_str_radix(&self.line(), 16).unwrap();
                    let mut chunk = vec![0; size];
                    self.reader.read_exact(&mut chunk).unwrap();
                    self.line();
                    if size == 0 {
                        break;
                    }
                    response.body.extend(chunk);
                }
            } else {
                let len = response.header("content-length").unwrap().parse().unwrap();
                response.body = vec![0; len];
                self.reader.read_exact(&mut response.body).unwrap();
            }
            response
        }
    }

    fn ask(prompt: &str, stream: bool) -> Value {
        json!({
            "model": "claude-test-1",
            "stream": stream,
            "messages": [{ "role": "user", "content": [
                { "type": "text", "text": "<system-reminder>\nnoise\n</system-reminder>" },
                { "type": "text", "text": prompt },
            ]}],
        })
    }

    const MESSAGES: &str = "/v1/messages?beta=true";

    #[test]
    fn a_streamed_reply_has_every_event_of_the_messages_api_in_order() {
        let server = ModelServer::start();
        server.on(
            When::any(),
            Message::new()
                .thinking("let me see")
                .text("Writing it.")
                .tool_use("Write", json!({ "file_path": "/w/a.txt", "content": "hi" }))
                .usage(Usage::new(1200, 34).cache(500, 7)),
        );
        let mut client = Client::connect(&server);
        let response = client.send("POST", MESSAGES, &ask("write a.txt", true));
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        let events = response.events();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let start = &events[0]["message"];
        assert_eq!(start["model"], "claude-test-1");
        assert_eq!(start["usage"]["input_tokens"], 1200);
        assert_eq!(start["usage"]["output_tokens"], 1);
        assert_eq!(start["usage"]["cache_read_input_tokens"], 500);
        assert_eq!(start["usage"]["cache_creation_input_tokens"], 7);
        assert_eq!(events[2]["delta"]["thinking"], "let me see");
        assert_eq!(events[3]["delta"]["type"], "signature_delta");
        assert_eq!(events[6]["delta"]["text"], "Writing it.");
        assert_eq!(events[8]["content_block"]["name"], "Write");
        assert_eq!(events[8]["index"], 2);
        let input: Value =
            serde_json::from_str(events[9]["delta"]["partial_json"].as_str().unwrap()).unwrap();
        assert_eq!(input, json!({ "file_path": "/w/a.txt", "content": "hi" }));
        assert_eq!(events[11]["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[11]["usage"]["output_tokens"], 34);

        // The same connection serves the next request (keep-alive), and
        // the request was kept, its reminder apart from the prompt.
        let again = client.send("POST", MESSAGES, &ask("again", true));
        assert_eq!(again.status, 200);
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].last_prompt().as_deref(), Some("write a.txt"));
        assert_eq!(requests[0].user_texts(), ["write a.txt"]);
        assert!(requests[0].is_stream());
        assert_eq!(requests[0].header("Content-Type"), Some("application/json"));
    }

    #[test]
    fn a_write_in_cwd_names_the_file_under_the_asking_agents_working_directory() {
        let server = ModelServer::start();
        server.on(When::any(), Message::write_file_in_cwd("sub/a.txt", "hi\n"));
        let mut client = Client::connect(&server);
        let mut body = ask("write a.txt", false);
        // Where Claude Code 2.1 states it: a line of a system block.
        body["system"] = json!([
            { "type": "text", "text": "You are Claude Code." },
            { "type": "text", "text": "Environment:\n - Primary working directory: /w/s1/job\n - Is a git repository: true" },
        ]);
        let response = client.send("POST", MESSAGES, &body);
        let input = &response.json()["content"][1]["input"];
        assert_eq!(
            *input,
            json!({ "file_path": "/w/s1/job/sub/a.txt", "content": "hi\n" })
        );
        assert_eq!(
            server.requests()[0].working_directory(),
            Some(std::path::PathBuf::from("/w/s1/job"))
        );
        // A request that names no working directory gets the marker as it
        // is (the tool call then fails where the test can see it).
        let without = client.send("POST", MESSAGES, &ask("write a.txt", false));
        assert_eq!(
            without.json()["content"][1]["input"]["file_path"],
            format!("{CWD}/sub/a.txt")
        );
        assert_eq!(server.requests()[1].working_directory(), None);
    }

    #[test]
    fn a_request_without_stream_gets_one_json_message() {
        let server = ModelServer::start();
        server.on(
            When::any(),
            Message::answer("Hello.")
                .usage(Usage::new(10, 5))
                .model("claude-other"),
        );
        let response = Client::connect(&server).send("POST", MESSAGES, &ask("hi", false));
        assert_eq!(response.status, 200);
        let message = response.json();
        assert_eq!(message["type"], "message");
        assert_eq!(message["model"], "claude-other");
        assert_eq!(
            message["content"],
            json!([{ "type": "text", "text": "Hello." }])
        );
        assert_eq!(message["stop_reason"], "end_turn");
        assert_eq!(message["usage"]["output_tokens"], 5);
    }

    #[test]
    fn rules_answer_in_order_once_and_by_what_the_request_holds() {
        let server = ModelServer::start();
        let reset = SystemTime::now() + Duration::from_secs(30);
        server
            .once(When::prompt_contains("limit"), Reply::rate_limited(reset))
            .on(When::tool_result(), Message::answer("after the tool"))
            .on(When::prompt_contains("limit"), Reply::overloaded());
        let mut client = Client::connect(&server);

        let limited = client.send("POST", MESSAGES, &ask("hit the limit", true));
        assert_eq!(limited.status, 429);
        assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
        let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
        assert!((29..=31).contains(&retry_after), "{retry_after}");
        assert_eq!(
            limited.header("anthropic-ratelimit-unified-reset"),
            Some(epoch_secs(reset).to_string().as_str())
        );
        // The `once` rule is used up: the next rule that matches answers.
        let overloaded = client.send("POST", MESSAGES, &ask("hit the limit", true));
        assert_eq!(overloaded.status, 529);
        assert_eq!(overloaded.json()["error"]["type"], "overloaded_error");

        let mut after_tool = ask("hit the limit", false);
        after_tool["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "role": "user", "content": [
                { "type": "tool_result", "tool_use_id": "t1", "content": "File created" },
            ]}));
        let answer = client.send("POST", MESSAGES, &after_tool);
        assert_eq!(answer.json()["content"][0]["text"], "after the tool");
        assert_eq!(server.requests()[2].tool_results(), ["File created"]);

        // No rule: a 500 naming the problem, and the request is kept apart.
        let unanswered = client.send("POST", MESSAGES, &ask("something else", true));
        assert_eq!(unanswered.status, 500);
        assert!(unanswered.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no rule"));
        assert_eq!(server.unanswered().len(), 1);
        // Anything but the Messages API gets an empty 200 and no rule.
        let head = client.send("HEAD", "/", &Value::Null);
        assert_eq!((head.status, head.body.len()), (200, 0));
        assert_eq!(server.other_requests().len(), 1);
        assert_eq!(server.requests().len(), 4);
    }

    #[test]
    fn a_held_stream_waits_for_release_and_stopping_ends_every_thread() {
        let server = ModelServer::start();
        server.on(
            When::any(),
            Message::answer("first").text("second").hold_after(1),
        );
        let mut client = Client::connect(&server);
        let body = ask("go", true).to_string();
        let request = format!(
            "POST {MESSAGES} HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        client
            .reader
            .get_mut()
            .write_all(request.as_bytes())
            .unwrap();
        // Read up to the first block's stop, then see only pings until the
        // release.
        let mut seen = String::new();
        while !seen.contains("content_block_stop") {
            seen.push_str(&client.line());
        }
        let mut pings = 0;
        while pings < 3 {
            let line = client.line();
            assert!(!line.contains("content_block_start"), "not held: {line}");
            pings += usize::from(line == "event: ping");
        }
        server.release();
        let mut rest = String::new();
        while !rest.contains("message_stop") {
            rest.push_str(&client.line());
        }
        assert!(rest.contains("\"second\""), "{rest}");

        // A second connection, idle, and a held stream on a third: dropping
        // the server ends them all.
        server.hold();
        let _idle = Client::connect(&server);
        let mut held = Client::connect(&server);
        held.reader.get_mut().write_all(request.as_bytes()).unwrap();
        assert_eq!(held.line(), "HTTP/1.1 200 OK");
        let started = std::time::Instant::now();
        drop(server);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
