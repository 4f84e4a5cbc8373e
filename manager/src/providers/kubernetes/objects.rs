//! The Kubernetes objects of one launched worker, built without I/O (so
//! `aam-manager render kubernetes` prints exactly what a launch creates):
//! a `batch/v1` Job of one pod that runs the worker (`restartPolicy:
//! Never`, `backoffLimit: 0`, `ttlSecondsAfterFinished`, optionally
//! `activeDeadlineSeconds`, the provider's `pod_template` merged into its
//! pod spec) and the Secret holding its join token, owned by the Job so
//! the cluster removes it with it. What a Job and its pods say, read back
//! as a `Phase`.

use super::super::config::{KubeOptions, Provider};
use super::super::engine::{Phase, WorkerSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, Pod, PodSpec, PodTemplateSpec, Secret, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The worker's container in the pod (a `pod_template` names it to set
/// its resources).
pub const CONTAINER: &str = "worker";
/// The Secret's key holding the join token.
pub const TOKEN_KEY: &str = "token";

/// The name of a worker's Job and Secret: `aam-INSTALL-WORKER` as a DNS
/// label (lowercase, `_` and `.` as `-`, at most 63 characters).
pub fn object_name(install: &str, worker: &str) -> String {
    let name: String = super::super::engine::engine_name(install, worker)
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .take(63)
        .collect();
    name.trim_end_matches('-').to_string()
}

/// Whether `s` is a DNS label (a namespace's or an object's name).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` may be a label's value (a provider's name is one).
pub fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

/// The labels of everything a worker is made of.
pub fn labels(install: &str, provider: &str, worker: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "aam-worker".into()),
        ("app.kubernetes.io/managed-by".into(), "aam".into()),
        ("aam.install".into(), install.into()),
        ("aam.provider".into(), provider.into()),
        ("aam.worker".into(), worker.into()),
    ])
}

/// The label selector of this install's provider's objects.
pub fn selector(install: &str, provider: &str) -> String {
    format!("aam.install={install},aam.provider={provider}")
}

