//! Forged workers, speaking the protocol directly: no worker speaks for
//! another's jobs, a second worker under a connected name is turned away
//! (and gets in once the first is gone), an end whose `Ack` never reached
//! the worker is reported again and counted once, and nothing a worker
//! sends is taken for size or shape on its word.

use crate::job;
use aam_protocol::messages::{AttemptRef, ManagerToWorker, WorkerToManager};
use aam_protocol::model::ExitInfo;
use aam_protocol::output::OutputCapture;
use aam_protocol::{JobKey, SessionId};
use aam_tests::wire::{registration, Wire};
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The current attempt of the job at `index` of `session`, as status shows it.
fn current_attempt(c: &Cluster, session: &str, name: &str, index: u32) -> AttemptRef {
    let status = c.status(session);
    AttemptRef {
        job: JobKey {
            session: session.parse::<SessionId>().expect("session id"),
            index,
        },
        attempt: job(&status, name)["attempts"].as_u64().expect("attempts") as u32,
    }
}

/// Heartbeats until a `Pong` comes back: the manager has then handled
/// every report sent before. Returns whatever else it sent meanwhile.
fn until_pong(wire: &mut Wire) -> Vec<ManagerToWorker> {
    let mut other = Vec::new();
    let pong = poll(Duration::from_secs(20), || {
        wire.send(&WorkerToManager::Heartbeat);
        loop {
            match wire.try_recv::<ManagerToWorker>(Duration::from_millis(200)) {
                Ok(ManagerToWorker::Pong) => return Some(()),
                Ok(msg) => other.push(msg),
                Err(_) => return None,
            }
        }
    });
    assert!(pong.is_some(), "no Pong from the manager");
    other
}

/// A forged worker's connection, registered (the manager said so).
fn registered(c: &Cluster, register: WorkerToManager) -> Wire {
    let (wire, answer) = Wire::register(&c.addr, &c.token, register);
    assert!(
        matches!(answer, ManagerToWorker::Registered { .. }),
        "{answer:?}"
    );
    wire
}

/// Every report a worker may make about `attempt`, each a lie.
fn forged_reports(attempt: AttemptRef) -> Vec<WorkerToManager> {
    let capture = OutputCapture::from_parts(1 << 20, b"forged sync\n".to_vec(), vec![], 12);
    let exit = ExitInfo {
        code: Some(0),
        signal: None,
        duration_ms: 1,
    };
    vec![
        WorkerToManager::Output {
            attempt,
            data: b"forged output\n".to_vec(),
        },
        WorkerToManager::OutputSync { attempt, capture },
        WorkerToManager::Progress {
            attempt,
            percent: 99,
            message: Some("forged".into()),
        },
        WorkerToManager::Finished {
            attempt,
            exit,
            stopped: None,
            agent: None,
            change: None,
            patch: Vec::new(),
            workspace: None,
        },
        WorkerToManager::SpawnFailed {
            attempt,
            error: "forged".into(),
        },
    ]
}

