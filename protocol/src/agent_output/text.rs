//! Plain text output: the answer is the output itself (its tail, capped).

use super::FormatReader;
use crate::agent_run::AgentRun;

/// Most bytes of a text agent's output kept as its answer (the tail).
pub const TEXT_RESULT_CAP: usize = 64 * 1024;

#[derive(Default)]
pub struct TextReader {
    tail: Vec<u8>,
    run: AgentRun,
}

impl FormatReader for TextReader {
    fn feed(&mut self, bytes: &[u8], _now_ms: u64) -> bool {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TEXT_RESULT_CAP {
            let cut = self.tail.len() - TEXT_RESULT_CAP;
            self.tail.drain(..cut);
        }
        false
    }

    fn finish(&mut self, _now_ms: u64) -> bool {
        let start = self.tail.len().saturating_sub(TEXT_RESULT_CAP);
        let text = String::from_utf8_lossy(&self.tail[start..]).into_owned();
        self.run.result = Some(text);
        true
    }

    fn run(&self) -> &AgentRun {
        &self.run
    }
}
