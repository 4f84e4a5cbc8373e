//! A captured stream-json output as a person reads it (`aam logs`): what
//! the agent said, one line per tool call (`→ Edit src/lib.rs`) followed by
//! its result's first line, retries and limits, then how the run ended and
//! its final answer. A subagent's lines are indented under the call that
//! ran it. A line that is not an event appears as it is.

use super::events::{Block, EventLine, Part};
use super::{model_name, tools, SYNTHETIC_MODEL};
use crate::agent_output::cap_text;

/// Most bytes of a tool result's first line shown.
const MAX_RESULT_LINE: usize = 200;

/// `output`, a captured stream-json output, rendered for reading.
pub fn transcript(output: &[u8]) -> String {
    let mut transcript = Transcript::default();
    for line in output.split(|&b| b == b'\n') {
        transcript.line(line);
    }
    transcript.text
}

/// A transcript rendered line by line, keeping what earlier lines told
/// (the working directory, what was said) for the lines after them.
#[derive(Default)]
pub struct Transcript {
    text: String,
    /// The run's working directory: tool paths under it are shown relative.
    cwd: Option<String>,
    /// The main thread's last text: the final answer repeats it, and is
    /// then not printed twice.
    last_said: Option<String>,
}

impl Transcript {
    /// Renders one whole line (without its newline).
    pub fn line(&mut self, line: &[u8]) {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        let event = (trimmed[0] == b'{')
            .then(|| serde_json::from_slice::<EventLine>(trimmed).ok())
            .flatten()
            .filter(|event| event.kind.0.is_some());
        match event {
            Some(event) => self.event(&event),
            None => self.push(0, &String::from_utf8_lossy(line)),
        }
    }

    /// What was rendered since the last call.
    pub fn take_text(&mut self) -> String {
        std::mem::take(&mut self.text)
    }

    /// Appends `text`, each of its lines indented by `depth` levels.
    fn push(&mut self, depth: usize, text: &str) {
        for line in text.trim_end().lines() {
            for _ in 0..depth {
                self.text.push_str("  ");
            }
            self.text.push_str(line);
            self.text.push('\n');
        }
    }

    fn event(&mut self, event: &EventLine<'_>) {
        match event.kind.as_deref() {
            Some("system") => self.system(event),
            Some("assistant") => self.assistant(event),
            Some("user") => self.user(event),
            Some("rate_limit_event") => self.rate_limit(event),
            Some("result") => self.result(event),
            // Progress of subagents, token estimates, partial messages.
            _ => {}
        }
    }

    fn system(&mut self, event: &EventLine<'_>) {
        match event.subtype.as_deref() {
            Some("init") => {
                self.cwd = event.cwd.as_deref().map(str::to_string);
                let mut header = String::from("●");
                if let Some(id) = event.session_id.as_deref() {
                    header.push_str(&format!(" session {id}"));
                }
                if let Some(model) = event.model.as_deref() {
                    header.push_str(&format!(" · {}", model_name(model)));
                }
                if let Some(cwd) = event.cwd.as_deref() {
                    header.push_str(&format!(" · {cwd}"));
                }
                self.push(0, &header);
            }
            Some("api_retry") => {
                let status = event
                    .error_status
                    .count()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default();
                let attempt = match (event.attempt.count(), event.max_retries.count()) {
                    (Some(a), Some(max)) => format!(" (attempt {a} of {max})"),
                    (Some(a), None) => format!(" (attempt {a})"),
                    _ => String::new(),
                };
                self.push(0, &format!("… API error{status}: retrying{attempt}"));
            }
            _ => {}
        }
    }

    fn assistant(&mut self, event: &EventLine<'_>) {
        let message = &event.message.0;
        let synthetic = message.model.is(SYNTHETIC_MODEL) || event.error.0.is_some();
        let depth = usize::from(event.parent_tool_use_id.0.is_some());
        for part in message.parts() {
            match part {
                Part::Text(text) => {
                    if synthetic {
                        self.push(depth, &format!("✗ {}", text.trim()));
                    } else {
                        self.push(depth, text);
                    }
                    if depth == 0 {
                        self.last_said = Some(text.trim().to_string());
                    }
                }
                Part::ToolCall { name, input } => {
                    let call = tools::describe(name, input, self.cwd.as_deref());
                    self.push(depth, &format!("→ {call}"));
                }
            }
        }
    }

    fn user(&mut self, event: &EventLine<'_>) {
        let depth = usize::from(event.parent_tool_use_id.0.is_some());
        for block in &event.message.0.content.0 {
            if block.kind.is("tool_result") {
                let line = result_line(block);
                self.push(depth + 1, &line);
            }
        }
    }

    fn rate_limit(&mut self, event: &EventLine<'_>) {
        let info = &event.rate_limit_info.0;
        let status = info.status.as_deref().unwrap_or("unknown");
        if status == "allowed" {
            return;
        }
        let kind = info.rate_limit_type.as_deref().unwrap_or("usage");
        let resets = info
            .resets_at
            .count()
            .map(crate::agent_output::limits::epoch_to_ms)
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map(|at| format!(", resets {at}"))
            .unwrap_or_default();
        self.push(0, &format!("… {kind} limit: {status}{resets}"));
    }

    fn result(&mut self, event: &EventLine<'_>) {
        let is_error = event
            .is_error
            .0
            .unwrap_or_else(|| !event.subtype.is("success"));
        let mut footer = String::from(if is_error {
            "── failed"
        } else {
            "── done"
        });
        if let (true, Some(status)) = (is_error, event.api_error_status.count()) {
            footer.push_str(&format!(" · API error {status}"));
        }
        if let Some(turns) = event.num_turns.count() {
            let plural = if turns == 1 { "" } else { "s" };
            footer.push_str(&format!(" · {turns} turn{plural}"));
        }
        if let Some(cost) = event.total_cost_usd.0 {
            footer.push_str(&format!(" · ${cost:.4}"));
        }
        footer.push_str(" ──");
        self.text.push('\n');
        self.push(0, &footer);
        let text = event
            .result
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if is_error {
            let errors: Vec<&str> = event.errors.0.iter().filter_map(|e| e.as_deref()).collect();
            let error = text
                .map(str::to_string)
                .unwrap_or_else(|| errors.join("; "));
            // The CLI's own error message was shown as it came.
            if !error.is_empty() && self.last_said.as_deref() != Some(error.as_str()) {
                self.push(0, &format!("✗ {error}"));
            }
        } else if let Some(answer) = text {
            if self.last_said.as_deref() != Some(answer) {
                self.push(0, answer);
            }
        }
    }
}

/// A tool result's first line, marked `✗` when the tool failed.
fn result_line(block: &Block<'_>) -> String {
    let first = block
        .content
        .0
        .as_deref()
        .and_then(|c| c.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("(no output)");
    let mark = if block.is_error.0 == Some(true) {
        "✗"
    } else {
        "⎿"
    };
    cap_text(&format!("{mark} {first}"), MAX_RESULT_LINE)
}
