//! aam across machines, on test hosts of their own (network namespaces on a
//! bridge, see `aam_tests::netns`): a manager on one host, workers on two
//! others, the client on a fourth; what crosses the network, and what
//! happens when a host is cut off.

use crate::job;
use aam_tests::netns::TestNet;
use aam_tests::proxy::RecordingProxy;
use aam_tests::{poll, run_command, tls, Cluster, HOST_MANAGER_PORT, WAIT_FOR_GATE};
use serde_json::json;
use std::time::Duration;

/// The hosts: manager, worker a, worker b, client.
const MANAGER: usize = 0;
const WORKER_A: usize = 1;
const WORKER_B: usize = 2;
const CLIENT: usize = 3;

/// A manager on host 0 and no workers yet; `aam` runs on host 3.
fn cluster_on(net: &TestNet, env: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::new();
    c.manager_host = Some(net.host(MANAGER).clone());
    c.client_host = Some(net.host(CLIENT).clone());
    for (k, v) in env {
        c.manager_env.push((k.to_string(), v.to_string()));
    }
    c.start_manager();
    c
}

#[test]
fn a_session_runs_across_four_hosts_and_the_path_between_sees_neither_token_nor_prompt() {
    let _net = aam_tests::network_changes();
    let net = TestNet::new(4);
    let mut c = cluster_on(&net, &[]);
    c.start_worker_on(Some(net.host(WORKER_A)), "a", 2, &["--label", "host=a"]);
    c.start_worker_on(Some(net.host(WORKER_B)), "b", 2, &["--label", "host=b"]);
    // Every client request goes through a proxy on the client's host; the
    // client pins the certificate the manager made (the proxy's address is
    // not among its names, and with a pin it need not be).
    let manager = net.host(MANAGER).addr(HOST_MANAGER_PORT);
    let proxy = RecordingProxy::start(net.host(CLIENT), 7500, manager);
    c.client_addr = Some(proxy.addr.to_string());
    let pin = tls::fingerprint_of(&c.cert());
    c.client_env
        .push(("AAM_FINGERPRINT".into(), format!("sha256:{pin}")));

    let prompt = "the-secret-plan-4711";
    let batch = json!({"name": "across", "jobs": [
        {"name": "on-a", "command": ["sh", "-c", format!("echo {prompt} from a")], "requires": {"host": "a"}},
        {"name": "on-b", "command": ["sh", "-c", format!("echo {prompt} from b")], "requires": {"host": "b"}},
    ]});
    let session = c.submit_json(&batch);
    let status = c.poll_status(&session, "the session done", |s| s["status"] == "succeeded");
    assert_eq!(job(&status, "on-a")["worker"], "a", "{status}");
    assert_eq!(job(&status, "on-b")["worker"], "b", "{status}");
    let results = c.aam(&["results", &session]).expect_code(0);
    assert!(
        results.stdout.contains(&format!("{prompt} from a"))
            && results.stdout.contains(&format!("{prompt} from b")),
        "{}",
        results.dump()
    );

    // A pin of another certificate: refused, one line naming both.
    let mut wrong = c.aam_command(&["sessions"]);
    wrong.env("AAM_FINGERPRINT", "00".repeat(32));
    let out = run_command(wrong, Duration::from_secs(60)).expect_code(3);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.dump());
    assert!(
        out.stderr.contains(&pin.to_string()) && out.stderr.contains("--fingerprint pins"),
        "{}",
        out.dump()
    );

    let seen = proxy.recorded();
    assert!(
        seen.len() > 500,
        "the proxy forwarded only {} bytes",
        seen.len()
    );
    assert!(
        !proxy.saw(&c.token),
        "the token crossed the network in clear"
    );
    assert!(
        !proxy.saw(prompt),
        "the prompt crossed the network in clear"
    );
    assert!(
        !proxy.saw("on-a"),
        "a job name crossed the network in clear"
    );
}

