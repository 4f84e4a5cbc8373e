//! `providers` (`cargo bench -p aam-tests --bench throughput --
//! providers`), issue 17: (1) the manager's CPU per launch decision — the
//! model's capacity (a walk over the queue, grouped by required labels)
//! and `plan::launches` — with 10,000 queued jobs and 100 providers'
//! workers connected, against the scheduling decision (`schedule::plan`)
//! over a queue of the same size that no worker fits, as the peer; (2) the time from a submit to the
//! first job running when no worker is connected, with a podman provider
//! (real podman, an image of this build's worker) and with a Slurm
//! provider (a one-node Slurm 22.05 of its own), each round after the
//! last round's worker left on its idle timeout.

use aam_manager::providers::plan::ProviderCapacity;
use aam_manager::providers::run::decide;
use aam_manager::schedule::{plan, Candidate, Labels, WorkerCapacity};
use aam_manager::state::{State, StateConfig, WorkerEntry};
use aam_protocol::spec::{BatchSpec, JobSpec};
use aam_tests::container::worker_image;
use aam_tests::slurm::SlurmCluster;
use aam_tests::{poll, Cluster};
use std::time::{Duration, Instant};

fn decision() {
    let mut state = State::new(StateConfig::default());
    let gpu: Labels = [("gpu".to_string(), "yes".to_string())].into();
    let jobs: Vec<JobSpec> = (0..10_000)
        .map(|i| JobSpec {
            name: format!("j{i}"),
            command: Some(vec!["true".into()]),
            requires: if i % 10 == 0 {
                gpu.clone()
            } else {
                Labels::new()
            },
            ..Default::default()
        })
        .collect();
    let batch = BatchSpec {
        name: "decide".into(),
        max_parallel: None,
        max_cost_usd: None,
        jobs,
    };
    state.submit(batch, None, 0).expect("a 10,000-job session");
    for w in 0..100u64 {
        let entry = WorkerEntry {
            name: format!("pods-{w}"),
            instance: w,
            address: "bench".into(),
            slots: 1,
            prefetch: aam_protocol::messages::Prefetch::Fixed(0),
            recent_job_us: None,
            labels: Labels::new(),
            assigned: Default::default(),
            draining: false,
            connected_at_ms: 0,
            last_heartbeat_ms: 0,
        };
        state.register_worker(w, entry, &[], 0).expect("a worker");
    }
    state.dispatch(1);
    let none = Labels::new();
    let runs = 50;
    let started = Instant::now();
    let mut planned = 0;
    for _ in 0..runs {
        // 100 providers of up to 100 workers of 4 slots.
        let capacity = state.capacity(aam_protocol::now_ms(), 100 * 100 * 4);
        let providers: Vec<ProviderCapacity<'_>> = (0..100)
            .map(|i| ProviderCapacity {
                labels: if i == 99 { &gpu } else { &none },
                slots: 4,
                max_workers: 100,
                min_workers: 0,
                connected: if i == 0 { 100 } else { 0 },
                launching: 0,
            })
            .collect();
        planned = decide(&capacity, &providers).iter().sum::<u32>();
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    // The peer: the scheduling decision (`schedule::plan`) over a queue
    // of the same size whose jobs no worker's labels fit (a full walk;
    // with every worker full it would stop at once).
    let keys: Vec<aam_protocol::JobKey> = (0..10_000u32)
        .map(|index| aam_protocol::JobKey {
            session: aam_protocol::SessionId(1),
            index,
        })
        .collect();
    let full: Vec<WorkerCapacity<'_>> = (0..100)
        .map(|worker| WorkerCapacity {
            worker,
            free: 1,
            labels: &none,
        })
        .collect();
    let started = Instant::now();
    for _ in 0..runs {
        let queued = keys.iter().map(|&job| Candidate {
            job,
            requires: &gpu,
            only: None,
            uses: &[],
        });
        let placed = plan(queued, &full, &mut std::collections::HashMap::new());
        assert!(placed.is_empty());
    }
    let peer = started.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    println!("providers: one launch decision, 10,000 queued (1 in 10 needing a label), 100 workers connected, 100 providers");
    println!("  capacity + plan::launches: {per:.0} us ({planned} workers planned)");
    println!("  peer, the scheduling decision over the same queue: {peer:.0} us");
}

/// Submit to the first job running, no worker connected, with the
/// provider `config` (`kind` names it in the output).
fn first_job(kind: &str, config: &str, env: Vec<(String, String)>) -> Cluster {
    let mut c = Cluster::new();
    c.manager_env = env;
    c.set_config(config);
    c.start_manager();
    let rounds = 5;
    let mut took = Vec::new();
    for round in 0..rounds {
        // No worker connected: the last round's left on its idle timeout.
        poll(Duration::from_secs(60), || {
            let list = c.aam(&["workers", "--json"]).expect_code(0).json();
            list.as_array().is_some_and(|l| l.is_empty()).then_some(())
        })
        .expect("the last worker left");
        let started = Instant::now();
        let session = c.submit_json(&serde_json::json!({"name": format!("r{round}"), "jobs": [
            { "name": "j", "command": ["true"] },
        ]}));
        poll(Duration::from_secs(60), || {
            let s = c.status(&session);
            (s["jobs"][0]["status"] != "queued").then_some(())
        })
        .expect("the job started");
        took.push(started.elapsed());
        c.aam(&["wait", &session]).expect_code(0);
    }
    let each: Vec<String> = took
        .iter()
        .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
        .collect();
    took.sort();
    println!("providers: submit to the first job running, no worker connected, {kind} (release build, {rounds} rounds)");
    println!("  rounds in order (ms): {}", each.join(", "));
    println!(
        "  median {:.0} ms  max {:.0} ms",
        took[rounds / 2].as_secs_f64() * 1000.0,
        took[rounds - 1].as_secs_f64() * 1000.0
    );
    c
}

fn first_job_podman() {
    let image = worker_image();
    let c = first_job(
        "podman",
        &format!(
            "[[providers]]\nname = \"pods\"\nkind = \"podman\"\nimage = \"{image}\"\n\
             worker_bin = \"/usr/local/bin/aam-worker\"\nmax_workers = 1\nslots = 1\nidle_timeout = \"1s\"\n"
        ),
        Vec::new(),
    );
    // The last worker may still be waiting out its idle timeout.
    let install = std::fs::read_to_string(c.data_dir().join("install-id")).unwrap_or_default();
    let filter = format!("label=aam.install={}", install.trim());
    let left = std::process::Command::new("podman")
        .args(["ps", "-a", "-q", "--filter", &filter])
        .output()
        .expect("podman ps");
    let left = String::from_utf8_lossy(&left.stdout).to_string();
    if !left.trim().is_empty() {
        let _ = std::process::Command::new("podman")
            .args(["rm", "-f", "-t", "0"])
            .args(left.split_whitespace())
            .output();
    }
}

/// The same on a one-node Slurm of the bench's own (munged, slurmctld,
/// slurmd), the worker an `sbatch` job.
fn first_job_slurm() {
    let slurm = SlurmCluster::start();
    let c = first_job(
        "slurm",
        &format!(
            "[[providers]]\nname = \"hpc\"\nkind = \"slurm\"\nworker_bin = \"{}\"\n\
             output = \"/dev/null\"\nmax_workers = 1\nslots = 1\nidle_timeout = \"1s\"\n",
            aam_tests::bin("aam-worker").display()
        ),
        vec![slurm.env()],
    );
    drop(c);
    drop(slurm);
}

pub fn providers() {
    decision();
    first_job_podman();
    first_job_slurm();
}
