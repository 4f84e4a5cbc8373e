//! Splits output fed in chunks of any size into whole lines. Lines that a
//! chunk holds whole are handed out in place (no copy); only a line split
//! across chunks is gathered, and only up to `MAX_LINE` bytes, so a reader
//! holds at most one line of an agent's output whatever it prints.

/// Most bytes of one line gathered across chunks; a longer line is passed
/// over (its bytes stay in the job's raw output).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Bytes kept of the start of a line passed over: enough to tell what it
/// was (a reader may know it needs nothing from such a line).
pub const TOO_LONG_HEAD: usize = 64;

/// One line, without its newline.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Whole(&'a [u8]),
    /// A line longer than `MAX_LINE`, split across chunks: only its first
    /// `TOO_LONG_HEAD` bytes are kept.
    TooLong {
        head: &'a [u8],
    },
}

#[derive(Default)]
pub struct LineSplitter {
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
    /// The line being gathered passed `MAX_LINE`: the rest of it is dropped.
    oversized: bool,
}

impl LineSplitter {
    /// Calls `each` with every line `chunk` completes, in order.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(Line<'_>)) {
        let mut rest = chunk;
        while let Some(at) = memchr::memchr(b'\n', rest) {
            let piece = &rest[..at];
            rest = &rest[at + 1..];
            if self.oversized {
                self.oversized = false;
                each(Line::TooLong {
                    head: &self.partial,
                });
                self.partial.clear();
            } else if self.partial.is_empty() {
                each(Line::Whole(piece));
            } else if self.partial.len() + piece.len() > MAX_LINE {
                self.keep_head(piece);
                each(Line::TooLong {
                    head: &self.partial,
                });
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(piece);
                each(Line::Whole(&self.partial));
                self.partial.clear();
            }
        }
        self.keep(rest);
    }

    /// The output ended: hands out a last line that had no newline.
    pub fn finish(&mut self, mut each: impl FnMut(Line<'_>)) {
        if std::mem::take(&mut self.oversized) {
            each(Line::TooLong {
                head: &self.partial,
            });
        } else if !self.partial.is_empty() {
            each(Line::Whole(&self.partial));
        }
        self.partial = Vec::new();
    }

    /// Keeps the start of a line whose end is in a later chunk.
    fn keep(&mut self, tail: &[u8]) {
        if self.oversized || tail.is_empty() {
            return;
        }
        if self.partial.len() + tail.len() > MAX_LINE {
            self.oversized = true;
            self.keep_head(tail);
        } else {
            self.partial.extend_from_slice(tail);
        }
    }

    /// Keeps only the head of the line being gathered (with `more` after
    /// what it has) and gives the rest of the memory back.
    fn keep_head(&mut self, more: &[u8]) {
        let missing = TOO_LONG_HEAD.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&more[..missing.min(more.len())]);
        self.partial.truncate(TOO_LONG_HEAD);
        self.partial.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        let mut splitter = LineSplitter::default();
        let mut out = Vec::new();
        let mut take = |line: Line<'_>| {
            out.push(match line {
                Line::Whole(l) => Some(l.to_vec()),
                Line::TooLong { head } => {
                    assert!(head.starts_with(b"startxxxxx"));
                    assert_eq!(head.len(), TOO_LONG_HEAD);
                    None
                }
            })
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut take);
        }
        splitter.finish(&mut take);
        out
    }

    #[test]
    fn lines_split_anywhere_come_out_whole() {
        let text = b"one\ntwo \xc3\xa9\n\nthree";
        let whole = lines_of(&[text]);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(lines_of(&bytes), whole);
        assert_eq!(
            whole,
            vec![
                Some(b"one".to_vec()),
                Some("two é".as_bytes().to_vec()),
                Some(Vec::new()),
                Some(b"three".to_vec())
            ]
        );
    }

    #[test]
    fn a_line_past_the_limit_is_passed_over_and_the_next_one_read() {
        let big = vec![b'x'; 1024 * 1024];
        let mut chunks: Vec<&[u8]> = vec![b"first\nstart"];
        chunks.extend(std::iter::repeat_n(&big[..], 17));
        chunks.push(b"end\nnext\n");
        let lines = lines_of(&chunks);
        assert_eq!(
            lines,
            vec![Some(b"first".to_vec()), None, Some(b"next".to_vec())]
        );
    }
}
