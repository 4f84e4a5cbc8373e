//! Tests of messages said to running agents: stored in order, sent to the
//! job's worker, refused (pointing to `aam continue`) for a job that takes
//! no input or is not running, broadcast to a session's agents that take
//! input, and sent again until the worker says its agent has them.

use super::super::testing::*;
use aam_protocol::messages::{Assignment, ManagerToWorker};
use aam_protocol::JobKey;

/// The agent `talker`, which reads stream-json on stdin and lingers 5 s.
fn config_with_talker() -> StateConfig {
    let mut config = agent_config();
    let talker = AgentDef {
        command: [
            "claude",
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
        ]
        .map(String::from)
        .to_vec(),
        linger: Some("5s".into()),
        ..AgentDef::default()
    };
    config.agents.insert("talker".into(), talker);
    config
}

fn said_seqs(orders: &[ManagerToWorker]) -> Vec<u32> {
    orders
        .iter()
        .map(|o| match o {
            ManagerToWorker::Say { message, .. } => message.seq,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn messages_are_stored_in_order_and_sent_to_the_jobs_worker() {
    let mut s = State::new(config_with_talker());
    let jobs = vec![
        agent_job("chat", "talker"),
        agent_job("other", "talker"),
        agent_job("plain", "claude"),
    ];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(7, worker("w", 4), &[], 0).unwrap();
    let assigned: Vec<Assignment> = s.dispatch(1).into_iter().map(|(_, a)| a).collect();
    let chat = assigned.iter().find(|a| a.job_name == "chat").unwrap();
    let input = chat.input.as_deref().expect("chat takes input");
    assert_eq!((input.prompt.as_str(), input.linger_ms), ("do chat", 5000));
    let plain = assigned.iter().find(|a| a.job_name == "plain").unwrap();
    assert!(plain.input.is_none());

    let said = s
        .say(id, Some("chat"), "look at parser.rs", "alice", 10)
        .unwrap();
    let said = s
        .say(id, Some("chat"), "and lexer.rs", "bob", 11)
        .map(|mut more| {
            more.splice(0..0, said);
            more
        });
    let said = said.unwrap();
    assert_eq!(said.len(), 2);
    let orders: Vec<ManagerToWorker> = said
        .into_iter()
        .map(|s| {
            let (worker, order) = s.send.unwrap();
            assert_eq!(worker, 7);
            order
        })
        .collect();
    assert_eq!(said_seqs(&orders), [1, 2]);
    let record = s
        .job(JobKey {
            session: id,
            index: 0,
        })
        .unwrap();
    let input = record.input.as_deref().unwrap();
    assert_eq!(input.said[1].from, "bob");

    // The worker gave the first: the second is sent again, and the job
    // shows it waits once the agent answered.
    // Another worker is not heard about it.
    s.register_worker(8, worker("other", 1), &[], 0).unwrap();
    assert!(s.input_state(8, chat.attempt_ref(), 0, true, 19).is_empty());
    let missing = s.input_state(7, chat.attempt_ref(), 1, false, 20);
    assert_eq!(said_seqs(&missing), [2]);
    assert!(s.input_state(7, chat.attempt_ref(), 2, true, 21).is_empty());
    let reason = job_view(&s, id, "chat", 22).reason.unwrap();
    assert_eq!(
        reason,
        format!("waiting for input (aam say {id}/chat \"TEXT\")")
    );

    // A broadcast reaches the running agents that take input, not `plain`.
    let said = s.say(id, None, "status?", "alice", 30).unwrap();
    let mut to: Vec<String> = said.into_iter().map(|s| s.job).collect();
    to.sort();
    assert_eq!(to, [format!("{id}/chat"), format!("{id}/other")]);
}

#[test]
fn a_job_that_takes_no_input_or_has_ended_is_refused_pointing_to_continue() {
    let mut s = State::new(config_with_talker());
    let (id, _) = s
        .submit(
            batch(vec![
                agent_job("plain", "claude"),
                agent_job("chat", "talker"),
            ]),
            None,
            0,
        )
        .unwrap();
    let err = s
        .say(id, Some("chat"), "hi", "alice", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not running (it is queued)"), "{err}");
    let err = s
        .say(id, Some("plain"), "hi", "alice", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not take input"), "{err}");
    assert!(err.contains(&format!("aam continue {id}/plain")), "{err}");
    let err = s.say(id, None, "hi", "alice", 1).unwrap_err().to_string();
    assert!(
        err.contains("has no running agent that takes input"),
        "{err}"
    );
    assert!(s.say(id, Some("nope"), "hi", "alice", 1).is_err());
    s.register_worker(1, worker("w", 4), &[], 0).unwrap();
    s.dispatch(1);
    let err = s
        .say(id, Some("chat"), "  ", "alice", 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to say"), "{err}");
}
