//! Issue 15, a container per job (`isolation = "container"`), end to end
//! through the real manager, worker and `aam` binaries with real podman
//! containers of a busybox image built offline: the job's file lands on
//! its branch, an egress allowlist lets through the listed server on a
//! test host and refuses another (logged) and a service of the worker's
//! own host, `network = "none"` reaches
//! nothing, a cancel leaves no container behind (its teardown, a job key,
//! ran first), and a worker without an engine is never sent one.

use aam_tests::container::{busybox_image, containers_of, Sweep};
use aam_tests::netns::{Host, TestNet};
use aam_tests::{poll, Cluster};
use serde_json::json;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A manager and a worker named `name` with its worktrees in the
/// scratch directory, and a repository `work/repo`.
fn cluster(name: &str) -> (Cluster, std::path::PathBuf, Sweep) {
    cluster_with(name, &[])
}

/// The same with more worker flags; the sweep, dropped after the cluster,
/// removes what a failed test's worker left.
fn cluster_with(name: &str, flags: &[&str]) -> (Cluster, std::path::PathBuf, Sweep) {
    let mut c = Cluster::with_manager();
    let root = c.path("worktrees");
    let mut args = vec!["--worktrees", root.to_str().unwrap()];
    args.extend_from_slice(flags);
    c.start_worker_with(name, 2, &args);
    aam_tests::git::make_repo(&c.path("work").join("repo"), 2);
    let sweep = Sweep {
        worker: name.to_string(),
        worktrees: root.clone(),
    };
    (c, root, sweep)
}

fn log_of(c: &Cluster, session: &str, job: &str) -> String {
    c.aam(&["logs", &format!("{session}/{job}")])
        .expect_code(0)
        .stdout
}

#[test]
fn a_container_job_writes_a_file_that_lands_on_its_branch_and_leaves_no_container() {
    let _net = aam_tests::network_changes();
    let image = busybox_image();
    let (c, root, _sweep) = cluster("boxw");
    // PID 1 is the pausing init the worker mounts: the job is in the container.
    let script = "echo made-in-a-container > made.txt; tr '\\0' ' ' < /proc/1/cmdline; echo; \
                  echo env=$AAM_JOB_NAME";
    let job = json!({
        "name": "boxed",
        "command": ["sh", "-c", script],
        "image": image,
        "workdir": "repo",
    });
    let session = c.submit_json(&json!({ "name": "box", "jobs": [job] }));
    let s = c.poll_status(&session, "the job's end", |s| s["status"] != "running");
    assert_eq!(s["jobs"][0]["status"], "succeeded", "{s}\n{}", c.logs());
    let log = log_of(&c, &session, "boxed");
    assert!(
        log.contains("/run/aam-pause -P"),
        "not run in the container:\n{log}"
    );
    assert!(log.contains("env=boxed"), "{log}");
    let branch = format!("aam/{session}/boxed");
    let repo = c.path("work").join("repo");
    let shown = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["show", &format!("{branch}:made.txt")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout),
        "made-in-a-container\n",
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        containers_of("boxw", &root).is_empty(),
        "a container was left behind"
    );
}

/// A tiny HTTP server on `host`:`port` answering `reached-NAME`, counting
/// the connections it gets.
fn serve(host: &Host, port: u16, name: &'static str) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    host.spawn(move || {
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        ready_tx.send(()).unwrap();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let body = format!("reached-{name}\n");
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    ready.recv_timeout(Duration::from_secs(10)).unwrap();
    count
}

