//! Tests of what agents report: updates through the fence, stored now and
//! then; the final run in the job and its attempt; an agent's error fails
//! its job; the `agent` object and the session's sums; a dependent's inputs.

use super::super::testing::*;
use super::*;

/// One running `claude` job ("a") on worker 1; its attempt.
fn running_agent(s: &mut State) -> (SessionId, AttemptRef) {
    let (id, _) = s
        .submit(batch(vec![agent_job("a", "claude")]), None, 0)
        .unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    s.take_changes();
    (id, a)
}

fn stored_run(s: &mut State) -> Option<Option<AgentRun>> {
    let jobs = stored_jobs(s);
    jobs.into_iter().next().map(|j| j.agent_run.map(|r| *r))
}

#[test]
fn an_update_passes_the_fence_and_is_stored_at_most_every_few_seconds() {
    let mut s = State::new(agent_config());
    let (id, a) = running_agent(&mut s);
    let run = |turns| AgentRun {
        turns,
        ..agent_run("conv", "claude-sonnet-4-5", 10, 5)
    };
    let stale = AttemptRef { attempt: 9, ..a };
    assert_eq!(s.agent_update(1, stale, run(1), 10), Err(Fenced::Stale));
    s.register_worker(2, worker("other", 1), &[], 0).unwrap();
    assert_eq!(s.agent_update(2, a, run(1), 10), Err(Fenced::NotYours));
    assert_eq!(job_view(&s, id, "a", 10).agent.unwrap().turns, 0);
    // The first update is stored at once, the next ones every few seconds.
    assert_eq!(s.agent_update(1, a, run(1), 10), Ok(None));
    assert_eq!(stored_run(&mut s).flatten().unwrap().turns, 1);
    s.agent_update(1, a, run(2), 1_000).unwrap();
    assert_eq!(stored_run(&mut s), None, "stored again after a second");
    assert_eq!(job_view(&s, id, "a", 1_000).agent.unwrap().turns, 2, "live");
    s.agent_update(1, a, run(3), 10 + STORE_EVERY_MS).unwrap();
    assert_eq!(stored_run(&mut s).flatten().unwrap().turns, 3);
}

#[test]
fn the_final_run_lands_in_the_job_and_its_attempt_and_shows_as_its_agent() {
    let mut s = State::new(agent_config());
    let (id, a) = running_agent(&mut s);
    s.agent_update(1, a, agent_run("conv", "claude-opus-4-8", 10, 5), 1)
        .unwrap();
    let mut last = agent_run("conv", "claude-opus-4-8[1m]", 10, 5);
    last.result = Some("# Done\nAll good.".into());
    last.turns = 2;
    last.last_tool = Some("Write notes.md".into());
    last.reported_cost_usd = Some(0.25);
    s.job_finished(1, a, ended_with(ok(), last.clone()), 2)
        .unwrap();
    let stored = stored_jobs(&mut s).remove(0);
    assert_eq!(stored.agent_run.as_deref(), Some(&last));
    assert_eq!(stored.history[0].agent_run.as_deref(), Some(&last));
    let view = job_view(&s, id, "a", 3);
    assert_eq!(view.status, JobStatus::Succeeded);
    let agent = view.agent.unwrap();
    assert_eq!(agent.session_id.as_deref(), Some("conv"));
    assert_eq!(
        (agent.turns, agent.input_tokens, agent.output_tokens),
        (2, 10, 5)
    );
    assert_eq!(agent.result.as_deref(), Some("# Done\nAll good."));
    assert_eq!(agent.last_tool.as_deref(), Some("Write notes.md"));
    assert_eq!(
        agent.cost_usd, 0.25,
        "the agent's own figure replaces the estimate"
    );
    // A command has no agent: what a worker says of one is not taken.
    let command = s.submit(batch(vec![job("c", &[])]), None, 4).unwrap().0;
    let c = attempt_of(&s.dispatch(4)[0].1);
    let mut error = agent_run("x", "claude-opus-4-8", 1_000_000, 0);
    error.error = Some("not an agent".into());
    assert_eq!(s.agent_update(1, c, error.clone(), 5), Ok(None));
    s.job_finished(1, c, ended_with(ok(), error), 6).unwrap();
    let view = job_view(&s, command, "c", 7);
    assert_eq!((view.status, view.agent), (JobStatus::Succeeded, None));
    assert_eq!(s.summary(command).unwrap().cost_usd, 0.0);
}

