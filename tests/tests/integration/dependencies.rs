//! Dependencies: a job starts only after its dependencies finished; a failed
//! dependency skips everything downstream and fails the session.

use crate::job;
use aam_tests::Cluster;

#[test]
fn dependents_wait_and_failures_skip_downstream() {
    let mut c = Cluster::with_manager();
    c.start_worker("w1", 4);
    c.start_worker("w2", 4);
    let file = c.write(
        "deps.toml",
        r#"
name = "deps"
[[jobs]]
name = "first"
command = ["sh", "-c", "sleep 0.3"]
[[jobs]]
name = "second"
command = ["sh", "-c", "sleep 0.2"]
[[jobs]]
name = "after-both"
command = ["true"]
depends_on = ["first", "second"]
[[jobs]]
name = "broken"
command = ["sh", "-c", "exit 4"]
[[jobs]]
name = "needs-broken"
command = ["true"]
depends_on = ["broken"]
[[jobs]]
name = "chain"
command = ["true"]
depends_on = ["needs-broken", "first"]
[[jobs]]
name = "loner"
command = ["true"]
"#,
    );
    let session = c.submit(&file);
    let wait = c.aam(&["wait", &session]).expect_code(1);
    assert!(wait.stderr.contains("failed"), "{}", wait.dump());

    let s = c.status(&session);
    assert_eq!(s["status"], "failed");
    let after = job(&s, "after-both");
    assert_eq!(after["status"], "succeeded");
    for dep in ["first", "second"] {
        let d = job(&s, dep);
        // RFC 3339 UTC timestamps of one format compare as strings.
        assert!(
            after["started_at"].as_str().unwrap() >= d["finished_at"].as_str().unwrap(),
            "after-both started before {dep} finished: {after} {d}"
        );
    }
    assert_eq!(job(&s, "broken")["status"], "failed");
    assert_eq!(job(&s, "broken")["exit_code"], 4);
    for skipped in ["needs-broken", "chain"] {
        let j = job(&s, skipped);
        assert_eq!(j["status"], "skipped", "{j}");
        assert_eq!(j["attempts"], 0, "{j}");
    }
    assert!(job(&s, "needs-broken")["reason"]
        .as_str()
        .unwrap()
        .contains("'broken'"));
    assert!(job(&s, "chain")["reason"]
        .as_str()
        .unwrap()
        .contains("'needs-broken'"));
    assert_eq!(job(&s, "loner")["status"], "succeeded");
    let md = c.aam(&["results", &session]).expect_code(0).stdout;
    assert!(md.contains("| ⏭ | chain | skipped |"), "{md}");
}

#[test]
fn when_conditions_run_handlers_and_skip_what_can_no_longer_run() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 4);
    let file = c.write(
        "when.toml",
        r#"
name = "when"
[[jobs]]
name = "a"
command = ["sh", "-c", "exit 1"]
[[jobs]]
name = "b"
command = ["true"]
[[jobs]]
name = "on-fail"
command = ["echo", "cleaning up after a"]
depends_on = [{ job = "a", when = "failed" }]
[[jobs]]
name = "on-success"
command = ["true"]
depends_on = ["a"]
[[jobs]]
name = "always"
command = ["true"]
depends_on = [{ job = "a", when = "finished" }, "b"]
[[jobs]]
name = "chain1"
command = ["true"]
depends_on = [{ job = "on-success", when = "succeeded" }]
[[jobs]]
name = "chain2"
command = ["true"]
depends_on = [{ job = "chain1", when = "finished" }]
[[jobs]]
name = "b-failed"
command = ["true"]
depends_on = [{ job = "b", when = "failed" }]
"#,
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    let expect = [
        ("a", "failed"),
        ("b", "succeeded"),
        ("on-fail", "succeeded"),
        ("on-success", "skipped"),
        ("always", "succeeded"),
        ("chain1", "skipped"),
        ("chain2", "succeeded"),
        ("b-failed", "skipped"),
    ];
    for (name, status) in expect {
        assert_eq!(job(&s, name)["status"], status, "{name}: {}", job(&s, name));
    }
    assert_eq!(
        job(&s, "on-success")["reason"],
        "dependency 'a' ended failed, not succeeded"
    );
    assert_eq!(
        job(&s, "chain1")["reason"],
        "dependency 'on-success' ended skipped, not succeeded"
    );
    assert_eq!(
        job(&s, "b-failed")["reason"],
        "dependency 'b' ended succeeded, not failed"
    );
    assert_eq!(
        job(&s, "always")["depends_on"][0],
        serde_json::json!({"job": "a", "when": "finished"})
    );
    assert_eq!(s["status"], "failed");
}

