//! Token roles against a real manager: each role (admin, submit, agent,
//! read, worker) is allowed and refused exactly what it should be, over the
//! CLI (exit 3 and `permission denied: token NAME has role ROLE`), HTTP
//! (403), MCP (a tool error) and the worker handshake; an agent token runs
//! only configured agents; cancelling another token's session is admin's.

use aam_tests::http::{bearer, get, post};
use aam_tests::mcp::McpClient;
use aam_tests::{bin, poll, run_command, Cluster, CmdOutput};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const ADMIN: &str = "alice-admin-token-0123456789";
pub const SUBMIT: &str = "ci-submit-token-0123456789";
pub const AGENT: &str = "bot-agent-token-0123456789";
pub const READ: &str = "reader-read-token-0123456789";
pub const WORKER: &str = "gpu-worker-token-0123456789";

/// A config with one token of each role and an agent to run.
pub fn config() -> String {
    format!(
        "[tokens.alice]\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n\
         [tokens.ci]\ntoken = \"{SUBMIT}\"\nrole = \"submit\"\n\
         [tokens.bot]\ntoken = \"{AGENT}\"\nrole = \"agent\"\n\
         [tokens.reader]\ntoken = \"{READ}\"\nrole = \"read\"\n\
         [tokens.gpu]\ntoken = \"{WORKER}\"\nrole = \"worker\"\n\
         [agents.echo]\ncommand = [\"echo\", \"{{prompt}}\"]\n"
    )
}

/// A cluster with that config, HTTP, and a worker on the main token.
fn cluster() -> Cluster {
    let mut c = Cluster::new();
    c.http = true;
    c.manager_config = Some(c.write("aam.toml", &config()));
    c.start_manager();
    c.start_worker("w", 2);
    c
}

/// `aam ARGS` with `token`.
pub fn as_token(c: &Cluster, token: &str, args: &[&str]) -> CmdOutput {
    let mut cmd = c.aam_command(args);
    cmd.env("AAM_TOKEN", token);
    run_command(cmd, Duration::from_secs(60))
}

/// `aam ARGS` with `token` must be refused: exit 3, the exact message.
pub fn denied(c: &Cluster, token: &str, args: &[&str], name: &str, role: &str) {
    let out = as_token(c, token, args).expect_code(3);
    let want = format!("permission denied: token {name} has role {role}");
    assert!(out.stderr.contains(&want), "{args:?}: {}", out.dump());
}

/// A session held open by a gate, submitted with `token`.
pub fn gated(c: &Cluster, token: &str, file: &str) -> String {
    let path = c.write(
        file,
        "name = \"gated\"\n[[jobs]]\nname = \"gate\"\ngate = true\n\
         [[jobs]]\nname = \"after\"\ncommand = [\"true\"]\ndepends_on = [\"gate\"]\n",
    );
    let out = as_token(c, token, &["submit", "--json", path.to_str().unwrap()]).expect_code(0);
    out.json()["session"].as_str().unwrap().to_string()
}

