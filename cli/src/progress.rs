//! Waiting for a session: a live progress bar on a terminal, plain lines
//! otherwise.

use crate::client::{Client, RECONNECT_FOR};
use crate::exit::{failed, is_lost};
use crate::render::counts_line;
use aam_protocol::model::{JobStatus, SessionSummary};
use aam_protocol::SessionId;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

enum Display {
    Bar(ProgressBar),
    Lines { last: Option<(u32, u32)> },
}

impl Display {
    fn new() -> Display {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            Display::Bar(bar)
        } else {
            Display::Lines { last: None }
        }
    }

    fn update(&mut self, s: &SessionSummary) {
        match self {
            Display::Bar(bar) => {
                bar.set_length(s.total as u64);
                bar.set_position(s.finished() as u64);
                bar.set_message(counts_line(s));
            }
            Display::Lines { last } => {
                let key = (s.finished(), s.count(JobStatus::Running));
                if *last != Some(key) {
                    *last = Some(key);
                    stderr_line!(
                        "{} {}: {}/{} finished ({})",
                        s.id,
                        s.status,
                        s.finished(),
                        s.total,
                        counts_line(s)
                    );
                }
            }
        }
    }

    /// A one-off message that does not disturb the bar.
    fn note(&self, text: &str) {
        match self {
            Display::Bar(bar) => bar.println(text),
            Display::Lines { .. } => stderr_line!("{text}"),
        }
    }

    fn finish(&self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

async fn reconnect(
    client: &mut Client,
    display: &mut Display,
    lost: &anyhow::Error,
    deadline: Option<tokio::time::Instant>,
) -> anyhow::Result<()> {
    display.note(&format!("{lost}; reconnecting"));
    let budget = tokio::time::Instant::now() + RECONNECT_FOR;
    client
        .reconnect(Some(deadline.map_or(budget, |d| d.min(budget))))
        .await
}

/// Follows a session until it ends (or `timeout` passes, exit 1). Rides
/// over a manager restart: it reconnects and watches again.
pub async fn wait(
    client: &mut Client,
    session: SessionId,
    timeout: Option<Duration>,
) -> anyhow::Result<SessionSummary> {
    // A timeout past what the clock can hold is no deadline at all.
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let timed_out = || {
        failed(format!(
            "{session} still running after {:?}",
            timeout.unwrap_or_default()
        ))
    };
    let mut display = Display::new();
    let mut watching = false;
    let result = loop {
        if !watching {
            match client.watch(session).await {
                Ok(()) => watching = true,
                Err(e) if is_lost(&e) => {
                    if let Err(e) = reconnect(client, &mut display, &e, deadline).await {
                        break Err(e);
                    }
                    continue;
                }
                Err(e) => break Err(e),
            }
        }
        let next = client.progress();
        let response = match deadline {
            Some(d) => match tokio::time::timeout_at(d, next).await {
                Ok(r) => r,
                Err(_) => break Err(timed_out()),
            },
            None => next.await,
        };
        match response {
            Ok(summary) => {
                display.update(&summary);
                if summary.status.is_terminal() {
                    break Ok(summary);
                }
            }
            Err(e) if is_lost(&e) => {
                if let Err(e) = reconnect(client, &mut display, &e, deadline).await {
                    break Err(
                        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            timed_out()
                        } else {
                            e
                        },
                    );
                }
                watching = false;
            }
            Err(e) => break Err(e),
        }
    };
    display.finish();
    if let Ok(s) = &result {
        stderr_line!("{} {}: {}", s.id, s.status, counts_line(s));
    }
    result
}
