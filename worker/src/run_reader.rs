//! What an agent job's run is, read from its stdout as it arrives (the
//! format's reader from `aam_protocol::agent_output`), and when to tell
//! the manager: at most every `UPDATE_EVERY`, and the latest state once it
//! is due, even if the agent prints nothing more. The end goes with the
//! job's `Finished`, so no update is needed for it.

use aam_protocol::agent_output::{reader, FormatReader};
use aam_protocol::agent_run::{AgentFormat, AgentRun};
use std::time::{Duration, Instant};

/// Least time between two updates of one run.
pub const UPDATE_EVERY: Duration = Duration::from_millis(250);

pub struct RunReader {
    reader: Box<dyn FormatReader + Send>,
    /// When the run was last reported.
    last_update: Option<Instant>,
    /// The run changed since it was last reported.
    changed: bool,
}

impl RunReader {
    pub fn new(format: AgentFormat) -> RunReader {
        RunReader {
            reader: reader(format),
            last_update: None,
            changed: false,
        }
    }

    /// Reads the next bytes of the job's stdout.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.reader.feed(bytes, aam_protocol::now_ms()) {
            self.changed = true;
        }
    }

    /// When the next update is due: none while nothing changed.
    pub fn due_at(&self) -> Option<Instant> {
        if !self.changed {
            return None;
        }
        Some(match self.last_update {
            Some(last) => last + UPDATE_EVERY,
            None => Instant::now(),
        })
    }

    /// The run to report at `now`, if an update is due (it is then counted
    /// as sent).
    pub fn update(&mut self, now: Instant) -> Option<AgentRun> {
        let due = self.changed
            && self
                .last_update
                .is_none_or(|last| now.saturating_duration_since(last) >= UPDATE_EVERY);
        if !due {
            return None;
        }
        self.changed = false;
        self.last_update = Some(now);
        Some(self.reader.run().clone())
    }

    /// The output ended: the run read to its end.
    pub fn finish(&mut self) -> AgentRun {
        self.reader.finish(aam_protocol::now_ms());
        self.changed = false;
        self.reader.run().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &[u8] = br#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}
"#;
    const TEXT: &[u8] =
        br#"{"type":"assistant","message":{"id":"a","content":[{"type":"text","text":"hi"}]}}
"#;
    const RESULT: &[u8] =
        br#"{"type":"result","subtype":"success","is_error":false,"result":"done","num_turns":1}"#;

    #[test]
    fn updates_are_throttled_and_the_latest_state_goes_out_when_due() {
        let mut run = RunReader::new(AgentFormat::ClaudeStreamJson);
        assert_eq!(run.due_at(), None, "nothing to tell yet");
        run.feed(INIT);
        // Whenever it is asked, the first change is due.
        let start = Instant::now() - Duration::from_secs(60);
        let first = run.update(start).expect("the first change goes at once");
        assert_eq!(first.session_id.as_deref(), Some("s1"));
        run.feed(TEXT);
        assert_eq!(run.update(start + UPDATE_EVERY / 2), None, "too soon");
        assert_eq!(run.due_at(), Some(start + UPDATE_EVERY));
        let later = run.update(start + UPDATE_EVERY).expect("due now");
        assert_eq!(later.last_text.as_deref(), Some("hi"));
        assert_eq!(run.due_at(), None, "sent: nothing waits");
        // A tool result changes nothing: no update.
        run.feed(b"{\"type\":\"user\",\"message\":{}}\n");
        assert_eq!(run.due_at(), None);
    }

    #[test]
    fn the_end_reads_a_last_line_without_a_newline() {
        let mut run = RunReader::new(AgentFormat::ClaudeStreamJson);
        run.feed(INIT);
        run.feed(RESULT);
        let end = run.finish();
        assert_eq!(end.result.as_deref(), Some("done"));
        assert_eq!(run.due_at(), None, "the end goes with Finished");
    }
}
