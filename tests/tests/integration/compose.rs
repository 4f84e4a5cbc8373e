//! Issue 17, deployments that run: `deploy/Dockerfile`'s `prebuilt` target
//! builds offline (this build's binaries as `target/release/*` in the
//! context, a local `debian:bookworm-slim` made by debootstrap) and
//! `deploy/compose.yaml` comes up under `podman-compose up -d --no-build`:
//! a manager and two workers; `aam` inside the manager's container finds
//! its token and certificate; a session from the host runs; a killed
//! worker container's job is requeued and succeeds; a worker cut off its
//! network leaves the manager's list and comes back when reconnected.

use aam_tests::container::{debian_slim_image, require_podman};
use aam_tests::{bin, free_port, poll, run_command, workspace_root, CmdOutput};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "localhost/aam-deploy-test:latest";

/// A compose project of the repository's deploy files, taken down (with
/// its volume) when dropped.
struct Compose {
    project: String,
    context: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Compose {
    fn file(&self, name: &str) -> PathBuf {
        self.context.path().join("deploy").join(name)
    }

    fn compose(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new("podman-compose");
        cmd.arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(self.file("compose.yaml"))
            .arg("-f")
            .arg(self.file("compose.test.yaml"))
            .args(args)
            .envs(self.env.iter().cloned());
        run_command(cmd, Duration::from_secs(180))
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    fn podman(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new("podman");
        cmd.args(args);
        run_command(cmd, Duration::from_secs(60))
    }

    /// `aam ARGS` run inside the manager's container, as a user would.
    fn aam_inside(&self, args: &[&str]) -> CmdOutput {
        let manager = self.container("manager");
        let mut argv = vec!["exec", manager.as_str(), "aam"];
        argv.extend(args);
        self.podman(&argv)
    }

    /// The workers the manager lists as connected.
    fn workers(&self) -> Vec<String> {
        let listed = self.aam_inside(&["workers", "--json"]);
        if listed.code != 0 {
            return Vec::new();
        }
        listed.json().as_array().map_or(Vec::new(), |a| {
            a.iter()
                .filter_map(|w| w["name"].as_str().map(str::to_string))
                .collect()
        })
    }

    fn logs(&self) -> String {
        ["manager", "worker-1", "worker-2"]
            .iter()
            .map(|s| {
                let out = self.podman(&["logs", "--tail", "40", &self.container(s)]);
                format!("=== {s}\n{}{}", out.stdout, out.stderr)
            })
            .collect()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        // The containers first, with their anonymous volumes (the image's
        // VOLUME; podman-compose's `down -v` leaves those behind), then
        // the project's network and named volume.
        let label = format!("label=io.podman.compose.project={}", self.project);
        let left = Command::new("podman")
            .args(["ps", "-a", "-q", "--filter", &label])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in left.split_whitespace() {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-v", "-t", "0", id])
                .output();
        }
        let _ = std::panic::catch_unwind(|| self.compose(&["down", "-v", "-t", "1"]));
        let _ = Command::new("podman")
            .args(["volume", "rm", "-f", &format!("{}_aam-data", self.project)])
            .output();
        let _ = Command::new("podman")
            .args(["network", "rm", "-f", &format!("{}_default", self.project)])
            .output();
    }
}

/// Copies `from` to `to`, without its debug information (the test's
/// binaries are debug builds of several hundred MB).
fn copy_stripped(from: &Path, to: &Path) {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(from, to).unwrap();
    }
}

/// A build context laid out as the repository's, with this build's
/// binaries where `cargo build --release` puts them; the image built from
/// its `prebuilt` target.
fn build_prebuilt() -> tempfile::TempDir {
    debian_slim_image();
    let context = tempfile::Builder::new()
        .prefix("aam-deploy-")
        .tempdir()
        .unwrap();
    let deploy = context.path().join("deploy");
    let release = context.path().join("target/release");
    std::fs::create_dir_all(&deploy).unwrap();
    std::fs::create_dir_all(&release).unwrap();
    for name in ["Dockerfile", "Dockerfile.dockerignore", "compose.yaml"] {
        std::fs::copy(
            workspace_root().join("deploy").join(name),
            deploy.join(name),
        )
        .unwrap();
    }
    for name in ["aam", "aam-manager", "aam-worker"] {
        copy_stripped(&bin(name), &release.join(name));
    }
    // Something the ignore file must keep out of the context.
    std::fs::write(release.join("not-in-the-image"), "x").unwrap();
    let mut build = Command::new("podman");
    build
        .args([
            "build",
            "-f",
            "deploy/Dockerfile",
            "--target",
            "prebuilt",
            "--pull=never",
        ])
        .args(["-t", IMAGE, "."])
        .current_dir(context.path());
    run_command(build, Duration::from_secs(300)).expect_code(0);
    context
}

#[test]
fn the_compose_deployment_runs_a_session_requeues_a_killed_worker_and_survives_a_network_cut() {
    let _net = aam_tests::network_changes();
    require_podman();
    let context = build_prebuilt();
    let token = format!("compose-test-token-{}", std::process::id());
    let port = free_port();
    let project = format!("aamtest{}", std::process::id());
    let mut compose = Compose {
        project,
        context,
        env: vec![
            ("AAM_IMAGE".into(), IMAGE.into()),
            ("AAM_TOKEN".into(), token.clone()),
            ("AAM_PORT".into(), port.to_string()),
        ],
    };
    // The test's own settings: a short lease, so a cut-off worker is
    // noticed in seconds.
    std::fs::write(
        compose.file("compose.test.yaml"),
        "services:\n  manager:\n    environment:\n      AAM_LEASE_MS: \"3000\"\n",
    )
    .unwrap();
    // Nothing in the image but the three binaries from target/release.
    let listed = compose.podman(&["run", "--rm", IMAGE, "ls", "/usr/local/bin"]);
    assert_eq!(
        listed.stdout.split_whitespace().collect::<Vec<_>>(),
        ["aam", "aam-manager", "aam-worker"],
        "{}",
        listed.dump()
    );

    // The documented start: the manager, its fingerprint from its log,
    // then everything.
    compose
        .compose(&["up", "-d", "--no-build", "manager"])
        .expect_code(0);
    let fingerprint = poll(Duration::from_secs(60), || {
        let logs = compose.podman(&["logs", &compose.container("manager")]);
        let text = format!("{}{}", logs.stdout, logs.stderr);
        text.lines()
            .find_map(|l| l.split("fingerprint ").nth(1))
            .map(|f| f.split_whitespace().next().unwrap_or("").to_string())
            .filter(|f| f.contains(':'))
    })
    .unwrap_or_else(|| panic!("the manager logged no fingerprint\n{}", compose.logs()));
    compose
        .env
        .push(("AAM_FINGERPRINT".into(), fingerprint.clone()));
    compose.compose(&["up", "-d", "--no-build"]).expect_code(0);
    // `aam` inside the manager's container finds its token and certificate.
    let both = poll(Duration::from_secs(90), || {
        let mut w = compose.workers();
        w.sort();
        (w == ["worker-1", "worker-2"]).then_some(w)
    });
    assert!(
        both.is_some(),
        "two workers never listed\n{}",
        compose.logs()
    );

    // From the host, pinning the fingerprint.
    let aam = |args: &[&str]| {
        let mut cmd = Command::new(bin("aam"));
        cmd.args(args)
            .env("AAM_MANAGER", format!("127.0.0.1:{port}"))
            .env("AAM_TOKEN", &token)
            .env("AAM_FINGERPRINT", &fingerprint)
            .env_remove("AAM_CA")
            .env_remove("AAM_CONFIG")
            .env_remove("AAM_TOKEN_FILE");
        run_command(cmd, Duration::from_secs(120))
    };
    let batch = compose.context.path().join("batch.json");
    std::fs::write(
        &batch,
        json!({ "name": "in-compose", "jobs": [
            { "name": "long", "command": ["sh", "-c", "sleep 4; echo long ran in $(hostname)"] },
        ]})
        .to_string(),
    )
    .unwrap();
    let submitted = aam(&["submit", batch.to_str().unwrap(), "--json"]).expect_code(0);
    let session = submitted.json()["session"].as_str().unwrap().to_string();
    let status = |session: &str| aam(&["status", session, "--json"]).expect_code(0).json();
    let first = poll(Duration::from_secs(60), || {
        let s = status(&session);
        (s["jobs"][0]["status"] == "running")
            .then(|| s["jobs"][0]["worker"].as_str().unwrap().to_string())
    })
    .unwrap_or_else(|| panic!("the job never started\n{}", compose.logs()));
    // Its worker's container is killed: the job is requeued, and succeeds.
    compose
        .podman(&["kill", &compose.container(&first)])
        .expect_code(0);
    aam(&["wait", &session, "--timeout", "120"]).expect_code(0);
    let s = status(&session);
    let job = &s["jobs"][0];
    assert_eq!(
        (&job["status"], &job["attempts"]),
        (&json!("succeeded"), &json!(2)),
        "{s}"
    );
    assert_eq!(job["attempt_history"][0]["worker"], json!(first), "{s}");

    // A worker cut off its network leaves the list, and comes back.
    let net = format!("{}_default", compose.project);
    let other = if first == "worker-1" {
        "worker-2"
    } else {
        "worker-1"
    };
    poll(Duration::from_secs(60), || {
        compose.workers().contains(&other.to_string()).then_some(())
    })
    .unwrap_or_else(|| panic!("{other} is not connected\n{}", compose.logs()));
    compose
        .podman(&["network", "disconnect", &net, &compose.container(other)])
        .expect_code(0);
    poll(Duration::from_secs(30), || {
        (!compose.workers().contains(&other.to_string())).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{other} was still listed after its network was cut\n{}",
            compose.logs()
        )
    });
    compose
        .podman(&["network", "connect", &net, &compose.container(other)])
        .expect_code(0);
    poll(Duration::from_secs(90), || {
        compose.workers().contains(&other.to_string()).then_some(())
    })
    .unwrap_or_else(|| panic!("{other} did not come back\n{}", compose.logs()));
}