#[test]
fn a_worker_cannot_end_or_write_into_a_job_running_on_another() {
    let mut c = Cluster::with_manager();
    c.start_worker_with("honest", 1, &["--label", "kind=honest"]);
    let gate = c.gate("gate");
    let requires = json!({ "kind": "honest" });
    let file = c.write(
        "forged.json",
        &json!({"name": "forged", "jobs": [
            { "name": "a", "requires": requires, "env": { "GATE": gate.env() },
              "command": ["sh", "-c", format!("echo honest output; {WAIT_FOR_GATE}")] },
            { "name": "b", "requires": requires, "depends_on": ["a"],
              "command": ["sh", "-c", "cat \"$AAM_INPUTS\""] },
            { "name": "c", "requires": requires, "command": ["echo", "c ran"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.poll_status(&session, "a running", |s| {
        job(s, "a")["status"] == "running"
    });
    let a = current_attempt(&c, &session, "a", 0);

    let mut liar = registered(&c, registration("liar", 7));
    for report in forged_reports(a) {
        liar.send(&report);
    }
    let heard = until_pong(&mut liar);
    assert!(heard.is_empty(), "the liar was answered: {heard:?}");

    // Nothing changed: a runs on, with its own output and no progress;
    // its worker's slot is still taken, so c still waits.
    let s = c.status(&session);
    assert_eq!(job(&s, "a")["status"], "running", "{s}");
    assert_eq!(job(&s, "a")["progress"], json!(null), "{s}");
    assert_eq!(job(&s, "c")["status"], "queued", "{s}");
    let logs = c.aam(&["logs", &format!("{session}/a")]).expect_code(0);
    assert_eq!(logs.stdout, "honest output\n");
    let manager_log = c.manager.as_ref().unwrap().log_text();
    assert!(
        manager_log.contains("not assigned to it"),
        "the refusals are logged\n{manager_log}"
    );

    gate.open();
    c.aam(&["wait", &session]).expect_code(0);
    let results = c
        .aam(&["results", &session, "--json"])
        .expect_code(0)
        .json();
    let b = job(&results, "b")["output"].as_str().unwrap().to_string();
    assert!(b.contains("honest output") && !b.contains("forged"), "{b}");
}

/// The end of `attempt`: exit 0.
fn finished(attempt: AttemptRef) -> WorkerToManager {
    WorkerToManager::Finished {
        attempt,
        exit: ExitInfo {
            code: Some(0),
            signal: None,
            duration_ms: 1,
        },
        stopped: None,
        agent: None,
        change: None,
        patch: Vec::new(),
        workspace: None,
    }
}

/// The manager holds an end's `Ack` for the worker's next message (at most
/// 20 ms): a connection cut in that window leaves the worker holding an
/// end that is durable. Back on a new connection, the same process reports
/// it again; it is acknowledged (alone: nothing else goes to that worker,
/// so the held `Ack` must go out on its own) and counted once.
#[test]
fn an_end_whose_ack_never_reached_the_worker_is_reported_again_and_counted_once() {
    let c = Cluster::with_manager();
    let mut first = registered(&c, registration("fw", 7));
    let file = c.write(
        "one.json",
        &json!({"name": "one", "jobs": [{ "name": "a", "command": ["true"] }]}).to_string(),
    );
    let session = c.submit(&file);
    let attempt = loop {
        if let ManagerToWorker::Assign(a) = first.recv::<ManagerToWorker>() {
            break a.attempt_ref();
        }
    };
    first.send(&finished(attempt));
    // Cut before reading anything: whether or not its Ack was written, the
    // worker never heard that the end is durable.
    drop(first);
    c.poll_status(&session, "the end recorded", |s| s["status"] == "succeeded");

    let mut again = registration("fw", 7);
    if let WorkerToManager::Register { assigned, .. } = &mut again {
        assigned.push(attempt);
    }
    let mut back = registered(&c, again);
    back.send(&finished(attempt));
    let mut heard = Vec::new();
    let acked = poll(Duration::from_secs(20), || {
        match back.try_recv::<ManagerToWorker>(Duration::from_millis(200)) {
            Ok(ManagerToWorker::Ack(a)) if a == attempt => Some(()),
            Ok(other) => {
                heard.push(other);
                None
            }
            Err(_) => None,
        }
    });
    assert!(
        acked.is_some(),
        "the end was not acknowledged; heard {heard:?}"
    );
    assert!(
        heard
            .iter()
            .all(|m| matches!(m, ManagerToWorker::Stop { attempt: a, .. } if *a == attempt)),
        "only told to stop what it holds: {heard:?}"
    );
    let s = c.status(&session);
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(job(&s, "a")["attempts"], 1, "{s}");
}

#[test]
fn a_second_worker_with_a_connected_name_is_turned_away_and_the_first_finishes() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 1);
    let gate = c.gate("gate");
    let file = c.write(
        "one.json",
        &json!({"name": "one", "jobs": [{ "name": "a", "env": { "GATE": gate.env() },
            "command": ["sh", "-c", format!("{WAIT_FOR_GATE}; echo done")] }]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.poll_status(&session, "a running", |s| {
        job(s, "a")["status"] == "running"
    });

    let (mut second, answer) = Wire::register(&c.addr, &c.token, registration("w", 7));
    match answer {
        ManagerToWorker::RetryLater { reason } => assert!(
            reason.starts_with("a worker named w is already connected from 127.0.0.1:"),
            "{reason}"
        ),
        other => panic!("expected to be told to retry later, got {other:?}"),
    }
    assert!(
        second
            .try_recv::<ManagerToWorker>(Duration::from_secs(10))
            .is_err(),
        "the newcomer's connection is closed"
    );

    gate.open();
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    assert_eq!(job(&s, "a")["attempts"], 1, "{s}");
    let worker_log = c.workers[0].log_text();
    assert!(!worker_log.contains("refused"), "{worker_log}");
    assert!(c.workers[0].child.try_wait().unwrap().is_none(), "w exited");
}

#[test]
fn a_worker_whose_name_looks_connected_retries_and_gets_in_once_that_lease_ends() {
    let mut c = Cluster::new();
    for (k, v) in [("AAM_HEARTBEAT_MS", "200"), ("AAM_LEASE_MS", "1500")] {
        c.manager_env.push((k.into(), v.into()));
    }
    c.start_manager();
    // A half-open connection under the name: registered, then silent.
    let mut stale = registered(&c, registration("w2", 7));
    stale.send(&WorkerToManager::Draining);
    let stale_addr = stale.stream.sock.local_addr().unwrap().to_string();

    c.start_worker("w2", 1);
    let real = poll(Duration::from_secs(20), || {
        let out = c.aam(&["workers", "--json"]);
        let workers = out.json();
        let w2 = workers.as_array()?.iter().find(|w| w["name"] == "w2")?;
        (w2["address"] != stale_addr.as_str()).then_some(())
    });
    assert!(real.is_some(), "w2 never got in\n{}", c.logs());
    let log = c.workers[0].log_text();
    assert!(
        log.contains("cannot take this worker yet"),
        "it was turned away first\n{log}"
    );

    let file = c.write(
        "after.json",
        &json!({"name": "after", "jobs": [{ "name": "x", "command": ["echo", "ok"] }]}).to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(0);
    assert_eq!(job(&c.status(&session), "x")["worker"], "w2");
}

#[test]
fn oversized_registrations_and_output_are_refused_or_cut_and_change_nothing() {
    let c = Cluster::with_manager();
    let refused = |register: WorkerToManager| match Wire::register(&c.addr, &c.token, register) {
        (_, ManagerToWorker::Refused { reason }) => reason,
        (_, other) => panic!("expected a refusal, got {other:?}"),
    };
    let attempt = |index| AttemptRef {
        job: JobKey {
            session: SessionId(1),
            index,
        },
        attempt: 1,
    };
    let mut huge = registration("huge", 1);
    if let WorkerToManager::Register { assigned, .. } = &mut huge {
        *assigned = (0..1_000_000).map(attempt).collect();
    }
    assert!(refused(huge).starts_with("assigned:"));
    let mut labelled = registration("labelled", 1);
    if let WorkerToManager::Register { labels, .. } = &mut labelled {
        *labels = BTreeMap::from([("k".to_string(), "v".repeat(4 << 20))]);
    }
    assert!(refused(labelled).starts_with("label 'k'"));
    let workers = c.aam(&["workers", "--json"]).expect_code(0).json();
    assert_eq!(workers, json!([]), "neither was registered");

    // A worker's whole output, with a cap of its own and totals that do not add up.
    let mut big = registered(&c, registration("big", 1));
    let file = c.write(
        "big.json",
        &json!({"name": "big", "jobs": [{ "name": "x", "command": ["true"] }]}).to_string(),
    );
    let session = c.submit(&file);
    let x = match big.recv() {
        ManagerToWorker::Assign(assignment) => assignment.attempt_ref(),
        other => panic!("expected an assignment, got {other:?}"),
    };
    let capture = OutputCapture::from_parts(usize::MAX, vec![b'x'; 4 << 20], b"end".to_vec(), 1);
    big.send(&WorkerToManager::OutputSync {
        attempt: x,
        capture,
    });
    until_pong(&mut big);
    let cap = 1 << 20;
    let logs = c.aam(&["logs", &format!("{session}/x")]).expect_code(0);
    assert!(
        logs.stdout.len() < cap + 100,
        "{} bytes kept",
        logs.stdout.len()
    );
    assert!(logs.stdout.ends_with("end"));
    big.send(&WorkerToManager::Finished {
        attempt: x,
        exit: ExitInfo {
            code: Some(0),
            signal: None,
            duration_ms: u64::MAX,
        },
        stopped: None,
        agent: None,
        change: None,
        patch: Vec::new(),
        workspace: None,
    });
    c.aam(&["wait", &session]).expect_code(0);
    let logs = c.aam(&["logs", &format!("{session}/x")]).expect_code(0);
    assert!(
        logs.stdout.len() < cap + 100,
        "{} bytes stored",
        logs.stdout.len()
    );
}
