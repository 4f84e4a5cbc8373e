//! A manager and two workers run a 50-job session: every job exactly once,
//! outputs intact (a 5 MiB one cut as specified), right statuses and codes.

use crate::job;
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const BIG: usize = 5 * 1024 * 1024;
const CAP: usize = 1024 * 1024;
const FAILING: [usize; 3] = [7, 23, 41];

fn big_output() -> Vec<u8> {
    b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(BIG)
        .collect()
}

#[test]
fn fifty_jobs_on_two_workers_run_exactly_once_with_intact_output() {
    let mut c = Cluster::with_manager();
    c.start_worker("w1", 4);
    c.start_worker("w2", 4);
    let marks = c.path("marks");
    std::fs::create_dir_all(&marks).unwrap();

    let mut jobs = Vec::new();
    for i in 0..49 {
        let code = if FAILING.contains(&i) { 7 } else { 0 };
        jobs.push(json!({
            "name": format!("job-{i}"),
            "command": ["sh", "-c", "echo \"$AAM_JOB_NAME $AAM_ATTEMPT $AAM_JOB_ID\" >> \"$MARKS/$AAM_JOB_NAME\"; echo out-$AAM_JOB_NAME; sleep 0.05; exit $CODE"],
            "env": { "MARKS": marks.to_str().unwrap(), "CODE": code.to_string() },
        }));
    }
    jobs.push(json!({
        "name": "big",
        "command": ["sh", "-c", "yes 0123456789abcdef | head -c 5242880"],
    }));
    let file = c.write(
        "fifty.json",
        &json!({ "name": "fifty", "jobs": jobs }).to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(1);

    let status = c.status(&session);
    assert_eq!(status["status"], "failed");
    assert_eq!(status["jobs"].as_array().unwrap().len(), 50);
    let mut workers = BTreeSet::new();
    for i in 0..49 {
        let name = format!("job-{i}");
        let j = job(&status, &name);
        let (want_status, want_code) = if FAILING.contains(&i) {
            ("failed", 7)
        } else {
            ("succeeded", 0)
        };
        assert_eq!(j["status"], want_status, "{j}");
        assert_eq!(j["exit_code"], want_code, "{j}");
        assert_eq!(j["attempts"], 1, "{j}");
        assert!(j["started_at"].as_str().unwrap() <= j["finished_at"].as_str().unwrap());
        workers.insert(j["worker"].as_str().unwrap().to_string());
        let mark = std::fs::read_to_string(marks.join(&name)).unwrap();
        assert_eq!(
            mark,
            format!("{name} 1 {session}/{name}\n"),
            "job {name} ran more than once"
        );
    }
    assert_eq!(
        workers,
        BTreeSet::from(["w1".to_string(), "w2".to_string()]),
        "both workers got work"
    );
    assert_eq!(std::fs::read_dir(&marks).unwrap().count(), 49);

    let results = c
        .aam(&["results", &session, "--json"])
        .expect_code(0)
        .json();
    for i in 0..49 {
        let name = format!("job-{i}");
        assert_eq!(job(&results, &name)["output"], format!("out-{name}\n"));
    }
    let big = job(&results, "big");
    assert_eq!(big["status"], "succeeded");
    let full = big_output();
    let mut expected = full[..CAP / 2].to_vec();
    expected
        .extend_from_slice(format!("\n[aam: {} bytes of output omitted]\n", BIG - CAP).as_bytes());
    expected.extend_from_slice(&full[BIG - CAP / 2..]);
    let got = big["output"].as_str().unwrap().as_bytes();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected.as_slice(),
        "the 5 MiB output was not cut to head + marker + tail"
    );

    // `logs` gives the same captured bytes.
    let logs = c.aam(&["logs", &format!("{session}/big")]).expect_code(0);
    assert_eq!(logs.stdout.as_bytes(), expected.as_slice());

    // The Markdown summary marks each job.
    let md = c.aam(&["results", &session]).expect_code(0).stdout;
    assert!(md.contains("# Results Summary: fifty"), "{md}");
    assert!(md.contains("| ✅ | job-0 | succeeded |"), "{md}");
    assert!(md.contains("| ❌ | job-7 | failed |"), "{md}");
}

