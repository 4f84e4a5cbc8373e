//! Issue 17, workers launched on demand by a Kubernetes provider, against
//! a stand-in API server (`aam_tests::fake_kube`: no real one runs here)
//! whose kubelet runs a pod's command as a local process: queued jobs make
//! the manager create a Job and a Secret per worker (at most
//! `max_workers`), whose workers join with their tokens, run the jobs and
//! leave when idle; a pod stuck in `ImagePullBackOff` is reported with
//! that reason and its Job deleted after `connect_timeout`, and the job
//! waits.

use aam_tests::fake_kube::FakeKube;
use aam_tests::{bin, free_port, poll, Cluster};
use serde_json::json;
use std::time::Duration;

const IMAGE: &str = "registry.example/aam:test";

/// A cluster whose manager has a Kubernetes provider on `kube`
/// (`extra`: more of its keys).
fn cluster_on(kube: &FakeKube, extra: &str) -> Cluster {
    cluster_with(kube, "pods", extra, "")
}

/// The same, the provider named `name`, and `more` config after it.
fn cluster_with(kube: &FakeKube, name: &str, extra: &str, more: &str) -> Cluster {
    let mut c = Cluster::new();
    let kubeconfig = c.write("kubeconfig", &kube.kubeconfig("agents"));
    // Its pods dial the manager's own address: known before it starts.
    c.addr = format!("127.0.0.1:{}", free_port());
    let provider = |name: &str, extra: &str| {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"kubernetes\"\nimage = \"{IMAGE}\"\n\
             worker_bin = \"{}\"\nmanager_address = \"{}\"\nkubeconfig = \"{}\"\n\
             pod_template = \"nodeSelector: {{pool: agents}}\"\n{extra}",
            bin("aam-worker").display(),
            c.addr,
            kubeconfig.display(),
        )
    };
    let mut config = provider(name, extra);
    if !more.is_empty() {
        let (name, extra) = more.split_once('\n').unwrap_or((more, ""));
        config.push_str(&provider(name, extra));
    }
    c.set_config(&config);
    c.start_manager();
    c
}

#[test]
fn queued_jobs_make_a_kubernetes_provider_create_jobs_whose_workers_run_them_and_leave() {
    let pods = tempfile::tempdir().unwrap();
    let kube = FakeKube::start(pods.path());
    kube.add_image(IMAGE);
    let c = cluster_on(&kube, "max_workers = 2\nslots = 1\nidle_timeout = \"2s\"\n");
    let jobs: Vec<_> = (0..3)
        .map(|i| json!({ "name": format!("j{i}"), "command": ["sh", "-c", "sleep 1; echo ran"] }))
        .collect();
    let session = c.submit_json(&json!({ "name": "on-k8s", "jobs": jobs }));
    c.aam(&["wait", &session, "--timeout", "90"]).expect_code(0);
    let workers = c.workers_that_ran(&session);
    assert!(
        !workers.is_empty() && workers.len() <= 2 && workers.iter().all(|w| w.starts_with("pods-")),
        "{workers:?}"
    );
    // What the API server got: Jobs as built, each with a Secret it owns.
    let created = kube.objects("jobs");
    assert!((1..=2).contains(&created.len()), "{created:?}");
    let secrets = kube.objects("secrets");
    for job in &created {
        assert_eq!(job["metadata"]["namespace"], "agents");
        assert_eq!(
            job["metadata"]["labels"]["app.kubernetes.io/name"],
            "aam-worker"
        );
        assert_eq!(job["spec"]["backoffLimit"], 0);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(
            (&pod["restartPolicy"], &pod["nodeSelector"]["pool"]),
            (&json!("Never"), &json!("agents"))
        );
        let uid = &job["metadata"]["uid"];
        let owned = secrets
            .iter()
            .find(|s| s["metadata"]["name"] == job["metadata"]["name"])
            .unwrap_or_else(|| panic!("no Secret for {job}"));
        assert_eq!(
            &owned["metadata"]["ownerReferences"][0]["uid"], uid,
            "{owned}"
        );
        assert!(!job
            .to_string()
            .contains(owned["data"]["token"].as_str().unwrap()));
    }
    let audit = c.aam(&["audit", "--json"]).expect_code(0).stdout;
    assert!(audit.contains("join:pods-"), "{audit}");
    // Idle for 2 s, the workers retire: their pods end, their Jobs complete.
    poll(Duration::from_secs(60), || {
        let listed = c.aam(&["workers", "--json"]).expect_code(0).json();
        let done = kube
            .objects("jobs")
            .iter()
            .all(|j| j["status"]["succeeded"] == 1);
        (listed.as_array().is_some_and(|l| l.is_empty()) && done).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "workers or Jobs left: {:?}\n{}",
            kube.objects("jobs"),
            c.logs()
        )
    });
    let requests = kube.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/agents/pods?")
                && r.contains("labelSelector=")),
        "{requests:?}"
    );
    let providers = c.aam(&["providers", "--json"]).expect_code(0).json();
    assert_eq!(providers[0]["kind"], "kubernetes", "{providers}");
    assert!(providers[0]["last_error"].is_null(), "{providers}");
}

