//! One job's container: made after its worktree (the worktree mounted at
//! its own path, the job's input files read-only, its ports published on
//! the worker's loopback, its CPU and memory limits, its network), kept
//! alive by a pausing init while the job's steps run in it with `exec`,
//! and removed when the job ends, however it ends.

use super::proxy::EgressProxy;
use super::{network, Containers, WORKER_LABEL};
use aam_protocol::workspace::{ContainerSpec, Network};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Where the pausing init is mounted in a container.
const PAUSE_AT: &str = "/run/aam-pause";

/// A job's running container.
pub struct JobContainer {
    containers: Arc<Containers>,
    pub name: String,
    /// Variables every step gets besides the job's (the proxy's address).
    pub env: Vec<(String, String)>,
    /// The egress proxy, for a container with an allowlist, and the
    /// firewall rule that lets the container reach it (and nothing else
    /// of the host).
    _proxy: Option<(EgressProxy, network::HostGuard)>,
    /// The job's ports relayed from the worker's loopback (egress network).
    _relays: Option<super::forward::PortRelays>,
    removed: bool,
}

/// What a container is made with.
pub struct ContainerPlan<'a> {
    pub spec: &'a ContainerSpec,
    /// `aam-s4-0-1`: unique on this worker for the attempt.
    pub name: String,
    /// The job's worktree (mounted read-write at its own path).
    pub worktree: &'a Path,
    /// Files or directories mounted read-only at their own paths (the
    /// job's input files).
    pub read_only: Vec<PathBuf>,
    pub ports: &'a [u16],
}

