//! The README's first command works from a fresh data directory.

use aam_tests::{bin, run_command, workspace_root};
use std::process::Command;
use std::time::Duration;

#[test]
fn quickstart_runs_from_a_fresh_data_dir() {
    let data = aam_tests::Scratch::new();
    let temp = data.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let mut cmd = Command::new(bin("aam"));
    cmd.args(["run", "examples/quickstart.toml", "--data-dir"])
        .arg(data.path().join("aam"))
        .env_remove("AAM_CONFIG")
        .env("TMPDIR", &temp)
        .current_dir(workspace_root());
    let out = run_command(cmd, Duration::from_secs(120)).expect_code(0);
    assert!(
        out.stdout.contains("# Results Summary: quickstart"),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout.contains("**Session ✅ succeeded**"),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout.contains("| ✅ | report | succeeded |"),
        "{}",
        out.dump()
    );
    assert!(
        data.path().join("aam/store").is_dir(),
        "the embedded manager kept no store"
    );
    let left: Vec<_> = std::fs::read_dir(&temp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "aam run left {left:?}");
}

#[test]
fn interrupting_aam_run_stops_its_jobs() {
    let dir = aam_tests::Scratch::new();
    let pidfile = dir.path().join("pid");
    let batch = dir.path().join("long.toml");
    std::fs::write(
        &batch,
        format!(
            "name = \"long\"\n[[jobs]]\nname = \"sleeper\"\ncommand = [\"sh\", \"-c\", \"echo $$ > {}; exec sleep 60\"]\n",
            pidfile.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin("aam"))
        .args(["run"])
        .arg(&batch)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid: i32 = aam_tests::poll(Duration::from_secs(30), || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .expect("the job never started");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = aam_tests::poll(Duration::from_secs(20), || child.try_wait().ok().flatten())
        .expect("aam run did not stop on SIGINT");
    assert_eq!(status.code(), Some(1));
    let gone = aam_tests::poll(Duration::from_secs(10), || {
        (!aam_tests::running(pid as u32)).then_some(())
    });
    assert!(gone.is_some(), "the job's process {pid} outlived aam run");
}

#[test]
fn every_example_batch_file_is_valid() {
    use aam_protocol::spec::{parse_batch, validate, Format, Limits};
    let dir = workspace_root().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().to_string();
        if !(name.ends_with(".toml") || name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let batch =
            parse_batch(&text, Format::for_path(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        validate(batch, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the example batch files in {}",
        dir.display()
    );
}

#[test]
fn the_preflight_example_runs_and_gives_a_verdict() {
    let data = aam_tests::Scratch::new();
    let mut cmd = Command::new(bin("aam"));
    cmd.args(["run", "examples/preflight.toml", "--data-dir"])
        .arg(data.path().join("aam"))
        .env_remove("AAM_CONFIG")
        .current_dir(workspace_root());
    let out = run_command(cmd, Duration::from_secs(300)).expect_code(0);
    assert!(out.stdout.contains("VERDICT: GO"), "{}", out.dump());
    assert!(
        out.stdout.contains("## ✅ tests — succeeded"),
        "{}",
        out.dump()
    );
}

#[test]
fn the_deploy_pipeline_example_waits_at_its_gate_until_approved() {
    let data = aam_tests::Scratch::new();
    let dir = data.path().join("aam");
    let out_path = data.path().join("run.out");
    let mut child = Command::new(bin("aam"))
        .args(["run", "examples/deploy-pipeline.toml", "--data-dir"])
        .arg(&dir)
        .env_remove("AAM_CONFIG")
        .current_dir(workspace_root())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let aam = |args: &[&str]| {
        let mut cmd = Command::new(bin("aam"));
        cmd.args(args)
            .env(
                "AAM_MANAGER",
                std::fs::read_to_string(dir.join("manager.addr"))
                    .unwrap()
                    .trim(),
            )
            .env(
                "AAM_TOKEN",
                std::fs::read_to_string(dir.join("token")).unwrap().trim(),
            )
            .env("AAM_CA", dir.join(aam_protocol::tls::CERT_FILE));
        run_command(cmd, Duration::from_secs(30))
    };
    let awaiting = aam_tests::poll(Duration::from_secs(60), || {
        if !dir.join("manager.addr").exists() {
            return None;
        }
        let out = aam(&["status", "s1", "--json"]);
        (out.code == 0 && out.stdout.contains("awaiting approval")).then_some(())
    });
    if awaiting.is_none() {
        let _ = child.kill();
        panic!("the pipeline never reached its gate");
    }
    aam(&["approve", "s1/approve-prod", "--comment", "ship it"]).expect_code(0);
    let status = aam_tests::poll(Duration::from_secs(60), || child.try_wait().ok().flatten());
    let out = std::fs::read_to_string(&out_path).unwrap();
    let Some(status) = status else {
        let _ = child.kill();
        panic!("aam run did not finish after the approval\n{out}");
    };
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("| ✅ | deploy-prod | succeeded |"), "{out}");
    assert!(out.contains("| ⏭ | not-approved | skipped |"), "{out}");
    assert!(out.contains(": ship it"), "{out}");
}
