//! Delivery, off the scheduler: one task per `[[notify]]` target, all on
//! an actix arbiter (a thread) of their own, so a slow or dead receiver
//! never holds up the scheduler. Each task sends its events in order, one
//! at a time: an HTTP POST (2xx is delivered) or a command run with the
//! event on stdin (exit 0 is delivered), each attempt under the target's
//! timeout, retried after a backoff that doubles, given up after
//! `max_attempts`. Events that arrive meanwhile wait in a bounded queue;
//! when it is full the oldest is dropped, with a log line and a count.
//! Whatever becomes of an event (delivered, given up, dropped), the
//! scheduler is told, and takes it out of the store's outbox.

use super::config::{Sink, Target};
use super::NoticeSettled;
use actix::prelude::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// One event for one target.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: u64,
    pub target: u64,
    pub event: Bytes,
}

/// The id receivers see (the event's `id`, and the `X-Aam-Event-Id` header).
pub fn event_id(seq: u64) -> String {
    format!("n{seq}")
}

/// The wait before attempt `attempt + 1`: `first`, doubled per attempt
/// made since, at most `max`.
pub fn retry_delay(attempt: u32, first: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max)
}

/// Most bytes of a failing command's stderr quoted in the log.
const STDERR_QUOTED: usize = 1024;

/// The running delivery tasks, by target fingerprint.
pub struct Notifier {
    senders: Vec<(u64, mpsc::UnboundedSender<Delivery>)>,
    /// Events dropped from full queues, per target (in config order).
    pub dropped: Vec<Arc<AtomicU64>>,
    arbiter: Arbiter,
}

impl Notifier {
    /// Starts a task per target on an arbiter of its own; each reports
    /// what became of its events to `settled`.
    pub fn start(targets: &[Target], settled: Recipient<NoticeSettled>) -> Notifier {
        let arbiter = Arbiter::new();
        let mut senders = Vec::new();
        let mut dropped = Vec::new();
        for target in targets {
            let (tx, rx) = mpsc::unbounded_channel();
            let count = Arc::new(AtomicU64::new(0));
            senders.push((target.fingerprint(), tx));
            dropped.push(count.clone());
            let task = Task {
                target: target.clone(),
                name: target.describe(),
                rx: Some(rx),
                waiting: VecDeque::new(),
                dropped: count,
                settled: settled.clone(),
            };
            // awc's client is not Send: the task is made on its thread.
            arbiter.spawn_fn(move || {
                actix::spawn(task.run());
            });
        }
        Notifier {
            senders,
            dropped,
            arbiter,
        }
    }

    /// Hands each delivery to its target's task.
    pub fn deliver(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if let Some((_, tx)) = self.senders.iter().find(|(fp, _)| *fp == d.target) {
                let _ = tx.send(d);
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.arbiter.stop();
    }
}

/// One target's delivery loop.
struct Task {
    target: Target,
    name: String,
    /// None once the scheduler is gone.
    rx: Option<mpsc::UnboundedReceiver<Delivery>>,
    waiting: VecDeque<Delivery>,
    dropped: Arc<AtomicU64>,
    settled: Recipient<NoticeSettled>,
}

impl Task {
    async fn run(mut self) {
        let client = awc::Client::builder()
            .timeout(self.target.timeout)
            .disable_redirects()
            .finish();
        loop {
            let Some(next) = self.next().await else {
                return;
            };
            self.deliver(&client, next).await;
        }
    }

    /// The oldest waiting event, waiting for one if need be; None once the
    /// scheduler is gone and nothing waits.
    async fn next(&mut self) -> Option<Delivery> {
        while self.waiting.is_empty() {
            match self.rx.as_mut()?.recv().await {
                Some(d) => self.push(d),
                None => self.rx = None,
            }
        }
        self.waiting.pop_front()
    }

    /// Queues an event; a full queue drops its oldest.
    fn push(&mut self, d: Delivery) {
        if self.waiting.len() >= self.target.queue {
            if let Some(old) = self.waiting.pop_front() {
                let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(target_name = %self.name, id = %event_id(old.seq), dropped_so_far = total,
                    queue = self.target.queue,
                    "notification queue full: dropping its oldest event");
                self.settle(&old);
            }
        }
        self.waiting.push_back(d);
    }

