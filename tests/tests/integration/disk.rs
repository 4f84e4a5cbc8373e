//! Disk faults: a data directory that fills up while sessions are submitted
//! (a small tmpfs the test mounts, so it needs root), a store log damaged
//! between intact entries, and the modes of the files the manager and
//! `aam up` keep.

use aam_tests::{aam_here, poll, Cluster, CmdOutput, Down, Scratch, WAIT_FOR_GATE};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted for a test; unmounted when dropped (lazily, so a
/// process still holding files on it does not keep it mounted).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("creating the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Tmpfs(dir.to_path_buf()),
            Ok(out) => panic!(
                "this test mounts a tmpfs as the manager's data directory, which needs root and \
                 tmpfs; `mount -t tmpfs` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "this test mounts a tmpfs as the manager's data directory, which needs root and \
                 tmpfs; running `mount` failed: {e}"
            ),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file until about `leave` bytes are free.
fn ballast(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).expect("creating the ballast");
    let chunk = vec![0u8; 64 * 1024];
    while aam_store::files::available_bytes(dir).unwrap() > leave + chunk.len() as u64 {
        file.write_all(&chunk).expect("writing the ballast");
    }
    path
}

/// Submits a one-job session named `name` with 8 KB in its spec. Its job
/// notes `SESSION ATTEMPT` in the file `started`, waits at the gate
/// `gate`, then notes the same in `ended`.
fn submit(c: &Cluster, name: &str) -> CmdOutput {
    let note = |file: &str| {
        format!(
            "echo \"$AAM_SESSION_ID $AAM_ATTEMPT\" >> {}",
            c.path(file).display()
        )
    };
    let script = format!("{}; {WAIT_FOR_GATE}; {}", note("started"), note("ended"));
    let file = c.write(
        &format!("{name}.json"),
        &json!({"name": name, "jobs": [{
            "name": "j",
            "command": ["sh", "-c", script],
            "env": {"PAD": "x".repeat(8000), "GATE": c.gate("gate").env()},
        }]})
        .to_string(),
    );
    c.aam(&["submit", "--json", file.to_str().unwrap()])
}

