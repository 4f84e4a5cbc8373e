//! Gates: a job that runs nothing and waits for `aam approve` or
//! `aam reject`; who decided (the token's name), when and why are kept.

use crate::job;
use aam_tests::{poll, run_command, Cluster, WAIT_FOR_GATE};
use std::time::Duration;

const ALICE: &str = "alice-token-0123456789";

const PIPELINE: &str = r#"
name = "pipeline"
[[jobs]]
name = "dev"
command = ["true"]
[[jobs]]
name = "stage"
command = ["sh", "-c", 'WAIT_FOR_GATE']
env = { GATE = "GATE_PATH" }
[[jobs]]
name = "approve-prod"
gate = true
depends_on = ["dev", "stage"]
[[jobs]]
name = "prod"
command = ["echo", "deployed"]
depends_on = ["approve-prod"]
"#;

fn awaiting(c: &Cluster, session: &str) -> bool {
    let s = c.status(session);
    let gate = job(&s, "approve-prod");
    gate["status"] == "pending" && gate["reason"] == "awaiting approval"
}

/// Runs `aam ARGS`, which must fail as bad input saying `why`.
fn refused(c: &Cluster, args: &[&str], why: &str) {
    let out = c.aam(args).expect_code(2);
    assert!(out.stderr.contains(why), "{}", out.dump());
}

#[test]
fn approve_and_reject_gates_with_an_audit_record() {
    let mut c = Cluster::new();
    c.manager_config = Some(c.write("aam.toml", &format!("[tokens]\nalice = \"{ALICE}\"\n")));
    c.start_manager();
    c.start_worker("w", 2);
    let stage_gate = c.gate("stage-may-end");
    let file = c.write(
        "pipeline.toml",
        &PIPELINE
            .replace("GATE_PATH", stage_gate.env())
            .replace("WAIT_FOR_GATE", WAIT_FOR_GATE),
    );

    // Approved, by alice; not before its dependencies are done.
    let first = c.submit(&file);
    let gate_of = |session: &str| format!("{session}/approve-prod");
    refused(
        &c,
        &["approve", &gate_of(&first)],
        "waiting for its dependencies",
    );
    stage_gate.open();
    assert!(poll(Duration::from_secs(20), || awaiting(&c, &first)
        .then_some(()))
    .is_some());
    assert_eq!(job(&c.status(&first), "prod")["status"], "pending");
    let mut approve = c.aam_command(&[
        "approve",
        &format!("{first}/approve-prod"),
        "--comment",
        "looks good",
    ]);
    approve.env("AAM_TOKEN", ALICE);
    run_command(approve, Duration::from_secs(30)).expect_code(0);
    c.aam(&["wait", &first]).expect_code(0);
    let s = c.status(&first);
    let gate = job(&s, "approve-prod");
    assert_eq!(gate["status"], "succeeded");
    assert_eq!(gate["decision"]["approved"], true);
    assert_eq!(gate["decision"]["by"], "alice");
    assert_eq!(gate["decision"]["comment"], "looks good");
    assert!(gate["decision"]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(gate["attempts"], 0, "a gate runs nothing");
    assert_eq!(job(&s, "prod")["status"], "succeeded");
    let md = c.aam(&["results", &first]).expect_code(0).stdout;
    assert!(md.contains("**Approved** by alice"), "{md}");
    refused(
        &c,
        &["approve", &gate_of(&first)],
        "already approved by alice",
    );
    refused(&c, &["approve", &format!("{first}/dev")], "is not a gate");

    // Rejected, by the manager's own token ("admin").
    let second = c.submit(&file);
    assert!(poll(Duration::from_secs(20), || awaiting(&c, &second)
        .then_some(()))
    .is_some());
    let essay = "x".repeat(5000);
    let long = ["reject", &gate_of(&second), "--comment", &essay];
    refused(&c, &long, "comment: 5000 bytes, more than the 4096 allowed");
    c.aam(&[
        "reject",
        &format!("{second}/approve-prod"),
        "--comment",
        "not today",
    ])
    .expect_code(0);
    c.aam(&["wait", &second]).expect_code(1);
    let s = c.status(&second);
    let gate = job(&s, "approve-prod");
    assert_eq!(gate["status"], "failed");
    assert_eq!(gate["decision"]["by"], "admin");
    assert_eq!(gate["reason"], "rejected by admin: not today");
    assert_eq!(job(&s, "prod")["status"], "skipped");
}
