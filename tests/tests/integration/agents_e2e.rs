//! Issue 9 end to end, against the real Claude Code CLI and the stand-in
//! model server: answers in `results` and in a dependent's inputs, the
//! `agent` fields and the session's sums, usage limits that pause a limit
//! group (and the pause across a manager restart), session and job budgets,
//! `aam continue`, and a stream line that does not parse.
//!
//! Costs are what Claude Code computes for the stand-in's usage figures at
//! its default model's prices ([`claude_cost_usd`]); the manager's built-in
//! prices for `claude-opus-4-8` are the same, so live estimates and the
//! CLI's own totals agree.

use crate::job;
use aam_tests::claude::claude_cost_usd;
use aam_tests::model_server::{epoch_secs, Message, ModelServer, Reply, Usage, When};
use aam_tests::{Cluster, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What `aam logs SESSION/JOB` prints.
fn job_log(c: &Cluster, session: &str, job: &str) -> String {
    c.aam(&["logs", &format!("{session}/{job}")])
        .expect_code(0)
        .stdout
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

fn assert_usd(actual: &Value, expected: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("not a cost: {actual}"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "cost {actual}, expected {expected}"
    );
}

/// Each attempt's outcome, in order.
fn outcomes(job: &Value) -> Vec<String> {
    job["attempt_history"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_history in {job}"))
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A reset time `secs` whole seconds ahead (limit texts carry epoch seconds).
fn reset_in(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(epoch_secs(SystemTime::now()) + secs)
}

/// The plan-limit reply Claude Code passes on as its result:
/// `API Error: Request rejected (429) · Claude AI usage limit reached|EPOCH`.
fn plan_limit_until(reset: SystemTime) -> Reply {
    Reply::plan_limit(&format!(
        "Claude AI usage limit reached|{}",
        epoch_secs(reset)
    ))
}

#[test]
fn answers_show_in_results_and_in_a_dependents_inputs() {
    let server = ModelServer::start();
    let alpha = "## Alpha\n\nThe **alpha** module is fine.";
    let beta = "Beta: 2 findings.";
    server
        .on(When::prompt_contains("alpha"), Message::answer(alpha))
        .on(When::prompt_contains("beta"), Message::answer(beta));
    let c = Cluster::with_claude(&server, "", 2);
    let copy = c.path("inputs-copy.json");
    let session = c.submit_json(&json!({"name": "answers", "jobs": [
        { "name": "a", "agent": "claude", "prompt": "Review alpha" },
        { "name": "b", "agent": "claude", "prompt": "Review beta" },
        { "name": "synth", "depends_on": ["a", "b"],
          "command": ["sh", "-c", "cat \"$AAM_INPUTS_MD\"; cp \"$AAM_INPUTS\" \"$COPY\""],
          "env": { "COPY": copy.to_str().unwrap() } },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);

    // results: the answers as the agents wrote them, not their streams.
    let markdown = c.aam(&["results", &session]).expect_code(0).stdout;
    assert!(markdown.contains(alpha), "{markdown}");
    assert!(markdown.contains(beta), "{markdown}");
    assert!(!markdown.contains("\"type\":\"system\""), "{markdown}");
    let results = c
        .aam(&["results", &session, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(job(&results, "a")["result"], alpha);
    assert_eq!(job(&results, "b")["result"], beta);
    // The raw stream is still there beside it.
    let raw = job(&results, "a")["output"].as_str().unwrap();
    assert!(raw.contains("\"type\":\"result\""), "{raw}");

    // The dependent read answers, not JSON lines.
    let md = job_log(&c, &session, "synth");
    assert!(md.contains(alpha), "{md}");
    assert!(md.contains(beta), "{md}");
    assert!(!md.contains("{\"type\":"), "{md}");
    let inputs: Value = serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(inputs[0]["name"], "a");
    assert_eq!(inputs[0]["answer"], alpha);
    assert_eq!(inputs[0]["error"], Value::Null);
    assert_eq!(inputs[1]["answer"], beta);

    // logs: a readable transcript; --raw: the captured bytes.
    let transcript = job_log(&c, &session, "a");
    assert!(
        transcript.contains("The **alpha** module is fine."),
        "{transcript}"
    );
    assert!(!transcript.contains("{\"type\":"), "{transcript}");
    let raw = c
        .aam(&["logs", "--raw", &format!("{session}/a")])
        .expect_code(0)
        .stdout;
    assert!(raw.starts_with("{\"type\":\"system\""), "{raw}");
}

#[test]
fn status_shows_each_agents_turns_tools_tokens_and_cost_live_and_the_sessions_sums() {
    let server = ModelServer::start();
    let c = Cluster::with_claude(&server, "", 2);
    let target = c.path("work").join("one.txt");
    let (write, done, two) = (
        Usage::new(1000, 100).cache(500, 0),
        Usage::new(2000, 50),
        Usage::new(300, 20),
    );
    server
        .once(
            When::prompt_contains("one").and(When::first_turn()),
            Message::write_file(&target, "1\n").usage(write),
        )
        // Held after its text, so the test sees the job mid-run.
        .once(
            When::prompt_contains("one").and(When::tool_result()),
            Message::answer("Writing done.")
                .text("Wrote one.txt.")
                .usage(done)
                .hold_after(1),
        )
        .on(
            When::prompt_contains("two"),
            Message::answer("Two.").usage(two),
        );
    let session = c.submit_json(&json!({"name": "sums", "jobs": [
        { "name": "one", "agent": "claude", "prompt": "Write one" },
        { "name": "two", "agent": "claude", "prompt": "Answer two" },
    ]}));

    // Live, from the stream: the tool call, as the progress of the job.
    let live = c.poll_status(&session, "one's Write while it runs", |s| {
        let one = job(s, "one");
        one["status"] == "running" && one["agent"]["last_tool"] == "Write one.txt"
    });
    let one = job(&live, "one");
    assert_eq!(one["agent"]["tool_calls"], 1, "{one}");
    assert!(one["agent"]["turns"].as_u64().unwrap() >= 1, "{one}");
    let table = c.aam(&["status", &session]).expect_code(0).stdout;
    assert!(table.contains("Write one.txt"), "{table}");
    server.release();
    c.aam(&["wait", &session]).expect_code(0);

    let s = c.status(&session);
    let one = &job(&s, "one")["agent"];
    let output = job(&c.aam(&["results", &session, "--json"]).json(), "one")["output"]
        .as_str()
        .unwrap()
        .to_string();
    let result_line: Value = serde_json::from_str(output.lines().last().unwrap()).unwrap();
    assert_eq!(one["session_id"], result_line["session_id"], "{one}");
    assert!(
        one["model"]
            .as_str()
            .unwrap()
            .starts_with("claude-opus-4-8"),
        "{one}"
    );
    assert_eq!(one["turns"], 2, "{one}");
    assert_eq!(one["tool_calls"], 1, "{one}");
    assert_eq!(one["last_tool"], "Write one.txt", "{one}");
    assert_eq!(one["input_tokens"], 3000, "{one}");
    assert_eq!(one["output_tokens"], 150, "{one}");
    assert_eq!(one["cache_read_tokens"], 500, "{one}");
    assert_usd(&one["cost_usd"], claude_cost_usd(&[write, done]));
    assert_usd(
        &one["cost_usd"],
        result_line["total_cost_usd"].as_f64().unwrap(),
    );
    // The CLI's result is the last text block.
    assert_eq!(one["result"], "Wrote one.txt.", "{one}");
    assert_eq!(one["error"], Value::Null, "{one}");
    let two_agent = &job(&s, "two")["agent"];
    assert_eq!(two_agent["turns"], 1, "{two_agent}");
    assert_eq!(two_agent["tool_calls"], 0, "{two_agent}");
    assert_eq!(two_agent["last_tool"], Value::Null, "{two_agent}");
    assert_usd(&two_agent["cost_usd"], claude_cost_usd(&[two]));

    // The session's sums, in status and in sessions.
    let total = claude_cost_usd(&[write, done, two]);
    assert_usd(&s["cost_usd"], total);
    assert_eq!(s["input_tokens"], 3300, "{s}");
    assert_eq!(s["output_tokens"], 170, "{s}");
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    let listed = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == session.as_str())
        .unwrap_or_else(|| panic!("{session} not in {sessions}"));
    assert_usd(&listed["cost_usd"], total);
}

#[test]
fn a_usage_limit_pauses_three_jobs_until_its_reset_while_other_jobs_run() {
    let server = ModelServer::start();
    // Far enough ahead that three CLIs reach the stand-in before it, on a
    // slow machine too; every request before it meets the limit.
    let reset = reset_in(15);
    server
        .on(When::before(reset), plan_limit_until(reset))
        .on(When::any(), Message::answer("done after the reset"));
    let c = Cluster::with_claude(&server, "", 4);
    let gate = c.gate("command-gate");
    let agent_job = |name: &str| json!({ "name": name, "agent": "claude", "prompt": format!("task {name}"), "retries": 0 });
    let session = c.submit_json(&json!({"name": "limited", "jobs": [
        agent_job("a1"), agent_job("a2"), agent_job("a3"),
        { "name": "cmd", "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() } },
    ]}));

    // All three met the limit: queued again, their group paused.
    let paused = c.poll_status(&session, "three jobs paused", |s| {
        ["a1", "a2", "a3"].iter().all(|n| {
            let j = job(s, n);
            j["status"] == "queued" && outcomes(j) == ["limited"]
        })
    });
    assert!(
        SystemTime::now() < reset,
        "the jobs met the limit after its reset: this machine is too slow for the test"
    );
    for name in ["a1", "a2", "a3"] {
        let j = job(&paused, name);
        let reason = j["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("usage limit (claude): paused until "),
            "{j}"
        );
    }
    assert_eq!(paused["paused"][0]["group"], "claude", "{paused}");
    assert_eq!(time(&paused["paused"][0]["until"]), reset, "{paused}");
    let sessions = c.aam(&["sessions"]).expect_code(0).stdout;
    assert!(sessions.contains("usage limit (claude)"), "{sessions}");

    // A plain command runs and ends meanwhile; the agents stay held.
    gate.open();
    let meanwhile = c.poll_status(&session, "the command job done", |s| {
        job(s, "cmd")["status"] == "succeeded"
    });
    assert!(
        SystemTime::now() < reset,
        "the command ended after the reset"
    );
    for name in ["a1", "a2", "a3"] {
        assert_eq!(job(&meanwhile, name)["status"], "queued", "{meanwhile}");
    }
    assert_eq!(server.requests().len(), 3, "a held job reached the model");

    // After the reset every job runs again and succeeds, without a retry
    // (they have none: a used retry would have failed them).
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let s = c.status(&session);
    for name in ["a1", "a2", "a3"] {
        let j = job(&s, name);
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_eq!(outcomes(j), ["limited", "succeeded"], "{j}");
        assert!(time(&j["attempt_history"][1]["started_at"]) >= reset, "{j}");
        assert_eq!(j["agent"]["result"], "done after the reset", "{j}");
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    assert!(requests[3..].iter().all(|r| r.received_at >= reset));
    assert_eq!(s["paused"], json!([]), "{s}");
}

#[test]
fn a_pause_is_kept_across_a_manager_restart() {
    let server = ModelServer::start();
    let reset = reset_in(15);
    server
        .on(When::before(reset), plan_limit_until(reset))
        .on(When::any(), Message::answer("resumed"));
    let c = &mut Cluster::with_claude(&server, "", 2);
    let session = c.submit_json(&json!({"name": "restart", "jobs": [
        { "name": "a1", "agent": "claude", "prompt": "one", "retries": 0 },
        { "name": "a2", "agent": "claude", "prompt": "two", "retries": 0 },
    ]}));
    let held = |s: &Value| {
        ["a1", "a2"].iter().all(|n| {
            let j = job(s, n);
            j["status"] == "queued"
                && j["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("usage limit (claude): paused until "))
        })
    };
    c.poll_status(&session, "both jobs paused", held);

    c.kill_manager();
    c.start_manager();
    let after = c.poll_status(&session, "the pause after the restart", |s| {
        held(s) && s["paused"][0]["group"] == "claude"
    });
    assert!(
        SystemTime::now() < reset,
        "the restart took past the reset: this machine is too slow for the test"
    );
    assert_eq!(time(&after["paused"][0]["until"]), reset, "{after}");

    // The worker comes back; the jobs still wait for the reset, then run.
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let s = c.status(&session);
    for name in ["a1", "a2"] {
        let j = job(&s, name);
        assert_eq!(outcomes(j), ["limited", "succeeded"], "{j}");
        assert!(time(&j["attempt_history"][1]["started_at"]) >= reset, "{j}");
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests[2..].iter().all(|r| r.received_at >= reset));
}

#[test]
fn rate_limits_and_overload_without_a_reset_pause_for_the_backoff() {
    let server = ModelServer::start();
    // A 429 whose reset the CLI does not pass on, and a 529: no reset
    // time, so the group waits `limit_backoff`.
    server
        .once(
            When::prompt_contains("rate"),
            Reply::rate_limited(SystemTime::now() + Duration::from_secs(1)),
        )
        .once(When::prompt_contains("busy"), Reply::overloaded())
        .on(When::any(), Message::answer("ok"));
    let c = Cluster::with_claude(&server, "limit_backoff = \"2s\"", 2);
    let session = c.submit_json(&json!({"name": "backoff", "jobs": [
        { "name": "rate", "agent": "claude", "prompt": "rate", "retries": 0 },
        { "name": "busy", "agent": "claude", "prompt": "busy", "retries": 0 },
    ]}));
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let s = c.status(&session);
    let jobs = [job(&s, "rate"), job(&s, "busy")];
    for j in jobs {
        assert_eq!(outcomes(j), ["limited", "succeeded"], "{j}");
    }
    // The group's pause runs from the first limit (a second one during it
    // does not extend it): neither job ran again before 2 s had passed.
    let first_limit = jobs
        .iter()
        .map(|j| time(&j["attempt_history"][0]["finished_at"]))
        .min()
        .unwrap();
    for j in jobs {
        let again_at = time(&j["attempt_history"][1]["started_at"]);
        let waited = again_at.duration_since(first_limit).unwrap_or_default();
        assert!(waited >= Duration::from_millis(1900), "{waited:?}: {s}");
    }
}

#[test]
fn a_session_stops_starting_agents_once_its_budget_is_spent() {
    let server = ModelServer::start();
    let each = Usage::new(1000, 100);
    server.on(When::any(), Message::answer("done").usage(each));
    let c = Cluster::with_claude(&server, "", 2);
    // One job at a time: two jobs' cost passes the budget, one does not.
    let one = claude_cost_usd(&[each]);
    let budget = one * 1.6;
    let jobs: Vec<Value> = (1..=5)
        .map(
            |i| json!({ "name": format!("j{i}"), "agent": "claude", "prompt": format!("job {i}") }),
        )
        .collect();
    let session = c.submit_json(&json!({
        "name": "budget", "max_parallel": 1, "max_cost_usd": budget, "jobs": jobs,
    }));
    c.aam(&["wait", &session, "--timeout", "60"]);
    let s = c.status(&session);
    for name in ["j1", "j2"] {
        assert_eq!(job(&s, name)["status"], "succeeded", "{s}");
    }
    // The spend named is what was known when the budget was passed: j2's
    // live cost may not be whole yet then, so anything past the budget and
    // up to both jobs' cost.
    let of = format!(" of ${budget:.4}");
    for name in ["j3", "j4", "j5"] {
        let j = job(&s, name);
        assert_eq!(j["status"], "skipped", "{j}");
        let reason = j["reason"].as_str().unwrap_or_default();
        let spent: f64 = reason
            .strip_prefix("budget: spent $")
            .and_then(|r| r.strip_suffix(of.as_str()))
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("reason {reason:?} is not `budget: spent $X{of}`"));
        assert!(spent > budget && spent <= 2.0 * one + 1e-4, "{j}");
    }
    assert_eq!(server.requests().len(), 2);
    assert_usd(&s["cost_usd"], 2.0 * one);
}

#[test]
fn a_job_past_its_own_budget_is_stopped_while_it_runs() {
    let server = ModelServer::start();
    // The first message's usage alone costs $2 at the model's prices; the
    // stream is then held open, so only a stop ends the run.
    server.on(
        When::any(),
        Message::answer("Reading everything...")
            .text("never sent")
            .usage(Usage::new(400_000, 10))
            .hold_after(1),
    );
    let c = Cluster::with_claude(&server, "", 2);
    let session = c.submit_json(&json!({"name": "spender", "jobs": [
        { "name": "big", "agent": "claude", "prompt": "Read the repository",
          "max_cost_usd": 1.0, "timeout": "60s", "grace": "2s" },
        { "name": "other", "command": ["true"] },
    ]}));
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(1);
    let s = c.status(&session);
    let big = job(&s, "big");
    assert_eq!(big["status"], "failed", "{big}");
    assert_eq!(big["reason"], "budget", "{big}");
    assert_eq!(big["attempts"], 1, "{big}");
    assert!(big["agent"]["cost_usd"].as_f64().unwrap() > 1.0, "{big}");
    assert!(
        big["duration_ms"].as_u64().unwrap() < 30_000,
        "stopped late: {big}"
    );
    assert_eq!(job(&s, "other")["status"], "succeeded", "{s}");
    assert_eq!(server.requests().len(), 1);
    c.assert_no_agent_left();
}

#[test]
fn continue_resumes_the_conversation_on_the_same_worker() {
    let server = ModelServer::start();
    server
        .once(
            When::prompt_contains("first question"),
            Message::answer("The first answer"),
        )
        .on(
            When::prompt_contains("second question"),
            Message::answer("The second answer"),
        );
    let mut c = Cluster::new();
    let agent = c.claude_agent("claude", &server);
    c.set_config(&agent.toml());
    c.start_manager();
    c.start_worker("small", 1);
    let first = c.submit_json(&json!({"name": "ask", "jobs": [
        { "name": "ask", "agent": "claude", "prompt": "first question" },
        { "name": "plain", "command": ["true"] },
    ]}));
    c.aam(&["wait", &first]).expect_code(0);
    let before = c.status(&first);
    let asked = job(&before, "ask");
    assert_eq!(asked["worker"], "small", "{asked}");
    let conversation = asked["agent"]["session_id"].clone();
    assert!(conversation.is_string(), "{asked}");

    // A bigger worker would take the follow-up, were it not pinned.
    c.start_worker("big", 4);
    let out = c
        .aam(&[
            "continue",
            &format!("{first}/ask"),
            "second question",
            "--json",
        ])
        .expect_code(0)
        .json();
    let follow_up = out["session"].as_str().unwrap().to_string();
    assert_ne!(follow_up, first);
    c.aam(&["wait", &follow_up]).expect_code(0);
    let s = c.status(&follow_up);
    let resumed = &s["jobs"][0];
    assert_eq!(resumed["worker"], "small", "{resumed}");
    assert_eq!(resumed["agent"]["session_id"], conversation, "{resumed}");
    assert_eq!(resumed["agent"]["result"], "The second answer", "{resumed}");

    // Its request carried the earlier turns.
    let requests = server.requests();
    let last = requests.last().unwrap();
    assert_eq!(last.user_texts(), ["first question", "second question"]);
    assert_eq!(last.assistant_texts(), ["The first answer"]);

    // A command job has no conversation to continue.
    let refused = c
        .aam(&["continue", &format!("{first}/plain"), "more"])
        .expect_code(2);
    assert!(
        refused.stderr.contains("not an agent job"),
        "{}",
        refused.dump()
    );
}

#[test]
fn a_stream_line_that_does_not_parse_is_kept_as_text_and_harmless() {
    let server = ModelServer::start();
    server.on(When::any(), Message::answer("Fine anyway."));
    let mut c = Cluster::new();
    // The CLI's output behind a line of plain text from its wrapper.
    let noisy = c
        .claude_agent("noisy", &server)
        .wrapped_in_shell("echo 'not json: starting up'");
    c.start_with_agents("", &[noisy], 1);
    let session = c.submit_json(&json!({"name": "noisy", "jobs": [
        { "name": "n", "agent": "noisy", "prompt": "hello" },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    let n = job(&s, "n");
    assert_eq!(n["status"], "succeeded", "{n}");
    assert_eq!(n["agent"]["result"], "Fine anyway.", "{n}");
    assert_eq!(n["agent"]["turns"], 1, "{n}");
    assert_eq!(n["agent"]["error"], Value::Null, "{n}");
    let transcript = job_log(&c, &session, "n");
    assert!(transcript.contains("not json: starting up"), "{transcript}");
    assert!(transcript.contains("Fine anyway."), "{transcript}");
}

#[test]
fn an_agent_that_reports_an_error_fails_with_its_text_as_the_reason() {
    let server = ModelServer::start();
    server.on(
        When::any(),
        Reply::error(500, "api_error", "the stand-in fails on purpose"),
    );
    let c = Cluster::with_claude(&server, "", 1);
    let session = c.submit_json(&json!({"name": "error", "jobs": [
        { "name": "ask", "agent": "claude", "prompt": "Say hello" },
        { "name": "after", "depends_on": [{ "job": "ask", "when": "failed" }],
          "command": ["sh", "-c", "cat \"$AAM_INPUTS_MD\""] },
    ]}));
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    let ask = job(&s, "ask");
    assert_eq!(ask["status"], "failed", "{ask}");
    let reason = ask["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the stand-in fails on purpose"), "{ask}");
    assert!(
        ask["agent"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the stand-in fails on purpose"),
        "{ask}"
    );
    // A 500 is not a usage limit: one attempt, no pause.
    assert_eq!(outcomes(ask), ["failed"], "{ask}");
    assert_eq!(s["paused"], json!([]), "{s}");
    let md = job_log(&c, &session, "after");
    assert!(md.contains("**Agent error:**"), "{md}");
    assert!(md.contains("the stand-in fails on purpose"), "{md}");
}

#[test]
fn a_limit_holds_only_its_own_group() {
    let server = ModelServer::start();
    let reset = reset_in(17);
    server
        .on(
            When::prompt_contains("limited").and(When::before(reset)),
            plan_limit_until(reset),
        )
        .on(When::any(), Message::answer("ok"));
    let mut c = Cluster::new();
    let limited = c.claude_agent("limited", &server);
    let free = c.claude_agent("free", &server);
    c.start_with_agents("", &[limited, free], 2);
    let session = c.submit_json(&json!({"name": "groups", "jobs": [
        { "name": "l", "agent": "limited", "prompt": "limited job" },
    ]}));
    let held = c.poll_status(&session, "l paused", |s| {
        let l = job(s, "l");
        l["status"] == "queued" && outcomes(l) == ["limited"]
    });
    assert_eq!(held["paused"].as_array().unwrap().len(), 1, "{held}");
    assert_eq!(held["paused"][0]["group"], "limited", "{held}");

    // The other group's agent runs and ends while the first is held.
    let other = c.submit_json(&json!({"name": "other", "jobs": [
        { "name": "f", "agent": "free", "prompt": "free job" },
    ]}));
    c.aam(&["wait", &other, "--timeout", "60"]).expect_code(0);
    assert!(
        SystemTime::now() < reset,
        "the reset passed first: this machine is too slow for the test"
    );
    assert_eq!(job(&c.status(&session), "l")["status"], "queued");
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let l = job(&c.status(&session), "l").clone();
    assert_eq!(outcomes(&l), ["limited", "succeeded"], "{l}");
}
