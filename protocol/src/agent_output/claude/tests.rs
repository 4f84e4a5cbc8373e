//! The stream-json reader against outputs recorded from the real Claude
//! Code CLI (`../fixtures/`, see its README), fed whole and in pieces.

use super::*;
use crate::agent_output::{reader, transcript as render};
use crate::agent_run::AgentFormat;

const HELLO: &str = include_str!("../fixtures/claude-hello.jsonl");
const WRITE: &str = include_str!("../fixtures/claude-write-tool.jsonl");
const TOOLS: &str = include_str!("../fixtures/claude-tools.jsonl");
const SUBAGENT: &str = include_str!("../fixtures/claude-subagent.jsonl");
const NONSTREAM: &str = include_str!("../fixtures/claude-nonstream.jsonl");
const RETRY: &str = include_str!("../fixtures/claude-api-retry.jsonl");
const E429: &str = include_str!("../fixtures/claude-429.jsonl");
const E529: &str = include_str!("../fixtures/claude-529.jsonl");
const E400: &str = include_str!("../fixtures/claude-400.jsonl");
const MAX_TURNS: &str = include_str!("../fixtures/claude-max-turns.jsonl");
const PLAN_LIMIT: &str = include_str!("../fixtures/claude-plan-limit.jsonl");

const ALL: [&str; 11] = [
    HELLO, WRITE, TOOLS, SUBAGENT, NONSTREAM, RETRY, E429, E529, E400, MAX_TURNS, PLAN_LIMIT,
];

/// 2026-12-02T10:00:00Z.
const NOW: u64 = 1_796_205_600_000;

fn read_chunked(output: &[u8], chunk: usize) -> AgentRun {
    let mut reader = ClaudeReader::default();
    for piece in output.chunks(chunk.max(1)) {
        reader.feed(piece, NOW);
    }
    reader.finish(NOW);
    reader.run().clone()
}

fn read(output: &str) -> AgentRun {
    read_chunked(output.as_bytes(), usize::MAX)
}

/// The run after the first `n` lines of `output`, before its end.
fn read_lines(output: &str, n: usize) -> AgentRun {
    let mut reader = ClaudeReader::default();
    for line in output.lines().take(n) {
        reader.feed(line.as_bytes(), NOW);
        reader.feed(b"\n", NOW);
    }
    reader.run().clone()
}

fn tokens(input: u64, output: u64, cache_read: u64, cache_creation: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_creation_tokens: cache_creation,
    }
}

#[test]
fn the_now_constant_is_the_instant_it_names() {
    let now: jiff::Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
    assert_eq!(now.as_millisecond() as u64, NOW);
}

#[test]
fn a_one_turn_answer() {
    let run = read(HELLO);
    assert_eq!(
        run.session_id.as_deref(),
        Some("b650e7a7-2835-44ef-8377-6091eb9765b0")
    );
    assert_eq!(run.model.as_deref(), Some("claude-opus-4-8"));
    assert_eq!((run.turns, run.tool_calls), (1, 0));
    assert_eq!(run.last_tool, None);
    assert_eq!(run.last_text.as_deref(), Some("Hello from the stand-in."));
    assert_eq!(run.result.as_deref(), Some("Hello from the stand-in."));
    assert_eq!(run.total, Some(tokens(10, 5, 0, 0)));
    assert_eq!(
        run.usage,
        BTreeMap::from([("claude-opus-4-8".to_string(), tokens(10, 5, 0, 0))])
    );
    assert_eq!(run.reported_cost_usd, Some(0.000175));
    assert_eq!(
        (run.error, run.api_error_status, run.limit),
        (None, None, None)
    );
    assert!(!run.retrying);
    assert_eq!(run.unparsed_lines, 0);
}

