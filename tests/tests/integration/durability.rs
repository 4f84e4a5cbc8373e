//! Durability: the manager killed with SIGKILL (right after `aam submit`
//! returned, or while jobs run) comes back with its sessions, adopts the
//! jobs that ran on, loses no output and no job end, and `aam wait` rides
//! over the restart; SIGTERM flushes and exits; a stalled manager does not
//! make a chatty job's worker grow.

use crate::job;
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// "job attempt" lines the jobs appended to `path`, in order.
fn marker_lines(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (name, attempt) = l.split_once(' ').expect("a 'job attempt' line");
            (
                name.to_string(),
                attempt.parse().expect("an attempt number"),
            )
        })
        .collect()
}

#[test]
fn a_session_survives_kill_9_of_the_manager_after_submit_and_while_its_jobs_run() {
    let mut c = Cluster::new();
    // Long enough that the workers always reconnect in time: the jobs that
    // ran through the kill are adopted, never run again.
    c.manager_env
        .push(("AAM_RECONNECT_GRACE_MS".into(), "20000".into()));
    c.start_manager();
    let (started, finished) = (c.path("started"), c.path("finished"));
    let gate = c.gate("gate");
    let jobs: Vec<_> = (0..12)
        .map(|i| {
            json!({
                "name": format!("d{i}"),
                "command": ["sh", "-c", format!("echo \"$AAM_JOB_NAME $AAM_ATTEMPT\" >> \"$STARTED\"; {WAIT_FOR_GATE}; echo \"$AAM_JOB_NAME $AAM_ATTEMPT\" >> \"$FINISHED\"")],
                "env": { "STARTED": started.to_str().unwrap(), "FINISHED": finished.to_str().unwrap(), "GATE": gate.env() },
                "depends_on": if i >= 10 { vec!["d0".to_string()] } else { vec![] },
            })
        })
        .collect();
    let file = c.write(
        "durable.json",
        &json!({"name": "durable", "jobs": jobs}).to_string(),
    );

    // 1. Killed right after the submit was acknowledged (no worker yet, so
    //    nothing has run): the session comes back whole.
    let session = c.submit(&file);
    c.kill_manager();
    c.start_manager();
    let back = c.status(&session);
    assert_eq!(back["counts"]["queued"], 10, "{back}");
    assert_eq!(back["counts"]["pending"], 2, "{back}");

    // 2. Killed while four jobs run (held at the gate on the four slots).
    c.start_worker("w1", 2);
    c.start_worker("w2", 2);
    let at_kill = c.poll_status(&session, "4 jobs running", |s| {
        s["counts"]["running"] == 4 && marker_lines(&started).len() == 4
    });
    let hit: BTreeSet<String> = marker_lines(&started).into_iter().map(|(n, _)| n).collect();
    for name in &hit {
        assert_eq!(job(&at_kill, name)["status"], "running", "{at_kill}");
    }
    assert_eq!(hit.len(), 4, "{at_kill}");
    c.kill_manager();
    c.start_manager();
    // Both workers back (their running jobs reported) before the jobs end.
    let back = poll(Duration::from_secs(20), || {
        let out = c.aam(&["workers", "--json"]);
        (out.code == 0 && out.json().as_array()?.len() == 2).then_some(())
    });
    assert!(back.is_some(), "the workers never came back\n{}", c.logs());
    gate.open();
    c.aam(&["wait", &session]).expect_code(0);

    let s = c.status(&session);
    assert_eq!(s["status"], "succeeded");
    let finished = marker_lines(&finished);
    let mut recorded = BTreeSet::new();
    for i in 0..12 {
        let name = format!("d{i}");
        let j = job(&s, &name);
        assert_eq!(j["status"], "succeeded", "{j}");
        let runs: Vec<_> = finished.iter().filter(|(n, _)| *n == name).collect();
        assert_eq!(
            runs.len(),
            1,
            "{name} finished {} times: {runs:?}",
            runs.len()
        );
        assert_eq!(Some(runs[0].1), j["attempts"].as_u64(), "{j}");
        for a in j["attempt_history"].as_array().unwrap() {
            recorded.insert((name.clone(), a["attempt"].as_u64().unwrap()));
        }
    }
    // The jobs the kill hit ran on through it: adopted, one attempt each.
    for name in &hit {
        assert_eq!(job(&s, name)["attempts"], 1, "{name} ran again: {s}");
    }
    // Every recorded attempt started, and nothing else did.
    let ran: BTreeSet<_> = marker_lines(&started).into_iter().collect();
    assert_eq!(ran, recorded);
}

