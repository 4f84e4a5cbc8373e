//! The running stand-in: its rules and the requests it kept (the script),
//! its acceptor thread and the connection threads it joins when dropped.

use super::connection::serve_connection;
use super::{Reply, Request, When};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

struct Rule {
    when: When,
    reply: Reply,
    /// None: any number of times.
    uses_left: Option<u32>,
}

#[derive(Default)]
pub(super) struct Script {
    rules: Vec<Rule>,
    pub(super) requests: Vec<Request>,
    pub(super) unanswered: Vec<Request>,
    pub(super) others: Vec<Request>,
}

impl Script {
    pub(super) fn answer(&mut self, request: &Request) -> Option<Reply> {
        let rule = self
            .rules
            .iter_mut()
            .find(|rule| rule.uses_left != Some(0) && rule.when.matches(request))?;
        if let Some(n) = &mut rule.uses_left {
            *n -= 1;
        }
        Some(rule.reply.clone())
    }
}

pub(super) struct Shared {
    pub(super) script: Mutex<Script>,
    stopping: AtomicBool,
    /// Set by `release`: held streams go on, later ones are not held.
    pub(super) released: AtomicBool,
    pub(super) message_ids: AtomicU64,
}

impl Shared {
    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// The running stand-in (see the documentation of [`model_server`](super)).
pub struct ModelServer {
    pub(super) addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl ModelServer {
    /// Starts a server on a free port of 127.0.0.1, with no rules yet.
    pub fn start() -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the model server");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            stopping: AtomicBool::new(false),
            released: AtomicBool::new(false),
            message_ids: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("model-server".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("starting the model server's thread");
        ModelServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// What `ANTHROPIC_BASE_URL` should be.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers every request `when` matches with `reply` (after the rules
    /// added before it).
    pub fn on(&self, when: When, reply: impl Into<Reply>) -> &ModelServer {
        self.add(when, reply.into(), None)
    }

    /// Answers the first request `when` matches with `reply`, then no more.
    pub fn once(&self, when: When, reply: impl Into<Reply>) -> &ModelServer {
        self.add(when, reply.into(), Some(1))
    }

    /// Answers the first `n` requests `when` matches with `reply`.
    pub fn times(&self, n: u32, when: When, reply: impl Into<Reply>) -> &ModelServer {
        self.add(when, reply.into(), Some(n))
    }

    fn add(&self, when: When, reply: Reply, uses_left: Option<u32>) -> &ModelServer {
        self.script().rules.push(Rule {
            when,
            reply,
            uses_left,
        });
        self
    }

    /// Every Messages API request (`POST /v1/messages`) received so far,
    /// in order.
    pub fn requests(&self) -> Vec<Request> {
        self.script().requests.clone()
    }

    /// The other requests received (answered `200` with no body: the CLI
    /// checks it can reach the server with `HEAD /`).
    pub fn other_requests(&self) -> Vec<Request> {
        self.script().others.clone()
    }

    /// Requests no rule answered (they got a 500).
    pub fn unanswered(&self) -> Vec<Request> {
        self.script().unanswered.clone()
    }

    /// Lets every stream held by [`Message::hold_after`](super::Message::hold_after) go on, and later
    /// ones pass without stopping (until [`ModelServer::hold`]).
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    /// Makes streams stop at their [`Message::hold_after`](super::Message::hold_after) point again.
    pub fn hold(&self) {
        self.shared.released.store(false, Ordering::SeqCst);
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        // A rule's matcher that panicked poisons the lock; the script is
        // still whole (it panicked before any change).
        self.shared
            .script
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let Ok(stream) = stream else { continue };
        connections.retain(|c| !c.is_finished());
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("model-server-conn".into())
            .spawn(move || {
                // A connection that fails mid-way (the CLI was killed) just ends.
                let _ = serve_connection(stream, &shared);
            });
        if let Ok(handle) = spawned {
            connections.push(handle);
        }
    }
    // Each connection thread sees `stopping` within a tick.
    for c in connections {
        let _ = c.join();
    }
}
