//! A worktree job's own workspace keys (issue 15): the `setup`,
//! `teardown` and `copy` that override its repository's
//! `.aam/workspace.toml`, and for `isolation = "container"` the container
//! it runs in (image, network, CPU and memory). A job's keys come first,
//! its agent's fill what it leaves out.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path};

/// What a job (or its agent) says of its workspace, checked. Every key
/// is optional: one left out falls back to the agent's, then to the
/// repository's workspace file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobWorkspace {
    pub setup: Option<Vec<String>>,
    pub setup_timeout_ms: Option<u64>,
    pub teardown: Option<Vec<String>>,
    pub teardown_timeout_ms: Option<u64>,
    pub copy: Option<Vec<String>>,
    /// Set for `isolation = "container"` (with its image).
    pub container: Option<ContainerSpec>,
}

impl JobWorkspace {
    /// Whether it says nothing (a job without workspace keys stores none).
    pub fn is_empty(&self) -> bool {
        *self == JobWorkspace::default()
    }

    /// This one's keys, and `fallback`'s (an agent's) where this one has none.
    pub fn or(self, fallback: &JobWorkspace) -> JobWorkspace {
        let container = match (self.container, &fallback.container) {
            (Some(own), Some(theirs)) => Some(own.or(theirs)),
            (own, theirs) => own.or_else(|| theirs.clone()),
        };
        JobWorkspace {
            setup: self.setup.or_else(|| fallback.setup.clone()),
            setup_timeout_ms: self.setup_timeout_ms.or(fallback.setup_timeout_ms),
            teardown: self.teardown.or_else(|| fallback.teardown.clone()),
            teardown_timeout_ms: self.teardown_timeout_ms.or(fallback.teardown_timeout_ms),
            copy: self.copy.or_else(|| fallback.copy.clone()),
            container,
        }
    }
}

/// The container a job runs in: made by its worker with the host's
/// container engine, the job's worktree mounted at its own path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image; empty until the job or its agent names one (a container
    /// job without one is refused at submit).
    pub image: String,
    pub network: Option<Network>,
    /// CPUs it may use (`--cpus`), where the host allows.
    pub cpus: Option<f64>,
    /// Bytes of memory it may use (`--memory`), where the host allows.
    pub memory_bytes: Option<u64>,
}

impl ContainerSpec {
    fn or(self, fallback: &ContainerSpec) -> ContainerSpec {
        ContainerSpec {
            image: if self.image.is_empty() {
                fallback.image.clone()
            } else {
                self.image
            },
            network: self.network.or_else(|| fallback.network.clone()),
            cpus: self.cpus.or(fallback.cpus),
            memory_bytes: self.memory_bytes.or(fallback.memory_bytes),
        }
    }

    /// Its network, `none` when it names none.
    pub fn network(&self) -> Network {
        self.network.clone().unwrap_or(Network::None)
    }
}

/// What a container may reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Its own loopback only (the default).
    None,
    /// The host engine's default network.
    Open,
    /// Only these `host:port` pairs, through a proxy its worker runs for
    /// it (HTTP CONNECT and plain HTTP); every other attempt is refused
    /// and logged in the job's log.
    Egress(Vec<String>),
}

impl Network {
    pub fn describe(&self) -> String {
        match self {
            Network::None => "none".into(),
            Network::Open => "open".into(),
            Network::Egress(allowed) => format!("egress to {}", allowed.join(", ")),
        }
    }
}

/// A `copy` entry must stay inside the repository: relative, no `..`
/// (globs such as `config/*.json` are paths here too).
pub fn check_copy_path(path: &str) -> Result<(), String> {
    let plain = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "'{path}' is not a path inside the repository (relative, without '..')"
        ))
    }
}

/// An `egress` entry: `host:port` (a name, an IPv4 address, or an IPv6
/// address in brackets), port 1-65535. The entry as the proxy compares
/// it: the host in lower case.
pub fn check_egress(entry: &str) -> Result<String, String> {
    let bad = || format!("'{entry}' is not host:port (api.example.com:443, 127.0.0.1:8080)");
    let (host, port) = entry.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    if port_ok && host_ok {
        Ok(entry.to_ascii_lowercase())
    } else {
        Err(bad())
    }
}

/// `memory`: bytes, or a number with a unit (`512m`, `2g`, `2GiB`;
/// binary multiples, case ignored), at least 4 MiB.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a size (512m, 2g, 2GiB)");
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    let bytes = bytes as u64;
    if bytes < 4 << 20 {
        return Err(format!(
            "'{text}' is less than the least memory a container gets (4m)"
        ));
    }
    Ok(bytes)
}

/// The label a worker that can run containers registers with (value
/// `CONTAINER_LABEL_VALUE`), and a container job requires: placement
/// treats a worker without an engine like one without a label.
pub const CONTAINER_LABEL: &str = "aam.containers";
pub const CONTAINER_LABEL_VALUE: &str = "yes";

/// Most CPUs one job may ask for.
pub const MAX_CPUS: f64 = 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("1.5g"), Ok(3 << 29));
        assert_eq!(parse_memory("8388608"), Ok(8 << 20));
        assert!(parse_memory("lots").unwrap_err().contains("not a size"));
        assert!(parse_memory("1k").unwrap_err().contains("least memory"));
        assert!(parse_memory("3x").is_err());
    }

    #[test]
    fn egress_entries_are_host_and_port() {
        assert_eq!(
            check_egress("API.example.com:443"),
            Ok("api.example.com:443".into())
        );
        assert!(check_egress("127.0.0.1:8080").is_ok());
        assert!(check_egress("[::1]:8080").is_ok());
        for bad in [
            "example.com",
            "example.com:0",
            "exa mple:80",
            ":80",
            "h:99999",
            "[zz]:1",
        ] {
            assert!(check_egress(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_jobs_keys_come_before_its_agents() {
        let agent = JobWorkspace {
            setup: Some(vec!["npm".into(), "ci".into()]),
            copy: Some(vec![".env".into()]),
            container: Some(ContainerSpec {
                image: "agents:latest".into(),
                network: Some(Network::Egress(vec!["api.anthropic.com:443".into()])),
                ..ContainerSpec::default()
            }),
            ..JobWorkspace::default()
        };
        let job = JobWorkspace {
            setup: Some(vec!["make".into()]),
            container: Some(ContainerSpec {
                cpus: Some(2.0),
                ..ContainerSpec::default()
            }),
            ..JobWorkspace::default()
        };
        let merged = job.or(&agent);
        assert_eq!(merged.setup, Some(vec!["make".to_string()]));
        assert_eq!(merged.copy, Some(vec![".env".to_string()]));
        let container = merged.container.unwrap();
        assert_eq!(container.image, "agents:latest");
        assert_eq!(container.cpus, Some(2.0));
        assert!(matches!(container.network(), Network::Egress(_)));
        assert!(JobWorkspace::default().is_empty());
    }
}
