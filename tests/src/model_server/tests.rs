//! The stand-in's own tests, over a socket as Claude Code talks to it.

use super::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

/// A keep-alive HTTP/1.1 client of just what these tests need.
struct Client {
    reader: BufReader<TcpStream>,
}

/// A response: status, headers (lower-case names) and body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The `data` of each server-sent event, checked against its
    /// `event` name.
    fn events(&self) -> Vec<Value> {
        let text = String::from_utf8(self.body.clone()).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(name.strip_prefix("event: ").unwrap(), data["type"]);
                data
            })
            .collect()
    }
}

impl Client {
    fn connect(server: &ModelServer) -> Client {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, method: &str, path: &str, body: &Value) -> Response {
        let body = body.to_string();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        self.read_response()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn read_response(&mut self) -> Response {
        let status = self.line().split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line(), 16).unwrap();
                let mut chunk = vec![0; size];
                self.reader.read_exact(&mut chunk).unwrap();
                self.line();
                if size == 0 {
                    break;
                }
                response.body.extend(chunk);
            }
        } else {
            let len = response.header("content-length").unwrap().parse().unwrap();
            response.body = vec![0; len];
            self.reader.read_exact(&mut response.body).unwrap();
        }
        response
    }
}

fn ask(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test-1",
        "stream": stream,
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "<system-reminder>\nnoise\n</system-reminder>" },
            { "type": "text", "text": prompt },
        ]}],
    })
}

const MESSAGES: &str = "/v1/messages?beta=true";

#[test]
fn a_streamed_reply_has_every_event_of_the_messages_api_in_order() {
    let server = ModelServer::start();
    server.on(
        When::any(),
        Message::new()
            .thinking("let me see")
            .text("Writing it.")
            .tool_use("Write", json!({ "file_path": "/w/a.txt", "content": "hi" }))
            .usage(Usage::new(1200, 34).cache(500, 7)),
    );
    let mut client = Client::connect(&server);
    let response = client.send("POST", MESSAGES, &ask("write a.txt", true));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = response.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = &events[0]["message"];
    assert_eq!(start["model"], "claude-test-1");
    assert_eq!(start["usage"]["input_tokens"], 1200);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 500);
    assert_eq!(start["usage"]["cache_creation_input_tokens"], 7);
    assert_eq!(events[2]["delta"]["thinking"], "let me see");
    assert_eq!(events[3]["delta"]["type"], "signature_delta");
    assert_eq!(events[6]["delta"]["text"], "Writing it.");
    assert_eq!(events[8]["content_block"]["name"], "Write");
    assert_eq!(events[8]["index"], 2);
    let input: Value =
        serde_json::from_str(events[9]["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({ "file_path": "/w/a.txt", "content": "hi" }));
    assert_eq!(events[11]["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[11]["usage"]["output_tokens"], 34);

    // The same connection serves the next request (keep-alive), and
    // the request was kept, its reminder apart from the prompt.
    let again = client.send("POST", MESSAGES, &ask("again", true));
    assert_eq!(again.status, 200);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].last_prompt().as_deref(), Some("write a.txt"));
    assert_eq!(requests[0].user_texts(), ["write a.txt"]);
    assert!(requests[0].is_stream());
    assert_eq!(requests[0].header("Content-Type"), Some("application/json"));
}

#[test]
fn a_write_in_cwd_names_the_file_under_the_asking_agents_working_directory() {
    let server = ModelServer::start();
    server.on(When::any(), Message::write_file_in_cwd("sub/a.txt", "hi\n"));
    let mut client = Client::connect(&server);
    let mut body = ask("write a.txt", false);
    // Where Claude Code 2.1 states it: a line of a system block.
    body["system"] = json!([
        { "type": "text", "text": "You are Claude Code." },
        { "type": "text", "text": "Environment:\n - Primary working directory: /w/s1/job\n - Is a git repository: true" },
    ]);
    let response = client.send("POST", MESSAGES, &body);
    let input = &response.json()["content"][1]["input"];
    assert_eq!(
        *input,
        json!({ "file_path": "/w/s1/job/sub/a.txt", "content": "hi\n" })
    );
    assert_eq!(
        server.requests()[0].working_directory(),
        Some(std::path::PathBuf::from("/w/s1/job"))
    );
    // A request that names no working directory gets the marker as it
    // is (the tool call then fails where the test can see it).
    let without = client.send("POST", MESSAGES, &ask("write a.txt", false));
    assert_eq!(
        without.json()["content"][1]["input"]["file_path"],
        format!("{CWD}/sub/a.txt")
    );
    assert_eq!(server.requests()[1].working_directory(), None);
}

#[test]
fn a_request_without_stream_gets_one_json_message() {
    let server = ModelServer::start();
    server.on(
        When::any(),
        Message::answer("Hello.")
            .usage(Usage::new(10, 5))
            .model("claude-other"),
    );
    let response = Client::connect(&server).send("POST", MESSAGES, &ask("hi", false));
    assert_eq!(response.status, 200);
    let message = response.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], "claude-other");
    assert_eq!(
        message["content"],
        json!([{ "type": "text", "text": "Hello." }])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["output_tokens"], 5);
}

