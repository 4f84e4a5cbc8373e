//! Claude Code's `--output-format stream-json --verbose`: one JSON event a
//! line (`system` init and retries, `assistant` messages one content block
//! a line, `user` tool results, `rate_limit_event`, a final `result`).
//!
//! Only lines that start with `{` are parsed, each once, into borrowed
//! typed structs (`events.rs`); `user` lines, the bulk of the bytes (file
//! contents, command outputs), are only checked to be JSON, since nothing
//! of the run comes from them.

mod events;
mod tools;
mod transcript;

#[cfg(test)]
mod tests;

pub use transcript::{transcript, Transcript};

use super::limits::{epoch_to_ms, plan_limit};
use super::lines::{Line, LineSplitter};
use super::{cap_text, cut, FormatReader};
use crate::agent_run::{AgentRun, TokenUsage, UsageLimit};
use events::{sniff_kind, EventLine, Message, Part, Usage};
use serde::de::IgnoredAny;
use std::collections::{BTreeMap, VecDeque};

/// Most bytes kept of the last thing the agent said.
pub const MAX_LAST_TEXT: usize = 2 * 1024;
/// Most bytes kept of the final answer.
pub const MAX_RESULT: usize = 256 * 1024;
/// Most bytes kept of an error the agent reported.
pub const MAX_ERROR: usize = 4 * 1024;

/// Most bytes kept of a name the agent prints (session id, model, a
/// message id), and of the working directory: what the agent prints is
/// bounded before it is sent or stored.
pub const MAX_NAME: usize = 256;
const MAX_CWD: usize = 4096;
/// Most models whose tokens are kept apart; more are counted as `other`.
pub const MAX_MODELS: usize = 16;
const OTHER_MODELS: &str = "other";

/// Recent messages remembered so that a message, printed once per content
/// block, counts its tokens once (subagents' messages may interleave).
const RECENT_MESSAGES: usize = 16;

/// The model name the CLI gives messages it writes itself (API errors).
const SYNTHETIC_MODEL: &str = "<synthetic>";

#[derive(Default)]
pub struct ClaudeReader {
    lines: LineSplitter,
    state: RunState,
}

/// The run as read so far, and what is needed to read the rest.
#[derive(Default)]
struct RunState {
    run: AgentRun,
    /// The run's working directory (from `init`): tool paths under it are
    /// shown relative.
    cwd: Option<String>,
    /// The id of the main thread's current message: a new id is a new turn.
    turn_id: Option<String>,
    /// Tokens already counted per recent message id.
    counted: VecDeque<(String, TokenUsage)>,
    /// The latest `rate_limit_event` that refused requests.
    refused: Option<UsageLimit>,
    /// A limit message the CLI wrote itself, when the run has no `result`.
    cli_limit: Option<UsageLimit>,
    /// An error message the CLI wrote itself, when the run has no `result`.
    cli_error: Option<String>,
    /// A `result` was read: it decides the answer, error and limit.
    ended: bool,
}

impl FormatReader for ClaudeReader {
    fn feed(&mut self, bytes: &[u8], now_ms: u64) -> bool {
        let mut changed = false;
        let state = &mut self.state;
        self.lines
            .feed(bytes, |line| changed |= state.read_line(line, now_ms));
        changed
    }

    fn finish(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        let state = &mut self.state;
        self.lines
            .finish(|line| changed |= state.read_line(line, now_ms));
        changed | state.end_without_result()
    }

    fn run(&self) -> &AgentRun {
        &self.state.run
    }
}

/// A model's name without the CLI's context-window suffix
/// (`claude-opus-4-8[1m]` is priced as `claude-opus-4-8`).
pub fn model_name(model: &str) -> &str {
    match model
        .strip_suffix(']')
        .and_then(|m| m.rfind('[').map(|at| &m[..at]))
    {
        Some(name) if !name.is_empty() => name,
        _ => model,
    }
}

