//! Control: cancel that stops every process of a job (grandchildren that
//! ignore SIGTERM, descendants that left the process group), timeouts,
//! idle timeouts, retries with growing gaps, and progress lines.

use crate::job;
use aam_tests::{aam_here, poll, Cluster, Down, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime};

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

const STUBBORN: &str = r#"
echo $$ > "$1/main"
# A grandchild that ignores SIGTERM.
sh -c 'trap "" TERM; echo $$ > "$1/ignorer"; while :; do sleep 0.05; done' ignorer "$1" &
# A descendant that leaves the process group and is orphaned (setsid, then double fork).
setsid sh -c 'sleep 60 & echo $! > "$1/daemon"' daemon "$1" &
wait
"#;

#[test]
fn cancel_stops_every_process_of_a_job_and_keeps_a_receipt() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    let pids = c.path("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let script = c.write("stubborn.sh", STUBBORN);
    let file = c.write(
        "cancel.json",
        &json!({"name": "cancel", "jobs": [
            { "name": "stubborn", "command": ["sh", script.to_str().unwrap(), pids.to_str().unwrap()] },
            { "name": "after", "command": ["true"], "depends_on": ["stubborn"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    let all: Vec<u32> = poll(Duration::from_secs(20), || {
        ["main", "ignorer", "daemon"]
            .iter()
            .map(|f| read_pid(&pids.join(f)))
            .collect()
    })
    .expect("the job's processes never all started");
    assert!(all.iter().all(|&p| aam_tests::running(p)));

    let out = c
        .aam(&["cancel", &format!("{session}/stubborn"), "--grace", "300ms"])
        .expect_code(0);
    assert!(out.stdout.contains("stopped: stubborn"), "{}", out.dump());
    // `aam cancel` returned: nothing of the job may be left.
    for (name, pid) in ["main", "ignorer", "daemon"].iter().zip(&all) {
        assert!(
            !aam_tests::running(*pid),
            "{name} ({pid}) survived the cancel\n{}",
            c.logs()
        );
    }
    let s = c.status(&session);
    let stubborn = job(&s, "stubborn");
    assert_eq!(stubborn["status"], "cancelled", "{stubborn}");
    let signals = stubborn["teardown"]["signals"].as_array().unwrap();
    let sent = |pid: u32, sig: &str| {
        signals
            .iter()
            .any(|s| s["pid"] == pid && s["signal"] == sig)
    };
    assert!(sent(all[0], "SIGTERM"), "{stubborn}");
    assert!(
        sent(all[1], "SIGTERM") && sent(all[1], "SIGKILL"),
        "the ignorer needs SIGKILL: {stubborn}"
    );
    assert!(
        signals.iter().any(|s| s["pid"] == all[2]),
        "the escaped daemon was not found: {stubborn}"
    );
    assert_eq!(stubborn["teardown"]["survivors"], json!([]));
    let after = job(&s, "after");
    assert_eq!(after["status"], "skipped");
    assert_eq!(s["status"], "cancelled");
}

#[test]
fn cancelling_a_session_ends_queued_and_running_jobs() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 4);
    let jobs: Vec<_> = (0..104)
        .map(|i| json!({ "name": format!("s{i}"), "command": ["sleep", "30"] }))
        .collect();
    let file = c.write(
        "many.json",
        &json!({"name": "many", "jobs": jobs}).to_string(),
    );
    let session = c.submit(&file);
    let running = poll(Duration::from_secs(20), || {
        (c.status(&session)["counts"]["running"] == 4).then_some(())
    });
    assert!(running.is_some(), "four jobs never ran\n{}", c.logs());
    let out = c.aam(&["cancel", &session, "--json"]).expect_code(0).json();
    assert_eq!(out["cancelled"].as_array().unwrap().len(), 100);
    assert_eq!(out["stopped"].as_array().unwrap().len(), 4);
    let s = c.status(&session);
    assert_eq!(s["status"], "cancelled");
    assert_eq!(s["counts"]["cancelled"], 104, "{}", s["counts"]);
    for j in s["jobs"].as_array().unwrap() {
        for sig in j["teardown"]["signals"].as_array().into_iter().flatten() {
            let pid = sig["pid"].as_u64().unwrap() as u32;
            assert!(!aam_tests::running(pid), "{} left {pid} running", j["name"]);
        }
    }
    // A second cancel finds nothing left to do.
    let again = c.aam(&["cancel", &session, "--json"]).expect_code(0).json();
    assert_eq!(again, json!({"cancelled": [], "stopped": []}));
    let missing = c
        .aam(&["cancel", &format!("{session}/nope")])
        .expect_code(2);
    assert!(
        missing.stderr.contains("has no job 'nope'"),
        "{}",
        missing.dump()
    );
}

#[test]
fn timeouts_and_idle_timeouts_end_timed_out_with_the_reason() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    let file = c.write(
        "timeouts.toml",
        r#"
name = "timeouts"
[[jobs]]
name = "slow"
command = ["sleep", "30"]
timeout = "500ms"
grace = "200ms"
[[jobs]]
name = "wedged"
command = ["sh", "-c", "echo started; sleep 30"]
idle_timeout = "500ms"
grace = "200ms"
"#,
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    let slow = job(&s, "slow");
    assert_eq!(slow["status"], "timed_out", "{slow}");
    assert!(
        slow["reason"].as_str().unwrap().starts_with("timeout"),
        "{slow}"
    );
    let ran = time(&slow["finished_at"])
        .duration_since(time(&slow["started_at"]))
        .unwrap();
    // Not before its timeout; stopped by it, not ended by the sleep.
    assert!(
        ran >= Duration::from_millis(500) && ran < Duration::from_secs(30),
        "{ran:?}"
    );
    let wedged = job(&s, "wedged");
    assert_eq!(wedged["status"], "timed_out", "{wedged}");
    assert!(
        wedged["reason"].as_str().unwrap().starts_with("idle"),
        "{wedged}"
    );
    assert_eq!(wedged["teardown"]["survivors"], json!([]));
}

#[test]
fn retries_back_off_with_growing_gaps_and_stop_at_the_limit() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    let marks = c.path("marks");
    let file = c.write(
        "retries.json",
        &json!({"name": "retries", "jobs": [
            { "name": "always-fails", "command": ["sh", "-c", "echo $AAM_ATTEMPT >> \"$MARKS\"; exit 3"],
              "env": { "MARKS": marks.to_str().unwrap() }, "retries": 3, "retry_backoff": "200ms" },
            { "name": "second-time-lucky", "command": ["sh", "-c", "[ \"$AAM_ATTEMPT\" -ge 2 ]"],
              "retries": 2, "retry_backoff": "100ms" },
            { "name": "not-retried", "command": ["false"], "retries": 2, "retry_on": ["timed_out"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    let fails = job(&s, "always-fails");
    assert_eq!(fails["status"], "failed");
    assert_eq!(fails["attempts"], 4);
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "1\n2\n3\n4\n");
    let history = fails["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    let gaps: Vec<Duration> = history
        .windows(2)
        .map(|w| {
            time(&w[1]["started_at"])
                .duration_since(time(&w[0]["finished_at"]))
                .unwrap()
        })
        .collect();
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(
        gaps[1] >= gaps[0] && gaps[2] >= gaps[1],
        "gaps do not grow: {gaps:?}"
    );
    assert!(history.iter().all(|a| a["exit_code"] == 3));
    let lucky = job(&s, "second-time-lucky");
    assert_eq!(
        (lucky["status"].as_str(), lucky["attempts"].as_u64()),
        (Some("succeeded"), Some(2))
    );
    let not = job(&s, "not-retried");
    assert_eq!(
        (not["status"].as_str(), not["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
}

#[test]
fn progress_lines_show_in_status_before_the_job_ends() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 1);
    let gate = c.gate("gate");
    let file = c.write(
        "progress.json",
        &json!({"name": "progress", "jobs": [{
            "name": "p",
            "command": ["sh", "-c", format!("echo '::progress:: 40 running unit tests'; {WAIT_FOR_GATE}; echo done")],
            "env": { "GATE": gate.env() },
        }]})
        .to_string(),
    );
    let session = c.submit(&file);
    let seen = poll(Duration::from_secs(20), || {
        let s = c.status(&session);
        let p = job(&s, "p").clone();
        (p["progress"] == 40).then_some(p)
    })
    .expect("progress never showed");
    assert_eq!(seen["status"], "running");
    assert_eq!(seen["progress_message"], "running unit tests");
    let table = c.aam(&["status", &session]).expect_code(0).stdout;
    assert!(table.contains("40% running unit tests"), "{table}");
    gate.open();
    c.aam(&["wait", &session]).expect_code(0);
    let logs = c.aam(&["logs", &format!("{session}/p")]).expect_code(0);
    assert_eq!(
        logs.stdout, "::progress:: 40 running unit tests\ndone\n",
        "the line stays in the log"
    );
}

#[test]
fn logs_follow_streams_while_the_job_runs_and_ends_with_it() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 1);
    let gate = c.gate("gate");
    let file = c.write(
        "follow.json",
        &json!({"name": "follow", "jobs": [{
            "name": "f",
            "command": ["sh", "-c", format!("echo first; {WAIT_FOR_GATE}; echo second")],
            "env": { "GATE": gate.env() },
        }]})
        .to_string(),
    );
    let session = c.submit(&file);
    let out_path = c.path("follow.out");
    let mut follow = c.aam_command(&["logs", &format!("{session}/f"), "--follow"]);
    follow
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null());
    let mut follower = follow.spawn().unwrap();
    let first = poll(Duration::from_secs(20), || {
        (std::fs::read_to_string(&out_path).ok()? == "first\n").then_some(())
    });
    assert!(first.is_some(), "the first line never showed\n{}", c.logs());
    assert_eq!(job(&c.status(&session), "f")["status"], "running");
    assert!(
        follower.try_wait().unwrap().is_none(),
        "--follow ended before the job"
    );
    gate.open();
    let status = poll(Duration::from_secs(20), || {
        follower.try_wait().ok().flatten()
    });
    let Some(status) = status else {
        let _ = follower.kill();
        panic!("--follow did not end with the job");
    };
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap(),
        "first\nsecond\n"
    );
}

#[test]
fn watch_shows_each_job_and_exits_with_the_session() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    let file = c.write(
        "watch.toml",
        "name = \"watched\"\n[[jobs]]\nname = \"ok\"\ncommand = [\"sh\", \"-c\", \"echo all good\"]\n[[jobs]]\nname = \"bad\"\ncommand = [\"sh\", \"-c\", \"sleep 0.3; echo broken; exit 2\"]\n",
    );
    let session = c.submit(&file);
    let out = c.aam(&["watch", &session]).expect_code(1);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("bad") && l.contains("failed") && l.contains("broken")),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("succeeded")),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout.contains(&format!("{session} (watched): failed")),
        "{}",
        out.dump()
    );
}

#[test]
fn sigterm_drains_a_worker_and_requeues_what_it_had_to_stop() {
    let mut c = Cluster::with_manager();
    c.start_worker_with("d", 2, &["--drain-timeout", "3s"]);
    let gate = c.gate("gate");
    let file = c.write(
        "drain.json",
        &json!({"name": "drain", "jobs": [
            { "name": "quick", "command": ["sh", "-c", format!("{WAIT_FOR_GATE}; echo quick")],
              "env": { "GATE": gate.env() } },
            { "name": "long", "command": ["sleep", "30"], "grace": "200ms" },
            { "name": "third", "command": ["true"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.poll_status(&session, "quick and long running", |s| {
        job(s, "quick")["status"] == "running" && job(s, "long")["status"] == "running"
    });
    c.workers[0].signal(libc::SIGTERM);
    // Once it drains (the manager told first), quick may end within the
    // drain timeout; its free slot must not take `third`.
    let draining = poll(Duration::from_secs(20), || {
        c.workers[0].log_text().contains("draining").then_some(())
    });
    assert!(draining.is_some(), "the worker never drained\n{}", c.logs());
    gate.open();
    let exited = poll(Duration::from_secs(30), || {
        c.workers[0].child.try_wait().ok().flatten()
    });
    let status = exited.unwrap_or_else(|| panic!("the worker did not drain\n{}", c.logs()));
    assert!(status.success(), "{status}\n{}", c.logs());
    let s = c.status(&session);
    assert_eq!(
        job(&s, "quick")["status"],
        "succeeded",
        "running jobs may finish"
    );
    let long = job(&s, "long");
    assert_eq!(
        long["status"], "queued",
        "stopped by the shutdown, not failed: {long}"
    );
    let last = &long["attempt_history"][0];
    assert_eq!(last["outcome"], "queued");
    assert!(
        last["reason"].as_str().unwrap().contains("shut down"),
        "{last}"
    );
    assert_eq!(
        job(&s, "third")["attempts"],
        0,
        "a draining worker got a new job"
    );
}

#[test]
fn up_starts_a_background_manager_that_commands_here_find_and_down_stops_it() {
    let dir = aam_tests::Scratch::new();
    let _down = Down(dir.path());
    let up = aam_here(dir.path(), &["up", "--slots", "2"]).expect_code(0);
    assert!(
        up.stdout.contains("aam is up: manager at 127.0.0.1:"),
        "{}",
        up.dump()
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join(".aam/aam.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(
        dir.path().join("hello.toml"),
        "name = \"hello\"\n[[jobs]]\nname = \"hi\"\ncommand = [\"echo\", \"hi from the background\"]\n",
    )
    .unwrap();
    // No flags, no environment: found through ./.aam.
    let submitted = aam_here(dir.path(), &["submit", "hello.toml", "--wait"]).expect_code(0);
    let session = submitted.stdout.trim().to_string();
    let logs = aam_here(dir.path(), &["logs", &format!("{session}/hi")]).expect_code(0);
    assert_eq!(logs.stdout, "hi from the background\n");
    let again = aam_here(dir.path(), &["up"]).expect_code(0);
    assert!(again.stdout.contains("already up"), "{}", again.dump());
    // `aam run` here would need the same directory: it says what to do instead.
    let run = aam_here(dir.path(), &["run", "hello.toml"]).expect_code(2);
    assert!(
        run.stderr.contains("aam submit FILE --wait"),
        "{}",
        run.dump()
    );
    aam_here(dir.path(), &["down"]).expect_code(0);
    assert!(
        !aam_tests::running(pid as u32),
        "the background process is still there"
    );
    aam_here(dir.path(), &["status"]).expect_code(3);
}