    fn settle(&self, d: &Delivery) {
        self.settled.do_send(NoticeSettled {
            seq: d.seq,
            target: d.target,
        });
    }

    /// Runs `work` to its end while taking in the events that arrive.
    async fn meanwhile<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            let Some(rx) = self.rx.as_mut() else {
                return work.await;
            };
            tokio::select! {
                biased;
                out = &mut work => return out,
                d = rx.recv() => match d {
                    Some(d) => self.push(d),
                    None => self.rx = None,
                },
            }
        }
    }

    /// Attempts one event until it is delivered or given up.
    async fn deliver(&mut self, client: &awc::Client, d: Delivery) {
        let id = event_id(d.seq);
        let sink = self.target.sink.clone();
        let mut attempt = 1;
        loop {
            let sent = match &sink {
                Sink::Url(url) => {
                    let post = post(client, url, &id, d.event.clone());
                    self.meanwhile(post).await
                }
                Sink::Command(argv) => {
                    let run = run_command(argv.clone(), d.event.clone(), self.target.timeout);
                    self.meanwhile(run).await
                }
            };
            match sent {
                Ok(()) => {
                    // Told first: once this line shows, the scheduler has it.
                    self.settle(&d);
                    tracing::info!(target_name = %self.name, id = %id, attempt, "notification delivered");
                    return;
                }
                Err(why) if attempt >= self.target.max_attempts => {
                    self.settle(&d);
                    tracing::error!(target_name = %self.name, id = %id, attempts = attempt,
                        "notification given up: {why}");
                    return;
                }
                Err(why) => {
                    let wait = retry_delay(attempt, self.target.backoff, self.target.backoff_max);
                    tracing::warn!(target_name = %self.name, id = %id, attempt, retry_in = ?wait,
                        "notification not delivered: {why}");
                    self.meanwhile(tokio::time::sleep(wait)).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// POSTs the event; a 2xx answer is delivery.
async fn post(client: &awc::Client, url: &str, id: &str, event: Bytes) -> Result<(), String> {
    let answer = client
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-Aam-Event-Id", id))
        .send_body(event)
        .await
        .map_err(|e| e.to_string())?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", answer.status()))
    }
}

/// Runs `argv` (no shell) in a process group of its own with the event on
/// stdin; exit 0 within `timeout` is delivery. Past the timeout the whole
/// group is killed.
async fn run_command(argv: Vec<String>, event: Bytes, timeout: Duration) -> Result<(), String> {
    let mut child = crate::cpu_policy::command(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let work = async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its stdin is its own business.
            let _ = stdin.write_all(&event).await;
        }
        let mut quoted = Vec::new();
        if let Some(mut stderr) = stderr {
            let _ = (&mut stderr)
                .take(STDERR_QUOTED as u64)
                .read_to_end(&mut quoted)
                .await;
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        }
        (child.wait().await, quoted)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: a signal to the process group this call made.
                unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            }
            Err(format!("{} did not finish within {timeout:?}", argv[0]))
        }
        Ok((Err(e), _)) => Err(format!("waiting for {}: {e}", argv[0])),
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), quoted)) => Err(format!(
            "{} ended with {status}: {}",
            argv[0],
            String::from_utf8_lossy(&quoted).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let (s, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=8).map(|a| retry_delay(a, s, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_delay(200, s, max), max, "no overflow");
    }

    #[actix::test]
    async fn a_command_gets_the_event_on_stdin_and_its_exit_code_counts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("got");
        let argv = |script: &str| vec!["sh".into(), "-c".into(), script.to_string()];
        let write = format!("cat > '{}'", file.display());
        let event = Bytes::from_static(b"{\"id\":\"n1\"}");
        let long = Duration::from_secs(10);
        run_command(argv(&write), event.clone(), long)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), &event[..]);
        let e = run_command(argv("echo nope >&2; exit 3"), event.clone(), long)
            .await
            .unwrap_err();
        assert!(e.contains("exit status: 3") && e.contains("nope"), "{e}");
        let e = run_command(argv("sleep 30"), event.clone(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
        let e = run_command(vec!["/no/such/program".into()], event, long)
            .await
            .unwrap_err();
        assert!(e.contains("cannot start /no/such/program"), "{e}");
    }
}