#[test]
fn workers_and_sessions_are_listed() {
    let mut c = Cluster::with_manager();
    c.start_worker("lister", 3);
    let workers = c.aam(&["workers", "--json"]).expect_code(0).json();
    let w = &workers[0];
    assert_eq!(w["name"], "lister");
    assert_eq!(w["slots"], 3);
    assert!(w["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    let file = c.write(
        "one.toml",
        "name = \"one\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n",
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(0);
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(sessions[0]["id"], session.as_str());
    assert_eq!(sessions[0]["status"], "succeeded");
    let table = c.aam(&["status"]).expect_code(0).stdout;
    assert!(
        table.contains(&session) && table.contains("succeeded"),
        "{table}"
    );
}

#[test]
fn a_prefetching_worker_still_runs_no_more_than_its_slots_at_once() {
    let mut c = Cluster::with_manager();
    c.start_worker_with("pf", 1, &["--prefetch", "2"]);
    let marks = c.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // mkdir is atomic: a second job running at the same time cannot create it.
    let jobs: Vec<_> = (0..6)
        .map(|i| {
            json!({
                "name": format!("p{i}"),
                "command": ["sh", "-c", "mkdir \"$MARKS/running\" || echo overlap >> \"$MARKS/violations\"; sleep 0.1; rmdir \"$MARKS/running\"; echo done"],
                "env": { "MARKS": marks.to_str().unwrap() },
            })
        })
        .collect();
    let file = c.write(
        "pf.json",
        &json!({ "name": "pf", "jobs": jobs }).to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(0);
    assert!(
        !marks.join("violations").exists(),
        "two jobs ran at once on a 1-slot worker"
    );
    let status = c.status(&session);
    for i in 0..6 {
        assert_eq!(job(&status, &format!("p{i}"))["status"], "succeeded");
    }
}

#[test]
fn output_streams_while_the_job_runs_and_signals_and_workdirs_are_reported() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 4);
    std::fs::create_dir_all(c.path("work/sub")).unwrap();
    let gate = c.gate("gate");
    let file = c.write(
        "misc.json",
        &json!({"name": "misc", "jobs": [
            { "name": "streamer",
              "command": ["sh", "-c", format!("echo first line; {WAIT_FOR_GATE}; echo second line >&2")],
              "env": { "GATE": gate.env() } },
            { "name": "killed", "command": ["sh", "-c", "kill -9 $$"] },
            { "name": "where", "command": ["sh", "-c", "pwd; echo \"$AAM_SESSION_ID\""], "workdir": "sub" },
            { "name": "missing", "command": ["/no/such/program"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    // The first line is there while the job still waits for the gate.
    let streamed = poll(Duration::from_secs(20), || {
        let logs = c.aam(&["logs", &format!("{session}/streamer")]);
        (logs.stdout == "first line\n").then_some(())
    });
    assert!(streamed.is_some(), "output did not stream\n{}", c.logs());
    assert_eq!(job(&c.status(&session), "streamer")["status"], "running");
    gate.open();
    c.aam(&["wait", &session]).expect_code(1);

    let s = c.status(&session);
    let streamer = c
        .aam(&["logs", &format!("{session}/streamer")])
        .expect_code(0);
    assert_eq!(streamer.stdout, "first line\nsecond line\n");
    let killed = job(&s, "killed");
    assert_eq!(killed["status"], "failed");
    assert_eq!(killed["signal"], 9);
    assert_eq!(killed["exit_code"], serde_json::Value::Null);
    assert!(
        killed["reason"].as_str().unwrap().contains("signal 9"),
        "{killed}"
    );
    let wd = c.aam(&["logs", &format!("{session}/where")]).expect_code(0);
    let sub = c.path("work/sub").canonicalize().unwrap();
    assert_eq!(wd.stdout, format!("{}\n{session}\n", sub.display()));
    let missing = job(&s, "missing");
    assert_eq!(missing["status"], "failed");
    assert!(
        missing["reason"]
            .as_str()
            .unwrap()
            .contains("/no/such/program"),
        "{missing}"
    );
}

#[test]
fn wait_gives_up_after_its_timeout() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 1);
    let file = c.write(
        "slow.toml",
        "name = \"slow\"\n[[jobs]]\nname = \"s\"\ncommand = [\"sleep\", \"30\"]\n",
    );
    let session = c.submit(&file);
    let out = c
        .aam(&["wait", &session, "--timeout", "0.3"])
        .expect_code(1);
    assert!(out.stderr.contains("still running after"), "{}", out.dump());
}

#[test]
fn an_idempotency_key_returns_the_first_session_even_after_a_restart() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 1);
    let file = c.write(
        "once.toml",
        "name = \"once\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n",
    );
    let path = file.to_str().unwrap();
    let first = c
        .aam(&["submit", path, "--json", "--idempotency-key", "deploy-42"])
        .expect_code(0)
        .json();
    assert_eq!(first["existing"], false);
    let again = c
        .aam(&["submit", path, "--json", "--idempotency-key", "deploy-42"])
        .expect_code(0)
        .json();
    assert_eq!(again["session"], first["session"]);
    assert_eq!(again["existing"], true);
    c.kill_manager();
    c.start_manager();
    let after = c
        .aam(&["submit", path, "--json", "--idempotency-key", "deploy-42"])
        .expect_code(0)
        .json();
    assert_eq!(
        after["session"], first["session"],
        "the key was forgotten in the restart"
    );
    let other = c
        .aam(&["submit", path, "--json", "--idempotency-key", "deploy-43"])
        .expect_code(0)
        .json();
    assert_ne!(other["session"], first["session"]);
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(sessions.as_array().unwrap().len(), 2);
}

#[test]
fn gc_removes_finished_sessions_past_the_retention_for_good() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    let done = c.write(
        "done.toml",
        "name = \"done\"\n[[jobs]]\nname = \"a\"\ncommand = [\"echo\", \"some output\"]\n",
    );
    let old = c.submit(&done);
    c.aam(&["wait", &old]).expect_code(0);
    let gate = c.gate("gate");
    let live = c.write(
        "live.json",
        &json!({"name": "live", "jobs": [{
            "name": "held",
            "command": ["sh", "-c", WAIT_FOR_GATE],
            "env": { "GATE": gate.env() },
        }]})
        .to_string(),
    );
    let running = c.submit(&live);
    // The default retention (30 days) keeps everything.
    let kept = c.aam(&["gc"]).expect_code(0);
    assert!(
        kept.stdout.starts_with("removed 0 sessions"),
        "{}",
        kept.dump()
    );
    let out = c.aam(&["gc", "--older-than", "0s"]).expect_code(0);
    let line = out.stdout.trim();
    assert!(
        line.starts_with("removed 1 sessions (1 jobs, "),
        "{}",
        out.dump()
    );
    assert!(
        line.ends_with(&format!("of output): {old}")),
        "{}",
        out.dump()
    );
    let bytes: u64 = line
        .split("1 jobs, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(bytes > 0, "the output's bytes were not counted: {line}");
    c.aam(&["status", &old]).expect_code(2);
    c.kill_manager();
    c.start_manager();
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    let ids: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![running.as_str()],
        "the removal did not last, or took the running session"
    );
    gate.open();
    c.aam(&["wait", &running]).expect_code(0);
}