#[test]
fn a_message_printed_once_per_block_is_one_turn_and_counts_its_tokens_once() {
    // Before the result: msg_1 (text, then Write), msg_2 (text).
    let live = read_lines(WRITE, 5);
    assert_eq!(live.turns, 2);
    assert_eq!(live.tool_calls, 1);
    assert_eq!(
        live.usage,
        BTreeMap::from([("claude-opus-4-8".to_string(), tokens(200, 2, 100, 0))])
    );
    assert_eq!(live.total, None);
    assert_eq!(live.result, None);
    // Outside the run's cwd (/tmp/ccx/w): the path stays absolute.
    assert_eq!(live.last_tool.as_deref(), Some("Write /tmp/ccx/hello.txt"));
    // At the end the CLI's own totals replace the live count.
    let run = read(WRITE);
    assert_eq!(run.turns, 2);
    assert_eq!(run.total, Some(tokens(200, 27, 100, 0)));
    assert_eq!(run.usage["claude-opus-4-8"], tokens(200, 27, 100, 0));
    assert_eq!(run.reported_cost_usd, Some(0.001725));
    assert_eq!(run.result.as_deref(), Some("Done: wrote hello.txt"));
}

#[test]
fn tool_calls_thinking_and_a_markdown_answer() {
    // Thinking, text and Bash; the two Reads; thinking and Edit.
    let after_edit = read_lines(TOOLS, 13);
    assert_eq!(after_edit.last_tool.as_deref(), Some("Edit src/lib.rs"));
    assert_eq!(
        after_edit.last_text.as_deref(),
        Some("Let me look at the project first."),
        "thinking is not what the agent said"
    );
    assert_eq!(after_edit.turns, 3);
    assert_eq!(after_edit.tool_calls, 4);
    let grep = read_lines(TOOLS, 15);
    assert_eq!(grep.last_tool.as_deref(), Some("Grep fn f"));
    let run = read(TOOLS);
    assert_eq!(run.tool_calls, 6);
    assert_eq!(run.last_tool.as_deref(), Some("Bash cat /nonexistent-file"));
    // Six messages; the CLI's own count (7) wins at the end.
    assert_eq!(read_lines(TOOLS, 19).turns, 6);
    assert_eq!(run.turns, 7);
    let answer = "## Summary\n\n- Changed `f` to return **2**.\n- Checked with grep.\n\nAll done.";
    assert_eq!(run.result.as_deref(), Some(answer));
    assert_eq!(run.last_text.as_deref(), Some(answer));
    assert_eq!(run.total, Some(tokens(600, 180, 300, 60)));
    assert_eq!(run.error, None);
}

#[test]
fn a_subagents_calls_and_tokens_count_but_not_its_turns() {
    let live = read_lines(SUBAGENT, 11);
    assert_eq!(
        live.turns, 2,
        "msg_001 and msg_004; msg_002 is the subagent's"
    );
    assert_eq!(live.tool_calls, 2);
    assert_eq!(live.last_tool.as_deref(), Some("Bash ls | wc -l"));
    assert_eq!(
        live.last_text.as_deref(),
        Some("The subagent found 2 entries.")
    );
    assert_eq!(live.usage["claude-opus-4-8"], tokens(300, 3, 150, 30));
    let run = read(SUBAGENT);
    assert_eq!(run.turns, 2);
    // modelUsage counts the subagent's requests, as the cost does.
    assert_eq!(run.total, Some(tokens(400, 120, 200, 40)));
}

#[test]
fn a_non_streamed_reply_is_counted_from_model_usage() {
    let run = read(NONSTREAM);
    assert_eq!(
        run.result.as_deref(),
        Some("A plain JSON answer, not streamed.")
    );
    // The result's `usage` says 0 here; `modelUsage` has the tokens.
    assert_eq!(run.total, Some(tokens(100, 30, 50, 10)));
    assert_eq!(run.tokens(), tokens(100, 30, 50, 10));
}

#[test]
fn retrying_holds_while_an_api_retry_is_the_latest_event() {
    let mut reader = ClaudeReader::default();
    let mut lines = RETRY.lines();
    reader.feed(format!("{}\n", lines.next().unwrap()).as_bytes(), NOW);
    assert!(!reader.run().retrying);
    let changed = reader.feed(format!("{}\n", lines.next().unwrap()).as_bytes(), NOW);
    assert!(changed && reader.run().retrying);
    let changed = reader.feed(format!("{}\n", lines.next().unwrap()).as_bytes(), NOW);
    assert!(reader.run().retrying, "a second retry");
    assert!(!changed, "nothing new to tell");
    reader.feed(format!("{}\n", lines.next().unwrap()).as_bytes(), NOW);
    assert!(!reader.run().retrying, "an answer came");
    let run = read(RETRY);
    assert_eq!(run.result.as_deref(), Some("Answer after two retries."));
    assert_eq!(run.limit, None, "retries that succeeded are no limit");
}

