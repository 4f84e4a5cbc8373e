//! `aam completions SHELL`: the scripts the real binary prints, loaded by a
//! real bash, complete aam's commands.

use aam_tests::{bin, run_command, CmdOutput, Scratch};
use std::process::Command;
use std::time::Duration;

fn run(program: &std::path::Path, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(cmd, Duration::from_secs(30))
}

#[test]
fn bash_loads_the_completions_and_completes_the_commands() {
    let dir = Scratch::new();
    let script = dir.path().join("aam.bash");
    let out = run(&bin("aam"), &["completions", "bash"]).expect_code(0);
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash offers after `aam s`: the function the script registers,
    // called as bash's completion calls it.
    let probe = format!(
        "source {}; COMP_WORDS=(aam s); COMP_CWORD=1; COMP_LINE='aam s'; COMP_POINT=5; \
         _aam aam s aam; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let offered = run("bash".as_ref(), &["-c", &probe]).expect_code(0);
    let mut words: Vec<&str> = offered.stdout.lines().collect();
    words.sort();
    // Not the hidden `__serve`.
    assert_eq!(
        words,
        ["say", "sessions", "status", "submit"],
        "{}",
        offered.dump()
    );

    for shell in ["zsh", "fish"] {
        let out = run(&bin("aam"), &["completions", shell]).expect_code(0);
        assert!(out.stdout.contains("mcp"), "{shell}: {}", out.dump());
    }
    run(&bin("aam"), &["completions", "tcsh"]).expect_code(2);
}
