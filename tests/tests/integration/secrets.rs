//! Secrets stay out of records (DESIGN.md invariant 9): an agent's
//! `secret_env` value lives only in the worker's environment and the job's,
//! a batch's `OPENAI_API_KEY` reaches the job but no view or log, a
//! template's `--api-key` value is hidden from `aam agents`, the token is
//! never logged, and a worker lacking a `secret_env` variable fails the
//! job at once, naming it.

use aam_tests::Cluster;
use serde_json::json;

const BATCH_KEY: &str = "sk-live-123";
const WORKER_SECRET: &str = "worker-secret-789";
const TEMPLATE_KEY: &str = "sk-argv-456";

#[test]
fn secrets_reach_the_job_and_no_view_log_or_store() {
    let mut c = Cluster::new();
    c.debug_log = true;
    // Writes both variables to the file its prompt names; prints nothing.
    let script = r#"printf '%s|%s' "$OPENAI_API_KEY" "$AAM_TEST_SECRET" > "$1""#;
    c.manager_config = Some(c.write(
        "aam.toml",
        &format!(
            concat!(
                "[agents.peek]\n",
                "command = [\"sh\", \"-c\", '''{script}''', \"sh\", \"{{prompt}}\", \"--api-key\", \"{key}\"]\n",
                "secret_env = [\"AAM_TEST_SECRET\"]\n",
                "[agents.absent]\n",
                "command = [\"true\"]\n",
                "secret_env = [\"AAM_TEST_ABSENT\"]\n",
            ),
            script = script,
            key = TEMPLATE_KEY,
        ),
    ));
    c.worker_env = vec![("AAM_TEST_SECRET".into(), WORKER_SECRET.into())];
    c.start_manager();
    c.start_worker("w", 2);

    let seen = c.path("seen.txt");
    let session = c.submit_json(&json!({"name": "secrets", "jobs": [
        { "name": "peek", "agent": "peek", "prompt": seen.to_str().unwrap(),
          "env": { "OPENAI_API_KEY": BATCH_KEY } },
        { "name": "absent", "agent": "absent", "prompt": "p" },
    ]}));
    let done = c.poll_status(&session, "both jobs ended", |s| s["jobs_finished"] == 2);
    let job = |name: &str| crate::job(&done, name).clone();
    assert_eq!(job("peek")["status"], "succeeded", "{done}\n{}", c.logs());
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("{BATCH_KEY}|{WORKER_SECRET}"),
        "the job sees the batch's value and the worker's"
    );
    assert_eq!(job("absent")["status"], "failed", "{done}");
    let reason = job("absent")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("secret_env: AAM_TEST_ABSENT is not set on worker w"),
        "{reason}"
    );

    let agents = c.aam(&["agents", "--json"]).expect_code(0);
    let peek = agents.json()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "peek")
        .cloned()
        .unwrap();
    let command = peek["command"].as_array().unwrap();
    assert_eq!(command[command.len() - 2..], ["--api-key", "***"], "{peek}");
    let agents = agents.stdout;
    let shown = [
        (
            "status --json",
            c.aam(&["status", &session, "--json"]).stdout,
        ),
        (
            "results --json",
            c.aam(&["results", &session, "--json"]).stdout,
        ),
        ("results", c.aam(&["results", &session]).stdout),
        ("status", c.aam(&["status", &session]).stdout),
        ("agents --json", agents),
        ("agents", c.aam(&["agents"]).stdout),
        ("manager log", read(&c.path("manager.log"))),
        ("worker log", read(&c.path("worker-w.log"))),
    ];
    for (what, text) in &shown {
        for secret in [BATCH_KEY, WORKER_SECRET, TEMPLATE_KEY, c.token.as_str()] {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
    }

    // The worker's secret never reached the manager: no byte of the store.
    let found = grep_dir(&c.data_dir(), WORKER_SECRET.as_bytes());
    assert!(found.is_empty(), "{WORKER_SECRET} is stored in {found:?}");
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files under `dir` whose bytes contain `needle`.
fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                stack.push(entry.path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}
