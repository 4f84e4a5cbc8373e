//! Issue 17, workers that leave when idle (`aam-worker --once-idle`): a
//! worker stays while its job runs past its idle timeout, then asks the
//! manager, is retired and exits 0; the manager sends it nothing more,
//! so a job submitted after it left waits for another worker, which runs
//! it. A worker whose manager is gone leaves on its own after a minute.

use aam_tests::{poll, Cluster};
use serde_json::json;
use std::time::Duration;

#[test]
fn an_idle_worker_is_retired_by_the_manager_and_exits() {
    let mut c = Cluster::with_manager();
    let w = c.start_worker_with("pilot", 1, &["--once-idle", "--idle-timeout", "500ms"]);
    // Its job runs past the idle timeout: running is not idle.
    let first = c.submit_json(&json!({"name": "busy", "jobs": [
        { "name": "slow", "command": ["sleep", "1.5"] },
    ]}));
    c.aam(&["wait", &first]).expect_code(0);
    let exited = poll(Duration::from_secs(20), || {
        c.workers[w].child.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| panic!("the idle worker never left\n{}", c.logs()));
    assert_eq!(exited.code(), Some(0), "{}", c.logs());
    let log = c.workers[w].log_text();
    assert!(log.contains("retired by the manager"), "{log}");
    let workers = c.aam(&["workers", "--json"]).expect_code(0).json();
    assert!(
        workers.as_array().is_some_and(|list| list.is_empty()),
        "{workers}"
    );
    // A job submitted now waits (nothing was sent to the leaving worker),
    // and runs on the next one.
    let second = c.submit_json(&json!({"name": "later", "jobs": [
        { "name": "echo", "command": ["true"] },
    ]}));
    let s = c.status(&second);
    assert_eq!(s["jobs"][0]["status"], "queued", "{s}");
    c.start_worker("steady", 1);
    c.aam(&["wait", &second]).expect_code(0);
}

#[test]
fn an_idle_worker_without_a_manager_leaves_after_a_minute() {
    let mut c = Cluster::with_manager();
    let w = c.start_worker_with("stray", 1, &["--once-idle", "--idle-timeout", "500ms"]);
    poll(Duration::from_secs(20), || {
        let listed = c.aam(&["workers", "--json"]).expect_code(0).json();
        listed
            .as_array()
            .is_some_and(|l| l.len() == 1)
            .then_some(())
    })
    .expect("the worker registers");
    // Its manager is gone for good: nothing can retire it, and a worker
    // launched on demand must not hold a machine forever.
    c.kill_manager();
    let exited = poll(Duration::from_secs(120), || {
        c.workers[w].child.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| panic!("the worker stayed without a manager\n{}", c.logs()));
    assert_eq!(exited.code(), Some(0), "{}", c.logs());
    let log = c.workers[w].log_text();
    assert!(
        log.contains("idle with no manager to ask: exiting"),
        "{log}"
    );
}
