//! `[[providers]]` in the manager's config (issue 17): where workers are
//! launched on demand. Each entry is checked at load, naming the entry and
//! key that is wrong; keys of another kind are refused, not ignored.

use aam_protocol::spec::parse_duration_ms;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One `[[providers]]` table as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub name: String,
    pub kind: String,
    pub max_workers: Option<u32>,
    #[serde(default)]
    pub min_workers: u32,
    pub slots: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub idle_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub worker_bin: Option<String>,
    pub manager_address: Option<String>,
    // podman
    pub image: Option<String>,
    pub network: Option<String>,
    pub engine: Option<String>,
    pub url: Option<String>,
    // slurm
    pub partition: Option<String>,
    pub time: Option<String>,
    pub cpus_per_worker: Option<u32>,
    pub mem: Option<String>,
    pub account: Option<String>,
    pub sbatch_args: Option<Vec<String>>,
    pub output: Option<String>,
    // kubernetes (and `image`)
    pub namespace: Option<String>,
    pub pod_template: Option<String>,
    pub ttl_after_finished: Option<String>,
    pub active_deadline: Option<String>,
    pub kubeconfig: Option<String>,
}

/// A Kubernetes provider's options.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeOptions {
    pub image: String,
    /// Its namespace (default: the manager's own in-cluster, else the
    /// kubeconfig context's, else `default`).
    pub namespace: Option<String>,
    /// A fragment merged into each worker's pod spec (node selector,
    /// tolerations, resources of the `worker` container, ...), checked.
    pub pod_template: Option<serde_json::Value>,
    /// How long a finished worker's Job stays for `kubectl` (seconds).
    pub ttl_after_finished_s: i32,
    /// The longest a worker's Job may run (seconds), if bounded.
    pub active_deadline_s: Option<i64>,
    /// A kubeconfig file (default: in-cluster, else `KUBECONFIG` or
    /// `~/.kube/config`).
    pub kubeconfig: Option<String>,
}

/// A Slurm provider's `sbatch` options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub time: Option<String>,
    pub cpus_per_worker: u32,
    pub mem: Option<String>,
    pub account: Option<String>,
    pub sbatch_args: Vec<String>,
    /// The worker's log, an `sbatch --output` pattern.
    pub output: String,
}

/// Where a provider's workers run.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A container per worker on this host's podman.
    Podman {
        image: String,
        network: String,
        engine: String,
        /// A remote podman service (`podman --url`), else this host's.
        url: Option<String>,
    },
    /// A batch job per worker on the Slurm cluster this host submits to.
    Slurm(SlurmOptions),
    /// A `batch/v1` Job per worker on a Kubernetes cluster.
    Kubernetes(KubeOptions),
}

impl Kind {
    /// The `kind` key's value.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Podman { .. } => "podman",
            Kind::Slurm(_) => "slurm",
            Kind::Kubernetes(_) => "kubernetes",
        }
    }
}

/// A provider, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Provider {
    pub name: String,
    pub kind: Kind,
    pub max_workers: u32,
    pub min_workers: u32,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// The worker's executable as the engine runs it.
    pub worker_bin: String,
    /// Where its workers dial the manager (default: its listen address).
    pub manager_address: Option<String>,
}

pub const DEFAULT_IDLE_TIMEOUT: &str = "5m";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "2m";

/// The kinds this build launches workers with.
pub const KINDS: [&str; 3] = ["podman", "slurm", "kubernetes"];

/// Where a Slurm worker writes its log unless `output` says.
pub const DEFAULT_SLURM_OUTPUT: &str = "/tmp/aam-worker-%j.log";

/// Checks every entry; the first problem names its entry and key.
pub fn providers(entries: &[ProviderEntry]) -> Result<Vec<Provider>, String> {
    let mut out: Vec<Provider> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("[[providers]] #{} ({})", i + 1, e.name);
        if !aam_protocol::spec::is_valid_name(&e.name) || e.name.len() > 40 {
            return Err(format!(
                "[[providers]] #{}: name '{}' must be 1-40 letters, digits, '-', '_' or '.'",
                i + 1,
                e.name
            ));
        }
        if out.iter().any(|p| p.name == e.name) {
            return Err(format!(
                "{at}: name: a provider of that name is declared above"
            ));
        }
        let max_workers = match e.max_workers {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "{at}: max_workers: give how many workers at most (1 or more)"
                ))
            }
        };
        if e.min_workers > max_workers {
            return Err(format!(
                "{at}: min_workers ({}) is over max_workers ({max_workers})",
                e.min_workers
            ));
        }
        let slots = e.slots.unwrap_or(1);
        if slots == 0 {
            return Err(format!("{at}: slots must be at least 1"));
        }
        let duration = |key: &str, value: &Option<String>, default: &str| {
            let text = value.as_deref().unwrap_or(default);
            match parse_duration_ms(text) {
                Ok(ms) if ms > 0 => Ok(ms),
                _ => Err(format!(
                    "{at}: {key}: '{text}' is not a duration like 30s or 5m"
                )),
            }
        };
        let idle_timeout_ms = duration("idle_timeout", &e.idle_timeout, DEFAULT_IDLE_TIMEOUT)?;
        let connect_timeout_ms = duration(
            "connect_timeout",
            &e.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        let kind = kind(e, &at)?;
        let worker_bin = match (&e.worker_bin, &kind) {
            (Some(bin), _) => bin.clone(),
            // In an image, on its PATH.
            (None, Kind::Podman { .. } | Kind::Kubernetes(_)) => "aam-worker".into(),
            // On this host's cluster: the worker beside the manager.
            (None, Kind::Slurm(_)) => beside_manager("aam-worker"),
        };
        out.push(Provider {
            name: e.name.clone(),
            kind,
            max_workers,
            min_workers: e.min_workers,
            slots,
            labels: e.labels.clone(),
            idle_timeout_ms,
            connect_timeout_ms,
            worker_bin,
            manager_address: e.manager_address.clone(),
        });
    }
    Ok(out)
}