#[test]
fn a_worker_host_cut_off_past_its_lease_has_its_job_run_again_on_the_other_and_its_late_end_is_ignored(
) {
    let _net = aam_tests::network_changes();
    let net = TestNet::new(4);
    let mut c = cluster_on(
        &net,
        &[("AAM_HEARTBEAT_MS", "200"), ("AAM_LEASE_MS", "1500")],
    );
    c.start_worker_on(Some(net.host(WORKER_A)), "a", 1, &[]);
    let gate = c.gate("go");
    let marks = c.path("marks");
    let batch = json!({"name": "cut", "jobs": [{
        "name": "long",
        "command": ["sh", "-c", format!(
            "echo \"start $AAM_ATTEMPT\" >> \"$MARKS\"; {WAIT_FOR_GATE}; echo \"end $AAM_ATTEMPT\" >> \"$MARKS\"; echo done $AAM_ATTEMPT"
        )],
        "env": {"MARKS": marks.to_str().unwrap(), "GATE": gate.env()},
    }]});
    let session = c.submit_json(&batch);
    c.poll_status(&session, "the job running on a", |s| {
        job(s, "long")["status"] == "running"
    });
    // Only now is there another host to run it again on.
    c.start_worker_on(Some(net.host(WORKER_B)), "b", 1, &[]);
    net.host(WORKER_A).cut();
    let again = c.poll_status(&session, "the job running again on b", |s| {
        let j = job(s, "long");
        j["status"] == "running" && j["worker"] == "b"
    });
    assert_eq!(job(&again, "long")["attempts"], 2, "{again}");

    // Both attempts end: b's is the job's; a's ends while a is cut off.
    gate.open();
    let done = c.poll_status(&session, "b's attempt done", |s| s["status"] == "succeeded");
    let ended = poll(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&marks).ok()?;
        (text.contains("end 1") && text.contains("end 2")).then_some(())
    });
    assert!(ended.is_some(), "attempt 1 never ended on a\n{}", c.logs());
    net.host(WORKER_A).restore();
    let back = poll(Duration::from_secs(60), || {
        let out = c.aam(&["workers", "--json"]);
        (out.code == 0 && out.json().as_array()?.iter().any(|w| w["name"] == "a")).then_some(())
    });
    assert!(back.is_some(), "worker a never came back\n{}", c.logs());

    // a reported its late end when it came back (it keeps unacknowledged
    // ends): the job stays b's, recorded once.
    let after = c.status(&session);
    let long = job(&after, "long");
    assert_eq!(long["worker"], "b", "{after}");
    assert_eq!(long["attempts"], 2, "{after}");
    let history = long["attempt_history"].as_array().unwrap();
    let outcomes: Vec<&str> = history
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(history.len(), 2, "{after}");
    assert_eq!(history[0]["worker"], "a", "{after}");
    assert_ne!(outcomes[0], "succeeded", "{after}");
    assert_eq!(outcomes[1], "succeeded", "{after}");
    assert_eq!(after["counts"]["succeeded"], 1, "{after}");
    assert_eq!(
        done["jobs"], after["jobs"],
        "the late end changed the record"
    );
    let logs = c.aam(&["logs", &format!("{session}/long")]).expect_code(0);
    assert_eq!(logs.stdout, "done 2\n", "{}", logs.dump());
}

#[test]
fn five_hundred_idle_half_open_connections_from_another_host_do_not_stop_a_client() {
    let _net = aam_tests::network_changes();
    let net = TestNet::new(4);
    let mut c = cluster_on(&net, &[]);
    c.start_worker_on(Some(net.host(WORKER_A)), "a", 1, &[]);
    let manager = net.host(MANAGER).addr(HOST_MANAGER_PORT);
    // Opened from worker b's host and never written to.
    let idle = net.host(WORKER_B).run(move || {
        (0..500)
            .filter_map(|_| std::net::TcpStream::connect(manager).ok())
            .collect::<Vec<_>>()
    });
    assert!(idle.len() >= 400, "only {} connections opened", idle.len());
    let answered = poll(Duration::from_secs(30), || {
        let out = c.aam(&["workers", "--json"]);
        (out.code == 0).then_some(out)
    });
    let out =
        answered.unwrap_or_else(|| panic!("no answer with 500 idle connections\n{}", c.logs()));
    assert_eq!(out.json()[0]["name"], "a", "{}", out.dump());
    let session =
        c.submit_json(&json!({"name": "busy", "jobs": [{"name": "j", "command": ["echo", "hi"]}]}));
    c.poll_status(&session, "the job done", |s| s["status"] == "succeeded");
    drop(idle);
}

