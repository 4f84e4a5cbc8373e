//! The deployment files in `deploy/` (issue 17 point 5): every Kubernetes
//! manifest passes `kubernetes-validate --strict` (offline schemas) for the
//! oldest and the newest Kubernetes versions it knows, and a misspelt key
//! fails it, so the check is real; so do the objects `aam-manager render
//! kubernetes` prints for a provider.

use aam_tests::mcp::python;
use aam_tests::{bin, workspace_root};
use std::path::PathBuf;
use std::process::Command;

/// The venv's `kubernetes-validate`, installed from
/// `tests/deploy/requirements.txt` when missing.
fn validator() -> PathBuf {
    let python = python();
    let present = Command::new(&python)
        .args(["-c", "import kubernetes_validate"])
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let requirements = workspace_root().join("tests/deploy/requirements.txt");
        let installed = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .expect("running pip");
        assert!(
            installed.success(),
            "pip install -r {}",
            requirements.display()
        );
    }
    python.with_file_name("kubernetes-validate")
}

/// The oldest and newest Kubernetes versions the validator has schemas of.
fn version_range() -> (String, String) {
    // Installed first: the venv may hold the MCP SDK alone.
    let validator = validator();
    let python = validator.with_file_name("python");
    let out = Command::new(python)
        .args([
            "-c",
            "import kubernetes_validate.utils as u; v = sorted(set(u.all_versions()), \
             key=lambda s: tuple(map(int, s.split('.')))); print(v[0], v[-1])",
        ])
        .output()
        .expect("asking kubernetes_validate its versions");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace().map(String::from);
    let oldest = words.next().expect("an oldest version");
    let newest = words.next().expect("a newest version");
    (oldest, newest)
}

/// The manifests a user applies (not kustomization.yaml, nor the KEDA
/// example, whose kinds are not in Kubernetes' own schemas).
fn manifests() -> Vec<PathBuf> {
    let dir = workspace_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "kustomization.yaml" && !name.starts_with("keda-")
        })
        .collect();
    files.sort();
    files
}

fn validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_kubernetes_manifests_pass_strict_validation_for_the_oldest_and_newest_versions() {
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let (oldest, newest) = version_range();
    assert_ne!(oldest, newest);
    for version in [&oldest, &newest] {
        let (ok, text) = validate(version, &files);
        assert!(ok, "Kubernetes {version}:\n{text}");
        for file in &files {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                text.lines()
                    .any(|l| l.contains(&name) && l.contains("passed")),
                "{name} not validated for {version}:\n{text}"
            );
        }
    }
    // A misspelt key in a copy of the worker Deployment is refused.
    let dir = tempfile::tempdir().unwrap();
    let worker = workspace_root().join("deploy/kubernetes/worker-deployment.yaml");
    let text = std::fs::read_to_string(worker).unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, text.replacen("replicas:", "replicaz:", 1)).unwrap();
    let (ok, text) = validate(&newest, &[broken]);
    assert!(!ok, "a misspelt key passed:\n{text}");
}

#[test]
fn what_render_kubernetes_prints_passes_strict_validation() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aam.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"pods\"\nkind = \"kubernetes\"\nimage = \"registry.example/aam:1\"\n\
         manager_address = \"aam-manager:7410\"\nmax_workers = 4\nslots = 2\nnamespace = \"agents\"\n\
         active_deadline = \"8h\"\nlabels = { pool = \"k8s\" }\n\
         pod_template = \"\"\"\nnodeSelector: { pool: agents }\ntolerations:\n  - { key: dedicated, operator: Equal, value: agents, effect: NoSchedule }\n\
         containers:\n  - name: worker\n    resources: { requests: { cpu: '1', memory: 2Gi }, limits: { memory: 4Gi } }\n\"\"\"\n",
    )
    .unwrap();
    let out = Command::new(bin("aam-manager"))
        .args(["render", "kubernetes", "--config"])
        .arg(&config)
        .env_remove("AAM_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "kind: Job",
        "kind: Secret",
        "restartPolicy: Never",
        "backoffLimit: 0",
        "pool: agents",
        "memory: 4Gi",
    ] {
        assert!(text.contains(part), "{part} in:\n{text}");
    }
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &text).unwrap();
    let (oldest, newest) = version_range();
    for version in [&oldest, &newest] {
        let (ok, said) = validate(version, std::slice::from_ref(&rendered));
        assert!(ok, "Kubernetes {version}:\n{said}\n{text}");
    }
    // A config without a Kubernetes provider says so (exit 2).
    std::fs::write(&config, "").unwrap();
    let out = Command::new(bin("aam-manager"))
        .args(["render", "kubernetes", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no [[providers]] of kind = \"kubernetes\"")
    );
}
