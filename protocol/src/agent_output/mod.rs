//! Readers of agents' output formats: each turns an agent's standard output,
//! fed as it arrives in chunks of any size, into what aam understands of the
//! run (`AgentRun`), and renders a captured output as a readable transcript.
//! The worker runs one reader per agent attempt; `aam logs` renders
//! transcripts. Pure: no I/O, no clock (callers pass `now_ms`). A line that
//! does not parse is kept as text, never an error.
//!
//! A new format is one file more: a type implementing `FormatReader` (with
//! `lines::LineSplitter` for a line-based format), a variant of
//! `AgentFormat`, and an arm in `reader` and `transcript`.

mod claude;
mod limits;
mod lines;
mod text;

pub use claude::model_name;

use crate::agent_run::{AgentFormat, AgentRun};

/// Reads one agent run's standard output.
pub trait FormatReader {
    /// Feeds the next bytes of output (a chunk may end in the middle of a
    /// line, or of a UTF-8 character). Returns whether the run changed.
    fn feed(&mut self, bytes: &[u8], now_ms: u64) -> bool;
    /// The output ended: reads what is left (a last line without a newline).
    /// Returns whether the run changed.
    fn finish(&mut self, now_ms: u64) -> bool;
    /// The run as read so far.
    fn run(&self) -> &AgentRun;
}

/// A reader for an agent's output in `format`.
pub fn reader(format: AgentFormat) -> Box<dyn FormatReader + Send> {
    match format {
        AgentFormat::ClaudeStreamJson => Box::new(claude::ClaudeReader::default()),
        AgentFormat::Text => Box::new(text::TextReader::default()),
    }
}

/// A captured output in `format` as a person reads it.
pub fn transcript(format: AgentFormat, output: &[u8]) -> String {
    match format {
        AgentFormat::ClaudeStreamJson => claude::transcript(output),
        AgentFormat::Text => String::from_utf8_lossy(output).into_owned(),
    }
}

/// A transcript rendered while the output arrives, in chunks cut anywhere
/// (`aam logs --follow`): whole lines are rendered as they complete, with
/// what earlier lines told, so following gives what `transcript` gives.
pub struct Transcriber {
    format: AgentFormat,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    claude: claude::Transcript,
}

impl Transcriber {
    pub fn new(format: AgentFormat) -> Transcriber {
        Transcriber {
            format,
            partial: Vec::new(),
            claude: claude::Transcript::default(),
        }
    }

    /// What to print of the next bytes of output (a text agent's bytes
    /// as they are).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.format == AgentFormat::Text {
            return bytes.to_vec();
        }
        self.partial.extend_from_slice(bytes);
        let Some(last_newline) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last_newline + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        for line in whole.split(|&b| b == b'\n') {
            self.claude.line(line);
        }
        self.claude.take_text().into_bytes()
    }

    /// The output ended: what is left of a last line without a newline.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.partial);
        if self.format == AgentFormat::Text {
            return rest;
        }
        self.claude.line(&rest);
        self.claude.take_text().into_bytes()
    }
}

/// `text` cut to at most `max` bytes on a character boundary, ending in
/// `…` when it was cut (for what people read).
pub(crate) fn cap_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    format!("{}…", cut(text, max.saturating_sub('…'.len_utf8())))
}

/// The longest start of `text` of at most `max` bytes that ends on a
/// character boundary (for names and ids, compared before any copy).
pub(crate) fn cut(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
