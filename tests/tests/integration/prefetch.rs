//! Assignments a worker holds beyond its slots (prefetch, issue 18): those
//! of a worker killed with -9 are requeued and run once elsewhere, and with
//! the default `--prefetch auto` one stuck behind a long job goes back to
//! the manager and runs on a free worker meanwhile.

use crate::job;
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A job that notes each start of it in `marks/NAME`, then ends.
fn noting(name: &str, marks: &Path) -> Value {
    json!({
        "name": name,
        "command": ["sh", "-c", "echo \"$AAM_ATTEMPT\" >> \"$MARKS/$AAM_JOB_NAME\""],
        "env": { "MARKS": marks.to_str().unwrap() },
    })
}

/// How many times `name` started (lines in its marks file).
fn starts(marks: &Path, name: &str) -> usize {
    std::fs::read_to_string(marks.join(name))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// What a worker holds (running or waiting for a slot), per `aam workers`.
fn held_by(c: &Cluster, worker: &str) -> usize {
    let workers = c.aam(&["workers", "--json"]).expect_code(0).json();
    workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == worker)
        .map_or(0, |w| w["running"].as_array().unwrap().len())
}

#[test]
fn prefetched_assignments_of_a_killed_worker_are_requeued_and_run_once() {
    let mut c = Cluster::with_manager();
    c.start_worker_with("holder", 1, &["--prefetch", "2"]);
    let marks = c.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let gate = c.gate("gate");
    let mut jobs = vec![json!({
        "name": "long",
        "command": ["sh", "-c", format!("echo x >> \"$MARKS/long\"; {WAIT_FOR_GATE}")],
        "env": { "MARKS": marks.to_str().unwrap(), "GATE": gate.env() },
    })];
    jobs.extend((0..3).map(|i| noting(&format!("q{i}"), &marks)));
    let session = c.submit_json(&json!({ "name": "pf", "jobs": jobs }));
    // One running, two waiting on it for its one slot.
    let held = poll(Duration::from_secs(20), || {
        (held_by(&c, "holder") == 3).then_some(())
    });
    assert!(held.is_some(), "the worker never held 3\n{}", c.logs());
    assert_eq!(starts(&marks, "q0") + starts(&marks, "q1"), 0);
    c.workers[0].kill();
    c.start_worker("other", 2);
    let status = c.poll_status(&session, "the prefetched jobs done", |s| {
        (0..3).all(|i| job(s, &format!("q{i}"))["status"] == "succeeded")
    });
    for i in 0..3 {
        let name = format!("q{i}");
        assert_eq!(
            starts(&marks, &name),
            1,
            "{name} did not start exactly once"
        );
        assert_eq!(job(&status, &name)["worker"], "other", "{name}");
    }
    gate.open();
    c.aam(&["wait", &session]).expect_code(0);
    // The one that ran when its worker died ran again; nothing else did.
    assert_eq!(starts(&marks, "long"), 2);
}

#[test]
fn an_auto_prefetched_job_stuck_behind_a_long_one_goes_back_and_runs_elsewhere() {
    let mut c = Cluster::with_manager();
    c.start_worker("busy", 1);
    let marks = c.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // Short jobs first (no shell, so short even on a loaded machine): the
    // worker's jobs are short, so it prefetches.
    let warm: Vec<_> = (0..10)
        .map(|i| json!({ "name": format!("w{i}"), "command": ["true"] }))
        .collect();
    let warm = c.submit_json(&json!({ "name": "warm", "jobs": warm }));
    c.aam(&["wait", &warm]).expect_code(0);
    let gate = c.gate("gate");
    let session = c.submit_json(&json!({ "name": "stuck", "jobs": [
        { "name": "long", "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() } },
        noting("after", &marks),
    ]}));
    // Given back after a second of waiting, it waits in the queue (its
    // worker gets no prefetch while its slot holds a long job) ...
    let back = c.poll_status(&session, "the prefetched job given back", |s| {
        job(s, "after")["status"] == "queued" && job(s, "after")["attempts"] == 1
    });
    let history = &job(&back, "after")["attempt_history"][0];
    assert_eq!(history["outcome"], "queued", "{back}");
    assert_eq!(history["reason"], "given back by its worker", "{back}");
    assert_eq!(starts(&marks, "after"), 0);
    // ... and runs on the first worker with a free slot, the long one still running.
    c.start_worker("free", 1);
    let done = c.poll_status(&session, "the job done elsewhere", |s| {
        job(s, "after")["status"] == "succeeded"
    });
    assert_eq!(job(&done, "after")["worker"], "free");
    assert_eq!(job(&done, "long")["status"], "running");
    assert_eq!(starts(&marks, "after"), 1);
    gate.open();
    c.aam(&["wait", &session]).expect_code(0);
}
