//! Chaos: a manager and three workers run 300 short jobs while a worker is
//! killed and restarted, the manager is killed and restarted, and a worker
//! is frozen past its lease and thawed. Every job must succeed exactly once,
//! every attempt that ran must be recorded (and one that did not, ended as
//! lost), and an `aam wait` started before it all must return 0.

use crate::job;
use aam_tests::{poll, Cluster};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const JOBS: usize = 300;

fn finished(c: &Cluster, session: &str) -> u64 {
    let out = c.aam(&["status", session, "--json"]);
    if out.code != 0 {
        return 0; // the manager is restarting
    }
    out.json()["jobs_finished"].as_u64().unwrap_or(0)
}

/// (job, attempt) lines the jobs wrote, with how often each was written.
fn markers(path: &std::path::Path) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        if let Some((name, attempt)) = line.split_once(' ') {
            *out.entry((name.to_string(), attempt.parse().unwrap()))
                .or_default() += 1;
        }
    }
    out
}

#[test]
fn three_workers_and_a_manager_survive_kills_and_a_freeze() {
    let mut c = Cluster::new();
    for (k, v) in [
        ("AAM_HEARTBEAT_MS", "300"),
        ("AAM_LEASE_MS", "1500"),
        ("AAM_RECONNECT_GRACE_MS", "3000"),
    ] {
        c.manager_env.push((k.into(), v.into()));
    }
    c.start_manager();
    for w in ["w1", "w2", "w3"] {
        c.start_worker(w, 2);
    }
    let marks = c.path("marks");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let ms = seed % 301;
            json!({
                "name": format!("j{i}"),
                "command": ["sh", "-c", "sleep $PAUSE; echo \"$AAM_JOB_NAME $AAM_ATTEMPT\" >> \"$MARKS\"; echo ok $AAM_JOB_NAME"],
                "env": { "MARKS": marks.to_str().unwrap(), "PAUSE": format!("{}.{:03}", ms / 1000, ms % 1000) },
            })
        })
        .collect();
    let file = c.write(
        "chaos.json",
        &json!({"name": "chaos", "jobs": jobs}).to_string(),
    );
    let session = c.submit(&file);
    let wait_err = c.path("wait.err");
    let mut wait = c.aam_command(&["wait", &session]);
    wait.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&wait_err).unwrap());
    let mut waiter = wait.spawn().unwrap();

    let reach = |c: &Cluster, n: u64| {
        let got = poll(Duration::from_secs(60), || {
            (finished(c, &session) >= n).then_some(())
        });
        assert!(
            got.is_some(),
            "never reached {n} finished jobs\n{}",
            c.logs()
        );
    };
    // 1. kill -9 a worker, then start it again.
    reach(&c, 30);
    c.workers[0].kill();
    c.start_worker("w1", 2);
    // 2. kill -9 the manager, then start it again.
    reach(&c, 90);
    c.kill_manager();
    c.start_manager();
    // 3. Freeze a worker until the manager drops it, then thaw it.
    reach(&c, 150);
    c.workers[1].signal(libc::SIGSTOP);
    let dropped = poll(Duration::from_secs(30), || {
        let out = c.aam(&["workers", "--json"]);
        (out.code == 0 && !out.json().as_array()?.iter().any(|w| w["name"] == "w2")).then_some(())
    });
    c.workers[1].signal(libc::SIGCONT);
    assert!(
        dropped.is_some(),
        "the frozen worker was never dropped\n{}",
        c.logs()
    );

    let status = poll(Duration::from_secs(120), || {
        waiter.try_wait().ok().flatten()
    });
    let err = std::fs::read_to_string(&wait_err).unwrap_or_default();
    let Some(status) = status else {
        let _ = waiter.kill();
        panic!("aam wait never returned\n{err}\n{}", c.logs());
    };
    assert_eq!(status.code(), Some(0), "aam wait: {err}\n{}", c.logs());

    let s = c.status(&session);
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["counts"]["succeeded"], JOBS);
    // Attempts as recorded: (job, attempt) -> outcome.
    let mut recorded: BTreeMap<(String, u64), Value> = BTreeMap::new();
    for j in s["jobs"].as_array().unwrap() {
        let name = j["name"].as_str().unwrap().to_string();
        let history = j["attempt_history"].as_array().unwrap();
        let successes = history
            .iter()
            .filter(|a| a["outcome"] == "succeeded")
            .count();
        assert_eq!(successes, 1, "{name} succeeded {successes} times: {j}");
        assert_eq!(history.last().unwrap()["outcome"], "succeeded", "{j}");
        assert_eq!(history.len() as u64, j["attempts"].as_u64().unwrap(), "{j}");
        for a in history {
            recorded.insert((name.clone(), a["attempt"].as_u64().unwrap()), a.clone());
        }
    }
    let m = markers(&marks);
    // Everything that ran is a recorded attempt, and no attempt ran twice.
    let unrecorded: Vec<_> = m.keys().filter(|k| !recorded.contains_key(*k)).collect();
    assert!(
        unrecorded.is_empty(),
        "ran but not recorded: {unrecorded:?}"
    );
    let twice: Vec<_> = m.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "attempts that ran twice: {twice:?}");
    // Every dispatch is an attempt, delivered or not: one lost with the
    // killed manager or the frozen worker (or stopped before its work) did
    // not run, and must have ended lost and requeued, never as a result.
    for (key, a) in &recorded {
        if !m.contains_key(key) {
            assert_eq!(
                (a["outcome"].as_str(), a["reason"].as_str()),
                (Some("queued"), Some("worker lost")),
                "{key:?} is recorded as ended but never ran: {a}"
            );
        }
    }

    // The chaos did hit running jobs: some needed a second attempt.
    let retried = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["attempts"].as_u64() > Some(1))
        .count();
    assert!(retried > 0, "no job lost an attempt: the chaos missed");

    // Outputs are intact, and the session is listed.
    let results = c
        .aam(&["results", &session, "--json"])
        .expect_code(0)
        .json();
    for i in 0..JOBS {
        let name = format!("j{i}");
        assert_eq!(job(&results, &name)["output"], format!("ok {name}\n"));
    }
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(sessions.as_array().unwrap().len(), 1);
}
