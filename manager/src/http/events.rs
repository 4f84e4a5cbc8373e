//! `GET /api/events[?session=ID]`: server-sent events, one `event:
//! session` with a `summary_json` on every change of a session (of that
//! one session with `?session=`, which first gets it as it is), and a `:
//! keepalive` comment every 15 s.
//!
//! The stream is fed by a `Subscribe` to the scheduler through a bounded
//! channel (`SUBSCRIBER_BACKLOG`): the scheduler never waits for a client,
//! and drops one that falls that far behind (its stream ends; an
//! EventSource reconnects by itself). A stream writes at most every
//! `MIN_GAP` (the first change after a quiet spell at once); the updates
//! that arrive meanwhile are coalesced, only the latest of each session
//! written: a page needs no more than that, and a busy manager (a thousand
//! jobs a second) then costs each client tens of small writes a second,
//! not thousands.

use super::api::ApiError;
use super::Http;
use crate::scheduler::{Subscribe, SUBSCRIBER_BACKLOG};
use aam_protocol::json::summary_json;
use aam_protocol::model::SessionSummary;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often an idle stream says it is alive (proxies close silent ones).
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Least time between two writes of a stream.
pub const MIN_GAP: Duration = Duration::from_millis(100);

#[derive(serde::Deserialize)]
pub struct EventsQuery {
    session: Option<String>,
}

pub async fn events(
    http: web::Data<Http>,
    who: web::ReqData<super::auth::Caller>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    // Events are a read (a watch): refused to a token that may not read.
    let who = &who.0;
    if !who.grant.allows(crate::access::Action::Read("watch")) {
        let message = crate::access::denied(&who.name, &who.grant);
        return Err(ApiError::new(StatusCode::FORBIDDEN, message));
    }
    let session = match &query.session {
        Some(text) => Some(
            text.parse()
                .map_err(|_| ApiError::bad(format!("'{text}' is not a session id (like s42)")))?,
        ),
        None => None,
    };
    let (updates, received) = mpsc::channel(SUBSCRIBER_BACKLOG);
    let subscribed = http
        .shared
        .scheduler
        .send(Subscribe { session, updates })
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the manager is shutting down",
            )
        })?;
    subscribed.map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Tells a proxy in front (nginx) not to hold events back.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream(received, http.stopping.clone(), KEEPALIVE, MIN_GAP)))
}

/// One `event: session` frame.
pub fn frame(summary: &SessionSummary) -> String {
    format!("event: session\ndata: {}\n\n", summary_json(summary))
}

/// Puts `summary` into `batch`, replacing an older update of its session.
fn coalesce(batch: &mut Vec<SessionSummary>, summary: SessionSummary) {
    match batch.iter_mut().find(|s| s.id == summary.id) {
        Some(older) => *older = summary,
        None => batch.push(summary),
    }
}

/// A stream's state between two writes.
struct Feed {
    received: mpsc::Receiver<SessionSummary>,
    keepalive: tokio::time::Interval,
    stopping: CancellationToken,
    gap: Duration,
    /// When it last wrote updates.
    last: Option<tokio::time::Instant>,
    first: Option<Bytes>,
}

impl Feed {
    /// The next bytes to write; None when the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let next = tokio::select! {
            _ = self.stopping.cancelled() => return None,
            next = self.received.recv() => next?,
            _ = self.keepalive.tick() => return Some(Bytes::from_static(b": keepalive\n\n")),
        };
        // Too soon after the last write: gather what comes until the gap is over.
        if let Some(due) = self.last.map(|last| last + self.gap) {
            tokio::select! {
                _ = self.stopping.cancelled() => return None,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        let mut batch = vec![next];
        while let Ok(summary) = self.received.try_recv() {
            coalesce(&mut batch, summary);
        }
        self.last = Some(tokio::time::Instant::now());
        self.keepalive.reset();
        Some(Bytes::from(batch.iter().map(frame).collect::<String>()))
    }
}

/// The bytes of the stream: a first comment (the subscription is in
/// place), then updates (at most every `gap`) and keepalives (every
/// `every` while idle) until the scheduler drops the subscriber or the
/// server stops.
fn stream(
    received: mpsc::Receiver<SessionSummary>,
    stopping: CancellationToken,
    every: Duration,
    gap: Duration,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let feed = Feed {
        received,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        stopping,
        gap,
        last: None,
        first: Some(Bytes::from_static(b": subscribed\n\n")),
    };
    futures::stream::unfold(feed, |mut feed| async move {
        let bytes = feed.next().await?;
        Some((Ok(bytes), feed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::model::SessionStatus;
    use aam_protocol::SessionId;
    use futures::StreamExt;

    fn summary(id: u64, done: u32) -> SessionSummary {
        let mut counts = [0; 8];
        counts[3] = done;
        SessionSummary {
            id: SessionId(id),
            name: "x".into(),
            status: SessionStatus::Running,
            created_at_ms: 0,
            finished_at_ms: None,
            counts,
            total: 9,
            cost_usd: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            needs_input: 0,
            waiting_for_input: 0,
        }
    }

    fn text(bytes: Option<Result<Bytes, Infallible>>) -> String {
        String::from_utf8(bytes.unwrap().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn updates_waiting_are_written_latest_only_and_the_stream_ends_with_its_channel() {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BACKLOG);
        let stop = CancellationToken::new();
        let mut s = Box::pin(stream(rx, stop.clone(), KEEPALIVE, MIN_GAP));
        assert_eq!(text(s.next().await), ": subscribed\n\n");
        tx.try_send(summary(1, 0)).unwrap();
        // The first change after a quiet spell is written at once.
        let written = text(s.next().await);
        assert_eq!(written, frame(&summary(1, 0)));
        assert!(written.starts_with("event: session\ndata: {\"cost_usd\""));
        // What comes within the gap is written together, latest only.
        let sent = tokio::time::Instant::now();
        for (id, done) in [(1, 1), (2, 1), (1, 2)] {
            tx.try_send(summary(id, done)).unwrap();
        }
        let written = text(s.next().await);
        assert!(sent.elapsed() >= MIN_GAP / 2, "{:?}", sent.elapsed());
        assert_eq!(written, frame(&summary(1, 2)) + &frame(&summary(2, 1)));
        // The scheduler dropped the subscriber: the stream ends.
        drop(tx);
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn an_idle_stream_keeps_alive_and_ends_when_the_server_stops() {
        let (_tx, rx) = mpsc::channel(SUBSCRIBER_BACKLOG);
        let stop = CancellationToken::new();
        let every = Duration::from_millis(20);
        let mut s = Box::pin(stream(rx, stop.clone(), every, MIN_GAP));
        assert_eq!(text(s.next().await), ": subscribed\n\n");
        assert_eq!(text(s.next().await), ": keepalive\n\n");
        stop.cancel();
        assert!(s.next().await.is_none());
    }
}
