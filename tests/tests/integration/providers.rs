//! Issue 17, workers launched on demand by a podman provider (real
//! podman, an image of this build's `aam-worker`): jobs queued with no
//! worker make the provider launch workers (at most `max_workers`), each
//! with a join token of its own; every job succeeds on them; the workers
//! leave after their idle timeout and no container is left. An image that
//! does not exist is reported with the engine's words, and the job waits,
//! not lost.

use aam_tests::container::{containers_labelled, worker_image};
use aam_tests::{poll, Cluster};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// Removes, when dropped, every container of the manager's install.
struct Sweep(String);

impl Sweep {
    fn of(c: &Cluster) -> Sweep {
        let path = c.data_dir().join("install-id");
        let id = poll(Duration::from_secs(10), || {
            std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_string())
        })
        .expect("the manager writes its install id");
        Sweep(id)
    }

    fn containers(&self) -> Vec<String> {
        containers_labelled(&format!("aam.install={}", self.0))
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let left = self.containers();
        if !left.is_empty() {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-t", "0"])
                .args(&left)
                .output();
        }
    }
}

fn provider(image: &str, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"pods\"\nkind = \"podman\"\nimage = \"{image}\"\n\
         worker_bin = \"/usr/local/bin/aam-worker\"\nmax_workers = 2\nslots = 1\n{extra}"
    )
}

#[test]
fn queued_jobs_make_a_podman_provider_launch_workers_that_leave_when_idle() {
    let _net = aam_tests::network_changes();
    let image = worker_image();
    let mut c = Cluster::new();
    c.set_config(&provider(&image, "idle_timeout = \"2s\"\n"));
    c.start_manager();
    let sweep = Sweep::of(&c);
    let jobs: Vec<_> = (0..4)
        .map(|i| json!({ "name": format!("j{i}"), "command": ["sh", "-c", "sleep 1; echo ran in $(hostname)"] }))
        .collect();
    let session = c.submit_json(&json!({ "name": "on-demand", "jobs": jobs }));
    c.aam(&["wait", &session, "--timeout", "120"])
        .expect_code(0);
    let workers = c.workers_that_ran(&session);
    assert!(
        !workers.is_empty() && workers.len() <= 2,
        "at most max_workers: {workers:?}"
    );
    assert!(
        workers.iter().all(|w| w.starts_with("pods-")),
        "{workers:?}"
    );
    // Each joined with a token of its own, in the audit log by name.
    let audit = c.aam(&["audit", "--json"]).expect_code(0).stdout;
    assert!(audit.contains("join:pods-"), "{audit}");
    // Idle for 2 s, each asks to retire and exits; no container is left.
    poll(Duration::from_secs(60), || {
        let listed = c.aam(&["workers", "--json"]).expect_code(0).json();
        (listed.as_array().is_some_and(|l| l.is_empty()) && sweep.containers().is_empty())
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "workers or containers left: {:?}\n{}",
            sweep.containers(),
            c.logs()
        )
    });
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(log.contains("providers: launched a worker"), "{log}");
    let providers = c.aam(&["providers"]).expect_code(0).stdout;
    let line = providers.lines().nth(1).unwrap_or_default();
    assert!(
        line.starts_with("pods") && line.contains("podman"),
        "{providers}"
    );
}

