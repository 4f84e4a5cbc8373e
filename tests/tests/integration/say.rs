//! Issue 16, say: messages to running agents, end to end through the real
//! manager, worker and `aam` binaries with the real Claude Code CLI
//! reading stream-json on its stdin, against the stand-in model server. A
//! message said while an agent works is answered after, in the same
//! conversation (the model sees the earlier turns), and is in the job's
//! log with who said it; a broadcast reaches every running agent of a
//! session; an agent that lingers waits for input, goes on when told more,
//! and ends after its linger; a job that takes no input, or has ended, is
//! refused pointing to `aam continue`; the dashboard shows an agent
//! waiting for input and its Say button reaches it.

use aam_tests::browser::Browser;
use aam_tests::model_server::{Message, ModelServer, When};
use aam_tests::{poll, Cluster};
use serde_json::json;
use std::time::Duration;

/// A cluster whose agent `talker` runs the real CLI reading stream-json
/// on stdin (no prompt in its command: aam gives it on stdin), lingering
/// `linger`.
fn cluster(server: &ModelServer, linger: &str) -> Cluster {
    let mut c = Cluster::new();
    let mut agent = c.claude_agent("talker", server);
    agent.command.retain(|a| a != "--" && a != "{prompt}");
    agent
        .command
        .splice(2..2, ["--input-format".into(), "stream-json".into()]);
    let agent = agent.line("linger", &format!("\"{linger}\""));
    c.start_with_agents("", &[agent], 2);
    c
}

fn job_of<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {s}"))
}

#[test]
fn a_message_said_while_agents_work_is_answered_after_in_the_same_conversation() {
    let server = ModelServer::start();
    let c = cluster(&server, "0s");
    // Each first turn is held open until the test has said its message.
    for name in ["a", "b"] {
        server.once(
            When::prompt_contains(&format!("Plan {name}")),
            Message::answer(&format!("first answer of {name}")).hold_after(1),
        );
        let asked = format!("Plan {name}");
        server.once(
            When::prompt_contains("and the lexer?")
                .and(When::custom(move |r| r.user_texts().contains(&asked))),
            Message::answer(&format!("second answer of {name}")),
        );
    }
    let session = c.submit_json(&json!({"name": "talk", "jobs": [
        { "name": "a", "agent": "talker", "prompt": "Plan a" },
        { "name": "b", "agent": "talker", "prompt": "Plan b" },
        { "name": "plain", "command": ["sh", "-c", "sleep 30"] },
    ]}));
    let started = poll(Duration::from_secs(60), || {
        (server.requests().len() == 2).then_some(())
    });
    assert!(
        started.is_some(),
        "the agents never asked the model\n{}",
        c.logs()
    );
    // To the session: both agents that take input, not the plain command.
    let said = c
        .aam(&["say", &session, "and the lexer?", "--json"])
        .expect_code(0)
        .json();
    let mut to: Vec<String> = serde_json::from_value(said["said_to"].clone()).unwrap();
    to.sort();
    assert_eq!(to, [format!("{session}/a"), format!("{session}/b")]);
    let refused = c
        .aam(&["say", &format!("{session}/plain"), "hi"])
        .expect_code(2);
    assert!(
        refused.stderr.contains("does not take input"),
        "{}",
        refused.stderr
    );
    assert!(refused
        .stderr
        .contains(&format!("aam continue {session}/plain")));
    server.release();
    c.aam(&["cancel", &format!("{session}/plain")])
        .expect_code(0);
    let s = c.poll_status(&session, "the session's end", |s| s["status"] != "running");
    for name in ["a", "b"] {
        assert_eq!(job_of(&s, name)["status"], "succeeded", "{s}\n{}", c.logs());
        let log = c
            .aam(&["logs", &format!("{session}/{name}")])
            .expect_code(0)
            .stdout;
        assert!(log.contains("said: and the lexer?"), "{log}");
    }
    // The second request of each conversation carries the first turn.
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for name in ["a", "b"] {
        let second = requests
            .iter()
            .find(|r| {
                r.last_prompt().as_deref() == Some("and the lexer?")
                    && r.user_texts().contains(&format!("Plan {name}"))
            })
            .unwrap_or_else(|| panic!("no second turn of {name}"));
        assert!(
            second
                .assistant_texts()
                .contains(&format!("first answer of {name}")),
            "{:?}",
            second.assistant_texts()
        );
    }
    let results = c
        .aam(&["results", &session, "--json"])
        .expect_code(0)
        .json();
    let answers: Vec<&str> = results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["result"].as_str())
        .collect();
    assert!(answers.contains(&"second answer of a"), "{results}");
    // An ended job is refused too, pointing to `aam continue`.
    let ended = c
        .aam(&["say", &format!("{session}/a"), "more?"])
        .expect_code(2);
    assert!(
        ended.stderr.contains("is not running (it is succeeded)"),
        "{}",
        ended.stderr
    );
    c.assert_no_agent_left();
}