/// The `SESSION ATTEMPT` lines jobs noted in `file`.
fn noted(c: &Cluster, file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(c.path(file)).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

/// The sessions the manager lists, as (id, name), and whether each succeeded.
fn listed(c: &Cluster) -> (BTreeSet<(String, String)>, bool) {
    let list = c.aam(&["sessions", "--json"]).expect_code(0).json();
    let list = list.as_array().expect("a list").clone();
    let all_succeeded = list.iter().all(|s| s["status"] == "succeeded");
    let sessions = list
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().into(),
                s["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    (sessions, all_succeeded)
}

/// Submits until a submission fails; returns the acknowledged sessions and
/// the failure.
fn submit_until_refused(c: &Cluster) -> (BTreeSet<(String, String)>, CmdOutput) {
    let mut acked = BTreeSet::new();
    for i in 0..400 {
        let name = format!("before-{i}");
        let out = submit(c, &name);
        if out.code != 0 {
            return (acked, out);
        }
        acked.insert((out.json()["session"].as_str().unwrap().to_string(), name));
    }
    panic!("the disk never filled\n{}", c.logs());
}

fn assert_refused_for_a_full_disk(out: &CmdOutput) {
    assert_eq!(out.code, 3, "{}", out.dump());
    assert!(
        out.stderr
            .contains("aam: the manager could not store this: DISK FULL"),
        "{}",
        out.dump()
    );
}

#[test]
fn a_full_disk_fails_submissions_loudly_loses_nothing_acknowledged_and_writes_resume() {
    let mut c = Cluster::new();
    let _tmpfs = Tmpfs::mount(&c.data_dir(), "16m");
    c.start_manager();
    c.start_worker("w1", 2);
    let ballast = ballast(&c.data_dir(), aam_store::RESERVE_BYTES + 400 * 1024);

    // Two jobs run (held at the gate), the others wait for a slot.
    let (mut acked, refused) = submit_until_refused(&c);
    assert!(acked.len() >= 3, "only {} sessions fitted", acked.len());
    assert_refused_for_a_full_disk(&refused);
    // Reads work, changes are refused at once, nothing refused is listed.
    assert_eq!(listed(&c).0, acked, "\n{}", c.logs());
    assert_refused_for_a_full_disk(&submit(&c, "while-full"));
    let (first, _) = acked.first().unwrap();
    c.aam(&["status", first]).expect_code(0);
    // The running jobs end meanwhile: the store cannot take their ends, so
    // the worker keeps them (they still show as running).
    c.gate("gate").open();
    let ended = poll(Duration::from_secs(20), || {
        (noted(&c, "ended").len() == 2).then_some(())
    });
    assert!(
        ended.is_some(),
        "the running jobs did not end\n{}",
        c.logs()
    );
    let running = c.aam(&["sessions", "--json"]).expect_code(0).json();
    let running = running
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["counts"]["running"] == 1);
    assert_eq!(running.count(), 2, "\n{}", c.logs());

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(ballast).unwrap();
    let mut tries = 0;
    let resumed = poll(Duration::from_secs(20), || {
        tries += 1;
        let name = format!("after-{tries}");
        let out = submit(&c, &name);
        (out.code == 0).then(|| (out.json()["session"].as_str().unwrap().to_string(), name))
    });
    acked.insert(resumed.unwrap_or_else(|| panic!("writes never resumed\n{}", c.logs())));
    // Every acknowledged session runs to its end, each job once: the ends
    // the worker kept reach the store now.
    let settled = poll(Duration::from_secs(30), || {
        let (sessions, succeeded) = listed(&c);
        (sessions == acked && succeeded).then_some(())
    });
    assert!(settled.is_some(), "{:?}\n{}", listed(&c), c.logs());
    let once: BTreeSet<String> = acked.iter().map(|(id, _)| format!("{id} 1")).collect();
    let mut started = noted(&c, "started");
    started.sort();
    assert_eq!(started, once.iter().cloned().collect::<Vec<_>>());

    // And all of it, nothing more, survives kill -9 (replayed from the log).
    c.kill_manager();
    c.start_manager();
    assert_eq!(listed(&c), (acked, true), "\n{}", c.logs());
}

/// The store log's frames: (offset, body).
fn frames(log: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= log.len() {
        let len = u32::from_be_bytes(log[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, &log[at + 8..at + 8 + len]));
        at += 8 + len;
    }
    out
}

#[test]
fn a_damaged_log_stops_the_manager_and_recover_brings_back_every_intact_session() {
    let mut c = Cluster::with_manager();
    let names: Vec<String> = (0..6).map(|i| format!("kept-{i}")).collect();
    let mut ids = Vec::new();
    for name in &names {
        let out = submit(&c, name).expect_code(0);
        ids.push(out.json()["session"].as_str().unwrap().to_string());
    }
    // kill -9: a clean stop would checkpoint the log into sled and empty it.
    c.kill_manager();
    let log_path = c.data_dir().join("store.wal");
    let mut log = std::fs::read(&log_path).unwrap();
    let (offset, body_len) = frames(&log)
        .into_iter()
        .find(|(_, body)| body.windows(6).any(|w| w == b"kept-2"))
        .map(|(at, body)| (at, body.len()))
        .expect("the frame of kept-2");
    assert!(
        offset > 0 && offset + 8 + body_len < log.len(),
        "not a middle frame"
    );
    log[offset + 8 + body_len / 2] ^= 0x55;
    std::fs::write(&log_path, &log).unwrap();

    let refused = c.run_manager(&[]);
    assert_ne!(refused.code, 0, "{}", refused.dump());
    for needle in [
        log_path.display().to_string(),
        format!("damaged at byte {offset}"),
        "aam-manager --recover".to_string(),
    ] {
        assert!(
            refused.stderr.contains(&needle),
            "{needle}\n{}",
            refused.dump()
        );
    }
    assert_eq!(
        std::fs::read(&log_path).unwrap(),
        log,
        "the refusal changed the log"
    );

    let recovered = c.run_manager(&["--recover"]).expect_code(0);
    assert!(
        recovered
            .stdout
            .contains(&format!("could not read bytes {offset}..")),
        "{}",
        recovered.dump()
    );
    let kept_aside: Vec<PathBuf> = std::fs::read_dir(c.data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("store.wal.damaged-"))
        .collect();
    assert_eq!(kept_aside.len(), 1, "{}", recovered.dump());
    assert_eq!(std::fs::read(&kept_aside[0]).unwrap(), log);

    c.start_manager();
    let expected: BTreeSet<(String, String)> = ids
        .iter()
        .cloned()
        .zip(names.iter().cloned())
        .filter(|(_, name)| name != "kept-2")
        .collect();
    assert_eq!(listed(&c).0, expected, "\n{}", c.logs());
    for (id, _) in &expected {
        assert_eq!(c.status(id)["counts"]["queued"], 1);
    }
}

/// Mode bits of a path.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file and directory under `dir` (itself included) whose mode lets
/// group or others in.
fn open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut open = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if mode(&path) & 0o077 != 0 {
            open.push((path.clone(), mode(&path)));
        }
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    open
}

#[test]
fn the_manager_keeps_its_files_private_and_warns_about_an_open_data_directory() {
    let c = Cluster::with_manager();
    submit(&c, "private").expect_code(0);
    let dir = c.data_dir();
    assert_eq!(mode(&dir), 0o700);
    for file in ["store.wal", "manager.addr"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(open_to_others(&dir), vec![]);

    let mut open = Cluster::new();
    std::fs::create_dir_all(open.data_dir()).unwrap();
    std::fs::set_permissions(open.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    open.start_manager();
    let log = open.manager.as_ref().unwrap().log_text();
    assert!(
        log.contains("is open to group or others (mode 0755)"),
        "{log}"
    );
}

#[test]
fn aam_up_keeps_dot_aam_private_and_warns_about_a_token_others_can_read() {
    let dir = Scratch::new();
    let _down = Down(dir.path());
    aam_here(dir.path(), &["up", "--slots", "1"]).expect_code(0);
    std::fs::write(
        dir.path().join("one.toml"),
        "name = \"one\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    aam_here(dir.path(), &["submit", "one.toml", "--wait"]).expect_code(0);
    let local = dir.path().join(".aam");
    assert_eq!(mode(&local), 0o700);
    assert_eq!(open_to_others(&local), vec![]);
    aam_here(dir.path(), &["down"]).expect_code(0);

    let token = local.join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    aam_here(dir.path(), &["up", "--slots", "1"]).expect_code(0);
    let log = std::fs::read_to_string(local.join("aam.log")).unwrap();
    // The background manager runs in `dir`, with `.aam` as its data directory.
    let warning = "token file .aam/token is readable by group or others (mode 0644)";
    assert!(log.contains(warning), "{warning}\n{log}");
}