#[test]
fn an_api_error_429_or_529_is_a_limit_whatever_the_subtype_says() {
    for (output, status) in [(E429, 429), (E529, 529)] {
        let run = read(output);
        assert_eq!(run.api_error_status, Some(status));
        let error = run.error.clone().unwrap();
        assert!(error.starts_with("API Error"), "{error}");
        assert_eq!(run.result, None);
        let limit = run.limit.clone().expect("a limit");
        assert_eq!(limit.resets_at_ms, None);
        assert_eq!(limit.message, error);
        // The CLI's made-up message is not the model's, nor a token count.
        assert_eq!(run.model.as_deref(), Some("claude-opus-4-8"));
        assert!(run.usage.is_empty(), "{:?}", run.usage);
        assert_eq!(run.total, Some(TokenUsage::default()));
        assert_eq!(run.reported_cost_usd, Some(0.0));
    }
}

#[test]
fn other_errors_fail_without_a_limit() {
    let run = read(E400);
    assert_eq!(run.api_error_status, Some(400));
    assert!(run.error.unwrap().starts_with("Prompt is too long"));
    assert_eq!(run.limit, None);
    let run = read(MAX_TURNS);
    assert_eq!(
        run.error.as_deref(),
        Some("Reached maximum number of turns (1)")
    );
    assert_eq!((run.api_error_status, run.limit), (None, None));
    assert_eq!(run.result, None);
    assert_eq!(run.turns, 2);
}

#[test]
fn a_refused_rate_limit_event_gives_the_reset_time() {
    let run = read(PLAN_LIMIT);
    let limit = run.limit.unwrap();
    // The event's epoch wins over the text's "1pm (Europe/Lisbon)".
    assert_eq!(limit.resets_at_ms, Some(1_893_456_000_000));
    assert_eq!(
        limit.message,
        "You've hit your session limit · resets 1pm (Europe/Lisbon)"
    );
    assert_eq!(run.api_error_status, Some(429));
}

/// A result line with `is_error` and `result`.
fn result_line(is_error: bool, text: &str) -> String {
    serde_json::json!({"type":"result","subtype":"success","is_error":is_error,"result":text,
        "num_turns":1,"session_id":"s"})
    .to_string()
}

#[test]
fn plan_limit_texts_are_limits_with_their_reset() {
    let cases = [
        // Even when the CLI does not call it an error.
        (
            false,
            "Claude AI usage limit reached|1893456000",
            1_893_456_000_000,
        ),
        // 1pm in Lisbon on 2 December is 13:00Z, three hours after NOW.
        (
            true,
            "You've hit your limit · resets 1pm (Europe/Lisbon)",
            NOW + 3 * 3_600_000,
        ),
        // Already 15:30 in Calcutta: tomorrow 11:30 IST, 06:00Z.
        (
            true,
            "Limit reached · resets 11:30am (Asia/Calcutta) · /upgrade to increase your limit",
            NOW + 20 * 3_600_000,
        ),
    ];
    for (is_error, text, resets) in cases {
        let run = read(&result_line(is_error, text));
        let limit = run.limit.unwrap_or_else(|| panic!("no limit: {text}"));
        assert_eq!(limit.resets_at_ms, Some(resets), "{text}");
        assert_eq!(limit.message, text);
    }
}

#[test]
fn a_refusal_then_success_is_no_limit_but_a_refusal_then_silence_is() {
    let refused = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1893456000,"rateLimitType":"five_hour"},"session_id":"s"}"#;
    let allowed_output = format!("{refused}\n{}\n", result_line(false, "done"));
    assert_eq!(read(&allowed_output).limit, None);
    let killed = read(&format!("{refused}\n"));
    let limit = killed.limit.unwrap();
    assert_eq!(limit.resets_at_ms, Some(1_893_456_000_000));
    assert_eq!(limit.message, "five_hour limit: rejected");
    let warned = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1893456000}}"#;
    assert_eq!(read(&format!("{warned}\n")).limit, None);
}

#[test]
fn any_chunking_reads_the_same_run() {
    for output in ALL {
        let whole = read(output);
        for size in [1, 2, 7, 100, 4096] {
            assert_eq!(
                read_chunked(output.as_bytes(), size),
                whole,
                "chunks of {size}"
            );
        }
    }
}