#[test]
fn an_egress_list_lets_through_only_its_server_and_none_reaches_nothing() {
    let _net = aam_tests::network_changes();
    let image = busybox_image();
    let net = TestNet::new(2);
    // The worker (and its proxy) reach the hosts through the test's bridge;
    // the containers have no route there.
    net.join_machine(254);
    let allowed = net.host(0).addr(8080);
    let other = net.host(1).addr(8080);
    let allowed_hits = serve(net.host(0), 8080, "allowed");
    let other_hits = serve(net.host(1), 8080, "other");
    // A service of this machine bound to every address: on the gateway of
    // the containers' network too, yet out of their reach.
    let on_host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    on_host.set_nonblocking(true).unwrap();
    let host_port = on_host.local_addr().unwrap().port();
    let (c, root, _sweep) = cluster("egressw");
    let fetch = |addr: std::net::SocketAddr, tag: &str| {
        format!("timeout 5 wget -q -O - http://{addr}/; echo {tag}-exit=$?; ")
    };
    let listed = format!(
        "{}{}timeout 3 wget -Y off -q -O - http://{allowed}/; echo direct-exit=$?; \
         gw=${{HTTP_PROXY#http://}}; gw=${{gw%:*}}; \
         timeout 3 wget -Y off -q -O - http://$gw:{host_port}/; echo host-exit=$?",
        fetch(allowed, "allowed"),
        fetch(other, "other"),
    );
    let closed = format!("echo proxy=[$HTTP_PROXY]; {}", fetch(allowed, "none"));
    let jobs = json!([
        {
            "name": "listed",
            "command": ["sh", "-c", listed],
            "image": image,
            "egress": [allowed.to_string()],
            "workdir": "repo",
        },
        {
            "name": "closed",
            "command": ["sh", "-c", closed],
            "image": image,
            "workdir": "repo",
            "depends_on": ["listed"],
        },
    ]);
    let session = c.submit_json(&json!({ "name": "egress", "jobs": jobs }));
    let s = c.poll_status(&session, "both jobs' ends", |s| s["status"] != "running");
    assert_eq!(s["status"], "succeeded", "{s}\n{}", c.logs());
    let log = log_of(&c, &session, "listed");
    assert!(
        log.contains("reached-allowed") && log.contains("allowed-exit=0"),
        "{log}"
    );
    assert!(!log.contains("reached-other"), "{log}");
    assert!(!log.contains("other-exit=0"), "{log}");
    assert!(
        log.contains(&format!(
            "egress refused: {other} is not in the job's egress list"
        )),
        "the refusal is not in the job's log:\n{log}"
    );
    assert!(
        !log.contains("direct-exit=0"),
        "reached the host without the proxy:\n{log}"
    );
    assert!(log.contains("host-exit="), "{log}");
    assert!(
        on_host.accept().is_err(),
        "the container reached a service of the worker's host:\n{log}"
    );
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    let hits_before = allowed_hits.load(Ordering::SeqCst);
    assert_eq!(
        hits_before, 1,
        "only the proxied request reached the allowed host"
    );
    let log = log_of(&c, &session, "closed");
    assert!(log.contains("proxy=[]"), "{log}");
    assert!(
        !log.contains("none-exit=0") && log.contains("none-exit="),
        "{log}"
    );
    assert_eq!(allowed_hits.load(Ordering::SeqCst), hits_before);
    assert!(containers_of("egressw", &root).is_empty());
}

#[test]
fn a_cancelled_container_job_runs_its_teardown_and_leaves_no_container() {
    let _net = aam_tests::network_changes();
    let image = busybox_image();
    let (c, root, _sweep) = cluster("cancelw");
    let job = json!({
        "name": "held",
        "command": ["sh", "-c", "echo '::progress:: 50 holding'; exec sleep 600"],
        "image": image,
        "teardown": ["sh", "-c", "echo torn-down-in-$(hostname)"],
        "grace": "1s",
        "workdir": "repo",
    });
    let session = c.submit_json(&json!({ "name": "cancel", "jobs": [job] }));
    c.poll_status(&session, "the job holding", |s| {
        s["jobs"][0]["progress"] == 50
    });
    assert_eq!(
        containers_of("cancelw", &root).len(),
        1,
        "its container runs"
    );
    c.aam(&["cancel", &format!("{session}/held")])
        .expect_code(0);
    let s = c.poll_status(&session, "the cancel", |s| {
        s["jobs"][0]["status"] == "cancelled"
    });
    let log = log_of(&c, &session, "held");
    assert!(
        log.contains("== teardown ==") && log.contains("torn-down-in-"),
        "{s}\n{log}"
    );
    let removed = poll(Duration::from_secs(20), || {
        containers_of("cancelw", &root).is_empty().then_some(())
    });
    assert!(
        removed.is_some(),
        "a cancelled job's container was left behind"
    );
}