/// The kind's own keys, checked; keys of another kind are refused.
fn kind(e: &ProviderEntry, at: &str) -> Result<Kind, String> {
    let podman_keys = [
        ("network", e.network.is_some()),
        ("engine", e.engine.is_some()),
        ("url", e.url.is_some()),
    ];
    let slurm_keys = [
        ("partition", e.partition.is_some()),
        ("time", e.time.is_some()),
        ("cpus_per_worker", e.cpus_per_worker.is_some()),
        ("mem", e.mem.is_some()),
        ("account", e.account.is_some()),
        ("sbatch_args", e.sbatch_args.is_some()),
        ("output", e.output.is_some()),
    ];
    let kube_keys = [
        ("namespace", e.namespace.is_some()),
        ("pod_template", e.pod_template.is_some()),
        ("ttl_after_finished", e.ttl_after_finished.is_some()),
        ("active_deadline", e.active_deadline.is_some()),
        ("kubeconfig", e.kubeconfig.is_some()),
    ];
    let image = || {
        e.image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| format!("{at}: image: name the image its workers run"))
    };
    let seconds = |key: &str, value: &str| match parse_duration_ms(value) {
        Ok(ms) if ms >= 1000 => Ok(ms / 1000),
        _ => Err(format!(
            "{at}: {key}: '{value}' is not a duration of a second or more like 30s or 5m"
        )),
    };
    let foreign = |keys: &[(&str, bool)]| match keys.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(format!("{at}: {key}: not a key of kind = \"{}\"", e.kind)),
        None => Ok(()),
    };
    match e.kind.as_str() {
        "podman" => {
            foreign(&slurm_keys)?;
            foreign(&kube_keys)?;
            Ok(Kind::Podman {
                image: image()?,
                network: e.network.clone().unwrap_or_else(|| "host".into()),
                engine: e.engine.clone().unwrap_or_else(|| "podman".into()),
                url: e.url.clone(),
            })
        }
        "slurm" => {
            foreign(&podman_keys)?;
            foreign(&kube_keys)?;
            foreign(&[("image", e.image.is_some())])?;
            let cpus_per_worker = e.cpus_per_worker.unwrap_or(1);
            if cpus_per_worker == 0 {
                return Err(format!("{at}: cpus_per_worker must be at least 1"));
            }
            if let Some(time) = &e.time {
                // Slurm's forms: MIN, MIN:SEC, H:M:S, D-H, D-H:M, D-H:M:S.
                if time.is_empty()
                    || !time
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == ':' || c == '-')
                {
                    return Err(format!(
                        "{at}: time: '{time}' is not a Slurm time limit like 60, 1:00:00 or 1-00:00:00"
                    ));
                }
            }
            Ok(Kind::Slurm(SlurmOptions {
                partition: e.partition.clone(),
                time: e.time.clone(),
                cpus_per_worker,
                mem: e.mem.clone(),
                account: e.account.clone(),
                sbatch_args: e.sbatch_args.clone().unwrap_or_default(),
                output: e
                    .output
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SLURM_OUTPUT.into()),
            }))
        }
        "kubernetes" => {
            foreign(&podman_keys)?;
            foreign(&slurm_keys)?;
            if e.manager_address.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "{at}: manager_address: say where its pods dial the manager (the manager's Service, e.g. aam-manager:7410)"
                ));
            }
            if !super::kubernetes::objects::is_label_value(&e.name) {
                return Err(format!(
                    "{at}: name: a Kubernetes provider's name is a label value: it starts and ends with a letter or digit"
                ));
            }
            let pod_template = match &e.pod_template {
                None => None,
                Some(text) => Some(
                    super::kubernetes::objects::check_pod_template(text)
                        .map_err(|why| format!("{at}: pod_template: {why}"))?,
                ),
            };
            if let Some(ns) = &e.namespace {
                if !super::kubernetes::objects::is_dns_label(ns) {
                    return Err(format!(
                        "{at}: namespace: '{ns}' is not a Kubernetes namespace name (lowercase letters, digits and '-')"
                    ));
                }
            }
            let ttl = seconds(
                "ttl_after_finished",
                e.ttl_after_finished.as_deref().unwrap_or("5m"),
            )?;
            let deadline = match &e.active_deadline {
                Some(d) => Some(seconds("active_deadline", d)? as i64),
                None => None,
            };
            Ok(Kind::Kubernetes(KubeOptions {
                image: image()?,
                namespace: e.namespace.clone(),
                pod_template,
                ttl_after_finished_s: ttl.min(i32::MAX as u64) as i32,
                active_deadline_s: deadline,
                kubeconfig: e.kubeconfig.clone(),
            }))
        }
        other => Err(format!(
            "{at}: kind: unknown kind '{other}' (kinds: {})",
            KINDS.join(", ")
        )),
    }
}

