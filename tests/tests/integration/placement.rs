//! Placement: `max_parallel` is never exceeded, higher priority runs first,
//! `requires` labels choose the worker, and status says why a job waits.

use crate::job;
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::json;
use std::time::Duration;

#[test]
fn max_parallel_is_never_exceeded() {
    let mut c = Cluster::with_manager();
    c.start_worker("w1", 4);
    c.start_worker("w2", 4);
    let marks = c.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let gate = c.gate("gate");
    // Each job records its start and end (ns) itself, so the check does not
    // depend on the manager's clock or its view of the run. The first ones
    // hold at the gate until the test has seen the limit reached.
    let jobs: Vec<_> = (0..12)
        .map(|i| {
            json!({
                "name": format!("r{i}"),
                "command": ["sh", "-c", format!("s=$(date +%s%N); {WAIT_FOR_GATE}; sleep 0.1; e=$(date +%s%N); echo \"$s $e\" > \"$MARKS/$AAM_JOB_NAME\"")],
                "env": { "MARKS": marks.to_str().unwrap(), "GATE": gate.env() },
            })
        })
        .collect();
    let file = c.write(
        "limited.json",
        &json!({"name": "limited", "max_parallel": 3, "jobs": jobs}).to_string(),
    );
    let session = c.submit(&file);
    // 8 free slots, but 3 run and the other 9 wait, saying why.
    let limited = c.poll_status(&session, "3 jobs running", |s| s["counts"]["running"] == 3);
    assert_eq!(limited["counts"]["queued"], 9, "{}", limited["counts"]);
    for j in limited["jobs"].as_array().unwrap() {
        if j["status"] == "queued" {
            assert_eq!(
                j["reason"], "session limit reached (max_parallel = 3)",
                "{j}"
            );
        }
    }
    gate.open();
    c.aam(&["wait", &session]).expect_code(0);
    let mut events = Vec::new();
    for i in 0..12 {
        let text = std::fs::read_to_string(marks.join(format!("r{i}"))).unwrap();
        let (s, e) = text.trim().split_once(' ').unwrap();
        events.push((s.parse::<u128>().unwrap(), 1i32));
        events.push((e.parse::<u128>().unwrap(), -1i32));
    }
    events.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, delta) in events {
        running += delta;
        most = most.max(running);
    }
    // The three held at the gate overlap for certain; never a fourth.
    assert_eq!(most, 3, "at most 3 at once, and the limit was used");
}

#[test]
fn higher_priority_runs_first_and_equals_keep_their_order() {
    let mut c = Cluster::with_manager();
    let order = c.path("order");
    let jobs: Vec<_> = [
        ("low-a", 0),
        ("high", 10),
        ("low-b", 0),
        ("mid", 5),
        ("low-c", 0),
    ]
    .iter()
    .map(|(name, priority)| {
        json!({
            "name": name,
            "priority": priority,
            "command": ["sh", "-c", "echo $AAM_JOB_NAME >> \"$ORDER\""],
            "env": { "ORDER": order.to_str().unwrap() },
        })
    })
    .collect();
    let file = c.write(
        "prio.json",
        &json!({"name": "prio", "jobs": jobs}).to_string(),
    );
    // Submitted before any worker exists: the queue alone decides the order.
    let session = c.submit(&file);
    c.start_worker("one", 1);
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "high\nmid\nlow-a\nlow-b\nlow-c\n"
    );
}

#[test]
fn requires_places_jobs_on_matching_workers_and_says_why_one_waits() {
    let mut c = Cluster::with_manager();
    c.start_worker_with("plain", 2, &[]);
    c.start_worker_with("gpu-box", 1, &["--label", "gpu=true", "--label", "zone=a"]);
    let file = c.write(
        "labels.toml",
        r#"
name = "labels"
[[jobs]]
name = "train"
command = ["true"]
requires = { gpu = "true" }
[[jobs]]
name = "anywhere"
command = ["true"]
[[jobs]]
name = "tpu-only"
command = ["true"]
requires = { tpu = "v5" }
"#,
    );
    let session = c.submit(&file);
    let stuck = c.poll_status(&session, "the placeable jobs done", |s| {
        job(s, "train")["status"] == "succeeded" && job(s, "anywhere")["status"] == "succeeded"
    });
    assert_eq!(job(&stuck, "train")["worker"], "gpu-box");
    let tpu = job(&stuck, "tpu-only");
    assert_eq!(tpu["status"], "queued");
    assert_eq!(tpu["reason"], "no connected worker has the labels tpu=v5");
    // A matching worker arrives: the job runs there.
    c.start_worker_with("tpu-box", 1, &["--label", "tpu=v5"]);
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(job(&c.status(&session), "tpu-only")["worker"], "tpu-box");
}

#[test]
fn estimates_come_from_history_and_are_absent_without_it() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    let file = c.write(
        "est.toml",
        r#"
name = "est"
[[jobs]]
name = "a"
command = ["sleep", "0.4"]
[[jobs]]
name = "b"
command = ["sleep", "0.4"]
[[jobs]]
name = "c"
command = ["echo", "done"]
depends_on = ["a", "b"]
"#,
    );
    let path = file.to_str().unwrap();
    let first = c.aam(&["submit", path, "--json"]).expect_code(0).json();
    assert_eq!(first["estimate"]["ms"], serde_json::Value::Null, "{first}");
    assert_eq!(first["estimate"]["jobs_without_history"], 3);
    let s1 = first["session"].as_str().unwrap().to_string();
    let running = poll(Duration::from_secs(20), || {
        let s = c.status(&s1);
        (job(&s, "a")["status"] == "running").then_some(s)
    })
    .unwrap();
    assert_eq!(
        job(&running, "a")["expected_remaining_ms"],
        serde_json::Value::Null
    );
    assert_eq!(running["eta"]["ms"], serde_json::Value::Null);
    let plain = c.aam(&["submit", path]).expect_code(0);
    assert!(plain.stderr.contains("no estimate yet"), "{}", plain.dump());
    c.aam(&["wait", &s1]).expect_code(0);

    // Now there is history: a, b in parallel (0.4 s), then c.
    let again = c.aam(&["submit", path, "--json"]).expect_code(0).json();
    let ms = again["estimate"]["ms"]
        .as_u64()
        .expect("an estimate once history exists");
    assert!((350..2_000).contains(&ms), "{again}");
    assert_eq!(again["estimate"]["jobs_without_history"], 0);
    assert_eq!(again["estimate"]["slots"], 2);
    let s2 = again["session"].as_str().unwrap().to_string();
    let running = poll(Duration::from_secs(20), || {
        let s = c.status(&s2);
        (job(&s, "a")["status"] == "running").then_some(s)
    })
    .unwrap();
    let left = job(&running, "a")["expected_remaining_ms"]
        .as_u64()
        .expect("remaining time");
    assert!(left <= 2_000, "{running}");
    assert!(running["eta"]["ms"].as_u64().is_some(), "{running}");
    let table = c.aam(&["status", &s2]).expect_code(0).stdout;
    assert!(
        table.contains("ETA: about") || table.contains("succeeded"),
        "{table}"
    );
    c.aam(&["wait", &s2]).expect_code(0);
}
