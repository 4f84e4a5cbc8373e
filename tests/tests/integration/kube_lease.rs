//! Issue 17, one manager per store on Kubernetes: managers started with
//! `--kube-lease` against a stand-in API server (`aam_tests::fake_kube`).
//! The first takes the Lease and serves; a second waits without opening
//! its store, saying who holds it; when the first is killed, the second
//! takes the Lease over once it has gone unrenewed for its duration, and
//! serves; when the Lease is taken from it, it stops (exit 1).

use aam_tests::fake_kube::FakeKube;
use aam_tests::{poll, Cluster};
use serde_json::json;
use std::time::Duration;

fn leased(kube: &FakeKube) -> Cluster {
    let mut c = Cluster::new();
    let kubeconfig = c.write("kubeconfig", &kube.kubeconfig("aam"));
    c.manager_env.extend([
        ("KUBECONFIG".to_string(), kubeconfig.display().to_string()),
        ("AAM_KUBE_LEASE".to_string(), "aam-manager".to_string()),
        ("AAM_KUBE_LEASE_DURATION".to_string(), "2s".to_string()),
    ]);
    c
}

fn holder(kube: &FakeKube) -> Option<String> {
    kube.objects("leases")
        .first()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

#[test]
fn only_the_lease_holder_serves_and_a_second_manager_takes_over_when_the_first_is_gone() {
    let pods = tempfile::tempdir().unwrap();
    let kube = FakeKube::start(pods.path());
    let mut first = leased(&kube);
    first.start_manager();
    let first_holder = holder(&kube).expect("the first manager made the Lease");
    let session = first.submit_json(&json!({ "name": "s", "jobs": [
        { "name": "j", "command": ["true"] },
    ]}));
    // A second manager waits: no address file, its store not opened.
    let mut second = leased(&kube);
    let log = second.path("manager.log");
    let waiting = std::thread::spawn(move || {
        second.start_manager();
        second
    });
    poll(Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("waiting for the Lease: another manager holds it"))
    })
    .unwrap_or_else(|| panic!("the second manager did not wait\n{}", first.logs()));
    assert_eq!(
        holder(&kube),
        Some(first_holder.clone()),
        "still the first's"
    );
    let s = first.status(&session);
    assert_eq!(s["name"], "s", "the first serves: {s}");
    // The first is gone: after 2 s unrenewed the second takes over.
    first.kill_manager();
    let second = waiting.join().expect("the second manager came up");
    let new_holder = holder(&kube).expect("a holder");
    assert_ne!(new_holder, first_holder);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("taking over the Lease"), "{text}");
    second.aam(&["workers"]).expect_code(0);
    // Someone else takes the Lease: the second stops serving.
    let mut lease = kube.objects("leases").remove(0);
    lease["spec"]["holderIdentity"] = json!("another-manager");
    kube.put("leases", "aam", lease);
    let mut second = second;
    let exited = poll(Duration::from_secs(20), || {
        second
            .manager
            .as_mut()
            .and_then(|m| m.child.try_wait().ok().flatten())
    })
    .unwrap_or_else(|| {
        panic!(
            "the manager kept serving without the Lease\n{}",
            second.logs()
        )
    });
    assert_eq!(exited.code(), Some(1), "{}", second.logs());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the Lease aam-manager is held by another-manager now"),
        "{text}"
    );
}