#[test]
fn a_lingering_agent_waits_for_input_goes_on_when_told_and_ends_after_its_linger() {
    let server = ModelServer::start();
    let c = cluster(&server, "8s");
    server
        .once(
            When::prompt_contains("Review it"),
            Message::answer("looks fine"),
        )
        .once(
            When::prompt_contains("the tests too"),
            Message::answer("tests fine too"),
        );
    let session = c.submit_json(&json!({"name": "linger", "jobs": [
        { "name": "review", "agent": "talker", "prompt": "Review it" },
    ]}));
    let s = c.poll_status(&session, "the agent waiting for input", |s| {
        s["jobs"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("waiting for input"))
    });
    assert_eq!(s["jobs"][0]["status"], "running", "{s}");
    c.aam(&["say", &format!("{session}/review"), "the tests too"])
        .expect_code(0);
    let s = c.poll_status(&session, "the job's end after its linger", |s| {
        s["status"] != "running"
    });
    assert_eq!(s["jobs"][0]["status"], "succeeded", "{s}\n{}", c.logs());
    assert_eq!(server.requests().len(), 2);
    let log = c
        .aam(&["logs", &format!("{session}/review")])
        .expect_code(0)
        .stdout;
    assert!(log.contains("tests fine too"), "{log}");
    c.assert_no_agent_left();
}

/// An agent that reads stream-json on stdin: each line's text appended to
/// `$GOT`, and a `result` line for each, so its turn ends.
const LISTENER: &str = r#"
import json, os, sys
got = open(os.environ["GOT"], "a", buffering=1)
for line in sys.stdin:
    got.write(json.loads(line)["message"]["content"] + "\n")
    print('{"type":"result","subtype":"success","result":"heard"}', flush=True)
"#;

#[test]
fn the_dashboard_shows_an_agent_waiting_for_input_and_says_something_to_it() {
    let mut c = Cluster::new();
    c.http = true;
    let script = c.write("listener.py", LISTENER);
    let got = c.path("got.txt");
    c.set_config(&format!(
        "[agents.listener]\ncommand = [\"python3\", \"-u\", {:?}]\ninput = \"stream-json\"\n\
         linger = \"1h\"\nenv = {{ GOT = {:?} }}\n",
        script.display().to_string(),
        got.display().to_string()
    ));
    c.start_manager();
    c.start_worker("w", 1);
    let session = c.submit_json(&json!({"name": "dash-say", "jobs": [
        { "name": "ear", "agent": "listener", "prompt": "hello" },
    ]}));
    c.poll_status(&session, "the agent waiting for input", |s| {
        s["jobs"][0]["waiting_for_input"] == true && s["jobs"][0]["takes_input"] == true
    });
    let mut b = Browser::start(&c.cert());
    b.navigate(&c.url("/"));
    crate::dashboard::sign_in(&mut b, &c.token);
    b.click(&format!("#sessions tr[data-session=\"{session}\"]"));
    b.wait_for(
        "the job waiting for input",
        "((document.querySelector('#jobs tr[data-job=ear] td.activity') || {}).textContent || '').includes('waiting for input')",
    );
    b.click("#jobs button[data-action=say][data-job=ear]");
    b.type_into("#ask-text", "from the dashboard");
    b.click("#ask-send");
    let heard = poll(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&got).unwrap_or_default();
        text.lines()
            .any(|l| l == "from the dashboard")
            .then_some(text)
    });
    assert!(
        heard.is_some(),
        "the agent never got the message\n{}",
        c.logs()
    );
    let log = c
        .aam(&["logs", &format!("{session}/ear")])
        .expect_code(0)
        .stdout;
    assert!(log.contains("said: from the dashboard"), "{log}");
    assert_eq!(b.errors(), Vec::<String>::new(), "the page threw");
    c.aam(&["cancel", &session]).expect_code(0);
}