#[test]
fn an_agent_that_reports_an_error_fails_its_job_whatever_its_exit_code() {
    let mut s = State::new(agent_config());
    let (id, a) = running_agent(&mut s);
    let mut run = agent_run("conv", "claude-sonnet-4-5", 1, 0);
    run.error = Some("API Error: 500 overloaded".into());
    s.job_finished(1, a, ended_with(ok(), run), 1).unwrap();
    let view = job_view(&s, id, "a", 2);
    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.reason.as_deref(), Some("API Error: 500 overloaded"));
    assert_eq!(view.history[0].outcome, AttemptOutcome::Failed);
    assert_eq!(
        view.agent.unwrap().error.as_deref(),
        Some("API Error: 500 overloaded")
    );
}

#[test]
fn an_agent_s_word_comes_after_aam_s_stops_and_cancels() {
    let mut run = AgentRun {
        error: Some("boom".into()),
        ..AgentRun::default()
    };
    let failed = (
        AttemptEnd::Final(JobStatus::Failed),
        Some("boom".to_string()),
    );
    assert_eq!(classify_agent_end(Some(&run), None, false), Some(failed));
    assert_eq!(
        classify_agent_end(Some(&run), Some(StopCause::Timeout), false),
        None
    );
    assert_eq!(classify_agent_end(Some(&run), None, true), None);
    run.limit = Some(UsageLimit {
        resets_at_ms: None,
        message: "429".into(),
    });
    let limited = classify_agent_end(Some(&run), None, false).unwrap();
    assert_eq!(
        limited,
        (AttemptEnd::Limited, Some("usage limit: 429".into()))
    );
    assert_eq!(classify_agent_end(None, None, false), None);
}

#[test]
fn a_session_sums_every_attempt_and_the_running_ones_also_after_a_restart() {
    let mut s = State::new(agent_config());
    let jobs = vec![
        agent_job("a", "claude"),
        agent_job("b", "claude"),
        job("c", &[]),
    ];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w", 3), &[], 0).unwrap();
    let started: Vec<AttemptRef> = s.dispatch(0).iter().map(|(_, a)| attempt_of(a)).collect();
    let mut a_run = agent_run("a", "claude-sonnet-4-5", 1_000, 100);
    a_run.reported_cost_usd = Some(1.0);
    s.job_finished(1, started[0], ended_with(ok(), a_run), 1)
        .unwrap();
    // Sonnet: 1,000,000 in at $3 and 100,000 out at $15 per million.
    let b_run = agent_run("b", "claude-sonnet-4-5", 1_000_000, 100_000);
    s.agent_update(1, started[1], b_run, 2).unwrap();
    s.job_finished(1, started[2], ended(ok()), 3).unwrap();
    let sums = |s: &State| {
        let summary = s.summary(id).unwrap();
        (
            summary.cost_usd,
            summary.input_tokens,
            summary.output_tokens,
        )
    };
    assert_eq!(sums(&s), (1.0 + 3.0 + 1.5, 1_001_000, 100_100));
    let rebuilt = State::rebuild(agent_config(), snapshot_of(&mut s), 10);
    assert_eq!(sums(&rebuilt), sums(&s));
    assert_eq!(s.summaries(0, 0)[0].cost_usd, 5.5);
}

#[test]
fn a_dependent_gets_its_dependency_s_answer_and_error() {
    let mut s = State::new(agent_config());
    let mut synth = job("synth", &["a"]);
    synth.depends_on[0].when = When::Finished;
    let (_, _) = s
        .submit(batch(vec![agent_job("a", "claude"), synth]), None, 0)
        .unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    let mut run = agent_run("conv", "claude-sonnet-4-5", 1, 1);
    run.result = Some("the answer".into());
    run.error = Some("and an error".into());
    s.job_finished(1, a, ended_with(ok(), run), 1).unwrap();
    let next = s.dispatch(2).remove(0).1;
    let inputs = s.inputs_for(next.job, &|_| None);
    assert_eq!(inputs[0].answer.as_deref(), Some("the answer"));
    assert_eq!(inputs[0].agent_error.as_deref(), Some("and an error"));
}
