//! The real Claude Code CLI as an agent, end to end through manager and
//! worker, against the stand-in model server: a job that writes a file with
//! the `Write` tool, one whose model answers with an API error, and the
//! stand-in naming a file under the working directory the CLI reports.

use crate::job;
use aam_tests::claude::claude_cost_usd;
use aam_tests::model_server::{Message, ModelServer, Reply, Usage, When};
use aam_tests::Cluster;
use serde_json::json;

#[test]
fn a_claude_code_job_writes_a_file_through_manager_and_worker() {
    let server = ModelServer::start();
    let c = Cluster::with_claude(&server, "", 2);
    let target = c.path("work").join("hello.txt");
    server
        .once(
            When::first_turn(),
            Message::write_file(&target, "hello from the stand-in\n"),
        )
        .once(
            When::tool_result(),
            Message::answer("Done: wrote hello.txt"),
        );
    let session = c.submit_json(&json!({"name": "write", "jobs": [
        { "name": "write", "agent": "claude", "prompt": "Write hello.txt" },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);

    let s = c.status(&session);
    assert_eq!(job(&s, "write")["status"], "succeeded", "{s}");
    assert_eq!(job(&s, "write")["exit_code"], 0, "{s}");
    // The file is in the job's workdir (the worker's), as the model asked.
    assert_eq!(
        std::fs::read_to_string(&target).expect("the file the agent wrote"),
        "hello from the stand-in\n"
    );
    let workdir: Vec<_> = std::fs::read_dir(c.path("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(workdir, ["hello.txt"], "the CLI left files in its cwd");

    // Its captured output is the CLI's stream-json, ending on its result.
    let events = c.stream_json_events(&session, "write");
    assert_eq!(events[0]["type"], "system", "{events:?}");
    assert_eq!(events[0]["subtype"], "init", "{events:?}");
    let result = events.last().unwrap();
    assert_eq!(result["type"], "result", "{result}");
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["num_turns"], 2, "{result}");
    assert_eq!(result["result"], "Done: wrote hello.txt", "{result}");
    assert!(events
        .iter()
        .any(|e| e["type"] == "assistant" && e["message"]["content"][0]["name"] == "Write"));
    // The CLI prices the stand-in's usage itself: two replies of the
    // default usage at its model's prices.
    let cost = result["total_cost_usd"].as_f64().unwrap();
    let expected = claude_cost_usd(&[Usage::default(), Usage::default()]);
    assert!((cost - expected).abs() < 1e-9, "{cost} != {expected}");

    // The model saw the prompt, then the tool's result.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[0].last_prompt().as_deref(),
        Some("Write hello.txt")
    );
    assert!(requests[0].is_stream());
    assert!(requests[1].has_tool_result());
    assert!(
        requests[1].tool_results()[0].starts_with("File created successfully"),
        "{:?}",
        requests[1].tool_results()
    );
    assert!(server.unanswered().is_empty());
    c.assert_no_agent_left();
}

#[test]
fn a_claude_code_job_whose_model_answers_an_api_error_fails() {
    let server = ModelServer::start();
    let c = Cluster::with_claude(&server, "", 2);
    server.on(
        When::any(),
        Reply::error(500, "api_error", "the stand-in fails on purpose"),
    );
    let session = c.submit_json(&json!({"name": "error", "jobs": [
        { "name": "ask", "agent": "claude", "prompt": "Say hello" },
    ]}));
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    assert_eq!(job(&s, "ask")["status"], "failed", "{s}");
    assert_eq!(server.requests().len(), 1, "the CLI retried");
    let result = c.stream_json_events(&session, "ask").pop().unwrap();
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["api_error_status"], 500, "{result}");
    assert!(
        result["result"]
            .as_str()
            .unwrap()
            .contains("the stand-in fails on purpose"),
        "{result}"
    );
}

#[test]
fn the_stand_in_writes_under_the_working_directory_the_cli_reports() {
    // What the worktree tests rely on: a model that names a file in the
    // agent's working directory without the test knowing where that is.
    let server = ModelServer::start();
    server
        .once(
            When::first_turn(),
            Message::write_file_in_cwd("notes/hello.txt", "hello\n"),
        )
        .once(When::tool_result(), Message::answer("Done"));
    let c = Cluster::with_claude(&server, "", 1);
    let sub = c.path("work").join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let session = c.submit_json(&json!({"name": "cwd", "jobs": [
        { "name": "write", "agent": "claude", "prompt": "Write notes", "workdir": "sub" },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(sub.join("notes/hello.txt")).expect("the file the agent wrote"),
        "hello\n"
    );
    let requests = server.requests();
    assert_eq!(requests[0].working_directory(), Some(sub));
    assert!(
        requests[1].tool_results()[0].starts_with("File created successfully"),
        "{:?}",
        requests[1].tool_results()
    );
}