#[test]
fn a_garbage_line_is_counted_and_nothing_else_changes() {
    let lines: Vec<&str> = WRITE.lines().collect();
    let garbled = format!(
        "{}\nnot JSON at all\n{{\"type\":\"assistant\",\"message\n[1,2]\n\n   \n{}\n",
        lines[..3].join("\n"),
        lines[3..].join("\n")
    );
    let run = read(&garbled);
    assert_eq!(run.unparsed_lines, 3);
    assert_eq!(
        AgentRun {
            unparsed_lines: 0,
            ..run
        },
        read(WRITE)
    );
}

#[test]
fn a_last_line_without_a_newline_is_read_at_the_end() {
    let mut reader = ClaudeReader::default();
    reader.feed(HELLO.trim_end().as_bytes(), NOW);
    assert_eq!(reader.run().result, None);
    assert!(reader.finish(NOW));
    assert_eq!(
        reader.run().result.as_deref(),
        Some("Hello from the stand-in.")
    );
}

#[test]
fn lines_that_tell_nothing_new_report_no_change() {
    let mut reader = ClaudeReader::default();
    let lines: Vec<&str> = WRITE.lines().collect();
    assert!(reader.feed(format!("{}\n", lines[0]).as_bytes(), NOW));
    // A tool result.
    assert!(!reader.feed(format!("{}\n", lines[3]).as_bytes(), NOW));
    let tokens_estimate = r#"{"type":"system","subtype":"thinking_tokens","estimated_tokens":18}"#;
    assert!(!reader.feed(format!("{tokens_estimate}\n").as_bytes(), NOW));
}

#[test]
fn huge_lines_are_read_when_whole_and_passed_over_past_the_limit() {
    let text = "x".repeat(5 * 1024 * 1024);
    let big = serde_json::json!({"type":"assistant","message":{"id":"m1","model":"claude-opus-4-8",
        "content":[{"type":"text","text":text}],"usage":{"input_tokens":1,"output_tokens":2}}})
    .to_string();
    let output = format!("{big}\n{}\n", result_line(false, "done"));
    let run = read_chunked(output.as_bytes(), 16 * 1024);
    assert_eq!(run.last_text.as_ref().map(String::len), Some(MAX_LAST_TEXT));
    assert_eq!(run.result.as_deref(), Some("done"));
    // Past the limit: a tool result is passed over as it should be; an
    // assistant line is counted as not read.
    let filler = "y".repeat(17 * 1024 * 1024);
    let huge = format!(
        "{{\"type\":\"user\",\"x\":\"{filler}\"}}\n{{\"type\":\"assistant\",\"x\":\"{filler}\"}}\n{}\n",
        result_line(false, "after")
    );
    let run = read_chunked(huge.as_bytes(), 16 * 1024);
    assert_eq!(run.unparsed_lines, 1);
    assert_eq!(run.result.as_deref(), Some("after"));
}

#[test]
fn answers_and_errors_are_capped() {
    let long = "é".repeat(MAX_RESULT);
    let run = read(&result_line(false, &long));
    let result = run.result.unwrap();
    assert!(result.len() <= MAX_RESULT && result.ends_with('…'));
    let run = read(&result_line(true, &long));
    assert!(run.error.unwrap().len() <= MAX_ERROR);
}

#[test]
fn model_names_lose_their_context_suffix() {
    assert_eq!(model_name("claude-opus-4-8[1m]"), "claude-opus-4-8");
    assert_eq!(model_name("claude-opus-4-8"), "claude-opus-4-8");
    assert_eq!(model_name("[1m]"), "[1m]");
}

#[test]
fn the_format_dispatch_reads_stream_json() {
    let mut reader = reader(AgentFormat::ClaudeStreamJson);
    reader.feed(WRITE.as_bytes(), NOW);
    reader.finish(NOW);
    assert_eq!(reader.run().tool_calls, 1);
}

