//! Peers that read slowly or not at all, repeat themselves, or never
//! authenticate: the manager's memory and file descriptors stay bounded,
//! and real clients still get through.

use crate::job;
use aam_manager::listener::{raise_fd_limit, MAX_HANDSHAKES};
use aam_protocol::messages::{ClientRequest, ClientResponse, OutputWanted, Role};
use aam_protocol::SessionId;
use aam_tests::usage::{open_files, rss_kib};
use aam_tests::wire::Wire;
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::json;
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn a_client_that_never_reads_its_answers_does_not_grow_the_manager() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);
    // Six jobs of 1 MiB output each: every full answer is about 6 MiB.
    let jobs: Vec<_> = (0..6)
        .map(|i| {
            json!({ "name": format!("j{i}"),
            "command": ["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x"] })
        })
        .collect();
    let file = c.write(
        "big.json",
        &json!({"name": "big", "jobs": jobs}).to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(0);
    let id: SessionId = session.parse().unwrap();
    let pid = c.manager.as_ref().unwrap().pid();
    let before = rss_kib(pid);

    // 60 requests for 6 MiB answers, none of them read.
    let answers = 60;
    let mut flood = Wire::connect(&c.addr, Role::Client, &c.token);
    let all = ClientRequest::Session {
        session: id,
        output: OutputWanted::All,
        page: None,
    };
    for _ in 0..answers {
        flood.send(&all);
    }
    // Another client's requests go through meanwhile, and leave the
    // flooding one time enough to be answered many times over.
    let mut other = Wire::connect(&c.addr, Role::Client, &c.token);
    let small = ClientRequest::Session {
        session: id,
        output: OutputWanted::None,
        page: None,
    };
    let bound = 100 * 1024;
    for round in 0..answers * 4 {
        other.send(&small);
        assert!(matches!(other.recv(), ClientResponse::Session(_)));
        let grown = rss_kib(pid).saturating_sub(before);
        assert!(
            grown < bound,
            "the manager grew by {} MiB after {round} rounds",
            grown / 1024
        );
    }
    // The flooding client gets its answers once it reads them.
    for _ in 0..3 {
        match flood.recv() {
            ClientResponse::Session(view) => assert_eq!(view.jobs.len(), 6),
            other => panic!("expected the session, got {other:?}"),
        }
    }
}

#[test]
fn repeated_watches_of_a_session_on_one_connection_make_one_stream() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 1);
    let gate = c.gate("gate");
    let file = c.write(
        "watched.json",
        &json!({"name": "watched", "jobs": [
            { "name": "a", "env": { "GATE": gate.env() }, "command": ["sh", "-c", WAIT_FOR_GATE] },
            { "name": "b", "depends_on": ["a"], "command": ["true"] },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.poll_status(&session, "a running", |s| {
        job(s, "a")["status"] == "running"
    });
    let id: SessionId = session.parse().unwrap();

    let watches = 1000;
    let mut watcher = Wire::connect(&c.addr, Role::Client, &c.token);
    for _ in 0..watches {
        watcher.send(&ClientRequest::Watch { session: id });
    }
    for _ in 0..watches {
        match watcher.recv() {
            ClientResponse::Progress(s) => assert!(!s.status.is_terminal()),
            other => panic!("expected progress, got {other:?}"),
        }
    }
    // a ends, then b runs and ends: a few changes, one update each.
    gate.open();
    let mut updates = 0;
    loop {
        match watcher.recv() {
            ClientResponse::Progress(s) if s.status.is_terminal() => break,
            ClientResponse::Progress(_) => updates += 1,
            other => panic!("expected progress, got {other:?}"),
        }
    }
    assert!(updates < 20, "{updates} updates before the end");
}

#[test]
fn a_busy_session_s_watcher_gets_its_progress_a_few_times_a_second_and_its_end() {
    use aam_manager::client_conn::PROGRESS_EVERY;
    let mut c = Cluster::with_manager();
    c.start_worker("w", 4);
    let gate = c.gate("gate");
    let mut jobs = vec![json!({ "name": "first", "env": { "GATE": gate.env() },
        "command": ["sh", "-c", WAIT_FOR_GATE] })];
    jobs.extend((0..300).map(|i| json!({ "name": format!("t{i}"), "command": ["true"] })));
    let file = c.write(
        "busy.json",
        &json!({"name": "busy", "jobs": jobs}).to_string(),
    );
    let id: SessionId = c.submit(&file).parse().unwrap();
    let mut watcher = Wire::connect(&c.addr, Role::Client, &c.token);
    watcher.send(&ClientRequest::Watch { session: id });
    let started = std::time::Instant::now();
    match watcher.recv() {
        ClientResponse::Progress(s) => assert!(!s.status.is_terminal()),
        other => panic!("expected progress, got {other:?}"),
    }
    gate.open();
    let mut updates = 0u128;
    let last = loop {
        match watcher.recv() {
            ClientResponse::Progress(s) if s.status.is_terminal() => break s,
            ClientResponse::Progress(_) => updates += 1,
            other => panic!("expected progress, got {other:?}"),
        }
    };
    // 301 job ends, each a change; at most one update per interval (the
    // last one may be flushed just before the end).
    let bound = started.elapsed().as_millis() / PROGRESS_EVERY.as_millis() + 2;
    assert!(
        updates <= bound,
        "{updates} updates, at most {bound} expected"
    );
    assert_eq!(
        last.count(aam_protocol::model::JobStatus::Succeeded),
        301,
        "{last:?}"
    );
}

#[test]
fn idle_sockets_that_never_handshake_do_not_keep_a_real_client_out() {
    raise_fd_limit();
    let c = Cluster::with_manager();
    let pid = c.manager.as_ref().unwrap().pid();
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&c.addr).expect("connect"))
        .collect();
    // Accepted after all of them: once it is through, they all were seen.
    c.aam(&["sessions"]).expect_code(0);
    let files = open_files(pid);
    assert!(
        files < MAX_HANDSHAKES + 100,
        "{files} files open in the manager with {} idle sockets",
        idle.len()
    );
    drop(idle);
}

#[test]
fn a_connection_past_the_limit_is_closed_at_once() {
    let mut c = Cluster::new();
    c.manager_env
        .push(("AAM_MAX_CONNECTIONS".into(), "20".into()));
    c.start_manager();
    // The harness's own probes may hold a slot for a moment.
    let mut held = Vec::new();
    let full = poll(Duration::from_secs(20), || {
        while held.len() < 20 {
            held.push(Wire::try_connect(&c.addr, Role::Client, &c.token).ok()?);
        }
        Some(())
    });
    assert!(
        full.is_some(),
        "could not open 20 connections\n{}",
        c.logs()
    );
    let extra = Wire::try_connect(&c.addr, Role::Client, &c.token);
    assert!(extra.is_err(), "the 21st connection was served");
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(log.contains("connection limit reached"), "{log}");

    held.pop();
    let served = poll(Duration::from_secs(20), || {
        (c.aam(&["sessions"]).code == 0).then_some(())
    });
    assert!(
        served.is_some(),
        "a freed slot was not reused\n{}",
        c.logs()
    );
}