#[test]
fn an_image_that_does_not_exist_is_reported_and_the_job_waits() {
    let _net = aam_tests::network_changes();
    aam_tests::container::require_podman();
    let mut c = Cluster::new();
    c.set_config(&provider("localhost/aam-no-such-image:0", ""));
    c.start_manager();
    let _sweep = Sweep::of(&c);
    let session = c.submit_json(&json!({ "name": "stuck", "jobs": [
        { "name": "j", "command": ["true"] },
    ]}));
    let reported = poll(Duration::from_secs(30), || {
        let log = c.manager.as_ref().unwrap().log_text();
        log.lines()
            .find(|l| l.contains("providers:") && l.contains("aam-no-such-image"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("the failed launch was not reported\n{}", c.logs()));
    assert!(reported.contains("podman run"), "{reported}");
    // `aam providers` and the job's reason say so too; the job waits.
    let providers = poll(Duration::from_secs(10), || {
        let list = c.aam(&["providers", "--json"]).expect_code(0).json();
        list[0]["last_error"].is_string().then_some(list)
    })
    .expect("aam providers shows the error");
    assert_eq!(
        (
            &providers[0]["name"],
            &providers[0]["kind"],
            &providers[0]["max_workers"]
        ),
        (&json!("pods"), &json!("podman"), &json!(2)),
        "{providers}"
    );
    let error = providers[0]["last_error"].as_str().unwrap();
    assert!(error.contains("aam-no-such-image"), "{error}");
    let s = c.status(&session);
    assert_eq!(s["jobs"][0]["status"], "queued", "{s}");
    let reason = s["jobs"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("provider pods: podman run"), "{reason}");
    c.aam(&["cancel", &session]).expect_code(0);
}

#[test]
fn a_join_token_registers_only_its_own_worker() {
    let _net = aam_tests::network_changes();
    use aam_protocol::messages::ManagerToWorker;
    use aam_tests::wire::{registration, Wire};
    let image = worker_image();
    let mut c = Cluster::new();
    c.set_config(&provider(&image, "idle_timeout = \"1m\"\n"));
    c.start_manager();
    let sweep = Sweep::of(&c);
    let session = c.submit_json(&json!({ "name": "one", "jobs": [
        { "name": "j", "command": ["true"] },
    ]}));
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let container = sweep
        .containers()
        .pop()
        .expect("the launched worker's container");
    let env = Command::new("podman")
        .args([
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
        ])
        .arg(&container)
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&env.stdout).to_string();
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("AAM_TOKEN="))
        .expect("the worker's token in its environment")
        .to_string();
    assert_ne!(token, c.token, "a token of its own, not the manager's");
    // Another name with that token is refused, naming the worker it is for.
    match Wire::register(&c.addr, &token, registration("intruder", 7)) {
        (_, ManagerToWorker::Refused { reason }) => {
            assert!(
                reason.contains("this join token is for worker pods-"),
                "{reason}"
            );
            assert!(reason.contains("not intruder"), "{reason}");
        }
        (_, other) => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_restarted_manager_takes_back_its_launched_worker_and_stops_one_it_cannot() {
    let _net = aam_tests::network_changes();
    let image = worker_image();
    let mut c = Cluster::new();
    c.set_config(&provider(&image, "idle_timeout = \"1m\"\n"));
    c.start_manager();
    let sweep = Sweep::of(&c);
    let session = c.submit_json(&json!({ "name": "long", "jobs": [
        { "name": "j", "command": ["sh", "-c", "sleep 8; echo done"] },
    ]}));
    let worker = poll(Duration::from_secs(60), || {
        let s = c.status(&session);
        (s["jobs"][0]["status"] == "running").then(|| s["jobs"][0]["worker"].clone())
    })
    .unwrap_or_else(|| panic!("the job never started\n{}", c.logs()));
    c.kill_manager();
    c.start_manager();
    // The worker comes back with its kept token; its job was not lost or
    // run again.
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let s = c.status(&session);
    let job = &s["jobs"][0];
    assert_eq!(
        (&job["worker"], &job["attempts"]),
        (&worker, &json!(1)),
        "{s}"
    );
    assert_eq!(sweep.containers().len(), 1, "one worker, taken back");
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(
        log.contains("taking back a worker launched before the restart"),
        "{log}"
    );
    // Restarted without its kept tokens, the manager cannot take the
    // worker back: it stops it rather than leave it holding the machine.
    c.kill_manager();
    std::fs::remove_file(c.data_dir().join("join-tokens")).unwrap();
    c.start_manager();
    // podman under the whole suite's load has taken over 30 s to list and
    // stop a container (CI, 2026-12-03).
    poll(Duration::from_secs(90), || {
        sweep.containers().is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("the unwanted worker was not stopped\n{}", c.logs()));
    // Either the manager saw it running and stopped it, or the worker,
    // refused its token, exited first and the manager removed what was
    // left: which comes first is a race, and either frees the machine.
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(
        log.contains("stopping a worker this manager cannot take back")
            || log.contains("rejected connection: invalid token"),
        "{log}"
    );
}

/// `podman system service` on a socket of the test's own, stopped when
/// dropped: a podman reached by `url`, as a remote one is.
struct PodmanService(std::process::Child);

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_provider_with_a_url_launches_through_that_podman_service() {
    let _net = aam_tests::network_changes();
    let image = worker_image();
    let mut c = Cluster::new();
    let socket = c.path("podman.sock");
    let url = format!("unix://{}", socket.display());
    let service = Command::new("podman")
        .args(["system", "service", "--time=0", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("podman system service");
    let _service = PodmanService(service);
    poll(Duration::from_secs(20), || socket.exists().then_some(()))
        .expect("the podman service makes its socket");
    c.set_config(&provider(
        &image,
        &format!("idle_timeout = \"2s\"\nurl = \"{url}\"\n"),
    ));
    c.start_manager();
    let sweep = Sweep::of(&c);
    let session = c.submit_json(&json!({ "name": "remote", "jobs": [
        { "name": "j", "command": ["true"] },
    ]}));
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let s = c.status(&session);
    assert!(
        s["jobs"][0]["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("pods-")),
        "{s}"
    );
    // The service ran it: its own listing shows the container while the
    // worker waits out its idle timeout (or it has left already).
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(log.contains("providers: launched a worker"), "{log}");
    poll(Duration::from_secs(60), || {
        sweep.containers().is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("containers left: {:?}", sweep.containers()));
    // The url is what it used: one where no service listens fails, saying
    // so, though this host's podman would have run it.
    c.kill_manager();
    let missing = c.path("no-service.sock");
    c.set_config(&provider(
        &image,
        &format!("url = \"unix://{}\"\n", missing.display()),
    ));
    c.start_manager();
    let again = c.submit_json(&json!({ "name": "nowhere", "jobs": [
        { "name": "j", "command": ["true"] },
    ]}));
    let error = poll(Duration::from_secs(30), || {
        let list = c.aam(&["providers", "--json"]).expect_code(0).json();
        list[0]["last_error"].as_str().map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no error reported\n{}", c.logs()));
    assert!(error.contains("no-service.sock"), "{error}");
    c.aam(&["cancel", &again]).expect_code(0);
}
