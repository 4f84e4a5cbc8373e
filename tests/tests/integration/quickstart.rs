//! The README's first command works from a fresh data directory.

use aam_tests::{bin, run_command, workspace_root};
use std::process::Command;
use std::time::Duration;

#[test]
fn quickstart_runs_from_a_fresh_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("aam"));
    cmd.args(["run", "examples/quickstart.toml", "--data-dir"])
        .arg(data.path().join("aam"))
        .env_remove("AAM_CONFIG")
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
}