/// One worker's Job: its pod runs the worker with the token from its
/// Secret and the manager's fingerprint in its environment.
pub fn job(
    def: &Provider,
    opts: &KubeOptions,
    install: &str,
    namespace: &str,
    spec: &WorkerSpec<'_>,
) -> Job {
    let name = object_name(install, spec.worker);
    let labels = labels(install, &def.name, spec.worker);
    let mut command = vec![def.worker_bin.clone()];
    command.extend(super::super::worker_args(def, spec));
    let container = Container {
        name: CONTAINER.into(),
        image: Some(opts.image.clone()),
        command: Some(command),
        env: Some(vec![
            EnvVar {
                name: "AAM_TOKEN".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: name.clone(),
                        key: TOKEN_KEY.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvVar {
                name: "AAM_FINGERPRINT".into(),
                value: Some(spec.fingerprint.into()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        // A worker needs nothing from the API server.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let pod = match &opts.pod_template {
        Some(fragment) => with_template(&pod, fragment),
        None => pod,
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(opts.ttl_after_finished_s),
            active_deadline_seconds: opts.active_deadline_s,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Secret of a worker's join token, owned by its Job (`job_uid`).
pub fn secret(
    def: &Provider,
    install: &str,
    namespace: &str,
    worker: &str,
    token: &str,
    job_uid: &str,
) -> Secret {
    let name = object_name(install, worker);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            labels: Some(labels(install, &def.name, worker)),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: job_uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.into(), token.into())])),
        ..Default::default()
    }
}

/// `pod` with `fragment` merged in: maps key by key, lists of named
/// objects (containers, env, volumes) by name, other values replaced;
/// the pod's restart policy stays `Never` (a Job's worker is not
/// restarted in place).
fn with_template(pod: &PodSpec, fragment: &Value) -> PodSpec {
    let mut value = serde_json::to_value(pod).unwrap_or(Value::Null);
    merge(&mut value, fragment);
    let mut merged: PodSpec = serde_json::from_value(value).unwrap_or_else(|_| pod.clone());
    merged.restart_policy = Some("Never".into());
    merged
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if is_named(a) && is_named(b) => {
            for item in b {
                let name = &item["name"];
                match a.iter_mut().find(|x| &x["name"] == name) {
                    Some(existing) => merge(existing, item),
                    None => a.push(item.clone()),
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

fn is_named(list: &[Value]) -> bool {
    list.iter().all(|v| v["name"].is_string())
}

/// Checks a `pod_template`: YAML of a mapping whose every key is part of
/// a pod spec (a typo is named, not silently dropped). The fragment as
/// JSON.
pub fn check_pod_template(text: &str) -> Result<Value, String> {
    let fragment: Value = serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    if !fragment.is_object() {
        return Err(
            "a mapping of pod spec fields (nodeSelector, tolerations, containers, ...)".into(),
        );
    }
    let mut merged = json!({ "containers": [{ "name": CONTAINER }] });
    merge(&mut merged, &fragment);
    let spec: PodSpec =
        serde_json::from_value(merged.clone()).map_err(|e| format!("not a pod spec: {e}"))?;
    let back = serde_json::to_value(&spec).unwrap_or(Value::Null);
    if let Some(path) = lost(&merged, &back, "") {
        return Err(format!("'{path}' is not a field of a pod spec"));
    }
    Ok(fragment)
}

/// The first path in `a` that `b` does not have.
fn lost(a: &Value, b: &Value, at: &str) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            None if !v.is_null() => Some(join(k)),
            None => None,
            Some(w) => lost(v, w, &join(k)),
        }),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| lost(v, w, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Where a worker's Job is, from it and its pods (newest last).
pub fn phase(job: &Job, pods: &[&Pod]) -> Phase {
    let status = job.status.clone().unwrap_or_default();
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        let said = match (&c.reason, &c.message) {
            (Some(r), Some(m)) => format!("{}: {r}: {m}", c.type_),
            (Some(r), None) => format!("{}: {r}", c.type_),
            _ => c.type_.clone(),
        };
        match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return Phase::Ended("Complete".into()),
            "Failed" | "FailureTarget" => {
                // The pod says why better than the Job (an exit code).
                let pod = pods.last().and_then(|p| pod_ended(p));
                return Phase::Ended(pod.map_or(said.clone(), |p| format!("{said} ({p})")));
            }
            _ => {}
        }
    }
    if status.succeeded.unwrap_or(0) > 0 {
        return Phase::Ended("Complete".into());
    }
    if status.failed.unwrap_or(0) > 0 {
        let pod = pods.last().and_then(|p| pod_ended(p));
        return Phase::Ended(pod.unwrap_or_else(|| "Failed".into()));
    }
    if status.ready.unwrap_or(0) > 0 {
        return Phase::Running;
    }
    match pods.last() {
        None => Phase::Pending("no pod yet".into()),
        Some(pod) => pod_phase(pod),
    }
}

/// A pod of a Job not yet done: its container waiting (`ImagePullBackOff:
/// ...`), its scheduling (`Unschedulable: 0/3 nodes ...`), or running.
fn pod_phase(pod: &Pod) -> Phase {
    let status = pod.status.clone().unwrap_or_default();
    if let Some(ended) = pod_ended(pod) {
        return Phase::Ended(ended);
    }
    for c in status.container_statuses.iter().flatten() {
        let state = c.state.clone().unwrap_or_default();
        if let Some(w) = state.waiting {
            let reason = w.reason.unwrap_or_else(|| "Waiting".into());
            return Phase::Pending(match w.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason,
            });
        }
        if state.running.is_some() {
            return Phase::Running;
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            let reason = c.reason.clone().unwrap_or_else(|| "NotScheduled".into());
            return Phase::Pending(match &c.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason,
            });
        }
    }
    Phase::Pending(status.phase.unwrap_or_else(|| "Pending".into()))
}

/// How a pod ended, if it did: `Failed: Error, exit 127`.
fn pod_ended(pod: &Pod) -> Option<String> {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();
    if phase != "Failed" && phase != "Succeeded" {
        return None;
    }
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.clone()?.terminated);
    Some(match terminated {
        Some(t) => format!(
            "pod {phase}: {}, exit {}",
            t.reason.unwrap_or_else(|| "Terminated".into()),
            t.exit_code
        ),
        None => format!(
            "pod {phase}{}",
            status.reason.map(|r| format!(": {r}")).unwrap_or_default()
        ),
    })
}

/// The objects as YAML documents, for `render`.
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