#[test]
fn rules_answer_in_order_once_and_by_what_the_request_holds() {
    let server = ModelServer::start();
    let reset = SystemTime::now() + Duration::from_secs(30);
    server
        .once(When::prompt_contains("limit"), Reply::rate_limited(reset))
        .on(When::tool_result(), Message::answer("after the tool"))
        .on(When::prompt_contains("limit"), Reply::overloaded());
    let mut client = Client::connect(&server);

    let limited = client.send("POST", MESSAGES, &ask("hit the limit", true));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=31).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.header("anthropic-ratelimit-unified-reset"),
        Some(epoch_secs(reset).to_string().as_str())
    );
    // The `once` rule is used up: the next rule that matches answers.
    let overloaded = client.send("POST", MESSAGES, &ask("hit the limit", true));
    assert_eq!(overloaded.status, 529);
    assert_eq!(overloaded.json()["error"]["type"], "overloaded_error");

    let mut after_tool = ask("hit the limit", false);
    after_tool["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "role": "user", "content": [
            { "type": "tool_result", "tool_use_id": "t1", "content": "File created" },
        ]}));
    let answer = client.send("POST", MESSAGES, &after_tool);
    assert_eq!(answer.json()["content"][0]["text"], "after the tool");
    assert_eq!(server.requests()[2].tool_results(), ["File created"]);

    // No rule: a 500 naming the problem, and the request is kept apart.
    let unanswered = client.send("POST", MESSAGES, &ask("something else", true));
    assert_eq!(unanswered.status, 500);
    assert!(unanswered.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no rule"));
    assert_eq!(server.unanswered().len(), 1);
    // Anything but the Messages API gets an empty 200 and no rule.
    let head = client.send("HEAD", "/", &Value::Null);
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(server.other_requests().len(), 1);
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn a_held_stream_waits_for_release_and_stopping_ends_every_thread() {
    let server = ModelServer::start();
    server.on(
        When::any(),
        Message::answer("first").text("second").hold_after(1),
    );
    let mut client = Client::connect(&server);
    let body = ask("go", true).to_string();
    let request = format!(
        "POST {MESSAGES} HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client
        .reader
        .get_mut()
        .write_all(request.as_bytes())
        .unwrap();
    // Read up to the first block's stop, then see only pings until the
    // release.
    let mut seen = String::new();
    while !seen.contains("content_block_stop") {
        seen.push_str(&client.line());
    }
    let mut pings = 0;
    while pings < 3 {
        let line = client.line();
        assert!(!line.contains("content_block_start"), "not held: {line}");
        pings += usize::from(line == "event: ping");
    }
    server.release();
    let mut rest = String::new();
    while !rest.contains("message_stop") {
        rest.push_str(&client.line());
    }
    assert!(rest.contains("\"second\""), "{rest}");

    // A second connection, idle, and a held stream on a third: dropping
    // the server ends them all.
    server.hold();
    let _idle = Client::connect(&server);
    let mut held = Client::connect(&server);
    held.reader.get_mut().write_all(request.as_bytes()).unwrap();
    assert_eq!(held.line(), "HTTP/1.1 200 OK");
    let started = std::time::Instant::now();
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
