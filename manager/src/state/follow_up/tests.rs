//! Tests of follow-ups: the new session's one job resumes the agent's
//! conversation (`--resume ID`) on the worker that holds it, and jobs with
//! no conversation are refused, naming the job.

use super::super::testing::*;
use super::*;

/// A session of a `claude` job "review" that ran on worker "w1" (id 1) and
/// reported conversation "conv-1", and a command job "cmd" that ran too.
fn ended_agent_session(s: &mut State) -> SessionId {
    let jobs = vec![agent_job("review", "claude"), job("cmd", &[])];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w1", 2), &[], 0).unwrap();
    for (_, a) in s.dispatch(0) {
        let run = agent_run("conv-1", "claude-sonnet-4-5", 1, 1);
        let report = match a.job_name.as_str() {
            "review" => ended_with(ok(), run),
            _ => ended(ok()),
        };
        s.job_finished(1, attempt_of(&a), report, 1).unwrap();
    }
    id
}

#[test]
fn a_follow_up_resumes_the_conversation_on_the_worker_that_holds_it() {
    let mut s = State::new(agent_config());
    let old = ended_agent_session(&mut s);
    s.worker_gone(1, false, 2);
    s.register_worker(2, worker("w2", 4), &[], 2).unwrap();
    let (new, jobs) = s
        .continue_job(old, "review", "and now the tests".into(), 3)
        .unwrap();
    assert_eq!((jobs, new), (1, SessionId(old.0 + 1)));
    let record = s.sessions.get(new).unwrap().record().clone();
    assert_eq!(record.name, "b-continue");
    let view = job_view(&s, new, "review", 3);
    assert_eq!(view.status, JobStatus::Queued);
    assert_eq!(
        view.reason.as_deref(),
        Some("waiting for worker w1 to connect (the conversation it continues lives there)")
    );
    assert!(s.dispatch(4).is_empty(), "ran away from its conversation");
    s.register_worker(3, worker("w1", 1), &[], 5).unwrap();
    let (worker, assignment) = s.dispatch(5).remove(0);
    assert_eq!(worker, 3);
    assert_eq!(
        assignment.argv[..4],
        ["claude", "--resume", "conv-1", "-p"].map(String::from)
    );
    assert_eq!(
        assignment.argv.last().map(String::as_str),
        Some("and now the tests")
    );
    let stored = stored_jobs(&mut s);
    let job = stored.iter().find(|j| j.key.session == new).unwrap();
    assert_eq!(job.pinned_worker(), Some("w1"));
}

#[test]
fn a_job_without_a_conversation_is_refused_naming_it() {
    let mut s = State::new(agent_config());
    let old = ended_agent_session(&mut s);
    let refusal = |s: &mut State, name: &str| match s.continue_job(old, name, "more".into(), 9) {
        Err(ContinueRefused::State(e)) => (e.kind(), e.to_string()),
        other => panic!("{other:?}"),
    };
    let (kind, text) = refusal(&mut s, "cmd");
    assert_eq!(kind, aam_protocol::messages::ErrorKind::Conflict);
    assert_eq!(
        text,
        format!("{old}/cmd is not an agent job: there is no conversation to continue")
    );
    let (kind, _) = refusal(&mut s, "nobody");
    assert_eq!(kind, aam_protocol::messages::ErrorKind::NotFound);
    // An agent read as text never reports a session id.
    let (texts, _) = s
        .submit(batch(vec![agent_job("t", "codex")]), None, 10)
        .unwrap();
    let a = attempt_of(&s.dispatch(10)[0].1);
    s.job_finished(1, a, ended(ok()), 11).unwrap();
    let text = match s.continue_job(texts, "t", "more".into(), 12) {
        Err(ContinueRefused::State(e)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(
        text.contains(&format!("{texts}/t has no agent session id")),
        "{text}"
    );
    assert!(text.contains("read as text"), "{text}");
    // One that never ran, and one still waiting.
    let (fresh, _) = s
        .submit(batch(vec![agent_job("f", "claude")]), None, 13)
        .unwrap();
    let text = match s.continue_job(fresh, "f", "more".into(), 14) {
        Err(ContinueRefused::State(e)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        text,
        format!("{fresh}/f is queued: continue it once it has ended")
    );
}

#[test]
fn a_prompt_too_large_is_refused_as_invalid() {
    let mut s = State::new(agent_config());
    let old = ended_agent_session(&mut s);
    let huge = "x".repeat(s.config.limits.max_field_bytes + 1);
    assert!(matches!(
        s.continue_job(old, "review", huge, 3),
        Err(ContinueRefused::Invalid(_))
    ));
}
