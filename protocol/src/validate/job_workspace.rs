//! A job's (or an agent's) workspace keys: `setup`, `teardown`, `copy`
//! and their time limits, which need a worktree, and `image`, `network`,
//! `egress`, `cpus`, `memory`, which need a container.

use super::limits::check_value;
use crate::agent::AgentDef;
use crate::spec::{parse_duration_ms, JobSpec, Limits, SpecError};
use crate::workspace::{
    check_copy_path, check_egress, parse_memory, ContainerSpec, JobWorkspace, Network, MAX_CPUS,
};

/// The keys as written, borrowed from a job or an agent.
pub struct WorkspaceKeys<'a> {
    pub setup: &'a Option<Vec<String>>,
    pub setup_timeout: &'a Option<String>,
    pub teardown: &'a Option<Vec<String>>,
    pub teardown_timeout: &'a Option<String>,
    pub copy: &'a Option<Vec<String>>,
    pub image: &'a Option<String>,
    pub network: &'a Option<String>,
    pub egress: &'a Option<Vec<String>>,
    pub cpus: Option<f64>,
    pub memory: &'a Option<String>,
}

impl<'a> From<&'a JobSpec> for WorkspaceKeys<'a> {
    fn from(job: &'a JobSpec) -> Self {
        WorkspaceKeys {
            setup: &job.setup,
            setup_timeout: &job.setup_timeout,
            teardown: &job.teardown,
            teardown_timeout: &job.teardown_timeout,
            copy: &job.copy,
            image: &job.image,
            network: &job.network,
            egress: &job.egress,
            cpus: job.cpus,
            memory: &job.memory,
        }
    }
}

impl<'a> From<&'a AgentDef> for WorkspaceKeys<'a> {
    fn from(agent: &'a AgentDef) -> Self {
        WorkspaceKeys {
            setup: &agent.setup,
            setup_timeout: &agent.setup_timeout,
            teardown: &agent.teardown,
            teardown_timeout: &agent.teardown_timeout,
            copy: &agent.copy,
            image: &agent.image,
            network: &agent.network,
            egress: &agent.egress,
            cpus: agent.cpus,
            memory: &agent.memory,
        }
    }
}

impl WorkspaceKeys<'_> {
    /// The first key given that needs a worktree, if any.
    pub fn worktree_key(&self) -> Option<&'static str> {
        [
            ("setup", self.setup.is_some()),
            ("setup_timeout", self.setup_timeout.is_some()),
            ("teardown", self.teardown.is_some()),
            ("teardown_timeout", self.teardown_timeout.is_some()),
            ("copy", self.copy.is_some()),
        ]
        .into_iter()
        .find_map(|(key, given)| given.then_some(key))
    }

    /// The first key given that needs a container, if any.
    pub fn container_key(&self) -> Option<&'static str> {
        [
            ("image", self.image.is_some()),
            ("network", self.network.is_some()),
            ("egress", self.egress.is_some()),
            ("cpus", self.cpus.is_some()),
            ("memory", self.memory.is_some()),
        ]
        .into_iter()
        .find_map(|(key, given)| given.then_some(key))
    }
}

/// Checks the keys (each problem pushed with `push(field, message)`) and
/// types them; a container is described when any container key is given.
pub fn check_keys(
    keys: &WorkspaceKeys<'_>,
    limits: &Limits,
    mut push: impl FnMut(&str, String),
) -> JobWorkspace {
    let mut argv = |field: &str, argv: &Option<Vec<String>>| {
        let argv = argv.as_ref()?;
        if argv.first().is_none_or(|program| program.is_empty()) {
            push(
                field,
                "the argv list is empty; the first element is the program".into(),
            );
            return None;
        }
        if let Some(long) = argv.iter().find(|a| a.len() > limits.max_field_bytes) {
            let limit = limits.max_field_bytes;
            push(
                field,
                format!("{} bytes exceed the limit of {limit} bytes", long.len()),
            );
            return None;
        }
        Some(argv.clone())
    };
    let setup = argv("setup", keys.setup);
    let teardown = argv("teardown", keys.teardown);
    let mut time = |field: &str, text: &Option<String>| match parse_duration_ms(text.as_deref()?) {
        Ok(0) => {
            push(field, "must be longer than 0".into());
            None
        }
        Ok(ms) => Some(ms),
        Err(e) => {
            push(field, e);
            None
        }
    };
    let setup_timeout_ms = time("setup_timeout", keys.setup_timeout);
    let teardown_timeout_ms = time("teardown_timeout", keys.teardown_timeout);
    let copy = keys.copy.as_ref().map(|paths| {
        paths
            .iter()
            .filter(|path| match check_copy_path(path) {
                Ok(()) => true,
                Err(e) => {
                    push("copy", e);
                    false
                }
            })
            .cloned()
            .collect()
    });
    let container = keys
        .container_key()
        .map(|_| check_container(keys, &mut push));
    JobWorkspace {
        setup,
        setup_timeout_ms,
        teardown,
        teardown_timeout_ms,
        copy,
        container,
    }
}

