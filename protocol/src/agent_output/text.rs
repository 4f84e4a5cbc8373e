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
        let mut start = self.tail.len().saturating_sub(TEXT_RESULT_CAP);
        // Start on a character, not inside one a cut split (here or in
        // `feed`): skip at most the 3 continuation bytes of one character.
        let continuation = |b: &u8| b & 0xC0 == 0x80;
        for _ in 0..3 {
            if self.tail.get(start).is_some_and(continuation) {
                start += 1;
            }
        }
        let text = String::from_utf8_lossy(&self.tail[start..]).into_owned();
        self.run.result = Some(text);
        true
    }

    fn run(&self) -> &AgentRun {
        &self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_outputs_tail_starting_on_a_character() {
        let mut reader = TextReader::default();
        // The cut falls inside an "é": the answer starts after it.
        let output = format!("{}b", "é".repeat(TEXT_RESULT_CAP));
        for chunk in output.as_bytes().chunks(1000) {
            reader.feed(chunk, 0);
        }
        assert!(reader.finish(0));
        let answer = reader.run().result.clone().unwrap();
        assert!(!answer.contains('\u{FFFD}') && answer.ends_with("éb"));
        assert_eq!(answer.len(), TEXT_RESULT_CAP - 1);
        let mut short = TextReader::default();
        short.feed(b"all of it\n", 0);
        short.finish(0);
        assert_eq!(short.run().result.as_deref(), Some("all of it\n"));
    }
}
