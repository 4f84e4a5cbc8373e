//! The audit log, token rotation on SIGHUP and quotas against a real
//! manager: the audit names each actor (denied attempts and bad tokens
//! included), filters by `--since`, prints JSON and survives a restart;
//! tokens added and removed from the config take effect on SIGHUP while the
//! others go on working; quotas refuse with a message naming the limit and
//! the token, counted in `/metrics`.

use crate::roles::{as_token, config, denied, gated, READ, SUBMIT};
use aam_protocol::messages::Role;
use aam_tests::http::get;
use aam_tests::wire::Wire;
use aam_tests::{poll, Cluster};
use serde_json::Value;
use std::net::TcpStream;
use std::time::Duration;

const OLD: &str = "old-rotated-token-0123456789";
const NEW: &str = "new-rotated-token-0123456789";

/// The audit log as `aam audit --json ARGS` prints it (main token).
fn audit(c: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let doc = c.aam(&all).expect_code(0).json();
    doc.as_array().expect("an array").clone()
}

/// Whether a record of `token` doing `action` with `outcome` is among them.
fn has(records: &[Value], token: &str, action: &str, outcome: &str) -> bool {
    records
        .iter()
        .any(|r| r["token"] == token && r["action"] == action && r["outcome"] == outcome)
}

#[test]
fn the_audit_log_names_each_actor_and_survives_a_restart() {
    let mut c = Cluster::new();
    c.manager_config = Some(c.write("aam.toml", &config()));
    c.start_manager();
    let session = gated(&c, SUBMIT, "g.toml");
    denied(&c, READ, &["cancel", &session], "reader", "read");
    let out = as_token(&c, "not-a-token-of-this-manager", &["sessions"]).expect_code(3);
    assert!(out.stderr.contains("invalid token"), "{}", out.dump());
    as_token(&c, SUBMIT, &["approve", &format!("{session}/gate")]).expect_code(0);
    // Reads are not recorded; refused reads are.
    as_token(&c, SUBMIT, &["status", &session]).expect_code(0);

    let records = audit(&c, &[]);
    assert!(has(&records, "ci", "submit", "done"), "{records:?}");
    assert!(has(&records, "ci", "approve", "done"), "{records:?}");
    assert!(has(&records, "reader", "cancel", "denied"), "{records:?}");
    assert!(has(&records, "?", "connect", "denied"), "{records:?}");
    assert!(
        !records.iter().any(|r| r["action"] == "status"),
        "{records:?}"
    );
    let submit = records.iter().find(|r| r["action"] == "submit").unwrap();
    for key in [
        "at", "token", "role", "peer", "action", "target", "outcome", "detail",
    ] {
        assert!(submit.get(key).is_some(), "{key} missing: {submit}");
    }
    assert_eq!(submit["role"], "submit");
    assert!(
        submit["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{submit}"
    );
    assert!(
        submit["detail"].as_str().unwrap().starts_with(&session),
        "{submit}"
    );
    let denial = records.iter().find(|r| r["token"] == "reader").unwrap();
    assert_eq!(denial["target"], session.as_str());
    assert_eq!(
        denial["detail"],
        "permission denied: token reader has role read"
    );
    let text = c.aam(&["audit"]).expect_code(0).stdout;
    assert!(text.starts_with("TIME"), "{text}");
    assert!(
        text.contains(" reader ") && text.contains(" denied "),
        "{text}"
    );

    // Durable: all there after a kill -9 and a restart.
    c.kill_manager();
    c.start_manager();
    let after = audit(&c, &[]);
    assert_eq!(after.len(), records.len(), "{after:?}\n{records:?}");
    // --since: the records age out of a short window, not out of a long one.
    let aged = poll(Duration::from_secs(30), || {
        audit(&c, &["--since", "5s"]).is_empty().then_some(())
    });
    assert!(aged.is_some(), "{:?}", audit(&c, &["--since", "5s"]));
    assert_eq!(audit(&c, &["--since", "1h"]).len(), records.len());
    denied(&c, READ, &["gc"], "reader", "read");
    let recent = audit(&c, &["--since", "5s"]);
    assert!(has(&recent, "reader", "gc", "denied"), "{recent:?}");
    assert!(!has(&recent, "ci", "submit", "done"), "{recent:?}");
}

#[test]
fn audit_records_past_the_retention_are_dropped_by_gc() {
    let mut c = Cluster::new();
    c.manager_env.push(("AAM_RETENTION".into(), "3s".into()));
    c.manager_config = Some(c.write("aam.toml", &config()));
    c.start_manager();
    denied(&c, READ, &["gc"], "reader", "read");
    assert!(has(&audit(&c, &[]), "reader", "gc", "denied"));
    // Each gc is recorded itself; the old denial goes once past 3 s.
    let dropped = poll(Duration::from_secs(30), || {
        c.aam(&["gc", "--older-than", "1h"]).expect_code(0);
        let records = audit(&c, &[]);
        (!has(&records, "reader", "gc", "denied")).then_some(records)
    });
    let records = dropped.expect("the denial past the retention is dropped");
    assert!(has(&records, "admin", "gc", "done"), "{records:?}");
}

/// A config with `[tokens.NAME]` for each (name, token), all `submit`.
fn tokens(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, token)| format!("[tokens.{name}]\ntoken = \"{token}\"\nrole = \"submit\"\n"))
        .collect()
}

/// `aam sessions` with `token` works now.
fn works(c: &Cluster, token: &str) -> bool {
    as_token(c, token, &["sessions"]).code == 0
}

