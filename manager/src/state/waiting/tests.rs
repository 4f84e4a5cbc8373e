//! Tests of the list of running jobs that wait for someone: a relayed
//! permission request comes before a lingering agent, a decided request
//! leaves the list, and the session's summary counts both kinds.

use super::super::testing::*;
use aam_protocol::messages::Assignment;

/// `guarded` relays its permission prompts; `talker` reads stream-json
/// and lingers.
fn config() -> StateConfig {
    let mut config = agent_config();
    let guarded = AgentDef {
        command: ["claude", "-p", "{prompt}"].map(String::from).to_vec(),
        permissions: Some("relay".into()),
        ..AgentDef::default()
    };
    let talker = AgentDef {
        command: ["claude", "-p", "--input-format", "stream-json"]
            .map(String::from)
            .to_vec(),
        linger: Some("5s".into()),
        ..AgentDef::default()
    };
    config.agents.insert("guarded".into(), guarded);
    config.agents.insert("talker".into(), talker);
    config
}

#[test]
fn jobs_needing_a_decision_come_before_lingering_agents() {
    let mut s = State::new(config());
    let jobs = vec![
        agent_job("chat", "talker"),
        agent_job("fix", "guarded"),
        agent_job("plain", "claude"),
    ];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(7, worker("w", 4), &[], 0).unwrap();
    let assigned: Vec<Assignment> = s.dispatch(1).into_iter().map(|(_, a)| a).collect();
    let attempt = |name: &str| {
        assigned
            .iter()
            .find(|a| a.job_name == name)
            .unwrap()
            .attempt_ref()
    };
    assert!(s.waiting().is_empty());
    assert_eq!(s.summary(id).unwrap().needs_input, 0);

    // The talker lingers first; the guarded agent asks later.
    s.input_state(7, attempt("chat"), 1, true, 5);
    let write = r#"{"file_path":"src/lib.rs","content":"x"}"#;
    s.permission_asked(7, attempt("fix"), 1, "Write", write, 9);
    let waiting = s.waiting();
    let names: Vec<&str> = waiting.iter().map(|w| w.job.as_str()).collect();
    assert_eq!(names, ["fix", "chat"], "a decision first: {waiting:?}");
    assert_eq!(waiting[0].requests[0].summary, "Write src/lib.rs");
    assert!(!waiting[0].waiting_for_input && waiting[1].waiting_for_input);
    let summary = s.summary(id).unwrap();
    assert_eq!((summary.needs_input, summary.waiting_for_input), (1, 1));
    // The change reaches the session's watchers (the dashboard's stream).
    assert!(s.take_to_notify().contains(&id));

    s.decide_permission(id, "fix", None, true, false, None, "alice", 12)
        .unwrap();
    let names: Vec<String> = s.waiting().into_iter().map(|w| w.job).collect();
    assert_eq!(names, ["chat"]);
    assert_eq!(s.summary(id).unwrap().needs_input, 0);
    assert!(s.take_to_notify().contains(&id));
}