#[test]
fn a_transcript_reads_like_the_session() {
    let text = render(AgentFormat::ClaudeStreamJson, TOOLS.as_bytes());
    let expected = [
        "● session aeb0b929-d624-4e43-bc6e-1e6f508f1fa7 · claude-opus-4-8 · /tmp/rec/multi/w",
        "Let me look at the project first.",
        "→ Bash ls -la && echo done",
        "  ⎿ total 16",
        "→ Read README.md",
        "→ Read src/lib.rs",
        "  ⎿ 1\tline one",
        "→ Edit src/lib.rs",
        "  ⎿ The file /tmp/rec/multi/w/src/lib.rs has been updated successfully. (file state is current in your context — no need to Read it back)",
        "→ Grep fn f",
        "→ Bash cat /nonexistent-file",
        "  ✗ Exit code 1",
        "## Summary",
        "── done · 7 turns · $0.0080 ──",
    ];
    let mut rest = text.as_str();
    for line in expected {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} (in order) in:\n{text}"));
        rest = &rest[at + line.len()..];
    }
    assert!(
        !text.contains("Let me start by listing"),
        "no thinking:\n{text}"
    );
    assert_eq!(
        text.matches("All done.").count(),
        1,
        "the answer is not repeated:\n{text}"
    );
}

#[test]
fn a_transcript_shows_errors_subagents_and_lines_that_are_not_events() {
    let failed = render(AgentFormat::ClaudeStreamJson, E429.as_bytes());
    assert!(
        failed.contains("── failed · API error 429 · 1 turn · $0.0000 ──"),
        "{failed}"
    );
    assert_eq!(
        failed
            .matches("✗ API Error: Request rejected (429)")
            .count(),
        1,
        "shown once: {failed}"
    );
    let max_turns = render(AgentFormat::ClaudeStreamJson, MAX_TURNS.as_bytes());
    assert!(
        max_turns
            .ends_with("── failed · 2 turns · $0.0013 ──\n✗ Reached maximum number of turns (1)\n"),
        "{max_turns}"
    );
    let sub = render(AgentFormat::ClaudeStreamJson, SUBAGENT.as_bytes());
    assert!(
        sub.contains("→ Task Count files\n  → Bash ls | wc -l\n    ⎿ 2\n  ⎿ There are 2 entries."),
        "{sub}"
    );
    let retry = render(AgentFormat::ClaudeStreamJson, RETRY.as_bytes());
    assert!(
        retry.contains("… API error 429: retrying (attempt 1 of 3)"),
        "{retry}"
    );
    let garbled = format!("warning: something odd\n{HELLO}{{\"no\": \"type\"}}\n{{broken\n");
    let shown = render(AgentFormat::ClaudeStreamJson, garbled.as_bytes());
    assert!(shown.starts_with("warning: something odd\n"), "{shown}");
    assert!(shown.ends_with("{\"no\": \"type\"}\n{broken\n"), "{shown}");
    let limit = render(AgentFormat::ClaudeStreamJson, PLAN_LIMIT.as_bytes());
    assert!(
        limit.contains("… five_hour limit: rejected, resets 2030-01-01T00:00:00Z"),
        "{limit}"
    );
}

#[test]
fn what_the_agent_names_is_bounded() {
    let long = "m".repeat(10_000);
    let mut output = String::new();
    for i in 0..40 {
        output.push_str(
            &serde_json::json!({"type":"assistant","session_id":long,"message":{"id":format!("{i}{long}"),
                "model":format!("model-{i}-{long}"),"content":[],"usage":{"input_tokens":1}}})
            .to_string(),
        );
        output.push('\n');
    }
    let run = read(&output);
    assert_eq!(run.usage.len(), MAX_MODELS);
    assert_eq!(
        run.usage["other"].input_tokens,
        40 - (MAX_MODELS as u64 - 1)
    );
    assert!(run.usage.keys().all(|m| m.len() <= MAX_NAME));
    assert!(run.model.unwrap().len() <= MAX_NAME);
    assert!(run.session_id.unwrap().len() <= MAX_NAME);
    assert_eq!(run.turns, 40);
}

#[test]
fn a_transcript_followed_in_small_chunks_reads_as_the_whole() {
    use crate::agent_output::{transcript as whole, Transcriber};
    for fixture in [TOOLS, SUBAGENT, WRITE] {
        let mut follower = Transcriber::new(AgentFormat::ClaudeStreamJson);
        let mut followed = Vec::new();
        for chunk in fixture.as_bytes().chunks(7) {
            followed.extend(follower.feed(chunk));
        }
        followed.extend(follower.finish());
        let expected = whole(AgentFormat::ClaudeStreamJson, fixture.as_bytes());
        assert_eq!(String::from_utf8(followed).unwrap(), expected);
    }
}
