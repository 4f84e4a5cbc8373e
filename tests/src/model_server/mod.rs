//! A stand-in for the Anthropic Messages API, so tests can run the real
//! Claude Code CLI (`ANTHROPIC_BASE_URL=` [`ModelServer::url`]) with
//! replies they script: text, thinking and tool calls (streamed as SSE when
//! the request asks for a stream, one JSON message otherwise; a tool call
//! may name a file under the asking agent's working directory, which the
//! test need not know: [`Message::write_file_in_cwd`]), usage figures
//! of their choosing (so the cost the CLI computes is known), 429s with a
//! reset time, 529s, error bodies, and streams held open until released.
//!
//! A test adds rules, tried in the order they were added: the first rule
//! whose [`When`] matches a Messages request, and that has uses left,
//! answers it. (Other requests, such as the CLI's `HEAD /` reachability
//! check, get an empty `200`.)
//! A request no rule answers gets a 500 naming the problem and is kept in
//! [`ModelServer::unanswered`], so a test can tell a missing rule from a
//! fault of the code under test. Every request is kept
//! ([`ModelServer::requests`]) for the test to inspect.
//!
//! The server is a small HTTP/1.1 server on 127.0.0.1 (std::net, a thread
//! per connection, keep-alive), in the test process. Dropping it stops it
//! and joins every thread it started.
//!
//! What Claude Code 2.1 sends: only `POST /v1/messages?beta=true`, `stream:
//! true`, the whole conversation in `messages` each time (user messages are
//! lists of blocks: `<system-reminder>` texts, the prompt, `tool_result`s;
//! `role: "system"` messages may sit between them).
//!
//! Its parts: `request` (a [`Request`] received), `when` (which requests a
//! rule answers), `reply` (the [`Message`] builder and the other
//! [`Reply`]s), `server` (the [`ModelServer`], its rules and threads),
//! `connection` (one keep-alive HTTP/1.1 connection) and `encode` (a
//! message as one JSON body or as server-sent events).

mod connection;
mod encode;
mod reply;
mod request;
mod server;
mod when;

pub use reply::{epoch_secs, Block, Message, Reply, Usage, CWD};
pub use request::Request;
pub use server::ModelServer;
pub use when::When;

use std::time::Duration;

/// How often an idle connection checks whether the server is stopping,
/// and how often a held stream sends a `ping` event.
const TICK: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests;
