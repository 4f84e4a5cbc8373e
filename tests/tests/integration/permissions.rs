//! Issue 16, permission prompts answered from anywhere: the real Claude
//! Code CLI (no `--allowedTools`, so its `Write` needs permission) under
//! `permissions = "relay"` asks aam through the worker's MCP tool, against
//! the stand-in model server. A `Write` waits as `needs input` until
//! `aam allow` lets it write the file; `aam deny --message` leaves no file
//! and the agent is told why (`permission_denials` in its result); an
//! `allow` rule and a `deny` rule decide without asking; a request nobody
//! answers is denied at `permission_timeout`; a pending request survives
//! a manager restart (kill -9) and is answered after it.

use crate::job;
use aam_tests::model_server::{Message, ModelServer, When};
use aam_tests::{poll, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

/// A cluster whose agent `guarded` runs the real CLI relaying its
/// permission prompts, with the agent keys `extra` (rules).
fn cluster(server: &ModelServer, extra: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::new();
    let mut agent = c.claude_agent("guarded", server);
    agent.command.retain(|a| a != "--allowedTools=Write");
    let mut agent = agent.line("permissions", "\"relay\"");
    for (key, value) in extra {
        agent = agent.line(key, value);
    }
    c.start_with_agents("", &[agent], 2);
    c
}

/// The stand-in: the first turn writes `file`, the next answers `done`.
fn script_write(server: &ModelServer, file: &std::path::Path) {
    server
        .once(When::first_turn(), Message::write_file(file, "guarded\n"))
        .once(When::tool_result(), Message::answer("done"));
}

/// Polls until the job shows an open request; returns its status entry.
fn wait_needs_input(c: &Cluster, session: &str, name: &str) -> Value {
    let found = poll(Duration::from_secs(60), || {
        let s = c.status(session);
        let j = job(&s, name).clone();
        (j["needs_input"] == true).then_some(j)
    });
    found.unwrap_or_else(|| panic!("{name} never needed input\n{}", c.logs()))
}

#[test]
fn a_write_waits_as_needs_input_until_aam_allow_lets_it_through() {
    let server = ModelServer::start();
    let c = cluster(&server, &[]);
    let target = c.path("work").join("allowed.txt");
    script_write(&server, &target);
    let session = c.submit_json(&json!({"name": "perm", "jobs": [
        { "name": "w", "agent": "guarded", "prompt": "Write allowed.txt" },
    ]}));
    let j = wait_needs_input(&c, &session, "w");
    assert_eq!(j["status"], "running", "{j}");
    let call = format!("Write {}", target.display());
    assert_eq!(j["permissions"][0]["call"], call.as_str(), "{j}");
    assert_eq!(j["permissions"][0]["id"], 1, "{j}");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("needs input: [1] Write"),
        "{j}"
    );
    assert!(!target.exists(), "written before anyone allowed it");
    let text = c.aam(&["status", &session]).expect_code(0).stdout;
    assert!(text.contains("needs input"), "{text}");

    let allowed = c
        .aam(&["allow", &format!("{session}/w")])
        .expect_code(0)
        .stdout;
    assert!(
        allowed.contains("allowed") && allowed.contains(&call),
        "{allowed}"
    );
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "guarded\n");
    let s = c.status(&session);
    let decision = &job(&s, "w")["permissions"][0]["decision"];
    assert_eq!(decision["allowed"], true, "{s}");
    assert!(!decision["by"].as_str().unwrap().starts_with("rule"), "{s}");
    // Answered once: a second answer is refused (exit 2).
    c.aam(&["deny", &format!("{session}/w"), "1"])
        .expect_code(2);
    let audit = c.aam(&["audit", "--json"]).expect_code(0).stdout;
    assert!(
        audit.contains("\"allow\"") && audit.contains("request 1: Write"),
        "{audit}"
    );
    c.assert_no_agent_left();
}

