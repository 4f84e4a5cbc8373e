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
}

/// Where a provider's workers run.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A container per worker on this host's podman.
    Podman {
        image: String,
        network: String,
        engine: String,
    },
}

impl Kind {
    /// The `kind` key's value.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Podman { .. } => "podman",
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
pub const KINDS: [&str; 1] = ["podman"];

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
        let kind = match e.kind.as_str() {
            "podman" => Kind::Podman {
                image: e
                    .image
                    .clone()
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| format!("{at}: image: name the image its workers run"))?,
                network: e.network.clone().unwrap_or_else(|| "host".into()),
                engine: e.engine.clone().unwrap_or_else(|| "podman".into()),
            },
            "slurm" | "kubernetes" => {
                return Err(format!(
                    "{at}: kind = \"{}\" is not available in this build yet (kinds: {})",
                    e.kind,
                    KINDS.join(", ")
                ))
            }
            other => {
                return Err(format!(
                    "{at}: kind: unknown kind '{other}' (kinds: {})",
                    KINDS.join(", ")
                ))
            }
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
            worker_bin: e.worker_bin.clone().unwrap_or_else(|| "aam-worker".into()),
            manager_address: e.manager_address.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn podman(name: &str) -> ProviderEntry {
        ProviderEntry {
            name: name.into(),
            kind: "podman".into(),
            max_workers: Some(4),
            image: Some("aam:latest".into()),
            ..ProviderEntry::default()
        }
    }

    #[test]
    fn a_podman_provider_gets_its_defaults() {
        let p = &providers(&[podman("local")]).unwrap()[0];
        assert_eq!(
            p.kind,
            Kind::Podman {
                image: "aam:latest".into(),
                network: "host".into(),
                engine: "podman".into()
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
        let mut e = podman("p");
        e.kind = "slurm".into();
        assert!(refused(e).contains("kind = \"slurm\" is not available in this build yet"));
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