#[test]
fn sighup_rotates_tokens_without_a_restart() {
    let mut c = Cluster::new();
    let file = c.write("aam.toml", &tokens(&[("old", OLD)]));
    c.manager_config = Some(file);
    c.start_manager();
    c.start_worker("w", 1);
    assert!(works(&c, OLD) && !works(&c, NEW));
    // A session the old token follows on a connection opened before it goes.
    let session = gated(&c, OLD, "g.toml");
    let mut wait = c.aam_command(&["wait", &session]);
    wait.env("AAM_TOKEN", OLD);
    let mut waiting = Reap(
        wait.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    c.write("aam.toml", &tokens(&[("old", OLD), ("new", NEW)]));
    c.manager.as_ref().unwrap().signal(libc::SIGHUP);
    assert!(poll(Duration::from_secs(20), || works(&c, NEW).then_some(())).is_some());
    assert!(works(&c, OLD), "the old token goes on working meanwhile");

    c.write("aam.toml", &tokens(&[("new", NEW)]));
    c.manager.as_ref().unwrap().signal(libc::SIGHUP);
    let gone = poll(Duration::from_secs(20), || (!works(&c, OLD)).then_some(()));
    assert!(gone.is_some(), "{}", c.logs());
    let out = as_token(&c, OLD, &["sessions"]).expect_code(3);
    assert!(out.stderr.contains("invalid token"), "{}", out.dump());
    assert!(works(&c, NEW));

    // A config that does not load keeps the tokens in force.
    c.write(
        "aam.toml",
        "[tokens.new]\ntoken = \"short\"\nrole = \"submit\"\n",
    );
    c.manager.as_ref().unwrap().signal(libc::SIGHUP);
    let logged = poll(Duration::from_secs(20), || {
        c.logs()
            .contains("SIGHUP: the config did not load")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", c.logs());
    assert!(works(&c, NEW));

    // The connection opened with the old token keeps its identity.
    as_token(&c, NEW, &["approve", &format!("{session}/gate")]).expect_code(0);
    let ended = poll(Duration::from_secs(30), || {
        waiting.0.try_wait().ok().flatten().map(|s| s.code())
    });
    assert_eq!(ended, Some(Some(0)), "aam wait with the removed token");
}

/// Kills and reaps a child when dropped.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const QUOTA: &str = "quota-token-0123456789";
const QUEUE: &str = "queue-token-0123456789";

/// `aam_refusals_total{reason="REASON"}` in a scrape.
fn refusals(c: &Cluster, reason: &str) -> f64 {
    let text = get(&c.url("/metrics"), &[]).expect(200).body;
    let series = format!("aam_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn quotas_refuse_with_a_message_naming_the_limit_and_are_counted() {
    let mut c = Cluster::new();
    c.http = true;
    c.manager_env
        .push(("AAM_MAX_CONNECTIONS_PER_PEER".into(), "4".into()));
    let config = format!(
        "[tokens.q]\ntoken = \"{QUOTA}\"\nrole = \"submit\"\nmax_sessions = 1\n\
         [tokens.j]\ntoken = \"{QUEUE}\"\nrole = \"submit\"\nmax_queued_jobs = 3\n"
    );
    c.manager_config = Some(c.write("aam.toml", &config));
    c.start_manager();
    // No worker: submitted jobs stay queued.
    let two = c.write(
        "two.toml",
        "name = \"two\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n\
         [[jobs]]\nname = \"b\"\ncommand = [\"true\"]\n",
    );
    let two = two.to_str().unwrap();
    as_token(&c, QUOTA, &["submit", two]).expect_code(0);
    let out = as_token(&c, QUOTA, &["submit", two]).expect_code(3);
    let want = "quota reached: token q has 1 unfinished sessions, its max_sessions is 1";
    assert!(out.stderr.contains(want), "{}", out.dump());
    as_token(&c, QUEUE, &["submit", two]).expect_code(0);
    let out = as_token(&c, QUEUE, &["submit", two]).expect_code(3);
    let want = "quota reached: token j has 2 jobs waiting to run and asks for 2 more, its max_queued_jobs is 3";
    assert!(out.stderr.contains(want), "{}", out.dump());
    assert_eq!(refusals(&c, "max_sessions"), 1.0);
    assert_eq!(refusals(&c, "max_queued_jobs"), 1.0);
    assert_eq!(refusals(&c, "role"), 0.0);

    // Connections per peer address: four authenticated held open, the
    // fifth refused; sockets that never handshake do not count.
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&c.addr).unwrap())
        .collect();
    let held: Vec<Wire> = (0..4)
        .map(|_| Wire::connect(&c.addr, Role::Client, &c.token))
        .collect();
    let out = c.aam(&["sessions"]).expect_code(3);
    let want = "too many connections from 127.0.0.1: at most 4 at once (max_connections_per_peer)";
    assert!(out.stderr.contains(want), "{}", out.dump());
    drop(held);
    drop(idle);
    let back = poll(Duration::from_secs(20), || {
        (c.aam(&["sessions"]).code == 0).then_some(())
    });
    assert!(back.is_some(), "{}", c.logs());
    assert!(refusals(&c, "connections_per_peer") >= 1.0);
    let records = audit(&c, &[]);
    assert!(has(&records, "q", "submit", "denied"), "{records:?}");
    assert!(has(&records, "j", "submit", "denied"), "{records:?}");
    assert!(has(&records, "admin", "connect", "denied"), "{records:?}");
}