impl RunState {
    /// Reads one line; whether the run changed.
    fn read_line(&mut self, line: Line<'_>, now_ms: u64) -> bool {
        let bytes = match line {
            Line::Whole(bytes) => bytes.trim_ascii_start(),
            // A huge tool result (a big file read) is as it should be.
            Line::TooLong { head } if sniff_kind(head) == Some(b"user") => return false,
            Line::TooLong { .. } => return self.unparsed(),
        };
        if bytes.is_empty() {
            return false;
        }
        if bytes[0] != b'{' {
            return self.unparsed();
        }
        if sniff_kind(bytes) == Some(b"user") {
            // Tool results: nothing of the run is in them, so they are only
            // checked (a scan, no allocation), not read.
            if serde_json::from_slice::<IgnoredAny>(bytes).is_err() {
                return self.unparsed();
            }
            return std::mem::take(&mut self.run.retrying);
        }
        match serde_json::from_slice::<EventLine>(bytes) {
            Ok(event) => self.apply(&event, now_ms),
            Err(_) => self.unparsed(),
        }
    }

    fn unparsed(&mut self) -> bool {
        self.run.unparsed_lines = self.run.unparsed_lines.saturating_add(1);
        true
    }

    fn apply(&mut self, event: &EventLine<'_>, now_ms: u64) -> bool {
        let retry = event.kind.is("system") && event.subtype.is("api_retry");
        // `retrying` holds while an `api_retry` is the latest event.
        let was_retrying = std::mem::replace(&mut self.run.retrying, retry);
        let changed = match event.kind.as_deref() {
            Some("system") => self.system(event),
            Some("assistant") => self.assistant(event, now_ms),
            Some("result") => self.result(event, now_ms),
            Some("rate_limit_event") => self.rate_limit(event),
            _ => false,
        };
        changed || was_retrying != retry
    }

    fn system(&mut self, event: &EventLine<'_>) -> bool {
        if !event.subtype.is("init") {
            return false;
        }
        self.set_session_id(event);
        if let Some(model) = event.model.as_deref() {
            self.run.model = Some(cut(model_name(model), MAX_NAME).to_string());
        }
        self.cwd = event
            .cwd
            .as_deref()
            .filter(|cwd| cwd.len() <= MAX_CWD)
            .map(str::to_string);
        true
    }

    fn set_session_id(&mut self, event: &EventLine<'_>) {
        if let Some(id) = event.session_id.as_deref() {
            let id = cut(id, MAX_NAME);
            if self.run.session_id.as_deref() != Some(id) {
                self.run.session_id = Some(id.to_string());
            }
        }
    }

    /// One content block of an assistant message (the CLI prints a line
    /// per block, each with the message's id, model and usage so far).
    fn assistant(&mut self, event: &EventLine<'_>, now_ms: u64) -> bool {
        let message = &event.message.0;
        let synthetic = message.model.is(SYNTHETIC_MODEL) || event.error.0.is_some();
        // A subagent's messages (run by a `Task` call) are tool calls and
        // tokens of this run, but not its turns, model or words.
        let main_thread = event.parent_tool_use_id.0.is_none();
        if self.run.session_id.is_none() {
            self.set_session_id(event);
        }
        if main_thread {
            self.count_turn(message);
            if let (false, Some(model)) = (synthetic, message.model.as_deref()) {
                let model = cut(model_name(model), MAX_NAME);
                if self.run.model.as_deref() != Some(model) {
                    self.run.model = Some(model.to_string());
                }
            }
        }
        if !synthetic {
            self.count_tokens(message);
        }
        for part in message.parts() {
            match part {
                Part::Text(text) => {
                    if synthetic {
                        self.cli_said(text, event.error.is("rate_limit"), now_ms);
                    }
                    if main_thread {
                        self.run.last_text = Some(cap_text(text.trim(), MAX_LAST_TEXT));
                    }
                }
                Part::ToolCall { name, input } => {
                    self.run.tool_calls = self.run.tool_calls.saturating_add(1);
                    let cwd = self.cwd.as_deref();
                    self.run.last_tool = Some(tools::describe(name, input, cwd));
                }
            }
        }
        true
    }

    /// A message the CLI wrote itself: an API error, perhaps a limit. It
    /// counts only when no `result` comes (that says the same, and more).
    fn cli_said(&mut self, text: &str, rate_limited: bool, now_ms: u64) {
        self.cli_error = Some(cap_text(text.trim(), MAX_ERROR));
        let plan = plan_limit(text, now_ms);
        if plan.is_some() || rate_limited {
            self.cli_limit = Some(UsageLimit {
                resets_at_ms: plan.flatten(),
                message: cap_text(text.trim(), MAX_ERROR),
            });
        }
    }