#[test]
fn roles_hold_across_hosts_and_the_audit_names_each_actor_and_its_address() {
    let _net = aam_tests::network_changes();
    use crate::roles::{as_token, config, denied, READ, SUBMIT, WORKER};
    let net = TestNet::new(4);
    let mut c = Cluster::new();
    c.manager_host = Some(net.host(MANAGER).clone());
    c.client_host = Some(net.host(CLIENT).clone());
    c.manager_config = Some(c.write("aam.toml", &config()));
    c.start_manager();
    // A worker host holds a worker token, nothing more.
    c.worker_env.push(("AAM_TOKEN".into(), WORKER.into()));
    c.start_worker_on(Some(net.host(WORKER_A)), "gpu-box", 1, &[]);

    let file = c.write(
        "one.toml",
        "name = \"one\"\n[[jobs]]\nname = \"j\"\ncommand = [\"echo\", \"hi\"]\n",
    );
    let out = as_token(&c, SUBMIT, &["submit", "--json", file.to_str().unwrap()]).expect_code(0);
    let session = out.json()["session"].as_str().unwrap().to_string();
    c.poll_status(&session, "the job done", |s| s["status"] == "succeeded");
    as_token(&c, READ, &["status", &session]).expect_code(0);
    denied(&c, READ, &["cancel", &session], "reader", "read");
    denied(&c, WORKER, &["sessions"], "gpu", "worker");
    as_token(&c, "not-a-token-of-this-manager", &["sessions"]).expect_code(3);

    let records = c.aam(&["audit", "--json"]).expect_code(0).json();
    let records = records.as_array().unwrap();
    let find = |token: &str, action: &str| {
        records
            .iter()
            .find(|r| r["token"] == token && r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} by {token} in {records:?}"))
    };
    let from = |r: &serde_json::Value, host: usize| {
        let peer = r["peer"].as_str().unwrap();
        assert!(
            peer.starts_with(&format!("{}:", net.host(host).ip)),
            "{r} is not from host {host}"
        );
    };
    let register = find("gpu", "register");
    assert_eq!(register["outcome"], "done", "{register}");
    from(register, WORKER_A);
    let submit = find("ci", "submit");
    assert_eq!(submit["role"], "submit", "{submit}");
    from(submit, CLIENT);
    let cancel = find("reader", "cancel");
    assert_eq!(cancel["outcome"], "denied", "{cancel}");
    from(cancel, CLIENT);
    from(find("gpu", "sessions"), CLIENT);
    from(find("?", "connect"), CLIENT);
}

#[test]
fn a_plaintext_client_on_another_host_gets_nothing_in_clear() {
    let _net = aam_tests::network_changes();
    let net = TestNet::new(4);
    let c = cluster_on(&net, &[]);
    let name = "secret-session-name-on-hosts";
    let batch = c.write(
        "b.toml",
        &format!("name = \"{name}\"\n[[jobs]]\nname = \"g\"\ngate = true\n"),
    );
    c.aam(&["submit", batch.to_str().unwrap()]).expect_code(0);
    let manager = net.host(MANAGER).addr(HOST_MANAGER_PORT);
    let token = c.token.clone();
    let got = net
        .host(CLIENT)
        .run(move || tls::plaintext_handshake(manager, &token));
    tls::assert_nothing_in_clear(&got, &[name.as_bytes(), c.token.as_bytes()]);
    // The manager still serves clients that speak TLS.
    c.aam(&["sessions"]).expect_code(0);
}