#[test]
fn inputs_reach_a_job_on_another_worker_with_failed_dependencies_listed() {
    let mut c = Cluster::new();
    c.manager_config = Some(c.write(
        "aam.toml",
        "[agents.reader]\ncommand = [\"sh\", \"-c\", \"cat \\\"$0\\\"\", \"{inputs_md}\"]\n",
    ));
    c.start_manager();
    c.start_worker("w1", 2);
    c.start_worker("w2", 2);
    let copy = c.path("inputs-copy.json");
    let file = c.write(
        "inputs.json",
        &serde_json::json!({"name": "inputs", "jobs": [
            { "name": "tests", "command": ["sh", "-c", "echo '12 passed'"] },
            { "name": "scan", "command": ["sh", "-c", "echo '1 finding'; exit 3"] },
            { "name": "synth",
              "command": ["sh", "-c", "cat \"$AAM_INPUTS_MD\"; cp \"$AAM_INPUTS\" \"$COPY\""],
              "env": { "COPY": copy.to_str().unwrap() },
              "depends_on": ["tests", { "job": "scan", "when": "finished" }] },
            { "name": "agent-reads", "agent": "reader", "prompt": "read them", "depends_on": ["tests"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(1);
    let md = c
        .aam(&["logs", &format!("{session}/synth")])
        .expect_code(0)
        .stdout;
    assert!(md.contains("## ✅ tests — succeeded (exit 0)"), "{md}");
    assert!(md.contains("12 passed"), "{md}");
    assert!(md.contains("## ❌ scan — failed (exit 3)"), "{md}");
    assert!(md.contains("1 finding"), "{md}");
    let inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(inputs[0]["name"], "tests");
    assert_eq!(inputs[1]["name"], "scan");
    assert_eq!(inputs[1]["status"], "failed");
    assert_eq!(inputs[1]["exit_code"], 3);
    assert_eq!(inputs[1]["when"], "finished");
    assert_eq!(inputs[1]["output"], "1 finding\n");
    let agent = c
        .aam(&["logs", &format!("{session}/agent-reads")])
        .expect_code(0)
        .stdout;
    assert!(agent.starts_with("# Inputs of agent-reads"), "{agent}");
    assert!(agent.contains("12 passed"), "{agent}");
    // The jobs ran in other processes than the manager, on either worker.
    let s = c.status(&session);
    assert!(["w1", "w2"].contains(&job(&s, "synth")["worker"].as_str().unwrap()));
}

#[test]
fn retry_runs_what_did_not_succeed_and_keeps_what_did() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    let fix = c.path("fixed");
    let file = c.write(
        "retry.json",
        &serde_json::json!({"name": "retry", "jobs": [
            { "name": "good", "command": ["echo", "fine"] },
            { "name": "flaky", "command": ["sh", "-c", "[ -e \"$FIX\" ] || { echo broken; exit 1; }"],
              "env": { "FIX": fix.to_str().unwrap() } },
            { "name": "after", "command": ["echo", "after"], "depends_on": ["flaky"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(1);
    let failed = c
        .aam(&["results", &session, "--failed"])
        .expect_code(0)
        .stdout;
    assert!(failed.contains("## ❌ Did not succeed (1)"), "{failed}");
    assert!(failed.contains("## ⏭ Skipped (1)"), "{failed}");
    assert!(
        !failed.contains("| good |"),
        "--failed shows only what did not succeed: {failed}"
    );
    let json = c
        .aam(&["results", &session, "--json", "--failed"])
        .expect_code(0)
        .json();
    let names: Vec<&str> = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["flaky", "after"]);

    std::fs::write(&fix, "").unwrap();
    let out = c.aam(&["retry", &session]).expect_code(0);
    assert!(
        out.stdout.contains("running 2 jobs again: flaky, after"),
        "{}",
        out.dump()
    );
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    assert_eq!(s["status"], "succeeded");
    assert_eq!(job(&s, "good")["attempts"], 1, "what succeeded is kept");
    assert_eq!(job(&s, "flaky")["attempts"], 2);
    assert_eq!(job(&s, "after")["status"], "succeeded");
    let all = c.aam(&["results", &session]).expect_code(0).stdout;
    assert!(all.contains("## ✅ Succeeded (3)"), "{all}");
    let nothing = c.aam(&["retry", &session]).expect_code(2);
    assert!(
        nothing.stderr.contains("nothing to retry"),
        "{}",
        nothing.dump()
    );
}
