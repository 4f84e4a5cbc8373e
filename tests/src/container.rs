//! Containers for the tests of `isolation = "container"`: podman must run
//! here (`.ci/run` installs and configures it), and the test image is
//! built offline from Debian's busybox-static (`podman import` of a root
//! holding busybox and its applets), once per machine.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The test image: busybox's shell, wget, timeout and the rest.
pub const BUSYBOX_IMAGE: &str = "localhost/aam-test-busybox:latest";

/// Fails the test with a clear message unless podman runs here.
pub fn require_podman() {
    let runs = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        runs,
        "container tests need podman (Debian's podman with runtime runc and cgroup manager cgroupfs; .ci/run installs it)"
    );
}

/// The busybox test image, imported unless it exists.
pub fn busybox_image() -> &'static str {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        require_podman();
        let exists = Command::new("podman")
            .args(["image", "exists", BUSYBOX_IMAGE])
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            import_busybox();
        }
    });
    BUSYBOX_IMAGE
}

fn import_busybox() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "the container tests' image is built from /bin/busybox (Debian's busybox-static)"
    );
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["tmp", "etc", "proc", "sys", "dev", "run"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    let applets = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    let tar = root.path().with_extension("tar");
    let packed = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success(), "packing the busybox root");
    // Another test process may import it meanwhile: the same image either way.
    let out = Command::new("podman")
        .arg("import")
        .arg(&tar)
        .arg(BUSYBOX_IMAGE)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tar);
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes, when dropped, the containers a worker of the test made (one
/// a failed test's killed worker left running, say).
pub struct Sweep {
    pub worker: String,
    pub worktrees: std::path::PathBuf,
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let left = containers_of(&self.worker, &self.worktrees);
        if !left.is_empty() {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-t", "0"])
                .args(&left)
                .output();
        }
    }
}

/// The containers (any state) a worker made: those labelled with its
/// name and worktree root.
pub fn containers_of(worker: &str, worktrees: &Path) -> Vec<String> {
    let filter = format!("label=aam.worker={worker}:{}", worktrees.display());
    let out = Command::new("podman")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter", &filter])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
