//! One keep-alive HTTP/1.1 connection: reading each request, answering it
//! from the script, and the plain (non-streamed) responses.

use super::encode::{message_json, write_stream};
use super::server::Shared;
use super::{Reply, Request, TICK};
use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

/// Largest request body taken (Claude Code's first request is ~80 KB and
/// grows with the conversation).
const MAX_BODY: usize = 32 << 20;

/// Serves the requests of one keep-alive connection until the client closes
/// it or the server stops.
pub(super) fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        // Wait for the next request, checking now and then whether to stop.
        reader.get_ref().set_read_timeout(Some(TICK))?;
        loop {
            if shared.stopping() {
                return Ok(());
            }
            match reader.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let request = read_request(&mut reader)?;
        if !(request.method == "POST" && request.path.starts_with("/v1/messages")) {
            // The CLI checks it can reach the server (`HEAD /`) first.
            shared
                .script
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .others
                .push(request);
            write_empty(&mut writer)?;
            continue;
        }
        let reply = {
            let mut script = shared.script.lock().unwrap_or_else(|p| p.into_inner());
            script.requests.push(request.clone());
            let reply = script.answer(&request);
            if reply.is_none() {
                script.unanswered.push(request.clone());
            }
            reply
        };
        let reply = reply.unwrap_or_else(|| {
            Reply::error(
                500,
                "api_error",
                &format!(
                    "the stand-in model server has no rule for this request (last prompt: {:?})",
                    request.last_prompt()
                ),
            )
        });
        match reply {
            Reply::Error {
                status,
                headers,
                body,
            } => write_json(&mut writer, status, &headers, &body)?,
            Reply::Message(message) if request.is_stream() => {
                let message = message.for_request(&request);
                write_stream(&mut writer, &message, &request, shared)?
            }
            Reply::Message(message) => {
                let message = message.for_request(&request);
                let body = message_json(&message, &request, shared);
                write_json(&mut writer, 200, &[], &body)?
            }
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Request> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let path = parts.next().ok_or_else(|| bad("no path"))?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            return Err(bad("request body too large"));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Request {
        method,
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
        received_at: SystemTime::now(),
    })
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if body.len() + size > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut end = String::new();
        reader.read_line(&mut end)?;
        if size == 0 {
            return Ok(body);
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Error",
    }
}

fn write_json(
    w: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &Value,
) -> io::Result<()> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

fn write_empty(w: &mut TcpStream) -> io::Result<()> {
    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
    w.flush()
}
