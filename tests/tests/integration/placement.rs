//! Placement: `max_parallel` is never exceeded, higher priority runs first,
//! `requires` labels choose the worker, and status says why a job waits.

use crate::job;
use aam_tests::{Cluster, WAIT_FOR_GATE};
use serde_json::{json, Value};

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

/// A job's `duration_ms` in a status: what the manager records as history.
fn duration(s: &Value, name: &str) -> u64 {
    job(s, name)["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no duration for {name}: {s}"))
}

/// How `aam status` writes a duration under a minute.
fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Submits a batch file with `--json`, returning the answer.
fn submit_json(c: &Cluster, file: &std::path::Path) -> Value {
    c.aam(&["submit", "--json", file.to_str().unwrap()])
        .expect_code(0)
        .json()
}

#[test]
fn estimates_come_from_history_and_are_absent_without_it() {
    let mut c = Cluster::with_manager();
    // Two workers of one slot: the estimate must add them up.
    c.start_worker("w1", 1);
    c.start_worker("w2", 1);
    let gate = c.gate("gate");
    // a and b share their command (one history); c runs after both.
    let batch = |extra: Option<Value>| {
        let mut jobs = vec![
            json!({ "name": "a", "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() } }),
            json!({ "name": "b", "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() } }),
            json!({ "name": "c", "command": ["sleep", "0.2"], "depends_on": ["a", "b"] }),
        ];
        jobs.extend(extra);
        json!({ "name": "est", "jobs": jobs }).to_string()
    };
    let file = c.write("est.json", &batch(None));
    let both_running =
        |s: &Value| job(s, "a")["status"] == "running" && job(s, "b")["status"] == "running";

    // No history: no estimate, and every job counted as unknown.
    let first = submit_json(&c, &file);
    let no_history = json!({ "ms": null, "jobs_without_history": 3, "gates": 0, "slots": 2 });
    assert_eq!(first["estimate"], no_history, "{first}");
    let s1 = first["session"].as_str().unwrap().to_string();
    let running = c.poll_status(&s1, "a and b running", both_running);
    assert_eq!(
        job(&running, "a")["expected_remaining_ms"],
        Value::Null,
        "{running}"
    );
    assert_eq!(running["eta"], no_history, "{running}");
    let plain = c.aam(&["submit", file.to_str().unwrap()]).expect_code(0);
    assert!(
        plain
            .stderr
            .contains("no estimate yet: 3 job(s) have no history"),
        "{}",
        plain.dump()
    );
    // Cancelled while queued behind s1: it adds no history.
    c.aam(&["cancel", plain.stdout.trim()]).expect_code(0);
    gate.open();
    c.aam(&["wait", &s1]).expect_code(0);
    let done = c.status(&s1);
    // The history now holds two runs of a/b's command and one of c's.
    let ab = (duration(&done, "a") + duration(&done, "b")) / 2;
    let c_ms = duration(&done, "c");
    assert!(c_ms >= 200, "{done}");

    // The same batch again: a and b side by side on the two slots, then c.
    // (One slot would give 2 * ab + c_ms.)
    gate.close();
    let again = submit_json(&c, &file);
    assert_eq!(
        again["estimate"],
        json!({ "ms": ab + c_ms, "jobs_without_history": 0, "gates": 0, "slots": 2 }),
        "a/b took {ab} ms on average, c {c_ms} ms: {again}"
    );
    let s2 = again["session"].as_str().unwrap().to_string();
    let running = c.poll_status(&s2, "a and b running", both_running);
    let left = job(&running, "a")["expected_remaining_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no remaining time: {running}"));
    assert!(left <= ab, "{left} ms left of a {ab} ms job: {running}");
    let eta = running["eta"]["ms"].as_u64().expect("an ETA");
    assert!((c_ms..=ab + c_ms).contains(&eta), "ETA {eta} ms: {running}");
    let table = c.aam(&["status", &s2]).expect_code(0).stdout;
    assert!(table.contains("ETA: about "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.ends_with(" left)")),
        "no time left shown for a: {table}"
    );

    // One job never run before: no estimate, and it alone is unknown.
    let extra = c.write(
        "est-extra.json",
        &batch(Some(
            json!({ "name": "new", "command": ["sh", "-c", "exit 0"] }),
        )),
    );
    let unknown = submit_json(&c, &extra);
    assert_eq!(
        unknown["estimate"],
        json!({ "ms": null, "jobs_without_history": 1, "gates": 0, "slots": 2 }),
        "{unknown}"
    );
    c.aam(&["cancel", unknown["session"].as_str().unwrap()])
        .expect_code(0);

    // Held past their mean, a and b are due now: what is left is c.
    c.poll_status(&s2, "a and b past their expected time", |s| {
        job(s, "a")["expected_remaining_ms"] == 0 && job(s, "b")["expected_remaining_ms"] == 0
    });
    let due = c.status(&s2);
    assert_eq!(due["eta"]["ms"], c_ms, "{due}");
    let table = c.aam(&["status", &s2]).expect_code(0).stdout;
    let line = format!("ETA: about {} with 2 slots", human_ms(c_ms));
    assert!(table.contains(&line), "no '{line}' in:\n{table}");
    gate.open();
    c.aam(&["wait", &s2]).expect_code(0);
}