#[test]
fn a_pod_in_image_pull_back_off_is_reported_and_its_job_deleted_after_connect_timeout() {
    let pods = tempfile::tempdir().unwrap();
    let kube = FakeKube::start(pods.path());
    let c = cluster_on(&kube, "max_workers = 1\nconnect_timeout = \"3s\"\n");
    let session = c.submit_json(&json!({ "name": "stuck", "jobs": [
        { "name": "j", "command": ["true"] },
    ]}));
    // While it waits, the job's reason says a worker is on its way.
    let reason = poll(Duration::from_secs(20), || {
        let s = c.status(&session);
        s["jobs"][0]["reason"]
            .as_str()
            .filter(|r| r.contains("launching"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no launching reason\n{}", c.logs()));
    assert!(
        reason.contains("waiting for capacity from pods (1 launching)"),
        "{reason}"
    );
    let error = poll(Duration::from_secs(30), || {
        let list = c.aam(&["providers", "--json"]).expect_code(0).json();
        list[0]["last_error"]
            .as_str()
            .filter(|e| e.contains("did not connect"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("the stuck pod was not reported\n{}", c.logs()));
    assert!(
        error.contains("did not connect within 3s") && error.contains("ImagePullBackOff"),
        "{error}"
    );
    let deleted = kube
        .requests()
        .into_iter()
        .any(|r| r.starts_with("DELETE /apis/batch/v1/namespaces/agents/jobs/aam-"));
    assert!(deleted, "{:?}", kube.requests());
    let s = c.status(&session);
    assert_eq!(s["jobs"][0]["status"], "queued", "{s}");
    c.aam(&["cancel", &session]).expect_code(0);
}

#[test]
fn jobs_needing_a_label_launch_workers_only_on_the_provider_that_offers_it() {
    let pods = tempfile::tempdir().unwrap();
    let kube = FakeKube::start(pods.path());
    kube.add_image(IMAGE);
    let c = cluster_with(
        &kube,
        "pods",
        "max_workers = 2\nidle_timeout = \"1m\"\n",
        "gpus\nmax_workers = 2\nidle_timeout = \"1m\"\nlabels = { gpu = \"yes\" }\n",
    );
    let session = c.submit_json(&json!({ "name": "mixed", "jobs": [
        { "name": "plain", "command": ["true"] },
        { "name": "gpu", "command": ["true"], "requires": { "gpu": "yes" } },
    ]}));
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    let s = c.status(&session);
    let worker = |i: usize| s["jobs"][i]["worker"].as_str().unwrap().to_string();
    assert!(
        worker(0).starts_with("pods-"),
        "the first fitting provider: {s}"
    );
    assert!(
        worker(1).starts_with("gpus-"),
        "only gpus offers gpu=yes: {s}"
    );
    let by_provider = |p: &str| {
        kube.objects("jobs")
            .iter()
            .filter(|j| j["metadata"]["labels"]["aam.provider"] == p)
            .count()
    };
    assert_eq!((by_provider("pods"), by_provider("gpus")), (1, 1));
}
