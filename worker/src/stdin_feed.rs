//! The stdin of an agent that takes input (issue 16, `aam say`): its
//! prompt as the first stream-json message, then each message said to it,
//! in order and once (a `seq` it had is skipped), each also written to
//! the job's log with who said it. When the agent has answered everything
//! (a `result` line per message) and nothing more is queued, it lingers
//! (`linger_ms`, telling the manager it waits for input) and then its
//! stdin is closed, which ends it.

use crate::child::{EventSink, JobEvent};
use aam_protocol::messages::AttemptRef;
use aam_protocol::say::{input_line, AgentInput, SaidMessage};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;

/// The agent's answered turns, counted from its stdout's `result` lines.
#[derive(Default)]
pub struct TurnEnds {
    count: Cell<u32>,
    notify: Notify,
}

impl TurnEnds {
    pub fn ended_one(&self) {
        self.count.set(self.count.get() + 1);
        self.notify.notify_one();
    }

    pub fn count(&self) -> u32 {
        self.count.get()
    }
}

/// Whether a complete stdout line of a stream-json agent ends a turn,
/// from its first bytes (`{"type":"result"`).
pub fn ends_turn(line_start: &[u8]) -> bool {
    line_start.starts_with(b"{\"type\":\"result\"")
}

/// Feeds the agent's stdin until it has nothing more to say to it, then
/// closes it (by returning). Runs on the job's `LocalSet`.
pub async fn feed<S: EventSink>(
    mut stdin: tokio::net::unix::pipe::Sender,
    input: AgentInput,
    mut said: UnboundedReceiver<SaidMessage>,
    turns: Rc<TurnEnds>,
    sink: S,
    attempt: AttemptRef,
) {
    let mut written = 0u32;
    let mut last_seq = 0u32;
    if !input.prompt.is_empty() {
        if stdin
            .write_all(input_line(&input.prompt).as_bytes())
            .await
            .is_err()
        {
            return;
        }
        written += 1;
    }
    // What was said before this attempt started and never given.
    for message in input.said {
        if !give(&mut stdin, &message, &mut last_seq, &sink, attempt).await {
            return;
        }
        written += 1;
    }
    if last_seq > 0 {
        tell(&sink, attempt, last_seq, false).await;
    }
    let linger = Duration::from_millis(input.linger_ms);
    // Set while the agent has answered everything and waits for more.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut channel_open = true;
    loop {
        let answered = turns.count() >= written;
        if answered && deadline.is_none() {
            if linger.is_zero() {
                return;
            }
            deadline = Some(tokio::time::Instant::now() + linger);
            tell(&sink, attempt, last_seq, true).await;
        }
        tokio::select! {
            message = said.recv(), if channel_open => {
                let Some(message) = message else {
                    // The worker dropped the job's channel: nothing more
                    // comes (and a closed channel is not polled again,
                    // which would spin).
                    channel_open = false;
                    if answered { return; }
                    continue;
                };
                if message.seq <= last_seq {
                    continue;
                }
                if !give(&mut stdin, &message, &mut last_seq, &sink, attempt).await {
                    return;
                }
                written += 1;
                deadline = None;
                tell(&sink, attempt, last_seq, false).await;
            }
            _ = turns.notify.notified() => {}
            _ = sleep_until(deadline) => return,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one message to the agent, and a line saying so to the job's log.
async fn give<S: EventSink>(
    stdin: &mut tokio::net::unix::pipe::Sender,
    message: &SaidMessage,
    last_seq: &mut u32,
    sink: &S,
    attempt: AttemptRef,
) -> bool {
    if stdin
        .write_all(input_line(&message.text).as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    *last_seq = message.seq;
    let shown = format!("[aam: {} said: {}]\n", message.from, message.text);
    let data = shown.into_bytes();
    sink.send(JobEvent::Output { attempt, data }).await;
    true
}

async fn tell<S: EventSink>(sink: &S, attempt: AttemptRef, delivered: u32, waiting: bool) {
    let event = JobEvent::InputState {
        attempt,
        delivered,
        waiting,
    };
    sink.send(event).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_result_line_ends_a_turn() {
        assert!(super::ends_turn(
            b"{\"type\":\"result\",\"subtype\":\"success\""
        ));
        assert!(!super::ends_turn(b"{\"type\":\"assistant\""));
        assert!(!super::ends_turn(b"result"));
    }
}
