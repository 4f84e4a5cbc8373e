//! `dispatch`: the manager's dispatch capacity (issue 18, point 2). A load
//! generator speaks the real protocol over TCP (TLS, handshake, bincode
//! frames) as simulated workers, 100 of 10 slots by default
//! (`AAM_BENCH_SIM_WORKERS`, `AAM_BENCH_SIM_SLOTS`): each finishes every
//! assignment at once and sends nothing but what a worker sends
//! (`Register`, `Finished`, heartbeats). One session of
//! `AAM_BENCH_SIM_JOBS` jobs (100,000 by default, the default limit of a
//! session) is submitted first, with no worker yet, and the manager left
//! until it is idle (sled takes a submission after its ack); then the
//! simulated workers connect and the session runs to its end, every end
//! committed before its `Ack` (as always). Prints the dispatch's jobs per
//! second and manager CPU per job (the workers' registrations included),
//! the commit groups (from its `/metrics`): how many change sets each
//! fsync carried; the submission's own figures apart (point 4 measures
//! them at scale), and both together; and the manager's resident size
//! once the session has finished.
//!
//! On a 2-core machine the generator (TLS and all, on as many threads as
//! workers) shares the cores with the manager; the manager's CPU per job
//! is the figure that does not depend on it.

use super::{cpu_secs, env_count, rss_kib, true_jobs, Client};
use aam_protocol::messages::{ManagerToWorker, Prefetch, Role, WorkerToManager};
use aam_protocol::model::ExitInfo;
use aam_tests::wire::Wire;
use aam_tests::Cluster;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a simulated worker heartbeats (the lease is 5 s).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

pub fn dispatch() {
    let workers = env_count("AAM_BENCH_SIM_WORKERS", 100);
    let slots = env_count("AAM_BENCH_SIM_SLOTS", 10) as u32;
    let n = env_count("AAM_BENCH_SIM_JOBS", 100_000);
    let mut c = Cluster::new();
    c.http = true;
    // All of them come from 127.0.0.1 (64 connections per address by default).
    let per_peer = (workers + 8).to_string();
    c.manager_env
        .push(("AAM_MAX_CONNECTIONS_PER_PEER".into(), per_peer));
    c.start_manager();
    let manager = c.manager.as_ref().unwrap().pid();
    let cpu_at_start = cpu_secs(manager);
    let mut client = Client::connect(&c.addr, &c.token);
    let submitted = Instant::now();
    let session = client.submit(true_jobs(n));
    let acked = submitted.elapsed();
    wait_until_idle(manager);
    let submission_cpu = cpu_secs(manager) - cpu_at_start;
    let before = metrics(&c);
    let cpu_before = cpu_secs(manager);
    let start = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let registered = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|i| {
            let (addr, token) = (c.addr.clone(), c.token.clone());
            let (done, stop, registered) = (done.clone(), stop.clone(), registered.clone());
            std::thread::spawn(move || {
                simulated_worker(&addr, &token, i, slots, &done, &stop, &registered)
            })
        })
        .collect();
    client.wait(session);
    let took = start.elapsed();
    let cpu = cpu_secs(manager) - cpu_before;
    // What the finished session holds (its records and their histories).
    let rss_mib = rss_kib(manager, "VmRSS:") as f64 / 1024.0;
    stop.store(true, Ordering::Relaxed);
    let after = metrics(&c);
    for t in threads {
        t.join().expect("a simulated worker panicked");
    }
    assert_eq!(
        done.load(Ordering::Relaxed),
        n,
        "every job acknowledged once"
    );
    let groups = after.0 - before.0;
    let sets = after.1 - before.1;
    assert_eq!(
        registered.load(Ordering::Relaxed),
        workers,
        "every simulated worker registered"
    );
    println!(
        "dispatch: {n} jobs queued, then {workers} simulated workers x {slots} slots over TCP, durable"
    );
    println!(
        "  {:>7.0} jobs/s ({:.2} s); manager CPU per job {:.1} us; {:.0} commit groups, {:.1} change sets each ({:.1} jobs per fsync)",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        cpu * 1e6 / n as f64,
        groups,
        sets / groups.max(1.0),
        n as f64 / groups.max(1.0)
    );
    println!(
        "  the submission before it: acknowledged in {:.2} s, {:.1} us of manager CPU a job until idle; both together {:.0} jobs/s, {:.1} us a job",
        acked.as_secs_f64(),
        submission_cpu * 1e6 / n as f64,
        n as f64 / (acked + took).as_secs_f64(),
        (submission_cpu + cpu) * 1e6 / n as f64
    );
    println!("  manager RSS with the session finished: {rss_mib:.1} MiB");
}

/// Returns once the manager has used at most one clock tick (10 ms) of
/// CPU in 300 ms: what a submission sets going after its ack is done.
fn wait_until_idle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since = (Instant::now(), cpu_secs(pid));
    while quiet_since.0.elapsed() < Duration::from_millis(300) {
        assert!(
            Instant::now() < deadline,
            "the manager was still busy after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = cpu_secs(pid);
        if now - quiet_since.1 > 0.015 {
            quiet_since = (Instant::now(), now);
        }
    }
}

/// (commit groups, change sets in them) so far, from `/metrics`.
fn metrics(c: &Cluster) -> (f64, f64) {
    let text = aam_tests::http::get(&c.url("/metrics"), &[]).body;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("aam_commit_group_size_count "),
        value("aam_commit_group_size_sum "),
    )
}

/// One worker: registers, answers each assignment with its end at once,
/// counts the acknowledgements, heartbeats, and leaves when told to stop.
fn simulated_worker(
    addr: &str,
    token: &str,
    index: usize,
    slots: u32,
    done: &AtomicUsize,
    stop: &AtomicBool,
    registered: &AtomicUsize,
) {
    let mut wire = Wire::connect(addr, Role::Worker, token);
    wire.send(&WorkerToManager::Register {
        name: format!("sim-{index}"),
        instance: index as u64 + 1,
        slots,
        prefetch: Prefetch::Fixed(0),
        labels: BTreeMap::new(),
        assigned: Vec::new(),
    });
    let mut beat = Instant::now();
    loop {
        let message = match wire.try_recv::<ManagerToWorker>(HEARTBEAT_EVERY) {
            Ok(message) => message,
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                wire.send(&WorkerToManager::Heartbeat);
                beat = Instant::now();
                continue;
            }
            Err(e) => panic!("sim-{index}: {e}"),
        };
        match message {
            ManagerToWorker::Registered { .. } => {
                registered.fetch_add(1, Ordering::Relaxed);
            }
            ManagerToWorker::Assign(assignment) => wire.send(&WorkerToManager::Finished {
                attempt: assignment.attempt_ref(),
                exit: ExitInfo {
                    code: Some(0),
                    signal: None,
                    duration_ms: 0,
                },
                stopped: None,
                agent: None,
                change: None,
                patch: Vec::new(),
                workspace: None,
            }),
            ManagerToWorker::Ack(_) => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if beat.elapsed() >= HEARTBEAT_EVERY {
            wire.send(&WorkerToManager::Heartbeat);
            beat = Instant::now();
        }
    }
}
