//! Workers launched on demand from the user's cluster (issue 17):
//! providers of capacity. `config` checks `[[providers]]`, `plan` decides
//! how many workers to launch, `join` gives each its own token, `engine`
//! is what every kind implements (`podman`, `slurm`, `kubernetes`), and `run` is the
//! loop that drives them.

pub mod config;
pub mod engine;
pub mod join;
pub mod kubernetes;
pub mod plan;
pub mod podman;
pub mod run;
pub mod slurm;

use config::{Kind, Provider};
use engine::{Engine, WorkerSpec};

/// The engine that runs `def`'s workers for this install.
pub fn engine(def: &Provider, install: &str) -> Box<dyn Engine> {
    match &def.kind {
        Kind::Podman {
            image,
            network,
            engine,
            url,
        } => Box::new(podman::Podman {
            def: def.clone(),
            install: install.to_string(),
            image: image.clone(),
            network: network.clone(),
            engine: engine.clone(),
            url: url.clone(),
        }),
        Kind::Slurm(options) => Box::new(slurm::Slurm::new(
            def.clone(),
            install.to_string(),
            options.clone(),
        )),
        Kind::Kubernetes(options) => Box::new(kubernetes::Kubernetes::new(
            def.clone(),
            install.to_string(),
            options.clone(),
        )),
    }
}

/// The worker's own arguments after its executable, the same on every
/// engine: where the manager is, its name, slots, labels, and that it
/// leaves when idle.
pub fn worker_args(p: &Provider, spec: &WorkerSpec<'_>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--manager".into(),
        spec.manager.to_string(),
        "--name".into(),
        spec.worker.to_string(),
        "--slots".into(),
        p.slots.to_string(),
    ];
    for (k, v) in &p.labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args.push("--once-idle".into());
    args.extend(["--idle-timeout".into(), format!("{}ms", p.idle_timeout_ms)]);
    args
}
