//! A [`Message`] as the Messages API sends it: one JSON message, or
//! server-sent events in chunked encoding (and a held stream's pings).

use super::server::Shared;
use super::{Block, Message, Request, TICK};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;

fn block_json(block: &Block, tool_id: &str) -> Value {
    match block {
        Block::Text(text) => json!({ "type": "text", "text": text }),
        Block::Thinking(text) => {
            json!({ "type": "thinking", "thinking": text, "signature": "stand-in" })
        }
        Block::ToolUse { name, input } => {
            json!({ "type": "tool_use", "id": tool_id, "name": name, "input": input })
        }
    }
}

/// The ids of one reply: its message and each tool call.
fn ids(shared: &Shared) -> (String, String) {
    let n = shared.message_ids.fetch_add(1, Ordering::SeqCst) + 1;
    (format!("msg_standin_{n}"), format!("toolu_standin_{n}"))
}

fn reply_model<'a>(message: &'a Message, request: &'a Request) -> &'a str {
    message.model.as_deref().unwrap_or(request.model())
}

/// A whole message, for a request that asked for no stream.
pub(super) fn message_json(message: &Message, request: &Request, shared: &Shared) -> Value {
    let (id, tool_id) = ids(shared);
    let content: Vec<Value> = message
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| block_json(b, &format!("{tool_id}_{i}")))
        .collect();
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": reply_model(message, request),
        "content": content,
        "stop_reason": message.stop_reason(),
        "stop_sequence": null,
        "usage": message.usage.json(message.usage.output),
    })
}

/// A message as server-sent events: `message_start`, each block's start,
/// deltas and stop, `message_delta` (stop reason, output tokens) and
/// `message_stop`, in chunked encoding.
pub(super) fn write_stream(
    w: &mut TcpStream,
    message: &Message,
    request: &Request,
    shared: &Shared,
) -> io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    )?;
    let (id, tool_id) = ids(shared);
    write_event(
        w,
        &json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": reply_model(message, request),
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": message.usage.json(1),
            },
        }),
    )?;
    for (index, block) in message.blocks.iter().enumerate() {
        if message.hold_after == Some(index) {
            hold(w, shared)?;
        }
        let tool_id = format!("{tool_id}_{index}");
        let (start, deltas) = match block {
            Block::Text(text) => (
                json!({ "type": "text", "text": "" }),
                vec![json!({ "type": "text_delta", "text": text })],
            ),
            Block::Thinking(text) => (
                json!({ "type": "thinking", "thinking": "", "signature": "" }),
                vec![
                    json!({ "type": "thinking_delta", "thinking": text }),
                    json!({ "type": "signature_delta", "signature": "stand-in" }),
                ],
            ),
            Block::ToolUse { name, input } => (
                json!({ "type": "tool_use", "id": tool_id, "name": name, "input": {} }),
                vec![json!({ "type": "input_json_delta", "partial_json": input.to_string() })],
            ),
        };
        write_event(
            w,
            &json!({ "type": "content_block_start", "index": index, "content_block": start }),
        )?;
        for delta in deltas {
            write_event(
                w,
                &json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            )?;
        }
        write_event(w, &json!({ "type": "content_block_stop", "index": index }))?;
    }
    if message.hold_after == Some(message.blocks.len()) {
        hold(w, shared)?;
    }
    write_event(
        w,
        &json!({
            "type": "message_delta",
            "delta": { "stop_reason": message.stop_reason(), "stop_sequence": null },
            "usage": { "output_tokens": message.usage.output },
        }),
    )?;
    write_event(w, &json!({ "type": "message_stop" }))?;
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// Keeps a stream open, sending `ping` events, until `release` is called,
/// the client goes away (a write fails) or the server stops.
fn hold(w: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    while !shared.released.load(Ordering::SeqCst) {
        if shared.stopping() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopping"));
        }
        write_event(w, &json!({ "type": "ping" }))?;
        std::thread::sleep(TICK);
    }
    Ok(())
}

/// One server-sent event (`event: TYPE`, `data: JSON`) as one chunk.
fn write_event(w: &mut TcpStream, event: &Value) -> io::Result<()> {
    let name = event["type"].as_str().unwrap_or("message");
    let text = format!("event: {name}\ndata: {event}\n\n");
    write!(w, "{:x}\r\n{text}\r\n", text.len())?;
    w.flush()
}
