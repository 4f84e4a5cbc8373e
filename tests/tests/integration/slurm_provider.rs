//! Issue 17, workers launched on demand by a Slurm provider (a real
//! one-node Slurm 22.05: munged, slurmctld, slurmd; this build's
//! `aam-worker` as the batch job): six queued jobs make the manager
//! `sbatch` workers (never more than `max_workers` at once) that connect
//! back with join tokens of their own; a worker whose Slurm job is
//! cancelled mid-job drains and its job is requeued, as is the job of one
//! killed outright (whose watchdog, out of the process group Slurm
//! tracks, stops that job's processes); every job succeeds; idle workers
//! leave and no Slurm job is left. An `sbatch` that Slurm refuses is
//! reported in its words, a worker that fails before it connects is
//! reported with Slurm's state and reason (and the error clears once a
//! worker connects), and a restarted manager takes its Slurm worker back.

use aam_tests::claude::processes_mentioning;
use aam_tests::slurm::SlurmCluster;
use aam_tests::{bin, poll, Cluster};
use serde_json::json;
use std::time::Duration;

fn cluster_with(slurm: &SlurmCluster, provider: &str) -> Cluster {
    let mut c = Cluster::new();
    c.manager_env.push(slurm.env());
    c.set_config(&format!(
        "[[providers]]\nname = \"hpc\"\nkind = \"slurm\"\nworker_bin = \"{}\"\n\
         output = \"{}/worker-%j.log\"\n{provider}",
        bin("aam-worker").display(),
        c.path("").display(),
    ));
    c.start_manager();
    c
}

/// The Slurm job id of `worker`'s batch job.
fn slurm_job_of(slurm: &SlurmCluster, worker: &str) -> String {
    let line = slurm
        .jobs()
        .into_iter()
        .find(|l| l.contains(worker) && l.contains("|RUNNING|"))
        .unwrap_or_else(|| panic!("no running Slurm job for {worker}: {:?}", slurm.jobs()));
    line.split('|').next().unwrap().to_string()
}

/// The pid of the `aam-worker` process named `name`: of the processes with
/// that name on their command line, the one whose parent is none of them
/// (its watchdog is a fork of it). Only the worker is killed, as a lost
/// worker process is: its watchdog, out of its process group, then stops
/// its jobs and removes their cgroups.
fn worker_pid(name: &str) -> Option<libc::pid_t> {
    let listed = std::process::Command::new("pgrep")
        .args(["-f", &format!("name {name} ")])
        .output()
        .ok()?;
    let pids: Vec<libc::pid_t> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let parent = |pid: libc::pid_t| -> Option<libc::pid_t> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    pids.iter()
        .copied()
        .find(|&pid| parent(pid).is_some_and(|ppid| !pids.contains(&ppid)))
}

#[test]
fn six_queued_jobs_make_a_slurm_provider_submit_workers_whose_cancelled_or_killed_jobs_are_requeued(
) {
    let slurm = SlurmCluster::start();
    let c = cluster_with(
        &slurm,
        "max_workers = 2\nslots = 1\nidle_timeout = \"3s\"\ntime = \"10\"\n",
    );
    // Six jobs: "cancelled" and "killed" run long on their first attempt
    // only; four quick ones.
    let long_once = r#"if [ "$AAM_ATTEMPT" = 1 ]; then sleep 120; fi; echo ran"#;
    let mut jobs = vec![
        json!({ "name": "cancelled", "command": ["sh", "-c", long_once] }),
        json!({ "name": "killed", "command": ["sh", "-c", long_once] }),
    ];
    jobs.extend((0..4).map(|i| json!({ "name": format!("q{i}"), "command": ["true"] })));
    let session = c.submit_json(&json!({ "name": "on-slurm", "jobs": jobs }));
    // Both long ones start, each on a worker Slurm runs.
    let workers = poll(Duration::from_secs(60), || {
        let s = c.status(&session);
        let running = |i: usize| {
            let j = &s["jobs"][i];
            (j["status"] == "running").then(|| j["worker"].as_str().unwrap().to_string())
        };
        Some((running(0)?, running(1)?))
    })
    .unwrap_or_else(|| panic!("the jobs never started\n{}\n{}", c.logs(), slurm.logs()));
    assert!(
        workers.0.starts_with("hpc-") && workers.1.starts_with("hpc-"),
        "{workers:?}"
    );
    // `scancel`: Slurm's SIGTERM makes the worker drain; its job, still
    // running after the drain's 15 s, is stopped and requeued. A worker
    // process killed outright: its job is requeued at once, and its
    // watchdog (out of the process group Slurm tracks) stops the job's
    // processes.
    slurm.command("scancel", &[&slurm_job_of(&slurm, &workers.0)]);
    let killed = slurm_job_of(&slurm, &workers.1);
    let worker = worker_pid(&workers.1)
        .unwrap_or_else(|| panic!("the worker of Slurm job {killed} was not found"));
    // The job's `sh` and the `sleep` it started: the death signal stops
    // only the first; the second is the watchdog's to stop.
    let job_processes = poll(Duration::from_secs(15), || {
        let found = processes_mentioning(&format!("AAM_RUN_ID={}-", workers.1));
        (found.len() >= 2).then_some(found)
    })
    .unwrap_or_else(|| panic!("the job's processes never ran on {}", workers.1));
    // SAFETY: kill only sends a signal, to the worker found above.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGKILL) }, 0);
    poll(Duration::from_secs(15), || {
        (!job_processes.iter().any(|&pid| aam_tests::running(pid))).then_some(())
    })
    .unwrap_or_else(|| panic!("the killed worker's job processes {job_processes:?} outlived it"));
    // Never more than max_workers Slurm jobs at once, until all are done.
    let mut most = 0;
    poll(Duration::from_secs(120), || {
        most = most.max(slurm.active_jobs().len());
        let s = c.status(&session);
        (s["status"] == "succeeded").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the session did not succeed\n{}\n{:?}",
            c.logs(),
            slurm.jobs()
        )
    });
    assert!(most <= 2, "{most} Slurm jobs at once (max_workers 2)");
    let s = c.status(&session);
    for (i, first) in [(0, &workers.0), (1, &workers.1)] {
        let job = &s["jobs"][i];
        assert_eq!(job["attempts"], 2, "requeued once: {s}");
        assert_eq!(job["attempt_history"][0]["worker"], json!(first), "{s}");
        assert_ne!(job["worker"], json!(first), "run again elsewhere: {s}");
    }
    let audit = c.aam(&["audit", "--json"]).expect_code(0).stdout;
    assert!(
        audit.contains("join:hpc-"),
        "joined with join tokens: {audit}"
    );
    // Idle for 3 s, the workers retire; their Slurm jobs end; none is left.
    poll(Duration::from_secs(60), || {
        let listed = c.aam(&["workers", "--json"]).expect_code(0).json();
        (listed.as_array().is_some_and(|l| l.is_empty()) && slurm.active_jobs().is_empty())
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "workers or Slurm jobs left: {:?}\n{}",
            slurm.jobs(),
            c.logs()
        )
    });
    let providers = c.aam(&["providers", "--json"]).expect_code(0).json();
    assert_eq!(providers[0]["kind"], "slurm", "{providers}");
    assert!(providers[0]["last_error"].is_null(), "{providers}");
}

