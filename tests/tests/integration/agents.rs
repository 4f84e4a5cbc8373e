//! Claude Code agent definitions: this repository's samples load (the
//! malformed one is reported with its path and skipped), `aam agents` lists
//! them with their source, and a job runs one through the `runner` template.

use aam_tests::{workspace_root, Cluster};
use serde_json::json;

#[test]
fn agent_definitions_load_list_and_run() {
    let mut c = Cluster::new();
    let dir = workspace_root().join("examples/agents");
    c.manager_config = Some(c.write(
        "aam.toml",
        &format!(
            "agents_dirs = [\"{}\"]\nrunner = [\"printf\", \"%s|%s|%s|%s\", \"{{agent}}\", \"{{tools}}\", \"{{system_prompt}}\", \"{{prompt}}\"]\n[agents.echo]\ncommand = [\"echo\", \"{{prompt}}\"]\ndescription = \"from the config\"\n",
            dir.display()
        ),
    ));
    c.start_manager();
    c.start_worker("w", 1);

    let listed = c.aam(&["agents", "--json"]).expect_code(0).json();
    let agents = listed["agents"].as_array().unwrap();
    let by_name = |n: &str| {
        agents
            .iter()
            .find(|a| a["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {listed}"))
    };
    let reviewer = by_name("code-reviewer");
    assert_eq!(
        reviewer["source"],
        dir.join("code-reviewer.md").display().to_string()
    );
    assert!(reviewer["description"]
        .as_str()
        .unwrap()
        .starts_with("Reviews a change"));
    assert_eq!(reviewer["model"], "sonnet");
    assert_eq!(reviewer["tools"], "Read,Grep,Glob,Bash");
    assert_eq!(by_name("test-writer")["tools"], "Read,Edit,Bash");
    assert_eq!(by_name("echo")["source"], "config");
    assert!(agents.iter().all(|a| a["name"] != "broken"));
    let problems = listed["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{listed}");
    assert_eq!(
        problems[0]["path"],
        dir.join("broken.md").display().to_string()
    );
    let table = c.aam(&["agents"]).expect_code(0).stdout;
    assert!(
        table.contains("code-reviewer") && table.contains("skipped"),
        "{table}"
    );

    let file = c.write(
        "review.json",
        &json!({"name": "review", "jobs": [
            { "name": "r", "agent": "code-reviewer", "prompt": "review HEAD" },
        ]})
        .to_string(),
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(0);
    let out = c
        .aam(&["logs", &format!("{session}/r")])
        .expect_code(0)
        .stdout;
    let parts: Vec<&str> = out.splitn(4, '|').collect();
    assert_eq!(parts[0], "code-reviewer");
    assert_eq!(parts[1], "Read,Grep,Glob,Bash");
    assert!(
        parts[2].starts_with("You are a careful code reviewer."),
        "{out}"
    );
    assert_eq!(parts[3], "review HEAD");
}
