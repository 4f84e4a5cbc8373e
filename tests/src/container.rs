//! Containers for the tests of `isolation = "container"`: podman must run
//! here (`.ci/run` installs and configures it), and the test image is
//! built offline from Debian's busybox-static (`podman import` of a root
//! holding busybox and its applets), once per machine; the worker image
//! adds this build's `aam-worker` for the providers' tests; Debian 12 from
//! debootstrap stands in for `debian:bookworm-slim` for the Dockerfile's.

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
    let root = tempfile::tempdir().unwrap();
    busybox_root(root.path());
    import(root.path(), BUSYBOX_IMAGE);
}

/// Lays out busybox and its applets under `root`.
fn busybox_root(root: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "the container tests' image is built from /bin/busybox (Debian's busybox-static)"
    );
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["tmp", "etc", "proc", "sys", "dev", "run"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    let applets = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
}

/// Packs `root` and imports it as the image `tag`.
fn import(root: &Path, tag: &str) {
    let tar = root.with_extension("tar");
    let packed = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success(), "packing the image root of {tag}");
    // Another test process may import it meanwhile: the same image either way.
    let out = Command::new("podman")
        .arg("import")
        .arg(&tar)
        .arg(tag)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tar);
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image that runs this build's `aam-worker` (at
/// `/usr/local/bin/aam-worker`, with the shared libraries it links, over
/// busybox), imported once per build of the binary: the providers' tests
/// launch workers from it.
pub fn worker_image() -> String {
    require_podman();
    let exe = crate::bin("aam-worker");
    let meta = std::fs::metadata(&exe).expect("the aam-worker binary");
    let stamp = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let tag = format!("localhost/aam-test-worker:{}-{stamp}", meta.len());
    let exists = Command::new("podman")
        .args(["image", "exists", &tag])
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return tag;
    }
    let root = tempfile::tempdir().unwrap();
    busybox_root(root.path());
    let at = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&at).unwrap();
    std::fs::copy(&exe, at.join("aam-worker")).unwrap();
    // Its libraries at the paths it looks for them (as `ldd` names them).
    let ldd = Command::new("ldd").arg(&exe).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let to = root.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(path, &to).unwrap_or_else(|e| panic!("copying {path}: {e}"));
    }
    import(root.path(), &tag);
    // Earlier builds' images go (one of ~165 MB per build otherwise).
    let old = Command::new("podman")
        .args([
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            WORKER_IMAGE,
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for image in old.split_whitespace().filter(|i| *i != tag) {
        let _ = Command::new("podman").args(["rmi", image]).output();
    }
    tag
}

const WORKER_IMAGE: &str = "localhost/aam-test-worker";

/// The image the Dockerfile's `prebuilt` target starts from, as a machine
/// without a registry has it: Debian 12 made by `debootstrap --variant=
/// minbase` (from the Debian mirror `AAM_DEBIAN_MIRROR`, default
/// deb.debian.org) and imported as `debian:bookworm-slim`, once per
/// machine.
pub fn debian_slim_image() -> &'static str {
    const TAG: &str = "docker.io/library/debian:bookworm-slim";
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        require_podman();
        let exists = Command::new("podman")
            .args(["image", "exists", TAG])
            .status()
            .is_ok_and(|s| s.success());
        if exists {
            return;
        }
        let mirror = std::env::var("AAM_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let root = tempfile::tempdir().unwrap();
        let out = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(root.path())
            .arg(&mirror)
            .output()
            .expect("debootstrap (Debian's debootstrap; .ci/run installs it)");
        assert!(
            out.status.success(),
            "debootstrap bookworm from {mirror}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        import(root.path(), TAG);
    });
    TAG
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
    containers_labelled(&format!("aam.worker={worker}:{}", worktrees.display()))
}

/// The containers (any state) carrying the label `key=value`.
pub fn containers_labelled(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let out = Command::new("podman")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter", &filter])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
