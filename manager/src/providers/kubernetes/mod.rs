//! The Kubernetes kind: each worker a `batch/v1` Job of one pod (and the
//! Secret of its join token, owned by the Job), found by the labels
//! `aam.install` and `aam.provider`; the listing reads the Jobs and their
//! pods from the API server every time (a pod's `ImagePullBackOff` or
//! `Unschedulable` is the pending reason a report quotes); stop deletes
//! the Job (its pod and Secret go with it). The manager reaches the API
//! in-cluster (its service account) or through a kubeconfig.

pub mod objects;

use super::config::{KubeOptions, Provider};
use super::engine::{Engine, EngineFuture, Listed, WorkerSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::collections::HashMap;
use tokio::sync::OnceCell;

pub struct Kubernetes {
    pub def: Provider,
    pub install: String,
    pub opts: KubeOptions,
    /// Made at first use (reading a kubeconfig or the in-cluster files).
    api: OnceCell<(Client, String)>,
}

/// An API error in the API server's own words.
fn said(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("kubernetes: {what}: {} ({})", status.message, status.reason)
        }
        other => format!("kubernetes: {what}: {other}"),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Kubernetes {
    pub fn new(def: Provider, install: String, opts: KubeOptions) -> Kubernetes {
        Kubernetes {
            def,
            install,
            opts,
            api: OnceCell::new(),
        }
    }

    /// The client and the namespace its objects go to.
    async fn api(&self) -> Result<&(Client, String), String> {
        self.api
            .get_or_try_init(|| async {
                let config = match &self.opts.kubeconfig {
                    Some(path) => {
                        let file = Kubeconfig::read_from(path)
                            .map_err(|e| format!("kubernetes: kubeconfig {path}: {e}"))?;
                        Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                            .await
                            .map_err(|e| format!("kubernetes: kubeconfig {path}: {e}"))?
                    }
                    None => Config::infer()
                        .await
                        .map_err(|e| format!("kubernetes: no cluster to talk to: {e}"))?,
                };
                let namespace = self
                    .opts
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                let client =
                    Client::try_from(config).map_err(|e| format!("kubernetes: client: {e}"))?;
                Ok((client, namespace))
            })
            .await
    }

    async fn apis(&self) -> Result<(Api<Job>, Api<Pod>, Api<Secret>), String> {
        let (client, ns) = self.api().await?;
        Ok((
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ))
    }

    /// Jobs and their pods by `selector`, read into listings.
    async fn listed(&self, selector: &str) -> Result<Vec<Listed>, String> {
        let (jobs, pods, _) = self.apis().await?;
        let params = ListParams::default().labels(selector);
        let jobs = jobs.list(&params).await.map_err(|e| said("list Jobs", e))?;
        let pods = pods.list(&params).await.map_err(|e| said("list Pods", e))?;
        let mut by_worker: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for pod in &pods.items {
            if let Some(w) = worker_label(&pod.metadata) {
                by_worker.entry(w).or_default().push(pod);
            }
        }
        for list in by_worker.values_mut() {
            list.sort_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            });
        }
        Ok(jobs
            .items
            .iter()
            .filter_map(|job| {
                let worker = worker_label(&job.metadata)?;
                let pods = by_worker.get(worker).map_or(&[][..], Vec::as_slice);
                Some(Listed {
                    handle: job.metadata.name.clone()?,
                    worker: worker.to_string(),
                    phase: objects::phase(job, pods),
                })
            })
            .collect())
    }
}

fn worker_label(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get("aam.worker").map(String::as_str)
}

impl Engine for Kubernetes {
    fn launch<'a>(&'a self, spec: &'a WorkerSpec<'a>) -> EngineFuture<'a, String> {
        Box::pin(async move {
            let (jobs, _, secrets) = self.apis().await?;
            let (_, ns) = self.api().await?;
            let job = objects::job(&self.def, &self.opts, &self.install, ns, spec);
            let created = jobs
                .create(&PostParams::default(), &job)
                .await
                .map_err(|e| said("create Job", e))?;
            let name = created.metadata.name.clone().unwrap_or_default();
            let uid = created.metadata.uid.clone().unwrap_or_default();
            let secret =
                objects::secret(&self.def, &self.install, ns, spec.worker, spec.token, &uid);
            if let Err(e) = secrets.create(&PostParams::default(), &secret).await {
                let _ = self.stop(&name).await;
                return Err(said("create Secret", e));
            }
            Ok(name)
        })
    }

    fn list(&self) -> EngineFuture<'_, Vec<Listed>> {
        Box::pin(async move {
            self.listed(&objects::selector(&self.install, &self.def.name))
                .await
        })
    }

    fn status<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, Option<Listed>> {
        Box::pin(async move {
            let (jobs, _, _) = self.apis().await?;
            let Some(job) = jobs.get_opt(handle).await.map_err(|e| said("get Job", e))? else {
                return Ok(None);
            };
            let Some(worker) = worker_label(&job.metadata) else {
                return Ok(None);
            };
            let selector = format!(
                "{},aam.worker={worker}",
                objects::selector(&self.install, &self.def.name)
            );
            Ok(self.listed(&selector).await?.into_iter().next())
        })
    }

    fn stop<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let (jobs, _, secrets) = self.apis().await?;
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match jobs.delete(handle, &params).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(said("delete Job", e)),
            }
            // Owned by the Job, the cluster removes it; said here too for
            // a cluster whose garbage collector lags.
            match secrets.delete(handle, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(e) if not_found(&e) => Ok(()),
                Err(e) => Err(said("delete Secret", e)),
            }
        })
    }
}

/// What `render kubernetes` prints for `def`: one worker's Job and Secret
/// as a launch makes them (the token and the Job's uid are placeholders).
pub fn render(def: &Provider, opts: &KubeOptions, manager: &str) -> Result<String, String> {
    let namespace = opts.namespace.as_deref().unwrap_or("default");
    let worker = format!("{}-0a1b2c3d", def.name);
    let spec = WorkerSpec {
        worker: &worker,
        manager: def.manager_address.as_deref().unwrap_or(manager),
        fingerprint: "<the manager's certificate fingerprint>",
        token: "<a join token, made at launch>",
    };
    let install = "install";
    let job = objects::job(def, opts, install, namespace, &spec);
    let secret = objects::secret(
        def,
        install,
        namespace,
        &worker,
        spec.token,
        "<the Job's uid>",
    );
    let values = [
        serde_json::to_value(&job).map_err(|e| e.to_string())?,
        serde_json::to_value(&secret).map_err(|e| e.to_string())?,
    ];
    objects::to_yaml(&values)
}