#[test]
fn each_role_is_allowed_and_refused_exactly_what_it_should_be() {
    let c = cluster();
    let mine = gated(&c, SUBMIT, "mine.toml");
    let failing = c.write(
        "fails.toml",
        "name = \"fails\"\n[[jobs]]\nname = \"f\"\ncommand = [\"false\"]\n",
    );
    let failed = as_token(
        &c,
        SUBMIT,
        &["submit", "--wait", "--json", failing.to_str().unwrap()],
    );
    let failed = failed.expect_code(1).json()["session"]
        .as_str()
        .unwrap()
        .to_string();

    // read: every read, nothing else.
    for args in [
        vec!["status", &mine],
        vec!["sessions"],
        vec!["workers"],
        vec!["agents"],
        vec!["results", &failed],
    ] {
        as_token(&c, READ, &args).expect_code(0);
    }
    as_token(&c, READ, &["logs", &format!("{failed}/f")]).expect_code(0);
    let file = failing.to_str().unwrap();
    let gate = format!("{mine}/gate");
    for args in [
        vec!["submit", file],
        vec!["approve", &gate],
        vec!["reject", &gate],
        vec!["cancel", &mine],
        vec!["retry", &failed],
        vec!["gc"],
        vec!["audit"],
    ] {
        denied(&c, READ, &args, "reader", "read");
    }
    // worker: nothing a client asks.
    for args in [
        vec!["status", &mine],
        vec!["sessions"],
        vec!["submit", file],
    ] {
        denied(&c, WORKER, &args, "gpu", "worker");
    }
    // submit: submit, approve, retry, cancel its own; not gc or audit.
    as_token(&c, SUBMIT, &["retry", &failed]).expect_code(0);
    as_token(&c, SUBMIT, &["approve", &gate]).expect_code(0);
    as_token(&c, SUBMIT, &["wait", &mine]).expect_code(0);
    denied(&c, SUBMIT, &["gc"], "ci", "submit");
    denied(&c, SUBMIT, &["audit"], "ci", "submit");
    let own = gated(&c, SUBMIT, "own.toml");
    as_token(&c, SUBMIT, &["cancel", &own]).expect_code(0);
    // Another token's session: only admin cancels it.
    let others = gated(&c, ADMIN, "others.toml");
    denied(&c, SUBMIT, &["cancel", &others], "ci", "submit");
    let out = as_token(&c, SUBMIT, &["cancel", &others]).expect_code(3);
    assert!(
        out.stderr.contains(&format!(
            "session {others} was submitted by token alice; only an admin token may cancel"
        )),
        "{}",
        out.dump()
    );
    as_token(&c, ADMIN, &["cancel", &own]).expect_code(0);
    as_token(&c, ADMIN, &["cancel", &others]).expect_code(0);
    // admin (and the main token): gc and audit.
    as_token(&c, ADMIN, &["gc"]).expect_code(0);
    as_token(&c, ADMIN, &["audit"]).expect_code(0);
    c.aam(&["gc"]).expect_code(0);
}

#[test]
fn an_agent_token_runs_only_configured_agents() {
    let c = cluster();
    let refused = [
        (
            "command",
            "[[jobs]]\nname = \"a\"\ncommand = [\"id\"]\n",
            "sets `command`",
        ),
        (
            "env",
            "[[jobs]]\nname = \"a\"\nagent = \"echo\"\nprompt = \"x\"\nenv = { X = \"1\" }\n",
            "sets `env`",
        ),
        (
            "abs",
            "[[jobs]]\nname = \"a\"\nagent = \"echo\"\nprompt = \"x\"\nworkdir = \"/etc\"\n",
            "absolute",
        ),
        (
            "up",
            "[[jobs]]\nname = \"a\"\nagent = \"echo\"\nprompt = \"x\"\nworkdir = \"../x\"\n",
            "climbs out",
        ),
    ];
    for (name, jobs, why) in refused {
        let file = c.write(
            &format!("{name}.toml"),
            &format!("name = \"{name}\"\n{jobs}"),
        );
        let out = as_token(&c, AGENT, &["submit", file.to_str().unwrap()]).expect_code(3);
        let want = "permission denied: token bot has role agent: job a";
        assert!(out.stderr.contains(want), "{}", out.dump());
        assert!(out.stderr.contains(why), "{}", out.dump());
    }
    let ok = c.write(
        "ok.toml",
        "name = \"ok\"\n[[jobs]]\nname = \"a\"\nagent = \"echo\"\nprompt = \"hello\"\n",
    );
    let out = as_token(&c, AGENT, &["submit", "--wait", ok.to_str().unwrap()]);
    out.expect_code(0);
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
}