impl JobContainer {
    /// Makes and starts the container; its egress proxy's refusals come
    /// out of the receiver (for the job's log). Why it could not be made
    /// otherwise, in the engine's words.
    pub async fn start(
        containers: &Arc<Containers>,
        plan: ContainerPlan<'_>,
    ) -> Result<(JobContainer, Option<UnboundedReceiver<String>>), String> {
        let spec = plan.spec;
        let mut args: Vec<String> = ["run", "-d", "--pull=never", "--name"]
            .map(String::from)
            .into();
        args.push(plan.name.clone());
        args.extend([
            "--label".into(),
            format!("{WORKER_LABEL}={}", containers.label),
        ]);
        let mut env = Vec::new();
        let mut proxy = None;
        let mut refusals = None;
        let mut egress_net = None;
        match spec.network() {
            Network::None => args.extend(["--network".into(), "none".into()]),
            Network::Open => {
                for port in plan.ports {
                    args.extend(["-p".into(), format!("127.0.0.1:{port}:{port}")]);
                }
            }
            Network::Egress(allowed) => {
                let net = containers.egress_net().await?.clone();
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let started = super::proxy::start(net.gateway, &allowed, tx).map_err(|e| {
                    format!("cannot start the egress proxy on {}: {e}", net.gateway)
                })?;
                let url = format!("http://{}", started.addr);
                for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                    env.push((key.to_string(), url.clone()));
                }
                for key in ["NO_PROXY", "no_proxy"] {
                    env.push((key.to_string(), "localhost,127.0.0.1,::1".to_string()));
                }
                args.extend(["--network".into(), network::NAME.into()]);
                let guard = network::guard_host(&net, started.addr.port()).await;
                proxy = Some((started, guard));
                refusals = Some(rx);
                egress_net = Some(net);
            }
        }
        let worktree = plan.worktree.display();
        args.extend(["-v".into(), format!("{worktree}:{worktree}")]);
        for path in &plan.read_only {
            let path = path.display();
            args.extend(["-v".into(), format!("{path}:{path}:ro")]);
        }
        if let Some(cpus) = spec.cpus {
            args.extend(["--cpus".into(), cpus.to_string()]);
        }
        if let Some(bytes) = spec.memory_bytes {
            args.extend(["--memory".into(), bytes.to_string()]);
        }
        args.extend(["-w".into(), worktree.to_string()]);
        match &containers.pause {
            Some(pause) => {
                args.extend(["-v".into(), format!("{}:{PAUSE_AT}:ro", pause.display())]);
                args.extend(["--entrypoint".into(), PAUSE_AT.into(), spec.image.clone()]);
                args.push("-P".into());
            }
            // Without catatonit: the image's own sleep, under the engine's init.
            None => args.extend([
                "--init".into(),
                "--entrypoint".into(),
                "sleep".into(),
                spec.image.clone(),
                "2147483647".into(),
            ]),
        }
        containers.run(&args).await.map_err(|why| {
            format!(
                "the job's container (image {}) did not start: {why}",
                spec.image
            )
        })?;
        let mut relays = None;
        if let Some(net) = &egress_net {
            network::pin_bridge_address(net).await;
            if !plan.ports.is_empty() {
                let ip = containers.address_of(&plan.name).await?;
                relays = Some(super::forward::relay(ip, plan.ports).await);
            }
        }
        let container = JobContainer {
            containers: containers.clone(),
            name: plan.name,
            env,
            _proxy: proxy,
            _relays: relays,
            removed: false,
        };
        Ok((container, refusals))
    }

    /// The engine command that runs `program args` in the container at
    /// `dir`, with every variable of `env` (set on the engine's process
    /// too, and named with `--env NAME`, so values never show on a
    /// command line).
    pub fn exec<V: AsRef<std::ffi::OsStr>>(
        &self,
        program: &str,
        args: &[String],
        dir: &Path,
        env: &[(String, V)],
    ) -> crate::leader::Command {
        let mut command = crate::leader::Command::new(&self.containers.engine.program);
        command.args(["exec", "-i", "-w"]).arg(dir);
        let keys = env
            .iter()
            .map(|(k, _)| k)
            .chain(self.env.iter().map(|(k, _)| k));
        for key in keys {
            command.arg("--env").arg(key);
        }
        command
            .arg(&self.name)
            .arg(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Removes the container, with whatever still runs in it.
    pub async fn remove(mut self) {
        self.removed = true;
        let args = ["rm", "-f", "-t", "0", &self.name].map(String::from);
        match self.containers.run(&args).await {
            Ok(_) => tracing::debug!(container = %self.name, "container removed"),
            Err(why) => tracing::warn!(container = %self.name, "container not removed: {why}"),
        }
    }
}

impl Drop for JobContainer {
    /// A container not removed on the way (a task cut short) is removed
    /// on a thread of its own: no job leaves one behind.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let program = self.containers.engine.program.clone();
        let name = self.name.clone();
        std::thread::spawn(move || {
            let _ = std::process::Command::new(program)
                .args(["rm", "-f", "-t", "0", &name])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        });
    }
}

/// The name of an attempt's container:
/// `aam-WORKER-LABELHASH-SESSION-INDEX-ATTEMPT`, in the characters engines
/// take; the hash of the worker's label (its name and worktree root) keeps
/// two workers of one name on a host (two managers' `s1`) apart.
pub fn container_name(containers: &Containers, session: &str, index: u32, attempt: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let hash = containers
        .label
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let worker = clean(&containers.worker);
    format!(
        "aam-{worker}-{:08x}-{}-{index}-{attempt}",
        hash as u32,
        clean(session)
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Containers, Engine, EngineKind};
    use std::path::Path;

    #[test]
    fn container_names_take_only_what_engines_allow_and_tell_roots_apart() {
        let engine = Engine {
            program: "podman".into(),
            kind: EngineKind::Podman,
        };
        let one = Containers::new(engine.clone(), "box.1 x", Some(Path::new("/a")));
        let other = Containers::new(engine, "box.1 x", Some(Path::new("/b")));
        let name = super::container_name(&one, "s4", 2, 1);
        assert!(
            name.starts_with("aam-box-1-x-") && name.ends_with("-s4-2-1"),
            "{name}"
        );
        assert_ne!(name, super::container_name(&other, "s4", 2, 1));
    }
}
