//! The stream-json reader's throughput (`cargo bench -p aam-protocol --bench
//! reader`): a generated few-MB output shaped like a real Claude Code run
//! (text, Read/Edit/Bash calls, tool results carrying file contents twice,
//! as the CLI prints them), fed in the worker's 16 KiB chunks. Prints MB/s
//! and ns per byte for the reader and for the transcript; asserts only that
//! the reader read the run.

use aam_protocol::agent_output::{reader, transcript};
use aam_protocol::agent_run::AgentFormat;
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The worker's read size (worker/src/child.rs `CHUNK`).
const CHUNK: usize = 16 * 1024;
/// Turns in the generated output (about 4 MB).
const TURNS: usize = 400;

fn main() {
    let output = generated_output(TURNS);
    let mb = output.len() as f64 / 1e6;
    println!(
        "stream-json reader: {:.2} MB output, {} lines, {TURNS} turns",
        mb,
        output.iter().filter(|&&b| b == b'\n').count()
    );
    let read = measure(|| {
        let mut reader = reader(AgentFormat::ClaudeStreamJson);
        for chunk in output.chunks(CHUNK) {
            reader.feed(chunk, 0);
        }
        reader.finish(0);
        let run = reader.run();
        assert_eq!(run.tool_calls as usize, 3 * TURNS);
        assert!(run.result.is_some());
        black_box(run.turns);
    });
    report("reader (16 KiB chunks)", mb, read);
    let render = measure(|| {
        black_box(transcript(AgentFormat::ClaudeStreamJson, &output).len());
    });
    report("transcript", mb, render);
}

/// The fastest of several runs of `work` (each at least a few).
fn measure(mut work: impl FnMut()) -> Duration {
    work();
    let mut best = Duration::MAX;
    let started = Instant::now();
    let mut runs = 0;
    while runs < 5 || (started.elapsed() < Duration::from_secs(3) && runs < 50) {
        let t = Instant::now();
        work();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn report(what: &str, mb: f64, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "  {what:<24} {:>8.1} MB/s  {:>6.2} ns/byte  ({:.2} ms per run)",
        mb / secs,
        secs * 1e9 / (mb * 1e6),
        secs * 1e3
    );
}

fn line(out: &mut Vec<u8>, value: serde_json::Value) {
    out.extend_from_slice(value.to_string().as_bytes());
    out.push(b'\n');
}

/// A file's worth of text: what Read results and Edit strings carry.
fn source(turn: usize, lines: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "    let value_{i} = compute(\"{turn}\", {i}); // keeps the \"state\" in sync\n"
            )
        })
        .collect()
}

fn assistant(out: &mut Vec<u8>, id: &str, block: serde_json::Value) {
    line(
        out,
        json!({"type":"assistant","message":{"id":id,"type":"message","role":"assistant",
            "model":"claude-opus-4-8","content":[block],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":1200,"output_tokens":1,"cache_read_input_tokens":30000,
            "cache_creation_input_tokens":500}},"parent_tool_use_id":null,
            "session_id":"aeb0b929-d624-4e43-bc6e-1e6f508f1fa7","uuid":"d1107a74-a07f-4848-bf1d-edd55b1bf205"}),
    );
}

fn tool_result(out: &mut Vec<u8>, id: &str, content: &str) {
    line(
        out,
        json!({"type":"user","message":{"role":"user","content":[{"tool_use_id":id,
            "type":"tool_result","content":content,"is_error":false}]},"parent_tool_use_id":null,
            "session_id":"aeb0b929-d624-4e43-bc6e-1e6f508f1fa7","uuid":"88eac394-9c92-439d-9465-d64bc16c0533",
            "timestamp":"2026-12-02T02:28:46.539Z","tool_use_result":{"stdout":content,"stderr":"",
            "interrupted":false}}),
    );
}

/// A run of `turns` turns: each says something, reads a file, edits it,
/// runs a command; then the result.
fn generated_output(turns: usize) -> Vec<u8> {
    let mut out = Vec::new();
    line(
        &mut out,
        json!({"type":"system","subtype":"init","cwd":"/work/repo",
            "session_id":"aeb0b929-d624-4e43-bc6e-1e6f508f1fa7","model":"claude-opus-4-8[1m]",
            "tools":["Bash","Edit","Read","Write","Grep","Glob"]}),
    );
    for turn in 0..turns {
        let id = format!("msg_{turn:04}");
        let file = format!("/work/repo/src/module_{turn}.rs");
        assistant(
            &mut out,
            &id,
            json!({"type":"thinking","thinking":source(turn, 3),"signature":"c2ln"}),
        );
        assistant(
            &mut out,
            &id,
            json!({"type":"text","text":format!("Now I look at module {turn}, which handles the \"{turn}\" case; then I fix it and run the tests.")}),
        );
        assistant(
            &mut out,
            &id,
            json!({"type":"tool_use","id":format!("r{turn}"),"name":"Read","input":{"file_path":file}}),
        );
        tool_result(&mut out, &format!("r{turn}"), &source(turn, 60));
        assistant(
            &mut out,
            &id,
            json!({"type":"tool_use","id":format!("e{turn}"),"name":"Edit",
            "input":{"file_path":file,"old_string":source(turn, 4),"new_string":source(turn + 1, 4)}}),
        );
        tool_result(
            &mut out,
            &format!("e{turn}"),
            "The file has been updated successfully.",
        );
        assistant(
            &mut out,
            &id,
            json!({"type":"tool_use","id":format!("b{turn}"),"name":"Bash",
            "input":{"command":"cargo test --workspace 2>&1 | tail -20","description":"Run tests"}}),
        );
        tool_result(
            &mut out,
            &format!("b{turn}"),
            &"test module::case ... ok\n".repeat(40),
        );
    }
    line(
        &mut out,
        json!({"type":"result","subtype":"success","is_error":false,"num_turns":turns,
            "result":"## Summary\n\nAll modules fixed.","session_id":"aeb0b929-d624-4e43-bc6e-1e6f508f1fa7",
            "total_cost_usd":12.5,"usage":{"input_tokens":1,"output_tokens":2},
            "modelUsage":{"claude-opus-4-8[1m]":{"inputTokens":480000,"outputTokens":90000,
            "cacheReadInputTokens":1200000,"cacheCreationInputTokens":2000,"costUSD":12.5}}}),
    );
    out
}
