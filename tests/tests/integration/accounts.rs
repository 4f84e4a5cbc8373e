//! Issue 16, accounts and the resume after a limit, against the real
//! Claude Code CLI: two accounts pointing at two stand-in model servers,
//! one of them at its usage limit (every job succeeds on the other without
//! waiting, `aam accounts` shows the first paused, the second's key comes
//! from the worker's own variable its `secret_env` names, and the
//! account's env shows nowhere); and five jobs held by a pause that start at most two at
//! a time once it ends.

use crate::job;
use aam_tests::http::{bearer, get};
use aam_tests::model_server::{epoch_secs, Message, ModelServer, Reply, When};
use aam_tests::{poll, Cluster};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Each attempt's outcome, in order.
fn outcomes(job: &Value) -> Vec<String> {
    job["attempt_history"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_history in {job}"))
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn jobs(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(
            |n| json!({ "name": n, "agent": "claude", "prompt": format!("job {n}"), "retries": 0 }),
        )
        .collect()
}

#[test]
fn a_limited_account_hands_its_jobs_to_the_other_without_waiting() {
    let (work, personal) = (ModelServer::start(), ModelServer::start());
    // The work account is at its plan's limit for an hour.
    let reset = UNIX_EPOCH + Duration::from_secs(epoch_secs(SystemTime::now()) + 3600);
    work.on(
        When::any(),
        Reply::plan_limit(&format!(
            "Claude AI usage limit reached|{}",
            epoch_secs(reset)
        )),
    );
    personal.on(When::any(), Message::answer("done on personal"));
    let mut c = Cluster::new();
    c.http = true;
    // The agent's own server is `personal`; each account names its own.
    let agent = c
        .claude_agent("claude", &personal)
        .line("accounts", "[\"work\", \"personal\"]");
    let config = format!(
        "[accounts.work]\nenv = {{ ANTHROPIC_BASE_URL = \"{}\" }}\n\
         [accounts.personal]\nenv = {{ ANTHROPIC_BASE_URL = \"{}\" }}\n\
         secret_env = {{ ANTHROPIC_API_KEY = \"PERSONAL_KEY\" }}\n",
        work.url(),
        personal.url()
    );
    // `personal`'s key is the worker's own PERSONAL_KEY: never in config.
    c.worker_env
        .push(("PERSONAL_KEY".into(), "sk-personal-from-worker".into()));
    c.start_with_agents(&config, &[agent], 4);
    let names = ["a", "b", "c", "d"];
    let session = c.submit_json(&json!({ "name": "accounts", "jobs": jobs(&names) }));
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);

    // Every job succeeded with no retry (each allows none): those that met
    // the limit on `work` moved to `personal` at once, an hour before the
    // reset.
    let s = c.status(&session);
    let mut limited = 0;
    for name in names {
        let j = job(&s, name);
        let history = outcomes(j);
        assert_eq!(history.last().map(String::as_str), Some("succeeded"), "{j}");
        if history.len() == 2 {
            assert_eq!(history[0], "limited", "{j}");
            limited += 1;
        } else {
            assert_eq!(history.len(), 1, "{j}");
        }
    }
    // The first four went two to each account (fewest running, ties in
    // the agent's order).
    assert_eq!(limited, 2, "{s}");
    assert_eq!(work.requests().len(), 2);
    assert_eq!(personal.requests().len(), 4);
    // Each account's requests carry its own key: `personal`'s from the
    // worker's variable its secret_env names.
    for r in personal.requests() {
        assert_eq!(r.header("x-api-key"), Some("sk-personal-from-worker"));
    }
    for r in work.requests() {
        assert_ne!(r.header("x-api-key"), Some("sk-personal-from-worker"));
    }

    let accounts = c.aam(&["accounts", "--json"]).expect_code(0).json();
    let by_name = |name: &str| {
        accounts
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .unwrap_or_else(|| panic!("no account {name} in {accounts}"))
            .clone()
    };
    let (w, p) = (by_name("work"), by_name("personal"));
    let until = humantime::parse_rfc3339(w["paused_until"].as_str().unwrap()).unwrap();
    assert_eq!(until, reset, "{w}");
    assert_eq!(p["paused_until"], Value::Null, "{p}");
    assert_eq!(
        (w["running"].clone(), p["running"].clone()),
        (json!([]), json!([]))
    );
    assert!(p["cost_usd"].as_f64().unwrap() > 0.0, "{p}");
    // The API answers what the CLI prints.
    let (header, token) = bearer(&c.token);
    let api = get(&c.url("/api/accounts"), &[(header, &token)])
        .expect(200)
        .body;
    assert_eq!(serde_json::from_str::<Value>(&api).unwrap(), accounts);
    let table = c.aam(&["accounts"]).expect_code(0).stdout;
    let work_line = table.lines().find(|l| l.starts_with("work")).unwrap();
    assert!(work_line.contains("paused until"), "{table}");

    // The account's env is in no status, result, log or audit record.
    let url = work.url();
    let shown = [
        c.aam(&["status", &session, "--json"]).expect_code(0).stdout,
        c.aam(&["results", &session, "--json"])
            .expect_code(0)
            .stdout,
        c.aam(&["logs", &format!("{session}/a")])
            .expect_code(0)
            .stdout,
        c.aam(&["audit", "--json"]).expect_code(0).stdout,
    ];
    for text in shown {
        assert!(!text.contains(&url), "{url} shown in {text}");
        assert!(!text.contains("sk-personal"), "the key shown in {text}");
    }
}

#[test]
fn after_a_reset_held_jobs_start_at_most_two_at_a_time() {
    let server = ModelServer::start();
    // The first request meets a rate limit with no reset the CLI passes
    // on: the group pauses for `limit_backoff`. Later answers are held
    // open until released, so the jobs started after the pause keep
    // running while the test looks.
    server
        .once(
            When::any(),
            Reply::rate_limited(SystemTime::now() + Duration::from_secs(1)),
        )
        .on(When::any(), Message::answer("ok").hold_after(1));
    let config = "limit_backoff = \"1s\"\nresume_burst = 2\nresume_interval = \"1h\"\n";
    let mut c = Cluster::new();
    let agent = c.claude_agent("claude", &server);
    // One slot: the first job runs alone and meets the limit.
    c.start_with_agents(config, &[agent], 1);
    let names = ["j1", "j2", "j3", "j4", "j5"];
    let session = c.submit_json(&json!({ "name": "burst", "jobs": jobs(&names) }));
    c.poll_status(&session, "the first job limited", |s| {
        names
            .iter()
            .any(|n| outcomes(job(s, n)).first().is_some_and(|o| o == "limited"))
    });
    // Room for all five now: only the resume holds them back.
    c.start_worker("w2", 4);
    let resuming = "resuming after a usage limit (claude): 2 started";
    let held = c.poll_status(&session, "two running and three held", |s| {
        let count = |f: &dyn Fn(&Value) -> bool| names.iter().filter(|n| f(job(s, n))).count();
        let running = count(&|j| j["status"] == "running");
        let waiting = count(&|j| {
            j["status"] == "queued"
                && j["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(resuming))
        });
        running == 2 && waiting == 3
    });
    // Both running jobs' requests reached the model, and no others.
    let started = poll(Duration::from_secs(20), || {
        (server.requests().len() == 3).then_some(())
    });
    assert!(
        started.is_some(),
        "requests: {}; {held}",
        server.requests().len()
    );
    let released_at = SystemTime::now();
    assert_eq!(
        server.requests().len(),
        3,
        "a third job started: {}",
        c.logs()
    );
    server.release();
    c.aam(&["wait", &session, "--timeout", "60"]).expect_code(0);
    // Once one ran through, the other three started at once.
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    assert!(requests[3..].iter().all(|r| r.received_at >= released_at));
    let s = c.status(&session);
    for name in names {
        assert_eq!(job(&s, name)["status"], "succeeded", "{s}");
    }
}
