//! `aam mcp` with real clients: the official MCP Python SDK (lists the
//! tools, submits, waits, reads results and logs, cancels, approves a gate,
//! and meets bad input and a manager that is down), and the real Claude Code
//! CLI, driven by the stand-in model to call `mcp__aam__submit`. What the
//! tools did is checked from the Rust side too, with `aam status`.

use crate::job;
use aam_tests::claude::{claude_bin, ClaudeAgent};
use aam_tests::mcp::McpClient;
use aam_tests::model_server::{Message, ModelServer, When};
use aam_tests::{bin, run_command, Cluster, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const TOOLS: [&str; 15] = [
    "accounts",
    "agents",
    "allow",
    "approve",
    "cancel",
    "deny",
    "logs",
    "reject",
    "resources",
    "results",
    "say",
    "status",
    "submit",
    "wait",
    "workers",
];

/// A cluster with a manager and one worker of `slots` slots.
fn cluster(slots: u32) -> Cluster {
    let mut c = Cluster::with_manager();
    c.start_worker("w", slots);
    c
}

/// What the CLI printed as its error, without its `aam: ` prefix.
fn cli_message(stderr: &str) -> &str {
    stderr.trim_end().strip_prefix("aam: ").unwrap_or(stderr)
}

#[test]
fn the_python_sdk_lists_the_tools_each_with_a_schema_and_a_description() {
    let c = Cluster::with_manager();
    let mut mcp = McpClient::start(&c);
    assert_eq!(mcp.server, "aam");
    let tools = mcp.list_tools();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for tool in &tools {
        assert_eq!(tool["input_schema"]["type"], "object", "{tool}");
        let description = tool["description"].as_str().unwrap_or_default();
        assert!(description.len() > 40, "{tool}");
    }
    let submit = tools.iter().find(|t| t["name"] == "submit").unwrap();
    for argument in ["batch", "path", "idempotency_key"] {
        assert!(
            submit["input_schema"]["properties"][argument].is_object(),
            "{submit}"
        );
    }
}

#[test]
fn a_session_runs_through_the_mcp_tools() {
    let c = cluster(2);
    let hold = c.gate("hold");
    let mut mcp = McpClient::start(&c);
    let batch = json!({"name": "via-mcp", "jobs": [
        {"name": "build", "command": ["sh", "-c", "echo built; echo last line"]},
        {"name": "slow", "command": ["sh", "-c", WAIT_FOR_GATE], "env": {"GATE": hold.env()}},
        {"name": "approve", "gate": true, "depends_on": ["build"]},
        {"name": "after", "command": ["echo", "after"], "depends_on": ["approve"]},
    ]});
    let submitted = mcp
        .call("submit", json!({"batch": batch, "idempotency_key": "k1"}))
        .ok();
    let session = submitted["session"].as_str().unwrap().to_string();
    assert_eq!(submitted["name"], "via-mcp");
    assert_eq!(submitted["jobs"], 4);
    assert_eq!(submitted["existing"], false);
    assert!(submitted["estimate"].is_object(), "{submitted}");
    // The same key again: the same session, not a second one.
    let again = mcp
        .call("submit", json!({"batch": batch, "idempotency_key": "k1"}))
        .ok();
    assert_eq!(again["session"], session.as_str());
    assert_eq!(again["existing"], true);

    // The build has run and the gate waits; the slow job holds the session.
    c.poll_status(&session, "the gate awaiting approval", |s| {
        job(s, "build")["status"] == "succeeded" && job(s, "slow")["status"] == "running"
    });
    let status = mcp.call("status", json!({"session": session}));
    assert_eq!(status.structured, status.json(), "structured = text");
    let status = status.ok();
    assert_eq!(status["id"], session.as_str());
    assert_eq!(job(&status, "approve")["status"], "pending");
    // A wait that runs out says so.
    let waited = mcp
        .call("wait", json!({"session": session, "timeout_secs": 1}))
        .ok();
    assert_eq!(waited["finished"], false, "{waited}");
    assert_eq!(waited["status"], "running");

    let logs = mcp
        .call("logs", json!({"job": format!("{session}/build")}))
        .ok();
    assert_eq!(logs["output"], "built\nlast line\n", "{logs}");
    assert_eq!(logs["status"], "succeeded");
    let tail = mcp
        .call(
            "logs",
            json!({"job": format!("{session}/build"), "tail_bytes": 10}),
        )
        .ok();
    assert_eq!(tail["output"], "last line\n", "{tail}");
    assert_eq!(tail["from"], 6);

    let cancelled = mcp
        .call("cancel", json!({"target": format!("{session}/slow")}))
        .ok();
    assert_eq!(cancelled, json!({"cancelled": [], "stopped": ["slow"]}));
    let approved = mcp
        .call(
            "approve",
            json!({"job": format!("{session}/approve"), "comment": "looks good"}),
        )
        .ok();
    assert_eq!(approved["decision"], "approved", "{approved}");
    assert_eq!(approved["status"], "succeeded", "{approved}");

    let ended = mcp
        .call("wait", json!({"session": session, "timeout_secs": 60}))
        .ok();
    assert_eq!(ended["finished"], true, "{ended}");
    // The Rust side sees what the tools did.
    let s = c.status(&session);
    assert_eq!(ended["status"], s["status"]);
    assert_eq!(job(&s, "slow")["status"], "cancelled", "{s}");
    assert_eq!(job(&s, "approve")["status"], "succeeded", "{s}");
    assert_eq!(
        job(&s, "approve")["decision"]["comment"],
        "looks good",
        "{s}"
    );
    assert_eq!(job(&s, "after")["status"], "succeeded", "{s}");

    let results = mcp.call("results", json!({"session": session})).ok();
    assert_eq!(job(&results, "after")["output"], "after\n", "{results}");
    let failed = mcp
        .call("results", json!({"session": session, "failed_only": true}))
        .ok();
    let names: Vec<&Value> = failed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["name"])
        .collect();
    assert_eq!(names, [&json!("slow")], "{failed}");

    // The lists, in the shapes of the CLI's --json.
    let all = mcp.call("status", json!({})).ok();
    assert!(
        all["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == session.as_str()),
        "{all}"
    );
    let workers = mcp.call("workers", json!({}));
    assert!(workers.structured.is_null(), "an array is text only");
    let workers = workers.ok();
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    assert_eq!(workers[0]["name"], "w");
    assert_eq!(workers[0]["slots"], 2);
    let agents = mcp.call("agents", json!({})).ok();
    assert_eq!(agents, c.aam(&["agents", "--json"]).expect_code(0).json());
}

#[test]
fn bad_input_is_a_tool_error_with_the_cli_s_message() {
    let c = Cluster::with_manager();
    let mut mcp = McpClient::start(&c);
    // A batch file the CLI refuses (checked locally), and one the manager
    // refuses (an unknown agent): the same message either way.
    c.write(
        "bad.toml",
        "name = \"bad\"\n[[jobs]]\nname = \"a\"\ncommand = \"cargo test\"\n",
    );
    c.write(
        "unknown.json",
        r#"{"name": "unknown", "jobs": [{"name": "a", "agent": "nobody", "prompt": "hi"}]}"#,
    );
    // A JSON file bigger than a part is streamed, as by `aam submit`: its
    // first bad job stops it before the manager's check across the jobs
    // (here, a dependency on a job that is not there) is reached.
    let mut jobs: Vec<Value> = (0..12_000)
        .map(|i| json!({"name": format!("t{i}"), "command": ["echo", format!("{i:0>400}")]}))
        .collect();
    jobs[3]["timeout"] = json!("soon");
    jobs[11_999]["depends_on"] = json!(["nowhere"]);
    c.write(
        "big.json",
        &json!({"name": "big", "jobs": jobs}).to_string(),
    );
    for file in ["bad.toml", "unknown.json", "big.json"] {
        let cli = c.aam(&["submit", file]).expect_code(2);
        let answer = mcp.call("submit", json!({"path": file}));
        assert_eq!(answer.error(), cli_message(&cli.stderr), "{file}");
        assert!(
            answer.error().starts_with(&format!("{file}: ")),
            "{answer:?}"
        );
    }
    let big = mcp.call("submit", json!({"path": "big.json"}));
    assert!(
        big.error()
            .starts_with("big.json: job 't3': field 'timeout': ")
            && !big.error().contains("nowhere"),
        "{big:?}"
    );
    // Inline, the batch is called `batch` where a file's name would be.
    let inline = mcp.call(
        "submit",
        json!({"batch": {"name": "bad", "jobs": [{"name": "a", "command": "cargo test"}]}}),
    );
    assert!(
        inline
            .error()
            .starts_with("batch: job 'a': field 'command': "),
        "{inline:?}"
    );
    let neither = mcp.call("submit", json!({}));
    assert!(neither.error().contains("`batch`"), "{neither:?}");

    let cli = c.aam(&["status", "s999"]).expect_code(2);
    let answer = mcp.call("status", json!({"session": "s999"}));
    assert_eq!(answer.error(), cli_message(&cli.stderr));
    let answer = mcp.call("logs", json!({"job": "s1"}));
    assert_eq!(
        answer.error(),
        "'s1' names a session, not a job: write s1/JOB"
    );
    let answer = mcp.call("wait", json!({"session": "s1", "timeout_secs": 601}));
    assert!(
        answer.error().contains("limit of 600 seconds"),
        "{answer:?}"
    );
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(sessions, json!([]), "nothing was submitted");
}

#[test]
fn a_manager_that_is_down_is_a_tool_error_naming_its_address_and_the_server_goes_on() {
    let mut c = Cluster::with_manager();
    let mut mcp = McpClient::start(&c);
    mcp.call("status", json!({})).ok();
    c.kill_manager();
    let cli = c.aam(&["status"]).expect_code(3);
    let answer = mcp.call("status", json!({}));
    assert_eq!(answer.error(), cli_message(&cli.stderr));
    assert!(answer.error().contains(&c.addr), "{answer:?}");
    // The same server answers again once the manager is back.
    c.start_manager();
    assert_eq!(mcp.call("status", json!({})).ok()["sessions"], json!([]));
}

/// The MCP config Claude Code is given: `aam mcp` aimed at the cluster.
fn mcp_config(c: &Cluster) -> std::path::PathBuf {
    let config = json!({"mcpServers": {"aam": {
        "type": "stdio",
        "command": bin("aam"),
        "args": ["mcp"],
        "env": {"AAM_MANAGER": c.addr, "AAM_TOKEN": c.token, "AAM_CA": c.cert()},
    }}});
    c.write("mcp.json", &config.to_string())
}

#[test]
fn claude_code_submits_a_session_with_the_aam_mcp_tool() {
    let server = ModelServer::start();
    let c = cluster(1);
    let batch = json!({"name": "from-claude", "jobs": [
        {"name": "hello", "command": ["echo", "hello from claude"]},
    ]});
    server
        .once(
            When::first_turn(),
            Message::new()
                .text("I will submit it to aam.")
                .tool_use("mcp__aam__submit", json!({"batch": batch})),
        )
        .once(When::tool_result(), Message::answer("Submitted."));
    // The agent's environment (stand-in URL, HOME, TMPDIR), run here.
    let agent = ClaudeAgent::new("claude", &server, &c.claude_dir());
    let mut cmd = Command::new(claude_bin());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("ANTHROPIC_") || name.starts_with("CLAUDE") {
            cmd.env_remove(name.as_ref());
        }
    }
    // As root the CLI refuses --dangerously-skip-permissions: the one tool
    // is allowed by name.
    cmd.args(["-p", "--output-format", "stream-json", "--verbose"])
        .arg("--strict-mcp-config")
        .arg("--mcp-config")
        .arg(mcp_config(&c))
        .arg("--allowedTools=mcp__aam__submit")
        .args(["--", "Submit the hello batch to aam"])
        .envs(&agent.env)
        .current_dir(c.dir.path());
    let out = run_command(cmd, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.dump());

    // The model was offered the tool, called it, and got the session id.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}\n{}", out.dump());
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(offered.contains(&"mcp__aam__submit"), "{offered:?}");
    let results = requests[1].tool_results();
    let submitted: Value = serde_json::from_str(&results[0])
        .unwrap_or_else(|e| panic!("the tool's result is not JSON ({e}): {results:?}"));
    let session = submitted["session"].as_str().expect("a session id");
    c.aam(&["wait", session]).expect_code(0);
    let s = c.status(session);
    assert_eq!(s["name"], "from-claude", "{s}");
    assert_eq!(job(&s, "hello")["status"], "succeeded", "{s}");
    assert!(out.stdout.contains("Submitted."), "{}", out.dump());
}