    fn count_turn(&mut self, message: &Message<'_>) {
        let id = message.id.as_deref().map(|id| cut(id, MAX_NAME));
        if id.is_some() && id == self.turn_id.as_deref() {
            return;
        }
        self.turn_id = id.map(str::to_string);
        self.run.turns = self.run.turns.saturating_add(1);
    }

    /// Adds a message's tokens to its model's, once per message: a message
    /// seen again adds only what grew since.
    fn count_tokens(&mut self, message: &Message<'_>) {
        let seen = tokens_of(&message.usage.0);
        let model = model_name(message.model.as_deref().unwrap_or("unknown"));
        let id = message.id.as_deref().map(|id| cut(id, MAX_NAME));
        let added = match id {
            Some(id) => match self.counted.iter_mut().find(|(known, _)| known == id) {
                Some((_, counted)) => {
                    let grown = growth(counted, &seen);
                    counted.add(&grown);
                    grown
                }
                None => {
                    if self.counted.len() == RECENT_MESSAGES {
                        self.counted.pop_front();
                    }
                    self.counted.push_back((id.to_string(), seen));
                    seen
                }
            },
            None => seen,
        };
        if added != TokenUsage::default() {
            add_tokens(&mut self.run.usage, model, &added);
        }
    }

    /// A `rate_limit_event`: a refusal is remembered (its reset time is the
    /// best there is) and decides the limit if the run then fails; a later
    /// `allowed` lifts it (the plan's overage may take over).
    fn rate_limit(&mut self, event: &EventLine<'_>) -> bool {
        let info = &event.rate_limit_info.0;
        match info.status.as_deref() {
            None | Some("allowed") | Some("allowed_warning") => self.refused = None,
            Some(status) => {
                let kind = info.rate_limit_type.as_deref().unwrap_or("usage");
                self.refused = Some(UsageLimit {
                    resets_at_ms: info.resets_at.count().map(epoch_to_ms),
                    message: cap_text(&format!("{kind} limit: {status}"), MAX_ERROR),
                });
            }
        }
        false
    }

    /// The `result`: the answer or the error, the CLI's own counts, and
    /// whether the run ended on a limit. `is_error` is trusted over
    /// `subtype` and the exit code (an API error can come with `success`).
    fn result(&mut self, event: &EventLine<'_>, now_ms: u64) -> bool {
        self.ended = true;
        self.set_session_id(event);
        let run = &mut self.run;
        let is_error = event
            .is_error
            .0
            .unwrap_or_else(|| !event.subtype.is("success"));
        if let Some(turns) = event.num_turns.count() {
            run.turns = u32::try_from(turns).unwrap_or(u32::MAX);
        }
        run.reported_cost_usd = event
            .total_cost_usd
            .0
            .filter(|c| c.is_finite() && *c >= 0.0);
        self.take_totals(event);
        let text = event.result.as_deref().filter(|t| !t.trim().is_empty());
        let status = event
            .api_error_status
            .count()
            .and_then(|s| u16::try_from(s).ok());
        let run = &mut self.run;
        if is_error {
            run.error = Some(cap_text(&error_text(event, text), MAX_ERROR));
            run.api_error_status = status;
            run.result = None;
        } else {
            run.result = text.map(|t| cap_text(t, MAX_RESULT));
            run.error = None;
            run.api_error_status = None;
        }
        self.run.limit = self.limit_at_end(is_error, status, text, now_ms);
        true
    }

    /// Tokens per model from `modelUsage` (which, unlike `usage`, counts
    /// subagents' and non-streamed requests' tokens, as the cost does),
    /// else the `usage` totals.
    fn take_totals(&mut self, event: &EventLine<'_>) {
        let models = &event.model_usage.0;
        if models.is_empty() {
            if let Some(total) = reported_tokens(&event.usage.0) {
                self.run.total = Some(total);
            }
            return;
        }
        let mut per_model: BTreeMap<String, TokenUsage> = BTreeMap::new();
        let mut total = TokenUsage::default();
        for (model, usage) in models {
            let usage = TokenUsage {
                input_tokens: usage.0.input_tokens.count_or_zero(),
                output_tokens: usage.0.output_tokens.count_or_zero(),
                cache_read_tokens: usage.0.cache_read_input_tokens.count_or_zero(),
                cache_creation_tokens: usage.0.cache_creation_input_tokens.count_or_zero(),
            };
            total.add(&usage);
            add_tokens(&mut per_model, model_name(model), &usage);
        }
        self.run.usage = per_model;
        self.run.total = Some(total);
    }