/// `image`, `network`, `egress`, `cpus`, `memory`.
fn check_container(keys: &WorkspaceKeys<'_>, push: &mut impl FnMut(&str, String)) -> ContainerSpec {
    let image = keys.image.clone().unwrap_or_default();
    if keys.image.is_some() && !is_image_name(&image) {
        push("image", format!("'{image}' is not an image name"));
    }
    let egress = keys.egress.as_ref().map(|entries| {
        entries
            .iter()
            .filter_map(|entry| check_egress(entry).map_err(|e| push("egress", e)).ok())
            .collect::<Vec<_>>()
    });
    let network = match (keys.network.as_deref(), egress) {
        (None | Some("egress"), Some(allowed)) => Some(Network::Egress(allowed)),
        (Some("egress"), None) => {
            push(
                "network",
                "network = \"egress\" needs an egress list".into(),
            );
            None
        }
        (Some(other @ ("none" | "open")), Some(_)) => {
            push(
                "egress",
                format!("an egress list needs no network key (network = \"{other}\" was given)"),
            );
            None
        }
        (Some("none"), None) => Some(Network::None),
        (Some("open"), None) => Some(Network::Open),
        (Some(other), _) => {
            push(
                "network",
                format!("unknown network '{other}' (use none, open, or an egress list)"),
            );
            None
        }
        (None, None) => None,
    };
    let cpus = keys.cpus.filter(|&cpus| {
        let ok = cpus > 0.0 && cpus <= MAX_CPUS;
        if !ok {
            push(
                "cpus",
                format!("{cpus} CPUs: give more than 0, at most {MAX_CPUS}"),
            );
        }
        ok
    });
    let memory_bytes = keys
        .memory
        .as_deref()
        .and_then(|text| parse_memory(text).map_err(|e| push("memory", e)).ok());
    ContainerSpec {
        image,
        network,
        cpus,
        memory_bytes,
    }
}

/// An image reference as engines take it: no spaces, no leading `-`.
fn is_image_name(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 1024
        && !image.starts_with('-')
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

/// Checks a job's workspace keys into `errors` (naming the job and the key).
pub(super) fn check_job_keys(
    job: &JobSpec,
    label: &str,
    limits: &Limits,
    errors: &mut Vec<SpecError>,
) -> JobWorkspace {
    let keys = WorkspaceKeys::from(job);
    let workspace = check_keys(&keys, limits, |field, message| {
        errors.push(SpecError::job(label, field, message))
    });
    for path in workspace.copy.iter().flatten() {
        check_value(errors, label, limits, "copy", path);
    }
    workspace
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{batch, errors, job};
    use crate::spec::{JobSpec, Limits};
    use crate::workspace::Network;
    use crate::worktree::Isolation;

    #[test]
    fn workspace_keys_imply_a_worktree_and_container_keys_a_container() {
        let setup = JobSpec {
            setup: Some(vec!["npm".into(), "ci".into()]),
            copy: Some(vec![".env".into(), "config/*.json".into()]),
            ..job("web", &[])
        };
        let boxed = JobSpec {
            egress: Some(vec!["API.example.com:443".into()]),
            image: Some("localhost/agents:1".into()),
            memory: Some("2g".into()),
            ..job("boxed", &[])
        };
        let valid = super::super::validate(batch(vec![setup, boxed]), &Limits::default()).unwrap();
        assert_eq!(valid.jobs[0].isolation, Some(Isolation::Worktree));
        assert_eq!(valid.jobs[0].workspace.copy.as_ref().unwrap().len(), 2);
        assert_eq!(valid.jobs[1].isolation, Some(Isolation::Container));
        let container = valid.jobs[1].workspace.container.clone().unwrap();
        assert_eq!(
            container.network(),
            Network::Egress(vec!["api.example.com:443".into()])
        );
        assert_eq!(container.memory_bytes, Some(2 << 30));
    }

    #[test]
    fn bad_workspace_keys_name_the_job_and_the_key() {
        let bad = JobSpec {
            isolation: Some("worktree".into()),
            image: Some("busybox".into()),
            setup: Some(vec![]),
            copy: Some(vec!["../x".into()]),
            ..job("bad", &[])
        };
        let net = JobSpec {
            network: Some("vpn".into()),
            egress: Some(vec!["nohost".into()]),
            cpus: Some(0.0),
            memory: Some("lots".into()),
            ..job("net", &[])
        };
        let plain = JobSpec {
            isolation: Some("none".into()),
            teardown: Some(vec!["make".into(), "stop".into()]),
            ..job("plain", &[])
        };
        let shown = errors(&batch(vec![bad, net, plain]));
        for expected in [
            "job 'bad': field 'setup': the argv list is empty",
            "job 'bad': field 'copy': '../x' is not a path inside the repository",
            "job 'bad': field 'image': 'image' needs isolation = \"container\"",
            "job 'net': field 'egress': 'nohost' is not host:port",
            "job 'net': field 'network': unknown network 'vpn'",
            "job 'net': field 'cpus': 0 CPUs",
            "job 'net': field 'memory': 'lots' is not a size",
            "job 'plain': field 'teardown': 'teardown' needs isolation = \"worktree\"",
        ] {
            assert!(shown.contains(expected), "{expected}\n{shown}");
        }
    }
}