#[test]
fn a_job_end_lost_with_the_manager_is_resent_not_rerun() {
    let mut c = Cluster::new();
    c.debug_log = true;
    // Short, so that without the resend the job would visibly run again.
    c.manager_env
        .push(("AAM_RECONNECT_GRACE_MS".into(), "1500".into()));
    c.start_manager();
    c.start_worker("w1", 1);
    let marks = c.path("marks");
    let gate = c.gate("gate");
    let file = c.write(
        "once.json",
        &json!({"name": "once", "jobs": [{
            "name": "once",
            "command": ["sh", "-c", format!("echo \"$AAM_ATTEMPT\" >> \"$MARKS\"; {WAIT_FOR_GATE}")],
            "env": { "MARKS": marks.to_str().unwrap(), "GATE": gate.env() },
        }]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.poll_status(&session, "the job running", |s| {
        s["jobs"][0]["status"] == "running"
    });
    // The manager stops reading; only then may the job end: its report goes
    // into a socket nobody reads, and dies with the manager.
    c.manager.as_ref().unwrap().signal(libc::SIGSTOP);
    gate.open();
    let reported = poll(Duration::from_secs(20), || {
        c.workers[0]
            .log_text()
            .contains("reported the end of a job")
            .then_some(())
    });
    assert!(
        reported.is_some(),
        "the worker never reported the end\n{}",
        c.logs()
    );
    c.kill_manager();
    c.start_manager();
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    assert_eq!(job(&s, "once")["status"], "succeeded");
    assert_eq!(job(&s, "once")["attempts"], 1, "{s}");
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "1\n",
        "the job ran again"
    );
}

#[test]
fn aam_wait_rides_over_a_manager_restart() {
    let mut c = Cluster::new();
    c.manager_env
        .push(("AAM_RECONNECT_GRACE_MS".into(), "3000".into()));
    c.start_manager();
    c.start_worker("w1", 2);
    let gate = c.gate("gate");
    let file = c.write(
        "ride.json",
        &json!({"name": "ride", "jobs": [
            { "name": "a", "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() } },
            { "name": "b", "command": ["true"], "depends_on": ["a"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    let stderr = std::fs::File::create(c.path("wait.err")).unwrap();
    let mut wait = c.aam_command(&["wait", &session]);
    wait.stdout(std::process::Stdio::null()).stderr(stderr);
    let mut waiter = wait.spawn().unwrap();
    // It is watching once it printed the first progress line.
    let watching = poll(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(c.path("wait.err")).ok()?;
        text.contains("running").then_some(())
    });
    assert!(watching.is_some(), "aam wait never started watching");
    // a is held at the gate, so the session cannot end before the kill.
    c.kill_manager();
    c.start_manager();
    gate.open();
    let status = poll(Duration::from_secs(30), || waiter.try_wait().ok().flatten());
    let err = std::fs::read_to_string(c.path("wait.err")).unwrap();
    let Some(status) = status else {
        let _ = waiter.kill();
        panic!(
            "aam wait did not return after the restart\n{err}\n{}",
            c.logs()
        );
    };
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("reconnecting"), "{err}");
    assert_eq!(c.status(&session)["status"], "succeeded");
}

#[test]
fn output_printed_around_a_manager_restart_is_not_lost() {
    let mut c = Cluster::new();
    c.manager_env
        .push(("AAM_RECONNECT_GRACE_MS".into(), "20000".into()));
    c.start_manager();
    c.start_worker("w1", 1);
    let (g1, g2, m1) = (c.gate("g1"), c.gate("g2"), c.path("m1"));
    // Two gates in turn: the script points GATE at each.
    let file = c.write(
        "talk.json",
        &json!({"name": "talk", "jobs": [{
            "name": "t",
            "command": ["sh", "-c", format!("echo before; GATE=$G1; {WAIT_FOR_GATE}; echo during; touch \"$M1\"; GATE=$G2; {WAIT_FOR_GATE}; echo after")],
            "env": { "G1": g1.env(), "G2": g2.env(), "M1": m1.to_str().unwrap() },
        }]})
        .to_string(),
    );
    let session = c.submit(&file);
    let logs = |c: &Cluster| c.aam(&["logs", &format!("{session}/t")]).stdout;
    assert!(poll(Duration::from_secs(20), || (logs(&c) == "before\n")
        .then_some(()))
    .is_some());
    c.kill_manager();
    g1.open();
    assert!(poll(Duration::from_secs(20), || m1.exists().then_some(())).is_some());
    c.start_manager();
    let synced = poll(Duration::from_secs(20), || {
        (logs(&c) == "before\nduring\n").then_some(())
    });
    assert!(synced.is_some(), "got {:?}\n{}", logs(&c), c.logs());
    g2.open();
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(logs(&c), "before\nduring\nafter\n");
    assert_eq!(job(&c.status(&session), "t")["attempts"], 1);
}

#[test]
fn sigterm_to_the_manager_flushes_and_exits_while_workers_keep_their_jobs() {
    let mut c = Cluster::new();
    c.start_manager();
    c.start_worker("w1", 1);
    let gate = c.gate("gate");
    let file = c.write(
        "term.json",
        &json!({"name": "term", "jobs": [{
            "name": "held",
            "command": ["sh", "-c", format!("{WAIT_FOR_GATE}; echo released")],
            "env": { "GATE": gate.env() },
        }]})
        .to_string(),
    );
    let session = c.submit(&file);
    let running = poll(Duration::from_secs(20), || {
        (job(&c.status(&session), "held")["status"] == "running").then_some(())
    });
    assert!(running.is_some());
    let manager = c.manager.as_mut().unwrap();
    manager.signal(libc::SIGTERM);
    let exited = poll(Duration::from_secs(20), || {
        manager.child.try_wait().ok().flatten()
    });
    assert_eq!(exited.map(|s| s.code()), Some(Some(0)), "{}", c.logs());
    // The job went on without the manager; it is adopted when it is back.
    gate.open();
    c.start_manager();
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    assert_eq!(job(&s, "held")["attempts"], 1);
    let logs = c.aam(&["logs", &format!("{session}/held")]).expect_code(0);
    assert_eq!(logs.stdout, "released\n");
}

#[test]
fn a_chatty_job_and_a_stalled_manager_do_not_grow_the_worker_without_bound() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 1);
    let (gate, done) = (c.gate("gate"), c.path("done"));
    let file = c.write(
        "chatty.json",
        &json!({"name": "chatty", "jobs": [{
            "name": "flood",
            "command": ["sh", "-c", format!("{WAIT_FOR_GATE}; yes 0123456789abcdef | head -c 104857600; touch \"$DONE\"")],
            "env": { "GATE": gate.env(), "DONE": done.to_str().unwrap() },
        }]})
        .to_string(),
    );
    let session = c.submit(&file);
    let running = poll(Duration::from_secs(20), || {
        (job(&c.status(&session), "flood")["status"] == "running").then_some(())
    });
    assert!(running.is_some());
    // The manager stops reading; 100 MiB are printed meanwhile.
    c.manager.as_ref().unwrap().signal(libc::SIGSTOP);
    gate.open();
    let printed = poll(Duration::from_secs(30), || done.exists().then_some(()));
    let peak = aam_tests::usage::peak_rss_kib(c.workers[0].pid());
    c.manager.as_ref().unwrap().signal(libc::SIGCONT);
    assert!(
        printed.is_some(),
        "the job could not print while the manager was stalled"
    );
    assert!(peak < 64 * 1024, "the worker held {} MiB", peak / 1024);
    c.aam(&["wait", &session]).expect_code(0);
    let logs = c.aam(&["logs", &format!("{session}/flood")]).expect_code(0);
    let full: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(104_857_600)
        .collect();
    let mut expected = full[..512 * 1024].to_vec();
    expected.extend_from_slice(
        format!(
            "\n[aam: {} bytes of output omitted]\n",
            104_857_600 - 1024 * 1024
        )
        .as_bytes(),
    );
    expected.extend_from_slice(&full[104_857_600 - 512 * 1024..]);
    assert!(
        logs.stdout.as_bytes() == expected.as_slice(),
        "the output is not head + marker + tail"
    );
}
