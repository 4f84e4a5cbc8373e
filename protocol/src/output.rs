//! Bounded capture of a job's output: keep the head and the tail, mark the cut.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Default bytes kept per job (1 MiB).
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;

/// A job's output, capped at `cap` bytes: the first half and the last half are
/// kept, and the bytes between are counted and replaced by one marker line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputCapture {
    cap: usize,
    #[serde(with = "serde_bytes")]
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl OutputCapture {
    pub fn new(cap: usize) -> Self {
        OutputCapture {
            cap: cap.max(2),
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    /// A capture from its parts as a peer may send them: nothing is
    /// checked. A receiver keeps only what `rebuild` makes of it.
    pub fn from_parts(cap: usize, head: Vec<u8>, tail: Vec<u8>, total: u64) -> Self {
        OutputCapture {
            cap,
            head,
            tail: tail.into(),
            total,
        }
    }

    /// What a capture with our own `cap` holds of a received one, whatever
    /// its cap, sizes and total claim: its head and tail pushed again, with
    /// the bytes it says it cut between them counted (never fewer than
    /// zero, nor more than a u64 holds).
    pub fn rebuild(received: &OutputCapture, cap: usize) -> OutputCapture {
        let mut out = OutputCapture::new(cap);
        out.push(&received.head);
        let kept = received.head.len() as u64 + received.tail.len() as u64;
        out.skip(received.total.saturating_sub(kept));
        let (front, back) = received.tail.as_slices();
        out.push(front);
        out.push(back);
        out
    }

    /// Bytes the job printed in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts `n` bytes printed and not kept: what the tail held is now
    /// before a cut.
    fn skip(&mut self, n: u64) {
        if n > 0 {
            self.total = self.total.saturating_add(n);
            self.tail.clear();
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total = self.total.saturating_add(data.len() as u64);
        let head_cap = self.cap / 2;
        if self.head.len() < head_cap {
            let take = data.len().min(head_cap - self.head.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        let tail_cap = self.cap - head_cap;
        if data.len() >= tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - tail_cap..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// What was printed from byte offset `from` on (offsets count every byte
    /// printed), with a marker for any part of that range that was cut.
    pub fn since(&self, from: u64) -> Vec<u8> {
        let head_len = self.head.len() as u64;
        // Saturating: a capture read from a peer or the store may be inconsistent.
        let tail_start = self.total.saturating_sub(self.tail.len() as u64);
        let mut at = from;
        let mut out = Vec::new();
        if at < head_len {
            out.extend_from_slice(&self.head[at as usize..]);
            at = head_len;
        }
        if at < tail_start {
            out.extend_from_slice(omission_marker(tail_start - at).as_bytes());
            at = tail_start;
        }
        if at < self.total {
            let skip = ((at - tail_start) as usize).min(self.tail.len());
            out.extend(self.tail.range(skip..));
        }
        out
    }

    /// Bytes dropped between head and tail.
    pub fn omitted(&self) -> u64 {
        self.total
            .saturating_sub(self.head.len() as u64)
            .saturating_sub(self.tail.len() as u64)
    }

    /// The kept output, with a marker line where bytes were cut.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.tail.len() + 64);
        out.extend_from_slice(&self.head);
        let omitted = self.omitted();
        if omitted > 0 {
            out.extend_from_slice(omission_marker(omitted).as_bytes());
        }
        out.extend(self.tail.iter());
        out
    }
}

/// The line that stands for `n` cut bytes.
pub fn omission_marker(n: u64) -> String {
    format!("\n[aam: {n} bytes of output omitted]\n")
}

/// The last `max` bytes of a rendered output, starting at a line boundary when one is near.
pub fn tail_of(output: &[u8], max: usize) -> &[u8] {
    if output.len() <= max {
        return output;
    }
    let start = output.len() - max;
    match output[start..].iter().position(|&b| b == b'\n') {
        Some(nl) if nl + 1 < max => &output[start + nl + 1..],
        _ => &output[start..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = OutputCapture::new(100);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.render(), b"hello world");
        assert_eq!(c.total(), 11);
    }

    #[test]
    fn large_output_keeps_head_and_tail_in_any_chunking() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 7, 64, 999, 10_000] {
            let mut c = OutputCapture::new(1000);
            for part in data.chunks(chunk) {
                c.push(part);
            }
            let mut expected = data[..500].to_vec();
            expected.extend_from_slice(omission_marker(9000).as_bytes());
            expected.extend_from_slice(&data[9500..]);
            assert_eq!(c.render(), expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn since_follows_offsets_across_the_cut() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut c = OutputCapture::new(20);
        c.push(&data[..5]);
        assert_eq!(c.since(0), &data[..5]);
        assert_eq!(c.since(3), &data[3..5]);
        c.push(&data[5..]);
        assert_eq!(c.since(95), &data[95..]);
        assert_eq!(c.since(100), b"");
        let mut expected = data[5..10].to_vec();
        expected.extend_from_slice(omission_marker(80).as_bytes());
        expected.extend_from_slice(&data[90..]);
        assert_eq!(c.since(5), expected);
        assert_eq!(c.since(0), c.render());
    }

    #[test]
    fn a_received_capture_is_rebuilt_with_our_cap_whatever_it_claims() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut theirs = OutputCapture::new(1000);
        theirs.push(&data);
        // Same cap: the same capture.
        assert_eq!(OutputCapture::rebuild(&theirs, 1000), theirs);
        // A forged cap and a head far past ours: cut to our cap.
        let forged = OutputCapture::from_parts(usize::MAX, vec![b'x'; 100_000], vec![], 3);
        let ours = OutputCapture::rebuild(&forged, 1000);
        assert!(ours.render().len() < 1100, "{}", ours.render().len());
        assert_eq!(ours.total(), 100_000);
        assert_eq!(ours.since(0), ours.render());
        // Totals that do not add up never underflow.
        let lying = OutputCapture::from_parts(10, b"head".to_vec(), b"tail".to_vec(), 0);
        assert_eq!(lying.since(0), b"head");
        assert_eq!(lying.omitted(), 0);
        let ours = OutputCapture::rebuild(&lying, 1000);
        assert_eq!((ours.render(), ours.total()), (b"headtail".to_vec(), 8));
        let huge = OutputCapture::from_parts(10, b"a".to_vec(), b"b".to_vec(), u64::MAX);
        let mut ours = OutputCapture::rebuild(&huge, 1000);
        ours.push(b"more");
        assert_eq!(ours.total(), u64::MAX);
    }

    #[test]
    fn tail_starts_at_a_line() {
        assert_eq!(tail_of(b"aaa\nbbb\nccc", 6), b"ccc");
        assert_eq!(tail_of(b"abc", 6), b"abc");
    }
}
