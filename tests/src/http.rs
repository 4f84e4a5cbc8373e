//! A small HTTPS client for the manager's HTTP API in tests and benches
//! (ureq, blocking: no runtime to start; it trusts exactly the certificate
//! the manager at the URL's address made, `crate::tls`): requests that return
//! their status, headers and body whatever the status, and an event-stream
//! reader that reads `/api/events` on a thread and hands its events over
//! with a deadline.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One answer, whatever its status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// Asserts the status, showing the whole answer when it is wrong.
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        self
    }
}

/// The address (host:port) of an `https://` URL.
fn authority(url: &str) -> &str {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

fn agent(url: &str) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(crate::tls::ureq_tls(authority(url)))
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn reply(response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), value)
        })
        .collect();
    let body = response
        .into_body()
        .into_with_config()
        .limit(256 * 1024 * 1024)
        .read_to_string()
        .expect("reading a response body");
    Reply {
        status,
        headers,
        body,
    }
}

/// `GET url` with these headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = agent(url).get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    reply(request.call().unwrap_or_else(|e| panic!("GET {url}: {e}")))
}

/// `POST url` with these headers and body.
pub fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut request = agent(url).post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let sent = request.send(body.as_bytes());
    reply(sent.unwrap_or_else(|e| panic!("POST {url}: {e}")))
}

/// The `Authorization` header of `token`.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// One server-sent event (or comment: `event` "comment").
#[derive(Clone, Debug)]
pub struct Event {
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {self:?}"))
    }
}

/// What an event stream gave within a wait.
#[derive(Debug)]
pub enum Next {
    Event(Event),
    /// Nothing yet.
    Nothing,
    /// The server ended the stream (or the connection broke).
    Ended,
}

/// An open event stream, read on a thread of its own until the server
/// ends it (the thread ends with the connection).
pub struct Events {
    received: mpsc::Receiver<Event>,
}

impl Events {
    /// Opens `url` (`/api/events...`) with these headers; panics unless the
    /// server answers 200 with an event stream.
    pub fn open(url: &str, headers: &[(&str, &str)]) -> Events {
        // No overall deadline: the stream lasts as long as the test wants.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(crate::tls::ureq_tls(authority(url)))
            .build()
            .into();
        let mut request = agent.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        assert_eq!(status, 200, "GET {url}: {}", reply(response).body);
        let reader = BufReader::new(response.into_body().into_reader());
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || read_events(reader, tx));
        Events { received }
    }

    /// The next event or comment, or None when `timeout` passes first or
    /// the stream has ended.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        self.received.recv_timeout(timeout).ok()
    }

    /// The next event or comment within `timeout`, saying whether the
    /// stream ended.
    pub fn wait(&self, timeout: Duration) -> Next {
        match self.received.recv_timeout(timeout) {
            Ok(event) => Next::Event(event),
            Err(mpsc::RecvTimeoutError::Timeout) => Next::Nothing,
            Err(mpsc::RecvTimeoutError::Disconnected) => Next::Ended,
        }
    }

    /// The first event for which `want` holds within `timeout`, skipping
    /// others; None when the time is up or the stream ended first.
    pub fn find(&self, timeout: Duration, mut want: impl FnMut(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self.next(left)?;
            if want(&event) {
                return Some(event);
            }
        }
    }

    /// Whether the server ended the stream within `timeout` (events still
    /// waiting are skipped).
    pub fn ended_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match self.received.recv_timeout(left) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

/// Parses the stream into events until it ends or nobody listens.
fn read_events(reader: impl BufRead, tx: mpsc::Sender<Event>) {
    let mut event = String::new();
    let mut data = Vec::new();
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let sent = if let Some(comment) = line.strip_prefix(':') {
            tx.send(Event {
                event: "comment".into(),
                data: comment.trim().to_string(),
            })
        } else if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
            Ok(())
        } else if let Some(text) = line.strip_prefix("data:") {
            data.push(text.trim_start().to_string());
            Ok(())
        } else if line.is_empty() && !data.is_empty() {
            tx.send(Event {
                event: std::mem::take(&mut event),
                data: std::mem::take(&mut data).join("\n"),
            })
        } else {
            Ok(())
        };
        if sent.is_err() {
            return;
        }
    }
}
