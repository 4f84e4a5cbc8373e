//! The podman kind: each worker a container of the provider's image on
//! this host, on its network (`host` by default, so a worker reaches a
//! manager on loopback), removed when it exits (`--rm`). Containers carry
//! the labels `aam.install` (this manager's install id) and `aam.provider`,
//! which is how `list` finds everything this install launched.

use super::config::Provider;
use super::engine::{
    engine_name, run_command, worker_of, Engine, EngineFuture, Listed, Phase, WorkerSpec,
};

/// A podman provider: its definition and where it runs.
pub struct Podman {
    pub def: Provider,
    pub install: String,
    pub image: String,
    pub network: String,
    /// The engine's executable (`podman`, or `docker`).
    pub engine: String,
    /// A remote podman service (`podman --url`).
    pub url: Option<String>,
}

impl Podman {
    /// Runs `podman [--url URL] ARGS`.
    async fn podman(&self, args: Vec<String>, env: &[(&str, &str)]) -> Result<String, String> {
        let mut argv = Vec::with_capacity(args.len() + 2);
        if let Some(url) = &self.url {
            argv.extend(["--url".to_string(), url.clone()]);
        }
        argv.extend(args);
        run_command(&self.engine, &argv, env).await
    }

    /// The argv of `podman run` for one worker (the token goes in the
    /// environment, not in the argv every `ps` shows).
    pub fn run_args(&self, spec: &WorkerSpec<'_>) -> Vec<String> {
        let p = &self.def;
        let mut args: Vec<String> = ["run", "-d", "--rm", "--pull=never", "--name"]
            .map(String::from)
            .into();
        args.push(engine_name(&self.install, spec.worker));
        args.extend(["--label".into(), format!("aam.install={}", self.install)]);
        args.extend(["--label".into(), format!("aam.provider={}", p.name)]);
        args.extend(["--network".into(), self.network.clone()]);
        args.extend(["-e".into(), "AAM_TOKEN".into()]);
        args.extend(["-e".into(), format!("AAM_FINGERPRINT={}", spec.fingerprint)]);
        args.push(self.image.clone());
        args.push(p.worker_bin.clone());
        args.extend(super::worker_args(p, spec));
        args
    }
}

/// The engine's word for a container's state, as a phase.
fn phase(state: &str) -> Phase {
    match state {
        s if s.starts_with("running") || s.starts_with("up") => Phase::Running,
        s @ ("created" | "configured" | "initialized") => Phase::Pending(s.to_string()),
        s => Phase::Ended(s.to_string()),
    }
}

/// `NAME\tSTATE` lines of this install's containers.
pub fn parse_list(install: &str, text: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|l| {
            let (name, state) = l.split_once('\t')?;
            let name = name.trim();
            Some(Listed {
                handle: name.to_string(),
                worker: worker_of(install, name)?.to_string(),
                phase: phase(&state.trim().to_lowercase()),
            })
        })
        .collect()
}

impl Engine for Podman {
    fn launch<'a>(&'a self, spec: &'a WorkerSpec<'a>) -> EngineFuture<'a, String> {
        Box::pin(async move {
            self.podman(self.run_args(spec), &[("AAM_TOKEN", spec.token)])
                .await?;
            Ok(engine_name(&self.install, spec.worker))
        })
    }

    fn list(&self) -> EngineFuture<'_, Vec<Listed>> {
        Box::pin(async move {
            let args: Vec<String> = vec![
                "ps".into(),
                "-a".into(),
                "--filter".into(),
                format!("label=aam.install={}", self.install),
                "--filter".into(),
                format!("label=aam.provider={}", self.def.name),
                "--format".into(),
                "{{.Names}}\t{{.State}}".into(),
            ];
            let text = self.podman(args, &[]).await?;
            Ok(parse_list(&self.install, &text))
        })
    }

    fn status<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, Option<Listed>> {
        Box::pin(async move {
            let args: Vec<String> = vec![
                "ps".into(),
                "-a".into(),
                "--filter".into(),
                format!("name=^{handle}$"),
                "--format".into(),
                "{{.Names}}\t{{.State}}".into(),
            ];
            let text = self.podman(args, &[]).await?;
            Ok(parse_list(&self.install, &text).into_iter().next())
        })
    }

    fn stop<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let args = ["rm", "-f", "-t", "2", handle].map(String::from);
            self.podman(args.into(), &[]).await.map(drop)
        })
    }

    fn removes_ended(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_argv_names_labels_and_idles_and_keeps_the_token_out() {
        let p = super::super::config::providers(&[super::super::config::ProviderEntry {
            name: "local".into(),
            kind: "podman".into(),
            max_workers: Some(2),
            slots: Some(3),
            labels: [("pool".to_string(), "p".to_string())].into(),
            image: Some("img".into()),
            idle_timeout: Some("1s".into()),
            ..Default::default()
        }])
        .unwrap()
        .remove(0);
        let podman = Podman {
            def: p,
            install: "ab12".into(),
            image: "img".into(),
            network: "host".into(),
            engine: "podman".into(),
            url: None,
        };
        let spec = WorkerSpec {
            worker: "local-1",
            manager: "127.0.0.1:7410",
            fingerprint: "AA:BB",
            token: "secret-token",
        };
        let args = podman.run_args(&spec).join(" ");
        assert!(
            args.starts_with("run -d --rm --pull=never --name aam-ab12-local-1"),
            "{args}"
        );
        for part in [
            "--label aam.install=ab12",
            "--label aam.provider=local",
            "--network host",
            "-e AAM_TOKEN ",
            "img aam-worker --manager 127.0.0.1:7410 --name local-1 --slots 3",
            "--label pool=p",
            "--once-idle --idle-timeout 1000ms",
        ] {
            assert!(args.contains(part), "{part} in {args}");
        }
        assert!(!args.contains("secret-token"), "{args}");
    }

    #[test]
    fn the_listing_reads_names_and_states() {
        let listed = parse_list(
            "x",
            "aam-x-p-1\trunning\naam-x-p-2\texited\naam-y-p-3\trunning\naam-x-p-4\tcreated\n\n",
        );
        assert_eq!(listed.len(), 3, "another install's container is not ours");
        assert_eq!(
            (listed[0].worker.as_str(), &listed[0].phase),
            ("p-1", &Phase::Running)
        );
        assert_eq!(listed[1].phase, Phase::Ended("exited".into()));
        assert_eq!(listed[2].phase, Phase::Pending("created".into()));
    }
}
