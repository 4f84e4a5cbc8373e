//! Shared resources (issue 15): jobs that use a resource of capacity 1
//! never overlap across sessions and the one waiting says why; a worker
//! killed while its job holds one frees it once it is declared lost;
//! unknown resources and counts past capacity are refused at submit;
//! `aam resources --json` shows who holds what, also after a manager
//! restart.

use crate::job;
use aam_tests::http::{bearer, get};
use aam_tests::{poll, Cluster, Gate, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A manager (serving HTTP) whose config declares `db = 1` and
/// `emulator = 4`, with `extra` config lines and environment.
fn cluster(extra: &str, env: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::new();
    c.http = true;
    let config = c.write(
        "aam.toml",
        &format!("{extra}\n[resources]\ndb = 1\nemulator = 4\n"),
    );
    c.manager_config = Some(config);
    for (k, v) in env {
        c.manager_env.push((k.to_string(), v.to_string()));
    }
    c.start_manager();
    c
}

/// A job using `db` that records its start and end (ns) in `marks/NAME`,
/// holding at `gate` in between.
fn marked(name: &str, marks: &Path, gate: &Gate) -> Value {
    json!({
        "name": name,
        "uses": ["db"],
        "command": ["sh", "-c", format!("s=$(date +%s%N); {WAIT_FOR_GATE}; e=$(date +%s%N); echo \"$s $e\" > \"$MARKS/$AAM_JOB_NAME\"")],
        "env": { "MARKS": marks.to_str().unwrap(), "GATE": gate.env() },
    })
}

fn interval(marks: &Path, name: &str) -> (u128, u128) {
    let text = std::fs::read_to_string(marks.join(name)).unwrap();
    let (s, e) = text.trim().split_once(' ').unwrap();
    (s.parse().unwrap(), e.parse().unwrap())
}

/// `aam resources --json`, the entry of `name`.
fn resource(c: &Cluster, name: &str) -> Value {
    let out = c.aam(&["resources", "--json"]).expect_code(0).json();
    out.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no resource {name} in {out}"))
        .clone()
}

/// Polls `aam resources --json` until `name`'s entry satisfies `until`.
fn poll_resource(c: &Cluster, name: &str, what: &str, until: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    poll(Duration::from_secs(20), || {
        let out = c.aam(&["resources", "--json"]);
        if out.code != 0 {
            return None; // a manager restarting
        }
        last = out
            .json()
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)?
            .clone();
        until(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("never saw {what}; last: {last}\n{}", c.logs()))
}

#[test]
fn jobs_of_two_sessions_never_hold_a_resource_of_capacity_one_at_once() {
    let mut c = cluster("", &[]);
    c.start_worker("w1", 4);
    let marks = c.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let gate = c.gate("gate");
    let first = c.submit(&c.write(
        "first.json",
        &json!({"name": "tests", "jobs": [marked("a", &marks, &gate)]}).to_string(),
    ));
    c.poll_status(&first, "a running", |s| job(s, "a")["status"] == "running");
    let second = c.submit(&c.write(
        "second.json",
        &json!({"name": "more", "jobs": [marked("b", &marks, &gate)]}).to_string(),
    ));
    let expected = format!("waiting for resource db (1 of 1 in use by {first}/a)");
    let status = c.poll_status(&second, "b waiting for db", |s| {
        job(s, "b")["reason"] == expected.as_str()
    });
    assert_eq!(job(&status, "b")["status"], "queued");
    let db = resource(&c, "db");
    assert_eq!(
        (db["capacity"].as_u64(), db["in_use"].as_u64()),
        (Some(1), Some(1)),
        "{db}"
    );
    assert_eq!(db["holders"][0]["job"], format!("{first}/a"), "{db}");
    assert_eq!(db["holders"][0]["worker"], "w1", "{db}");
    assert_eq!(resource(&c, "emulator")["in_use"], 0);
    // The API answers what the CLI prints; /metrics has the gauges.
    let (header, token) = bearer(&c.token);
    let api: Value = serde_json::from_str(
        &get(&c.url("/api/resources"), &[(header, &token)])
            .expect(200)
            .body,
    )
    .unwrap();
    assert_eq!(api, c.aam(&["resources", "--json"]).expect_code(0).json());
    let metrics = get(&c.url("/metrics"), &[]).expect(200).body;
    for line in [
        "aam_resource_capacity{resource=\"db\"} 1\n",
        "aam_resource_in_use{resource=\"db\"} 1\n",
        "aam_resource_in_use{resource=\"emulator\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    gate.open();
    c.aam(&["wait", &first]).expect_code(0);
    c.aam(&["wait", &second]).expect_code(0);
    let (a, b) = (interval(&marks, "a"), interval(&marks, "b"));
    assert!(a.1 <= b.0 || b.1 <= a.0, "a {a:?} and b {b:?} overlap");
    let db = resource(&c, "db");
    assert_eq!(db["in_use"], 0, "{db}");
    assert_eq!(db["holders"], json!([]), "{db}");
}

#[test]
fn unknown_resources_and_counts_past_capacity_are_refused_at_submit() {
    let c = cluster("", &[]);
    let cases = [
        (json!(["gpu"]), "unknown resource gpu"),
        (
            json!([{"name": "emulator", "count": 5}]),
            "uses 5 of resource emulator, more than its capacity of 4",
        ),
    ];
    for (uses, message) in cases {
        let batch = json!({"name": "bad", "jobs": [
            {"name": "fine", "command": ["true"]},
            {"name": "greedy", "command": ["true"], "uses": uses},
        ]});
        let file = c.write("bad.json", &batch.to_string());
        let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
        assert!(out.stderr.contains("greedy"), "{}", out.dump());
        assert!(out.stderr.contains(message), "{}", out.dump());
    }
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(sessions.as_array().map(Vec::len), Some(0), "{sessions}");
}

#[test]
fn a_worker_killed_while_its_job_holds_a_resource_frees_it_when_lost() {
    let env = [("AAM_HEARTBEAT_MS", "200"), ("AAM_LEASE_MS", "1000")];
    let mut c = cluster("max_worker_losses = 1", &env);
    c.start_worker("w1", 1);
    let gate = c.gate("never");
    let holder = c.submit_json(&json!({"name": "holder", "jobs": [{
        "name": "a", "uses": ["db"],
        "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() },
    }]}));
    c.poll_status(&holder, "a running", |s| job(s, "a")["status"] == "running");
    c.start_worker("w2", 1);
    let waiter = c.submit_json(&json!({"name": "waiter", "jobs": [{
        "name": "b", "uses": ["db"], "command": ["true"],
    }]}));
    c.poll_status(&waiter, "b waiting for db", |s| {
        job(s, "b")["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("waiting for resource db (1 of 1 in use by"))
    });
    c.workers[0].kill();
    let done = c.poll_status(&waiter, "b ran", |s| job(s, "b")["status"] == "succeeded");
    assert_eq!(job(&done, "b")["worker"], "w2", "{done}");
    let held = c.status(&holder);
    assert_eq!(job(&held, "a")["status"], "failed", "{held}");
    assert_eq!(resource(&c, "db")["in_use"], 0);
}

#[test]
fn holdings_survive_a_manager_restart_and_are_released_at_the_end() {
    let env = [("AAM_RECONNECT_GRACE_MS", "30000")];
    let mut c = cluster("", &env);
    c.start_worker("w1", 2);
    let gate = c.gate("gate");
    let holder = c.submit_json(&json!({"name": "holder", "jobs": [{
        "name": "a", "uses": [{"name": "emulator", "count": 3}],
        "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() },
    }]}));
    c.poll_status(&holder, "a running", |s| job(s, "a")["status"] == "running");
    c.kill_manager();
    c.start_manager();
    let emulator = poll_resource(&c, "emulator", "a holding 3 after the restart", |r| {
        r["in_use"] == 3 && r["holders"][0]["job"] == format!("{holder}/a").as_str()
    });
    assert_eq!(emulator["capacity"], 4);
    // 1 left: a job wanting 2 waits, saying so.
    let waiter = c.submit_json(&json!({"name": "waiter", "jobs": [{
        "name": "b", "uses": [{"name": "emulator", "count": 2}], "command": ["true"],
    }]}));
    c.poll_status(&waiter, "b waiting", |s| {
        job(s, "b")["reason"]
            == format!("waiting for resource emulator (3 of 4 in use by {holder}/a)").as_str()
    });
    gate.open();
    c.aam(&["wait", &holder]).expect_code(0);
    c.aam(&["wait", &waiter]).expect_code(0);
    poll_resource(&c, "emulator", "nothing held at the end", |r| {
        r["in_use"] == 0
    });
}
