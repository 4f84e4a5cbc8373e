//! Streaming a job's stdout and stderr: each pipe on a task of its own,
//! its chunks sent as output, `::progress::` lines picked out, an agent
//! job's stdout fed to its format's reader (updates sent as they come
//! due), and the `result` lines that end an agent's turns counted for its
//! stdin (`stdin_feed.rs`).

use super::{EventSink, JobEvent, CHUNK};
use crate::run_reader::RunReader;
use aam_protocol::messages::AttemptRef;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line examined for a `::progress::` marker.
const MAX_PROGRESS_LINE: usize = 4096;

/// Parses `::progress:: 40 running unit tests` (percent 0-100, message optional).
pub fn parse_progress(line: &[u8]) -> Option<(u8, Option<String>)> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let rest = text.strip_prefix("::progress::")?.trim_start();
    let (number, message) = match rest.split_once(char::is_whitespace) {
        Some((n, m)) => (n, Some(m.trim().to_string()).filter(|m| !m.is_empty())),
        None => (rest, None),
    };
    let percent: f64 = number.trim_end_matches('%').parse().ok()?;
    if !(0.0..=100.0).contains(&percent) {
        return None;
    }
    Some((percent.round() as u8, message))
}

/// Starts streaming the job's stdout and stderr, each on a task of its
/// own; an agent's reader reads stdout only (its stderr is the CLI's logs).
pub(super) fn start_pumps(
    child: &mut crate::leader::Leader,
    attempt: AttemptRef,
    sink: &impl EventSink,
    last_output: &Rc<Cell<Instant>>,
    run_reader: &Option<Rc<RefCell<RunReader>>>,
    turns: &Option<Rc<crate::stdin_feed::TurnEnds>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    [
        child.stdout.take().map(|s| {
            (
                Box::new(s) as Box<dyn AsyncRead + Unpin>,
                run_reader.clone(),
                turns.clone(),
            )
        }),
        child
            .stderr
            .take()
            .map(|s| (Box::new(s) as Box<dyn AsyncRead + Unpin>, None, None)),
    ]
    .into_iter()
    .flatten()
    .map(|(pipe, reader, turns)| {
        let pump = pump(
            pipe,
            attempt,
            sink.clone(),
            last_output.clone(),
            reader,
            turns,
        );
        tokio::task::spawn_local(pump)
    })
    .collect()
}

pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Streams one pipe of the job: its chunks as output, the `::progress::`
/// lines in them, and (stdout of an agent job) the run they tell, as its
/// updates come due.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    attempt: AttemptRef,
    sink: impl EventSink,
    last_output: Rc<Cell<Instant>>,
    run_reader: Option<Rc<RefCell<RunReader>>>,
    turns: Option<Rc<crate::stdin_feed::TurnEnds>>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut progress = ProgressLines::default();
    loop {
        let due = run_reader.as_ref().and_then(|r| r.borrow().due_at());
        let n = tokio::select! {
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // The agent went quiet after a change the throttle held back.
            _ = sleep_until(due.map(tokio::time::Instant::from_std)) => {
                send_agent_update(&run_reader, attempt, &sink).await;
                continue;
            }
        };
        last_output.set(Instant::now());
        let data = &buf[..n];
        // Progress lines are picked out; they stay in the output too.
        let (found, turns_ended) = progress.scan(data);
        if let Some(turns) = &turns {
            (0..turns_ended).for_each(|_| turns.ended_one());
        }
        for (percent, message) in found {
            let event = JobEvent::Progress {
                attempt,
                percent,
                message,
            };
            sink.send(event).await;
        }
        if let Some(reader) = &run_reader {
            reader.borrow_mut().feed(data);
        }
        let data = data.to_vec();
        sink.send(JobEvent::Output { attempt, data }).await;
        send_agent_update(&run_reader, attempt, &sink).await;
    }
}

/// Sends the agent's run if an update is due.
async fn send_agent_update(
    run_reader: &Option<Rc<RefCell<RunReader>>>,
    attempt: AttemptRef,
    sink: &impl EventSink,
) {
    let update = run_reader
        .as_ref()
        .and_then(|r| r.borrow_mut().update(Instant::now()));
    if let Some(run) = update {
        sink.send(JobEvent::AgentUpdate { attempt, run }).await;
    }
}

/// Finds `::progress::` lines in output fed in chunks.
#[derive(Default)]
pub(super) struct ProgressLines {
    /// The start of a line whose end has not come yet (dropped past
    /// `MAX_PROGRESS_LINE`: such a line is no progress line).
    line: Vec<u8>,
    /// The first bytes of the current line, however long it grows (an
    /// agent's `result` line ends a turn: `stdin_feed::ends_turn`).
    head: Vec<u8>,
}

/// Bytes of a line's start kept to tell a `result` line.
const LINE_HEAD: usize = 16;

impl ProgressLines {
    /// The progress lines `data` completes, and how many of the lines it
    /// completes end an agent's turn.
    pub(super) fn scan(&mut self, data: &[u8]) -> (Vec<(u8, Option<String>)>, u32) {
        let mut found = Vec::new();
        let mut turns = 0;
        let mut pieces = data.split(|&b| b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            // Every piece but the last was followed by a newline.
            let complete = pieces.peek().is_some();
            if self.line.len() + piece.len() <= MAX_PROGRESS_LINE {
                self.line.extend_from_slice(piece);
            } else {
                self.line.clear();
            }
            let room = LINE_HEAD.saturating_sub(self.head.len());
            self.head.extend_from_slice(&piece[..piece.len().min(room)]);
            if complete {
                found.extend(parse_progress(&self.line));
                turns += crate::stdin_feed::ends_turn(&self.head) as u32;
                self.line.clear();
                self.head.clear();
            }
        }
        (found, turns)
    }
}
