//! The podman kind: each worker a container of the provider's image on
//! this host, on its network (`host` by default, so a worker reaches a
//! manager on loopback), removed when it exits (`--rm`). Containers carry
//! the labels `aam.install` (this manager's install id) and `aam.provider`,
//! which is how `list` finds everything this install launched.

use super::config::Provider;
use std::process::Stdio;
use tokio::process::Command;

/// A container as `list` sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub name: String,
    pub running: bool,
    /// The engine's word for its state (`running`, `exited`, `created`).
    pub state: String,
}

/// How a worker is started.
pub struct Launch<'a> {
    pub install: &'a str,
    pub container: &'a str,
    pub worker: &'a str,
    pub manager: &'a str,
    pub fingerprint: &'a str,
    pub token: &'a str,
}

/// Runs the engine: its stdout, or the last line of its stderr as the
/// error (`podman run: ...`).
async fn run(engine: &str, args: &[String]) -> Result<String, String> {
    run_with(engine, args, &[]).await
}

async fn run_with(engine: &str, args: &[String], env: &[(&str, &str)]) -> Result<String, String> {
    let out = Command::new(engine)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{engine}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let said = String::from_utf8_lossy(&out.stderr);
        let line = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!("{engine} {}: {}", args[0], line.trim()))
    }
}

/// The argv of `podman run` for one worker (the token goes in the
/// environment, not in the argv every `ps` shows).
pub fn run_args(p: &Provider, image: &str, network: &str, l: &Launch<'_>) -> Vec<String> {
    let mut args: Vec<String> = ["run", "-d", "--rm", "--pull=never", "--name"]
        .map(String::from)
        .into();
    args.push(l.container.to_string());
    args.extend(["--label".into(), format!("aam.install={}", l.install)]);
    args.extend(["--label".into(), format!("aam.provider={}", p.name)]);
    args.extend(["--network".into(), network.to_string()]);
    args.extend(["-e".into(), "AAM_TOKEN".into()]);
    args.extend(["-e".into(), format!("AAM_FINGERPRINT={}", l.fingerprint)]);
    args.push(image.to_string());
    args.push(p.worker_bin.clone());
    args.extend(["--manager".into(), l.manager.to_string()]);
    args.extend(["--name".into(), l.worker.to_string()]);
    args.extend(["--slots".into(), p.slots.to_string()]);
    for (k, v) in &p.labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args.push("--once-idle".into());
    args.extend(["--idle-timeout".into(), format!("{}ms", p.idle_timeout_ms)]);
    args
}

pub async fn launch(
    engine: &str,
    p: &Provider,
    image: &str,
    network: &str,
    l: &Launch<'_>,
) -> Result<(), String> {
    let args = run_args(p, image, network, l);
    run_with(engine, &args, &[("AAM_TOKEN", l.token)])
        .await
        .map(drop)
}

/// Every container of this install's provider `provider`.
pub async fn list(engine: &str, install: &str, provider: &str) -> Result<Vec<Listed>, String> {
    let args: Vec<String> = vec![
        "ps".into(),
        "-a".into(),
        "--filter".into(),
        format!("label=aam.install={install}"),
        "--filter".into(),
        format!("label=aam.provider={provider}"),
        "--format".into(),
        "{{.Names}}\t{{.State}}".into(),
    ];
    let text = run(engine, &args).await?;
    Ok(parse_list(&text))
}

/// `NAME\tSTATE` lines.
pub fn parse_list(text: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|l| {
            let (name, state) = l.split_once('\t')?;
            let state = state.trim().to_lowercase();
            Some(Listed {
                name: name.trim().to_string(),
                running: state.starts_with("running") || state.starts_with("up"),
                state,
            })
        })
        .collect()
}

pub async fn stop(engine: &str, container: &str) -> Result<(), String> {
    run(engine, &["rm".into(), "-f".into(), container.into()])
        .await
        .map(drop)
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
        let l = Launch {
            install: "ab12",
            container: "aam-ab12-local-1",
            worker: "local-1",
            manager: "127.0.0.1:7410",
            fingerprint: "AA:BB",
            token: "secret-token",
        };
        let args = run_args(&p, "img", "host", &l).join(" ");
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
        let listed = parse_list("aam-x-p-1\trunning\naam-x-p-2\texited\n\n");
        assert_eq!(listed.len(), 2);
        assert!(listed[0].running && !listed[1].running);
        assert_eq!(listed[1].state, "exited");
    }
}
