//! The manager's Lease on Kubernetes (issue 17): started with
//! `--kube-lease NAME`, the manager opens its store and serves only while
//! it holds the `coordination.k8s.io` Lease NAME in its namespace, so a
//! second manager pod — a StatefulSet's replacement started while the old
//! pod still runs on a node cut off from the cluster — never serves the
//! same store. A Lease is taken when it is free, or when its holder has
//! not renewed it for its duration as this process observed it (the
//! record unchanged that long; no comparison of two machines' clocks);
//! it is renewed every third of its duration, and a manager that finds
//! it held by another, or cannot renew it for a whole duration, stops.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use std::time::{Duration, Instant};

/// A Lease this process holds.
pub struct HeldLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn api_error(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => format!("{what}: {}", s.message),
        other => format!("{what}: {other}"),
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// This process's name as a holder: its host's (the pod's) and a random
/// suffix, so a replacement pod of the same name is someone else.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "aam-manager".into());
    let suffix: String = crate::token::generate().chars().take(8).collect();
    format!("{host}-{suffix}")
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Waits until this process holds the Lease `name` (in the namespace of
/// its in-cluster or kubeconfig context), logging who holds it meanwhile.
pub async fn acquire(name: &str, duration: Duration) -> Result<HeldLease, String> {
    let config = Config::infer()
        .await
        .map_err(|e| format!("--kube-lease: no cluster to talk to: {e}"))?;
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| format!("--kube-lease: {e}"))?;
    let held = HeldLease {
        api: Api::namespaced(client, &namespace),
        name: name.to_string(),
        identity: identity(),
        duration,
    };
    let seconds = duration.as_secs().max(1) as i32;
    // The record as last seen, and since when it has not changed.
    let mut seen: Option<(String, Instant)> = None;
    let mut told: Option<String> = None;
    loop {
        let current = held
            .api
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading the Lease {name}"), e))?;
        let taken = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(held.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now()),
                        renew_time: Some(now()),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match held.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => true,
                    Err(e) if conflict(&e) => false,
                    Err(e) => return Err(api_error(&format!("creating the Lease {name}"), e)),
                }
            }
            Some(mut lease) => {
                let version = lease.metadata.resource_version.clone().unwrap_or_default();
                let spec = lease.spec.get_or_insert_with(Default::default);
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let their = spec
                    .lease_duration_seconds
                    .map_or(duration, |s| Duration::from_secs(s.max(1) as u64));
                let since = match &seen {
                    Some((v, at)) if *v == version => *at,
                    _ => Instant::now(),
                };
                seen = Some((version, since));
                if holder.is_empty() || since.elapsed() > their {
                    if !holder.is_empty() {
                        tracing::warn!(lease = name, %holder, "taking over the Lease: its holder has not renewed it for {their:?}");
                    }
                    spec.holder_identity = Some(held.identity.clone());
                    spec.lease_duration_seconds = Some(seconds);
                    spec.acquire_time = Some(now());
                    spec.renew_time = Some(now());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    match held.api.replace(name, &PostParams::default(), &lease).await {
                        Ok(_) => true,
                        Err(e) if conflict(&e) => false,
                        Err(e) => return Err(api_error(&format!("taking the Lease {name}"), e)),
                    }
                } else {
                    if told.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = name, %holder, "waiting for the Lease: another manager holds it");
                        told = Some(holder);
                    }
                    false
                }
            }
        };
        if taken {
            tracing::info!(lease = name, identity = %held.identity, "holding the Lease");
            return Ok(held);
        }
        tokio::time::sleep((duration / 3).min(Duration::from_secs(2))).await;
    }
}

impl HeldLease {
    /// Renews the Lease until it is lost; says why.
    pub async fn keep(self) -> String {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.renew().await {
                Ok(()) => renewed = Instant::now(),
                Err(Some(holder)) => {
                    return format!("the Lease {} is held by {holder} now", self.name)
                }
                Err(None) if renewed.elapsed() >= self.duration => {
                    return format!(
                        "the Lease {} could not be renewed for {:?}",
                        self.name, self.duration
                    )
                }
                Err(None) => {}
            }
        }
    }

    /// One renewal: `Err(Some(holder))` if another holds it.
    async fn renew(&self) -> Result<(), Option<String>> {
        let mut lease = match self.api.get(&self.name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lease = %self.name, "renewing the Lease: {}", api_error("reading it", e));
                return Err(None);
            }
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            return Err(Some(holder));
        }
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(lease = %self.name, "renewing the Lease: {}", api_error("writing it", e));
                Err(None)
            }
        }
    }
}