#[test]
fn a_container_job_waits_for_a_worker_with_an_engine_and_needs_an_image() {
    let _net = aam_tests::network_changes();
    let mut c = Cluster::with_manager();
    c.start_worker_with("bare", 1, &["--container-engine", "none"]);
    let job = json!({
        "name": "boxed",
        "command": ["true"],
        "image": "localhost/anything",
        "workdir": ".",
    });
    let session = c.submit_json(&json!({ "name": "wait", "jobs": [job] }));
    c.poll_status(&session, "the waiting reason", |s| {
        s["jobs"][0]["reason"] == "no worker can run containers"
    });
    let bad = c.path("bad.toml");
    let text = "name = \"bad\"\n[[jobs]]\nname = \"box\"\ncommand = [\"true\"]\nisolation = \"container\"\n";
    std::fs::write(&bad, text).unwrap();
    let out = c.aam(&["submit", bad.to_str().unwrap()]).expect_code(2);
    assert!(
        out.stderr
            .contains("job 'box': field 'image': isolation = \"container\" needs an image"),
        "{}",
        out.stderr
    );
}

/// Connects to `127.0.0.1:port` until what is read there is `expected`.
fn greeting_on(port: u16, expected: &str) -> bool {
    poll(Duration::from_secs(60), || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut got = String::new();
        let _ = stream.read_to_string(&mut got);
        (got.trim() == expected).then_some(())
    })
    .is_some()
}

#[test]
fn a_container_jobs_ports_are_on_the_workers_loopback_and_its_limits_hold() {
    let _net = aam_tests::network_changes();
    let image = busybox_image();
    // Below Linux's ephemeral ports, which any connection may hold.
    let (c, root, _sweep) = cluster_with("portw", &["--ports", "21310-21329"]);
    // One connection each, then the job ends: the greeting came through.
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo port=$AAM_PORT listening; \
                  echo hello-$AAM_JOB_NAME | nc -l -p $AAM_PORT";
    let job = |name: &str, network: serde_json::Value| {
        let mut job = json!({
            "name": name,
            "command": ["sh", "-c", script],
            "image": image,
            "ports": 1,
            "memory": "64m",
            "cpus": 0.5,
            "workdir": "repo",
        });
        job.as_object_mut()
            .unwrap()
            .extend(network.as_object().unwrap().clone());
        job
    };
    let jobs = json!([
        job("open", json!({ "network": "open" })),
        job("listed", json!({ "egress": ["127.0.0.1:9"] })),
    ]);
    let session = c.submit_json(&json!({ "name": "ports", "jobs": jobs }));
    // The job says its port and its memory limit, then waits for one
    // connection; what comes back through the port is its greeting.
    let greeted = |name: &str| -> u16 {
        let log = poll(Duration::from_secs(30), || {
            let log = log_of(&c, &session, name);
            log.contains("listening").then_some(log)
        })
        .unwrap_or_else(|| panic!("{name} never listened:\n{}", c.logs()));
        assert!(log.contains("67108864"), "no memory limit of 64m:\n{log}");
        let port: u16 = log
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port=")?.parse().ok())
            .unwrap_or_else(|| panic!("no port in:\n{log}"));
        assert!(
            greeting_on(port, &format!("hello-{name}")),
            "{name}'s port {port} is not on the worker's loopback\n{}",
            c.logs()
        );
        port
    };
    let (first, second) = (greeted("open"), greeted("listed"));
    assert_ne!(first, second);
    let s = c.poll_status(&session, "both jobs' ends", |s| s["status"] != "running");
    assert_eq!(s["status"], "succeeded", "{s}\n{}", c.logs());
    assert!(containers_of("portw", &root).is_empty());
}