/// A program beside this manager's own executable (else on the PATH).
fn beside_manager(program: &str) -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(program)))
        .filter(|p| p.exists())
        .map_or_else(|| program.to_string(), |p| p.display().to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(name: &str, kind: &str) -> ProviderEntry {
        ProviderEntry {
            name: name.into(),
            kind: kind.into(),
            max_workers: Some(4),
            image: (kind != "slurm").then(|| "aam:latest".into()),
            manager_address: (kind == "kubernetes").then(|| "aam-manager:7410".into()),
            ..ProviderEntry::default()
        }
    }

    fn podman(name: &str) -> ProviderEntry {
        entry(name, "podman")
    }

    #[test]
    fn a_podman_provider_gets_its_defaults() {
        let p = &providers(&[podman("local")]).unwrap()[0];
        assert_eq!(
            p.kind,
            Kind::Podman {
                image: "aam:latest".into(),
                network: "host".into(),
                engine: "podman".into(),
                url: None,
            }
        );
        assert_eq!((p.slots, p.min_workers, p.max_workers), (1, 0, 4));
        assert_eq!(
            (p.idle_timeout_ms, p.connect_timeout_ms),
            (300_000, 120_000)
        );
        assert_eq!(p.worker_bin, "aam-worker");
    }

    #[test]
    fn a_slurm_provider_gets_its_defaults_and_the_worker_beside_the_manager() {
        let p = &providers(&[entry("hpc", "slurm")]).unwrap()[0];
        let Kind::Slurm(o) = &p.kind else {
            panic!("{:?}", p.kind)
        };
        assert_eq!(
            (o.cpus_per_worker, o.output.as_str()),
            (1, DEFAULT_SLURM_OUTPUT)
        );
        assert!(o.sbatch_args.is_empty() && o.partition.is_none());
        assert!(p.worker_bin.ends_with("aam-worker"), "{}", p.worker_bin);
    }

    #[test]
    fn each_mistake_names_the_entry_and_key() {
        let refused = |e: ProviderEntry| providers(&[e]).unwrap_err();
        let mut e = podman("p");
        e.max_workers = None;
        assert!(refused(e).contains("[[providers]] #1 (p): max_workers"));
        let mut e = podman("p");
        e.min_workers = 9;
        assert!(refused(e).contains("min_workers (9) is over max_workers (4)"));
        let mut e = podman("p");
        e.image = None;
        assert!(refused(e).contains("image: name the image"));
        let mut e = entry("k", "kubernetes");
        e.image = None;
        assert!(refused(e).contains("(k): image: name the image"));
        let mut e = entry("k", "kubernetes");
        e.image = Some("aam:latest".into());
        e.pod_template = Some("nodeSelectr: {pool: agents}".into());
        let why = refused(e);
        assert!(
            why.contains("(k): pod_template:") && why.contains("nodeSelectr"),
            "{why}"
        );
        let mut e = entry("k", "kubernetes");
        e.image = Some("aam:latest".into());
        e.namespace = Some("Team_A".into());
        assert!(refused(e).contains("(k): namespace: 'Team_A'"));
        let mut e = entry("k", "kubernetes");
        e.image = Some("aam:latest".into());
        e.partition = Some("x".into());
        assert!(refused(e).contains("(k): partition: not a key of kind = \"kubernetes\""));
        let mut e = podman("p");
        e.partition = Some("gpu".into());
        assert!(refused(e).contains("(p): partition: not a key of kind = \"podman\""));
        let mut e = entry("s", "slurm");
        e.image = Some("x".into());
        assert!(refused(e).contains("(s): image: not a key of kind = \"slurm\""));
        let mut e = entry("s", "slurm");
        e.time = Some("an hour".into());
        assert!(refused(e).contains("(s): time: 'an hour' is not a Slurm time limit"));
        let mut e = entry("s", "slurm");
        e.cpus_per_worker = Some(0);
        assert!(refused(e).contains("(s): cpus_per_worker must be at least 1"));
        let mut e = podman("p");
        e.kind = "nomad".into();
        assert!(refused(e).contains("unknown kind 'nomad'"));
        let mut e = podman("p");
        e.idle_timeout = Some("soon".into());
        assert!(refused(e).contains("idle_timeout: 'soon'"));
        let e = podman("bad name");
        assert!(refused(e).contains("name 'bad name'"));
        let twice = providers(&[podman("p"), podman("p")]).unwrap_err();
        assert!(twice.contains("#2 (p): name"), "{twice}");
    }
}
