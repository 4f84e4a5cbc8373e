//! Tests of relayed permission prompts: rules decide without asking (deny
//! wins), an open request waits for `aam allow` / `aam deny` (naming it
//! when several are open), is denied at its timeout, and is closed when
//! its attempt ends.

use super::super::testing::*;
use super::Asked;
use crate::state::notices::EventKind;
use aam_protocol::messages::{Assignment, AttemptRef, ManagerToWorker};
use aam_protocol::JobKey;

/// The agent `guarded`, relaying its permission prompts with rules.
fn config_with_guarded() -> StateConfig {
    let mut config = agent_config();
    let guarded = AgentDef {
        command: ["claude", "-p", "{prompt}"].map(String::from).to_vec(),
        permissions: Some("relay".into()),
        allow: vec!["Read".into(), "Bash(git status*)".into()],
        deny: vec!["Bash(rm *)".into()],
        permission_timeout: Some("2s".into()),
        ..AgentDef::default()
    };
    config.agents.insert("guarded".into(), guarded);
    config
}

fn decided(asked: Asked) -> (bool, String) {
    match asked {
        Asked::Decided(d) => match d.send.unwrap().1 {
            ManagerToWorker::PermissionDecided { allow, message, .. } => (allow, message),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn rules_decide_and_people_answer_the_rest() {
    let mut s = State::new(config_with_guarded());
    let (id, _) = s
        .submit(batch(vec![agent_job("fix", "guarded")]), None, 0)
        .unwrap();
    s.register_worker(7, worker("w", 4), &[], 0).unwrap();
    let assigned: Vec<Assignment> = s.dispatch(1).into_iter().map(|(_, a)| a).collect();
    assert!(assigned[0].permission_relay);
    let attempt = assigned[0].attempt_ref();
    let bash = |c: &str| serde_json::json!({ "command": c }).to_string();

    let read = s.permission_asked(7, attempt, 1, "Read", r#"{"file_path":"a"}"#, 5);
    assert_eq!(decided(read), (true, String::new()));
    let rm = s.permission_asked(7, attempt, 2, "Bash", &bash("rm -rf /"), 5);
    assert!(decided(rm).1.contains("Bash(rm *)"));
    // Another worker's report of the attempt is not heard.
    let stray = s.permission_asked(8, attempt, 3, "Write", "{}", 5);
    assert!(matches!(stray, Asked::Ignored));

    let write = r#"{"file_path":"src/lib.rs","content":"x"}"#;
    match s.permission_asked(7, attempt, 3, "Write", write, 6) {
        Asked::Open { request, .. } => assert_eq!(
            (request.id, request.summary.as_str()),
            (3, "Write src/lib.rs")
        ),
        other => panic!("{other:?}"),
    }
    // Only the open request is news (`needs_input`), once, naming it.
    let news: Vec<_> = s
        .take_transitions()
        .into_iter()
        .filter(|t| t.kind == EventKind::NeedsInput)
        .collect();
    assert_eq!(news.len(), 1, "{news:?}");
    let event = s.event_json(&news[0], 6).unwrap();
    assert_eq!(
        (
            &event["job"],
            &event["request"],
            &event["call"],
            &event["open"]
        ),
        (
            &serde_json::json!("fix"),
            &serde_json::json!(3),
            &serde_json::json!("Write src/lib.rs"),
            &serde_json::json!(true)
        )
    );
    // Asked again (a reconnect): still one open request.
    assert!(matches!(
        s.permission_asked(7, attempt, 3, "Write", write, 7),
        Asked::Ignored
    ));
    let view = job_view(&s, id, "fix", 8);
    assert!(
        view.reason
            .as_deref()
            .unwrap()
            .contains("needs input: [3] Write src/lib.rs"),
        "{view:?}"
    );
    match s.permission_asked(7, attempt, 4, "Bash", &bash("cargo publish"), 9) {
        Asked::Open { request, .. } => assert_eq!(request.summary, "Bash: cargo publish"),
        other => panic!("{other:?}"),
    }
    let two = s.decide_permission(id, "fix", None, true, false, None, "alice", 10);
    assert!(
        format!("{two:?}").contains("2 open permission requests (3, 4)"),
        "{two:?}"
    );

    let allowed = s
        .decide_permission(id, "fix", Some(3), true, true, None, "alice", 10)
        .unwrap();
    let (worker, order) = allowed.send.unwrap();
    assert_eq!(worker, 7);
    assert!(matches!(
        order,
        ManagerToWorker::PermissionDecided {
            ask: 3,
            allow: true,
            ..
        }
    ));
    let again = s.decide_permission(id, "fix", Some(3), false, false, None, "bob", 11);
    assert!(format!("{again:?}").contains("answered already"));
    let denied = s
        .decide_permission(
            id,
            "fix",
            None,
            false,
            false,
            Some("not yet".into()),
            "bob",
            12,
        )
        .unwrap();
    assert_eq!(denied.request.id, 4);
    assert!(matches!(denied.send.unwrap().1,
        ManagerToWorker::PermissionDecided { allow: false, ref message, .. } if message == "not yet"));
    // `--always`: the next Write is allowed without asking.
    let next = s.permission_asked(7, attempt, 5, "Write", r#"{"file_path":"b"}"#, 13);
    assert!(decided(next).0);

    let record = s
        .job(JobKey {
            session: id,
            index: 0,
        })
        .unwrap();
    let requests = &record.permissions.as_ref().unwrap().requests;
    let by: Vec<&str> = requests
        .iter()
        .map(|r| r.decision.as_ref().unwrap().by.as_str())
        .collect();
    assert_eq!(
        by,
        [
            "rule allow Read",
            "rule deny Bash(rm *)",
            "alice",
            "bob",
            "always Write"
        ]
    );
    assert!(job_view(&s, id, "fix", 14)
        .reason
        .is_none_or(|r| !r.contains("needs input")));
}

#[test]
fn an_unanswered_request_is_denied_at_its_timeout_and_closed_with_its_attempt() {
    let mut s = State::new(config_with_guarded());
    let (id, _) = s
        .submit(batch(vec![agent_job("fix", "guarded")]), None, 0)
        .unwrap();
    s.register_worker(7, worker("w", 4), &[], 0).unwrap();
    let attempt: AttemptRef = s.dispatch(1)[0].1.attempt_ref();
    assert!(matches!(
        s.permission_asked(7, attempt, 1, "Write", "{}", 100),
        Asked::Open { .. }
    ));
    assert!(s.expire_permissions(2099).is_empty());
    let expired = s.expire_permissions(2100);
    assert_eq!(expired.len(), 1);
    assert!(
        matches!(&expired[0].send, Some((7, ManagerToWorker::PermissionDecided { allow: false, message, .. }))
        if message == "no answer within 2s")
    );
    assert!(matches!(
        s.permission_asked(7, attempt, 2, "Edit", "{}", 2200),
        Asked::Open { .. }
    ));
    assert_eq!(
        s.open_permissions(JobKey {
            session: id,
            index: 0
        })
        .len(),
        1
    );
    s.close_permissions(
        JobKey {
            session: id,
            index: 0,
        },
        attempt.attempt,
        2300,
    );
    assert!(s
        .open_permissions(JobKey {
            session: id,
            index: 0
        })
        .is_empty());
}
