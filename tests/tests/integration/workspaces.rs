//! Issue 15, workspaces that start ready, end to end through the real
//! manager, worker and `aam` binaries: TCP ports reserved per job
//! (`ports = N`, `AAM_PORT` / `AAM_PORTS`, from the worker's `--ports`).

use aam_tests::{poll, Cluster};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The worker's port range in these tests (`--ports`): its own, so the
/// test checks the flag is obeyed.
const RANGE: (u16, u16) = (47100, 47199);

/// A job that binds every port in `AAM_PORTS` on loopback, says which in
/// the file `$OUT` (written whole, then renamed), and holds them until
/// its gate opens.
const HOLD_PORTS: &str = r#"
import os, socket, time
ports = [int(p) for p in os.environ["AAM_PORTS"].split(",")]
assert int(os.environ["AAM_PORT"]) == ports[0], "AAM_PORT is not the first"
held = []
for port in ports:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    held.append(s)
out = os.environ["OUT"]
with open(out + ".tmp", "w") as f:
    f.write(os.environ["AAM_PORTS"])
os.replace(out + ".tmp", out)
while not os.path.exists(os.environ["GATE"]):
    time.sleep(0.01)
"#;

#[test]
fn three_jobs_at_once_get_distinct_ports_they_each_bind() {
    let mut c = Cluster::with_manager();
    let range = format!("{}-{}", RANGE.0, RANGE.1);
    c.start_worker_with("w", 3, &["--ports", &range]);
    let gate = c.gate("gate");
    let jobs: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "command": ["python3", "-c", HOLD_PORTS],
                "ports": 2,
                "env": {
                    "GATE": gate.env(),
                    "OUT": c.path(&format!("ports-{name}")).to_str().unwrap(),
                },
            })
        })
        .collect();
    let session = c.submit_json(&json!({ "name": "ports", "jobs": jobs }));
    // All three hold their sockets at the same time: each wrote its file
    // after binding and keeps them until the gate opens.
    let held = poll(Duration::from_secs(20), || {
        let read = |name: &str| std::fs::read_to_string(c.path(&format!("ports-{name}"))).ok();
        Some([read("a")?, read("b")?, read("c")?])
    })
    .unwrap_or_else(|| panic!("the jobs never all bound their ports\n{}", c.logs()));
    let ports: Vec<u16> = held
        .iter()
        .flat_map(|list| list.split(',').map(|p| p.parse::<u16>().expect("a port")))
        .collect();
    assert_eq!(ports.len(), 6, "{held:?}");
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 6, "{held:?}");
    assert!(
        ports.iter().all(|p| (RANGE.0..=RANGE.1).contains(p)),
        "{held:?}"
    );
    gate.open();
    let done = c.poll_status(&session, "the jobs' ends", |s| s["status"] == "succeeded");
    assert_eq!(done["status"], "succeeded");
}

#[test]
fn more_than_16_ports_are_refused_at_submit_naming_job_and_field() {
    let c = Cluster::with_manager();
    let file = c.write(
        "ports.toml",
        "name = \"p\"\n[[jobs]]\nname = \"web\"\ncommand = [\"true\"]\nports = 17\n",
    );
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
    assert!(
        out.stderr.contains("job 'web': field 'ports'") && out.stderr.contains("0 to 16"),
        "{}",
        out.dump()
    );
}