    /// Whether a run whose `result` was read ended on a limit: a plan's
    /// limit message, an API error 429 or 529, or a failure after a
    /// `rate_limit_event` refused requests. A run that succeeded did not,
    /// whatever was refused on the way.
    fn limit_at_end(
        &self,
        is_error: bool,
        status: Option<u16>,
        text: Option<&str>,
        now_ms: u64,
    ) -> Option<UsageLimit> {
        let plan = text.and_then(|t| plan_limit(t, now_ms));
        let api_limit = is_error && matches!(status, Some(429) | Some(529));
        let refused = self.refused.as_ref().filter(|_| is_error);
        if plan.is_none() && !api_limit && refused.is_none() {
            return None;
        }
        let resets_at_ms = refused
            .and_then(|r| r.resets_at_ms)
            .or(plan.flatten())
            .or(self.cli_limit.as_ref().and_then(|l| l.resets_at_ms));
        let message = text
            .map(|t| cap_text(t.trim(), MAX_ERROR))
            .or_else(|| refused.map(|r| r.message.clone()))
            .unwrap_or_else(|| format!("API error {}", status.unwrap_or(429)));
        Some(UsageLimit {
            resets_at_ms,
            message,
        })
    }

    /// The output ended without a `result` (killed, crashed): what the CLI
    /// said of an error or limit stands. Whether the run changed.
    fn end_without_result(&mut self) -> bool {
        let was_retrying = std::mem::take(&mut self.run.retrying);
        if self.ended {
            return was_retrying;
        }
        self.ended = true;
        let limit = self.refused.clone().or_else(|| self.cli_limit.clone());
        let changed = limit.is_some() || self.cli_error.is_some();
        if limit.is_some() {
            self.run.limit = limit;
        }
        if let Some(error) = self.cli_error.take() {
            self.run.error = Some(error);
        }
        changed || was_retrying
    }
}

/// The error of a failed run: its text, else its `errors`, else its subtype.
fn error_text(event: &EventLine<'_>, text: Option<&str>) -> String {
    if let Some(text) = text {
        return text.trim().to_string();
    }
    let errors: Vec<&str> = event
        .errors
        .0
        .iter()
        .filter_map(|e| e.as_deref())
        .filter(|e| !e.trim().is_empty())
        .collect();
    if !errors.is_empty() {
        return errors.join("; ");
    }
    match event.subtype.as_deref() {
        Some(subtype) if subtype != "success" => subtype.to_string(),
        _ => "the agent reported an error".to_string(),
    }
}

/// Adds `tokens` to `model`'s, or to `other`'s once `MAX_MODELS` models
/// are kept apart.
fn add_tokens(usage: &mut BTreeMap<String, TokenUsage>, model: &str, tokens: &TokenUsage) {
    if let Some(counted) = usage.get_mut(model) {
        return counted.add(tokens);
    }
    let model = if usage.len() < MAX_MODELS - 1 {
        cut(model, MAX_NAME).to_string()
    } else {
        OTHER_MODELS.to_string()
    };
    usage.entry(model).or_default().add(tokens);
}

/// The tokens of a `usage` object, if it had any of the fields.
fn reported_tokens(usage: &Usage) -> Option<TokenUsage> {
    let fields = [
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    ];
    fields
        .iter()
        .any(|n| n.0.is_some())
        .then(|| tokens_of(usage))
}

fn tokens_of(usage: &Usage) -> TokenUsage {
    TokenUsage {
        input_tokens: usage.input_tokens.count_or_zero(),
        output_tokens: usage.output_tokens.count_or_zero(),
        cache_read_tokens: usage.cache_read_input_tokens.count_or_zero(),
        cache_creation_tokens: usage.cache_creation_input_tokens.count_or_zero(),
    }
}

/// What `seen` has beyond `counted`, field by field.
fn growth(counted: &TokenUsage, seen: &TokenUsage) -> TokenUsage {
    TokenUsage {
        input_tokens: seen.input_tokens.saturating_sub(counted.input_tokens),
        output_tokens: seen.output_tokens.saturating_sub(counted.output_tokens),
        cache_read_tokens: seen
            .cache_read_tokens
            .saturating_sub(counted.cache_read_tokens),
        cache_creation_tokens: seen
            .cache_creation_tokens
            .saturating_sub(counted.cache_creation_tokens),
    }
}