#[test]
fn http_answers_403_to_a_request_beyond_the_role() {
    let c = cluster();
    let mine = gated(&c, SUBMIT, "mine.toml");
    let reader = bearer(READ);
    let reader = [("Authorization", reader.1.as_str())];
    get(&c.url("/api/sessions"), &reader).expect(200);
    get(&c.url(&format!("/api/sessions/{mine}")), &reader).expect(200);
    let refused = post(&c.url(&format!("/api/sessions/{mine}/cancel")), &reader, "");
    let refused = refused.expect(403);
    assert_eq!(
        refused.json()["error"],
        "permission denied: token reader has role read"
    );
    post(
        &c.url(&format!("/api/jobs/{mine}/gate/approve")),
        &reader,
        "{}",
    )
    .expect(403);
    get(&c.url("/api/audit"), &reader).expect(403);
    // A worker token reads nothing, the event stream included.
    let worker = bearer(WORKER);
    let worker = [("Authorization", worker.1.as_str())];
    let refused = get(&c.url("/api/sessions"), &worker).expect(403);
    assert_eq!(
        refused.json()["error"],
        "permission denied: token gpu has role worker"
    );
    get(&c.url("/api/events"), &worker).expect(403);
    // The dashboard's sign-in takes a read token.
    let login = json!({ "token": READ }).to_string();
    post(
        &c.url("/api/login"),
        &[("Content-Type", "application/json")],
        &login,
    )
    .expect(204);
    let admin = bearer(&c.token);
    let audit = get(&c.url("/api/audit"), &[("Authorization", admin.1.as_str())]).expect(200);
    let audit = audit.json();
    let denied =
        audit.as_array().unwrap().iter().find(|r| {
            r["token"] == "reader" && r["action"] == "cancel" && r["outcome"] == "denied"
        });
    assert!(denied.is_some(), "{audit}");
}

#[test]
fn a_refusal_is_a_tool_error_over_mcp() {
    let c = cluster();
    let mut mcp = McpClient::start_with(c.dir.path(), &c.addr, READ);
    mcp.call("status", json!({})).ok();
    let batch = json!({"name": "b", "jobs": [{"name": "a", "command": ["true"]}]});
    let answer = mcp.call("submit", json!({ "batch": batch }));
    assert_eq!(
        answer.error(),
        "permission denied: token reader has role read"
    );
}

/// Starts `aam-worker` with `token`; it is stopped when dropped.
fn worker_with(c: &Cluster, name: &str, token: &str) -> aam_tests::Proc {
    let log = c.path(&format!("worker-{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin("aam-worker"))
        .args(["--manager", &c.addr, "--name", name, "--slots", "1"])
        .arg("--workdir")
        .arg(c.dir.path())
        .env("AAM_TOKEN", token)
        .env("AAM_CA", c.cert())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    aam_tests::Proc {
        name: name.into(),
        child,
        log,
    }
}

#[test]
fn only_tokens_with_the_worker_role_register_workers() {
    let c = cluster();
    let mut refused = worker_with(&c, "intruder", SUBMIT);
    let status = poll(Duration::from_secs(20), || {
        refused.child.try_wait().ok().flatten()
    })
    .expect("it exits");
    assert_eq!(status.code(), Some(3), "{}", refused.log_text());
    assert!(
        refused
            .log_text()
            .contains("permission denied: token ci has role submit"),
        "{}",
        refused.log_text()
    );
    let _gpu = worker_with(&c, "gpu-1", WORKER);
    let listed = poll(Duration::from_secs(20), || {
        let workers = c.aam(&["workers", "--json"]).expect_code(0).json();
        let names: Vec<_> = workers
            .as_array()?
            .iter()
            .map(|w| w["name"].clone())
            .collect();
        names.contains(&json!("gpu-1")).then_some(())
    });
    assert!(listed.is_some(), "{}", c.logs());
    let audit = c.aam(&["audit", "--json"]).expect_code(0).json();
    let records = audit.as_array().unwrap();
    let by = |token: &str, outcome: &str| {
        records
            .iter()
            .any(|r| r["token"] == token && r["action"] == "register" && r["outcome"] == outcome)
    };
    assert!(by("ci", "denied") && by("gpu", "done"), "{audit}");
}
