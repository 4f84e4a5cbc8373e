//! Tests of which transitions make which events: each once, none for what
//! does not change (a stale report, an extended pause, a retry still to
//! come), none made again by a rebuild, and what an event's JSON says.

use super::super::testing::*;
use super::*;

fn kinds(s: &mut State) -> Vec<(EventKind, Option<String>)> {
    let transitions = s.take_transitions();
    transitions
        .iter()
        .map(|t| {
            let name = t.job.map(|i| {
                s.sessions.get(t.session).unwrap().jobs()[i as usize]
                    .name
                    .clone()
            });
            (t.kind, name)
        })
        .collect()
}

fn one(kind: EventKind, job: &str) -> Vec<(EventKind, Option<String>)> {
    vec![(kind, Some(job.to_string()))]
}

fn gate(name: &str, deps: &[&str]) -> JobSpec {
    JobSpec {
        command: None,
        gate: true,
        ..job(name, deps)
    }
}

#[test]
fn a_failure_a_waiting_gate_and_a_session_end_each_make_one_event() {
    let mut s = State::new(config());
    let failing = JobSpec {
        command: Some(vec!["false".into()]),
        ..job("lint", &[])
    };
    let jobs = vec![
        job("build", &[]),
        failing,
        gate("review", &["build"]),
        job("deploy", &["review"]),
    ];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    assert!(kinds(&mut s).is_empty(), "the gate waits for build first");
    s.register_worker(1, worker("w", 2), &[], 0).unwrap();
    let assigned = s.dispatch(0);
    let by_name = |n: &str| {
        let a = assigned.iter().find(|(_, a)| a.job_name == n).unwrap();
        attempt_of(&a.1)
    };
    s.job_finished(1, by_name("build"), ended(ok()), 1).unwrap();
    assert_eq!(kinds(&mut s), one(EventKind::GateWaiting, "review"));
    s.job_finished(1, by_name("lint"), ended(fail()), 2)
        .unwrap();
    assert_eq!(kinds(&mut s), one(EventKind::JobFailed, "lint"));
    // The same end again (a resend after a reconnect) is no new failure.
    assert!(s
        .job_finished(1, by_name("lint"), ended(fail()), 3)
        .is_err());
    assert!(kinds(&mut s).is_empty());
    let comment = Some("not today".to_string());
    s.decide(id, "review", false, "alice", comment, 4).unwrap();
    let mut events = one(EventKind::JobFailed, "review");
    events.push((EventKind::SessionFinished, None));
    assert_eq!(kinds(&mut s), events, "deploy is skipped: no event");
}

#[test]
fn a_gate_with_nothing_to_wait_for_waits_from_its_submission() {
    let mut s = State::new(config());
    s.submit(batch(vec![gate("go", &[]), job("x", &["go"])]), None, 0)
        .unwrap();
    assert_eq!(kinds(&mut s), one(EventKind::GateWaiting, "go"));
}

#[test]
fn a_job_with_retries_left_has_not_failed_yet() {
    let mut s = State::new(config());
    let flaky = JobSpec {
        retries: Some(1),
        retry_backoff: Some("1s".into()),
        ..job("flaky", &[])
    };
    s.submit(batch(vec![flaky]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let first = attempt_of(&s.dispatch(0)[0].1);
    s.job_finished(1, first, ended(fail()), 1).unwrap();
    assert!(kinds(&mut s).is_empty(), "it is retried");
    s.release_delayed(100_000);
    let second = attempt_of(&s.dispatch(100_000)[0].1);
    s.job_finished(1, second, ended(fail()), 100_001).unwrap();
    let mut events = one(EventKind::JobFailed, "flaky");
    events.push((EventKind::SessionFinished, None));
    assert_eq!(kinds(&mut s), events);
}

#[test]
fn a_rebuild_makes_no_event_again() {
    let mut s = State::new(config());
    let jobs = vec![gate("go", &[]), job("x", &["go"])];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.decide(id, "go", false, "bob", None, 1).unwrap();
    assert_eq!(kinds(&mut s).len(), 3, "waiting, failed, finished");
    let rebuilt = State::rebuild(config(), snapshot_of(&mut s), 2);
    assert!(rebuilt.transitions.is_empty());
}

fn limited() -> EndReport {
    let limit = UsageLimit {
        resets_at_ms: Some(3_600_000),
        message: "usage limit reached".into(),
    };
    let run = AgentRun {
        error: Some("rate limited".into()),
        limit: Some(limit),
        ..agent_run("conv", "claude-sonnet-4-5", 1, 0)
    };
    ended_with(fail(), run)
}

#[test]
fn a_group_is_paused_once_until_its_pause_ends() {
    let mut s = State::new(agent_config());
    let jobs = vec![agent_job("a", "claude"), agent_job("b", "claude")];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w", 2), &[], 0).unwrap();
    let assigned = s.dispatch(0);
    s.job_finished(1, attempt_of(&assigned[0].1), limited(), 1_000)
        .unwrap();
    let transitions = s.take_transitions();
    assert_eq!(transitions.len(), 1);
    assert_eq!(transitions[0].kind, EventKind::LimitPaused);
    let event = s.event_json(&transitions[0], 1_000).unwrap();
    assert_eq!(event["group"], "claude");
    assert_eq!(event["until"], "1970-01-01T01:00:00.000Z");
    assert_eq!(event["job"], "a");
    assert_eq!(event["session"]["id"], id.to_string());
    // b meets the same limit while the group is paused: no news.
    s.job_finished(1, attempt_of(&assigned[1].1), limited(), 2_000)
        .unwrap();
    assert!(kinds(&mut s).is_empty());
}

#[test]
fn an_event_says_what_happened_and_to_what() {
    let mut s = State::new(config());
    let jobs = vec![gate("go", &[]), job("x", &["go"])];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    let comment = Some("too risky".to_string());
    s.decide(id, "go", false, "alice", comment, 5).unwrap();
    let transitions = s.take_transitions();
    let events: Vec<_> = transitions
        .iter()
        .map(|t| s.event_json(t, 1_700_000_000_000).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "gate_waiting");
    assert_eq!(events[0]["gate"], "go");
    assert_eq!(events[0]["at"], "2023-11-14T22:13:20.000Z");
    // Rendered after the message: the summary as the message left it.
    assert_eq!(events[0]["session"]["status"], "failed");
    let failed = &events[1];
    assert_eq!(failed["event"], "job_failed");
    assert_eq!(failed["job"], "go");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["decided_by"], "alice");
    assert_eq!(failed["comment"], "too risky");
    assert_eq!(failed["reason"], "rejected by alice: too risky");
    let finished = &events[2];
    assert_eq!(finished["event"], "session_finished");
    assert!(finished.get("job").is_none());
    assert_eq!(finished["session"]["counts"]["skipped"], 1);
}
