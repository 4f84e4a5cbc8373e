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
