//! Issue 16 point 5, permission prompts where the user already is: two
//! real Claude Code agents relaying their prompts (`permissions =
//! "relay"`) ask to write a file each; each new request fires a
//! `needs_input` notification; MCP's `status` lists both under `waiting`
//! and its `allow` lets one through; the dashboard lists the other first,
//! in "Waiting for you", and its Deny button, with a message typed in its
//! text box, denies it (the agent is told the message, no file is
//! written).

use crate::job;
use aam_tests::browser::Browser;
use aam_tests::mcp::McpClient;
use aam_tests::model_server::{Message, ModelServer, When};
use aam_tests::{poll, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

/// The `needs_input` events the notify command appended to `file`.
fn events(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an event is JSON"))
        .collect()
}

#[test]
fn requests_reach_notifications_mcp_and_the_dashboard_and_are_answered_there() {
    let server = ModelServer::start();
    let mut c = Cluster::new();
    c.http = true;
    let work = c.path("work");
    let (a, b) = (work.join("a.txt"), work.join("b.txt"));
    for (prompt, file) in [("Write a.txt", &a), ("Write b.txt", &b)] {
        server.once(
            When::first_turn().and(When::prompt_contains(prompt)),
            Message::write_file(file, "relayed\n"),
        );
    }
    server.on(When::tool_result(), Message::answer("done"));
    let mut agent = c.claude_agent("guarded", &server);
    agent.command.retain(|a| a != "--allowedTools=Write");
    let agent = agent.line("permissions", "\"relay\"");
    let notified = c.path("notified.jsonl");
    let notify = format!(
        "[[notify]]\non = [\"needs_input\"]\ncommand = [\"sh\", \"-c\", {:?}]\n",
        format!(
            "cat >> {}; echo >> {}",
            notified.display(),
            notified.display()
        )
    );
    c.start_with_agents(&notify, &[agent], 2);
    let session = c.submit_json(&json!({"name": "asks", "jobs": [
        { "name": "a", "agent": "guarded", "prompt": "Write a.txt" },
        { "name": "b", "agent": "guarded", "prompt": "Write b.txt" },
    ]}));

    // One notification per request, naming the job, the request and the call.
    let both = poll(Duration::from_secs(90), || {
        let seen = events(&notified);
        (seen.len() >= 2).then_some(seen)
    })
    .unwrap_or_else(|| panic!("no two needs_input events\n{}", c.logs()));
    let mut jobs: Vec<&str> = both.iter().map(|e| e["job"].as_str().unwrap()).collect();
    jobs.sort();
    assert_eq!(jobs, ["a", "b"], "{both:?}");
    for e in &both {
        assert_eq!(e["event"], "needs_input", "{e}");
        assert_eq!(
            (&e["request"], &e["tool"]),
            (&json!(1), &json!("Write")),
            "{e}"
        );
        assert!(e["call"].as_str().unwrap().starts_with("Write "), "{e}");
        assert!(e["session"]["needs_input"].as_u64().is_some(), "{e}");
    }

    // MCP: `status` lists both waiting, with their requests; `allow` lets
    // a's write through.
    let mut mcp = McpClient::start(&c);
    let status = mcp.call("status", json!({})).ok();
    let waiting = status["waiting"].as_array().expect("waiting").clone();
    let names: Vec<&str> = waiting.iter().map(|w| w["job"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{status}");
    assert!(waiting.iter().all(|w| w["needs_input"] == true), "{status}");
    assert_eq!(waiting[0]["requests"][0]["tool"], "Write", "{status}");
    let one = mcp.call("status", json!({"session": session})).ok();
    assert_eq!(one["needs_input"], 2, "{one}");
    assert_eq!(one["waiting"].as_array().unwrap().len(), 2, "{one}");
    let allowed = mcp
        .call("allow", json!({"job": format!("{session}/a")}))
        .ok();
    assert_eq!(
        (&allowed["decision"], &allowed["request"]),
        (&json!("allowed"), &json!(1)),
        "{allowed}"
    );
    let twice = mcp.call(
        "allow",
        json!({"job": format!("{session}/a"), "request": 1}),
    );
    assert!(
        twice.error().contains("answered already"),
        "{}",
        twice.error()
    );
    poll(Duration::from_secs(60), || {
        (job(&c.status(&session), "a")["status"] == "succeeded").then_some(())
    })
    .unwrap_or_else(|| panic!("a never succeeded\n{}", c.logs()));
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "relayed\n");

    // The dashboard: b waits for a decision, listed first; Deny with a
    // message typed into the page's text box.
    let mut br = Browser::start(&c.cert());
    br.navigate(&c.url("/"));
    crate::dashboard::sign_in(&mut br, &c.token);
    let b_job = format!("{session}/b");
    br.wait_for(
        "b in the waiting list",
        &format!(
            "((document.querySelector('#waiting-jobs tr[data-job=\"{b_job}\"]') || {{}}).textContent || '').includes('[1] Write')"
        ),
    );
    br.click(&format!(
        "#waiting-jobs button[data-action=deny][data-job=\"{b_job}\"]"
    ));
    br.type_into("#ask-text", "not b, use a");
    br.click("#ask-send");
    c.aam(&["wait", &session]).expect_code(0);
    assert!(!b.exists(), "b written although denied");
    let s = c.status(&session);
    let decision = &job(&s, "b")["permissions"][0]["decision"];
    assert_eq!(
        (&decision["allowed"], &decision["message"]),
        (&json!(false), &json!("not b, use a")),
        "{s}"
    );
    let told: Vec<String> = server
        .requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .collect();
    assert!(told.iter().any(|r| r.contains("not b, use a")), "{told:?}");
    br.wait_for(
        "the waiting list emptied",
        "document.getElementById('waiting').hidden",
    );
    assert_eq!(br.errors(), Vec::<String>::new(), "the page threw");
    // Nothing more was notified: two requests, two events.
    assert_eq!(events(&notified).len(), 2);
    c.assert_no_agent_left();
}
