//! The worker's Job and Secret as built, the pod template's merge and
//! checks, and what a Job and its pods read back as.

use super::*;
use crate::providers::config::{providers, Kind, ProviderEntry};

fn provider(template: Option<&str>) -> (Provider, KubeOptions) {
    let entry = ProviderEntry {
        name: "pods".into(),
        kind: "kubernetes".into(),
        max_workers: Some(3),
        slots: Some(2),
        image: Some("registry.example/aam:1".into()),
        namespace: Some("agents".into()),
        active_deadline: Some("2h".into()),
        pod_template: template.map(String::from),
        labels: [("pool".to_string(), "k8s".to_string())].into(),
        manager_address: Some("aam-manager:7410".into()),
        ..Default::default()
    };
    let p = providers(&[entry]).unwrap().remove(0);
    let Kind::Kubernetes(opts) = p.kind.clone() else {
        panic!("{:?}", p.kind)
    };
    (p, opts)
}

const SPEC: WorkerSpec<'static> = WorkerSpec {
    worker: "pods-0a1b2c3d",
    manager: "aam-manager:7410",
    fingerprint: "AA:BB",
    token: "secret-token",
};

#[test]
fn a_workers_job_runs_once_leaves_when_idle_and_reads_its_token_from_its_secret() {
    let template = "nodeSelector: {pool: agents}\n\
                    tolerations: [{key: dedicated, operator: Equal, value: agents, effect: NoSchedule}]\n\
                    restartPolicy: Always\n\
                    containers:\n  - name: worker\n    resources: {limits: {cpu: '2', memory: 4Gi}}\n";
    let (p, opts) = provider(Some(template));
    let job = job(&p, &opts, "ab12cd34", "agents", &SPEC);
    let v = serde_json::to_value(&job).unwrap();
    assert_eq!(
        (&v["apiVersion"], &v["kind"]),
        (&json!("batch/v1"), &json!("Job"))
    );
    assert_eq!(v["metadata"]["name"], "aam-ab12cd34-pods-0a1b2c3d");
    assert_eq!(v["metadata"]["namespace"], "agents");
    assert_eq!(
        v["metadata"]["labels"]["app.kubernetes.io/name"],
        "aam-worker"
    );
    assert_eq!(v["metadata"]["labels"]["aam.install"], "ab12cd34");
    assert_eq!(v["spec"]["backoffLimit"], 0);
    assert_eq!(v["spec"]["ttlSecondsAfterFinished"], 300);
    assert_eq!(v["spec"]["activeDeadlineSeconds"], 7200);
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(
        pod["restartPolicy"], "Never",
        "the template cannot make it restart in place"
    );
    assert_eq!(pod["nodeSelector"]["pool"], "agents");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1, "{pod}");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/aam:1");
    assert_eq!(c["resources"]["limits"]["memory"], "4Gi");
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command[..3],
        ["aam-worker", "--manager", "aam-manager:7410"]
    );
    assert!(command
        .join(" ")
        .contains("--name pods-0a1b2c3d --slots 2 --label pool=k8s --once-idle"));
    assert_eq!(c["env"][0]["name"], "AAM_TOKEN");
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"],
        json!({"name": "aam-ab12cd34-pods-0a1b2c3d", "key": "token"})
    );
    assert_eq!(
        c["env"][1],
        json!({"name": "AAM_FINGERPRINT", "value": "AA:BB"})
    );
    assert!(
        !v.to_string().contains("secret-token"),
        "the token is not in the Job"
    );

    let s = serde_json::to_value(secret(
        &p,
        "ab12cd34",
        "agents",
        SPEC.worker,
        SPEC.token,
        "uid-1",
    ))
    .unwrap();
    assert_eq!(
        (&s["apiVersion"], &s["kind"]),
        (&json!("v1"), &json!("Secret"))
    );
    assert_eq!(s["metadata"]["name"], "aam-ab12cd34-pods-0a1b2c3d");
    assert_eq!(s["stringData"]["token"], "secret-token");
    let owner = &s["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["uid"], &owner["name"]),
        (
            &json!("Job"),
            &json!("uid-1"),
            &json!("aam-ab12cd34-pods-0a1b2c3d")
        )
    );
}

#[test]
fn a_pod_template_with_a_field_no_pod_spec_has_is_refused_naming_it() {
    assert!(check_pod_template("nodeSelector: {a: b}").is_ok());
    let typo = check_pod_template("nodeSelectr: {a: b}").unwrap_err();
    assert!(typo.contains("'nodeSelectr'"), "{typo}");
    let deep = check_pod_template("containers:\n  - name: worker\n    resourcs: {}\n").unwrap_err();
    assert!(deep.contains("containers[0].resourcs"), "{deep}");
    let list = check_pod_template("- a\n- b\n").unwrap_err();
    assert!(list.contains("a mapping"), "{list}");
    let wrong = check_pod_template("nodeSelector: [1, 2]").unwrap_err();
    assert!(wrong.contains("not a pod spec"), "{wrong}");
}

#[test]
fn names_become_dns_labels() {
    assert_eq!(
        object_name("ab12", "GPU_pool.x-0a1b2c3d"),
        "aam-ab12-gpu-pool-x-0a1b2c3d"
    );
    assert!(is_dns_label("aam-ab12-p-1") && !is_dns_label("Team_A") && !is_dns_label("-a"));
    assert!(is_label_value("pods.gpu_1") && !is_label_value("pods_") && !is_label_value("_p"));
}

fn job_with(status: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j"},
        "status": status,
    }))
    .unwrap()
}

fn pod_with(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status,
    }))
    .unwrap()
}

#[test]
fn a_job_and_its_pods_read_back_as_the_engine_says() {
    assert_eq!(
        phase(&job_with(json!({})), &[]),
        Phase::Pending("no pod yet".into())
    );
    let pulling = pod_with(json!({"phase": "Pending", "containerStatuses": [{
        "name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}));
    assert_eq!(
        phase(&job_with(json!({"active": 1})), &[&pulling]),
        Phase::Pending("ImagePullBackOff: Back-off pulling image \"x\"".into())
    );
    let unschedulable = pod_with(json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available"}]}));
    assert_eq!(
        phase(&job_with(json!({"active": 1})), &[&unschedulable]),
        Phase::Pending("Unschedulable: 0/3 nodes are available".into())
    );
    assert_eq!(
        phase(&job_with(json!({"active": 1, "ready": 1})), &[]),
        Phase::Running
    );
    assert_eq!(
        phase(&job_with(json!({"succeeded": 1})), &[]),
        Phase::Ended("Complete".into())
    );
    let crashed = pod_with(json!({"phase": "Failed", "containerStatuses": [{
        "name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 127, "reason": "Error"}}}]}));
    let failed = job_with(json!({"failed": 1, "conditions": [{
        "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit"}]}));
    assert_eq!(
        phase(&failed, &[&crashed]),
        Phase::Ended(
            "Failed: BackoffLimitExceeded: Job has reached the specified backoff limit (pod Failed: Error, exit 127)"
                .into()
        )
    );
}