#[test]
fn a_refused_sbatch_and_a_failed_worker_are_reported_and_a_restart_takes_the_worker_back() {
    let slurm = SlurmCluster::start();
    let mut c = cluster_with(&slurm, "max_workers = 1\npartition = \"nosuch\"\n");
    let session = c.submit_json(&json!({ "name": "stuck", "jobs": [
        { "name": "j", "command": ["true"] },
    ]}));
    let providers = poll(Duration::from_secs(30), || {
        let list = c.aam(&["providers", "--json"]).expect_code(0).json();
        list[0]["last_error"].is_string().then_some(list)
    })
    .unwrap_or_else(|| panic!("the refused sbatch was not reported\n{}", c.logs()));
    let error = providers[0]["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("sbatch: error:") && error.contains("Invalid partition"),
        "Slurm's own words: {error}"
    );
    let s = c.status(&session);
    assert_eq!(s["jobs"][0]["status"], "queued", "the job waits: {s}");
    assert!(
        s["jobs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Invalid partition"),
        "{s}"
    );

    // A worker binary that is not there yet: the Slurm job fails before
    // it connects, and Slurm's state and reason are what the user reads.
    c.kill_manager();
    let later = c.path("bin/aam-worker");
    c.set_config(&format!(
        "[[providers]]\nname = \"hpc\"\nkind = \"slurm\"\nworker_bin = \"{}\"\n\
         output = \"{}/worker-%j.log\"\nmax_workers = 1\nidle_timeout = \"1m\"\n",
        later.display(),
        c.path("").display(),
    ));
    c.start_manager();
    let error = poll(Duration::from_secs(60), || {
        let list = c.aam(&["providers", "--json"]).expect_code(0).json();
        list[0]["last_error"]
            .as_str()
            .filter(|e| e.contains("before it connected"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "the failed worker was not reported\n{}\n{:?}",
            c.logs(),
            slurm.jobs()
        )
    });
    assert!(
        error.contains("FAILED") && error.contains("NonZeroExitCode"),
        "{error}"
    );
    // Once the binary is there, the next launch (10 s later) connects,
    // runs the job, and clears the error.
    std::fs::create_dir_all(later.parent().unwrap()).unwrap();
    std::fs::copy(bin("aam-worker"), &later).unwrap();
    c.aam(&["wait", &session, "--timeout", "90"]).expect_code(0);
    poll(Duration::from_secs(10), || {
        let list = c.aam(&["providers", "--json"]).expect_code(0).json();
        (list[0]["last_error"].is_null() && list[0]["connected"] == 1).then_some(())
    })
    .unwrap_or_else(|| {
        let list = c.aam(&["providers", "--json"]).expect_code(0).stdout;
        panic!("the error stayed after a worker connected: {list}")
    });

    // A restarted manager takes its Slurm worker back, running job and all.
    let long = c.submit_json(&json!({ "name": "long", "jobs": [
        { "name": "j", "command": ["sh", "-c", "sleep 6; echo done"] },
    ]}));
    let worker = poll(Duration::from_secs(60), || {
        let s = c.status(&long);
        (s["jobs"][0]["status"] == "running").then(|| s["jobs"][0]["worker"].clone())
    })
    .unwrap_or_else(|| panic!("the long job never started\n{}", c.logs()));
    c.kill_manager();
    c.start_manager();
    c.aam(&["wait", &long, "--timeout", "60"]).expect_code(0);
    let s = c.status(&long);
    assert_eq!(
        (&s["jobs"][0]["worker"], &s["jobs"][0]["attempts"]),
        (&worker, &json!(1)),
        "{s}"
    );
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(
        log.contains("taking back a worker launched before the restart"),
        "{log}"
    );
    assert_eq!(
        slurm.active_jobs().len(),
        1,
        "one worker: {:?}",
        slurm.jobs()
    );
}