#[test]
fn aam_deny_leaves_no_file_and_the_agent_is_told_why() {
    let server = ModelServer::start();
    let c = cluster(&server, &[]);
    let target = c.path("work").join("denied.txt");
    script_write(&server, &target);
    let session = c.submit_json(&json!({"name": "perm", "jobs": [
        { "name": "w", "agent": "guarded", "prompt": "Write denied.txt" },
    ]}));
    wait_needs_input(&c, &session, "w");
    c.aam(&[
        "deny",
        &format!("{session}/w"),
        "1",
        "--message",
        "not that file",
    ])
    .expect_code(0);
    c.aam(&["wait", &session]).expect_code(0);
    assert!(!target.exists(), "written although denied");
    // The model got the denial as the tool's result.
    let results: Vec<String> = server
        .requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .collect();
    assert!(
        results.iter().any(|r| r.contains("not that file")),
        "{results:?}"
    );
    let events = c.stream_json_events(&session, "w");
    let result = events.last().unwrap();
    assert_eq!(result["type"], "result", "{result}");
    let denials = result["permission_denials"].as_array().expect("denials");
    assert_eq!(denials.len(), 1, "{result}");
    assert_eq!(denials[0]["tool_name"], "Write", "{result}");
    let s = c.status(&session);
    let decision = &job(&s, "w")["permissions"][0]["decision"];
    assert_eq!(
        (decision["allowed"].clone(), decision["message"].clone()),
        (json!(false), json!("not that file"))
    );
}

#[test]
fn an_allow_rule_and_a_deny_rule_decide_without_asking() {
    let server = ModelServer::start();
    let c = cluster(
        &server,
        &[
            ("allow", "[\"Write(*/ok-*)\"]"),
            ("deny", "[\"Write(*secret*)\", \"Bash(rm *)\"]"),
        ],
    );
    let ok = c.path("work").join("ok-1.txt");
    let secret = c.path("work").join("ok-secret.txt");
    let tool_results = |n: usize| When::custom(move |r| r.tool_results().len() == n);
    server
        .once(When::first_turn(), Message::write_file(&ok, "fine\n"))
        .once(tool_results(1), Message::write_file(&secret, "no\n"))
        .once(tool_results(2), Message::answer("done"));
    let session = c.submit_json(&json!({"name": "rules", "jobs": [
        { "name": "w", "agent": "guarded", "prompt": "Write two files" },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&ok).unwrap(), "fine\n");
    assert!(!secret.exists(), "written although a deny rule matched");
    let s = c.status(&session);
    let requests = job(&s, "w")["permissions"].as_array().unwrap().clone();
    let by: Vec<&str> = requests
        .iter()
        .map(|r| r["decision"]["by"].as_str().unwrap())
        .collect();
    assert_eq!(
        by,
        ["rule allow Write(*/ok-*)", "rule deny Write(*secret*)"],
        "{s}"
    );
    assert!(server.unanswered().is_empty());
}

#[test]
fn an_unanswered_request_is_denied_at_its_timeout() {
    let server = ModelServer::start();
    let c = cluster(&server, &[("permission_timeout", "\"2s\"")]);
    let target = c.path("work").join("late.txt");
    script_write(&server, &target);
    let session = c.submit_json(&json!({"name": "late", "jobs": [
        { "name": "w", "agent": "guarded", "prompt": "Write late.txt" },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    assert!(!target.exists(), "written although nobody answered");
    let s = c.status(&session);
    let decision = &job(&s, "w")["permissions"][0]["decision"];
    assert_eq!(decision["by"], "timeout", "{s}");
    assert_eq!(decision["message"], "no answer within 2s", "{s}");
    let results: Vec<String> = server
        .requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .collect();
    assert!(
        results.iter().any(|r| r.contains("no answer within 2s")),
        "{results:?}"
    );
}

#[test]
fn a_pending_request_survives_a_manager_restart_and_is_then_answered() {
    let server = ModelServer::start();
    let mut c = cluster(&server, &[]);
    let target = c.path("work").join("restart.txt");
    script_write(&server, &target);
    let session = c.submit_json(&json!({"name": "restart", "jobs": [
        { "name": "w", "agent": "guarded", "prompt": "Write restart.txt" },
    ]}));
    wait_needs_input(&c, &session, "w");
    c.kill_manager();
    c.start_manager();
    // Still open after the restart (stored), the agent still waiting.
    let j = wait_needs_input(&c, &session, "w");
    assert_eq!(j["permissions"].as_array().unwrap().len(), 1, "{j}");
    // Answered once the worker is back with its agent.
    let allowed = poll(Duration::from_secs(30), || {
        let out = c.aam(&["allow", &format!("{session}/w"), "1"]);
        (out.code == 0).then_some(())
    });
    assert!(allowed.is_some(), "{}", c.logs());
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "guarded\n");
}
