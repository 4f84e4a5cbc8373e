//! Tests of usage-limit pauses: how long a group is paused, a limited
//! attempt requeued without a retry while other groups and commands run,
//! the pause ending by itself, the backoff reset by a success, and the
//! pause kept across a restart.

use super::super::testing::*;
use super::*;

const MINUTE: u64 = 60_000;

fn limit(resets_at_ms: Option<u64>) -> UsageLimit {
    UsageLimit {
        resets_at_ms,
        message: "Claude AI usage limit reached".into(),
    }
}

fn limited_run(resets_at_ms: Option<u64>) -> AgentRun {
    AgentRun {
        error: Some("rate limited".into()),
        api_error_status: Some(429),
        limit: Some(limit(resets_at_ms)),
        ..agent_run("conv", "claude-sonnet-4-5", 1, 0)
    }
}

fn names(assigned: &[(WorkerId, Assignment)]) -> Vec<String> {
    let mut names: Vec<String> = assigned.iter().map(|(_, a)| a.job_name.clone()).collect();
    names.sort();
    names
}

#[test]
fn a_group_waits_for_the_stated_reset_or_a_backoff_that_doubles_to_its_cap() {
    let pause = |previous: Option<&LimitPause>, resets, now| {
        next_pause("g", previous, &limit(resets), MINUTE, now)
    };
    let first = pause(None, None, 0);
    assert_eq!((first.until_ms, first.backoff_ms), (MINUTE, 2 * MINUTE));
    // Another job of the group meets the same limit meanwhile: no doubling.
    let same = pause(Some(&first), None, 30_000);
    assert_eq!(same, first);
    let second = pause(Some(&first), None, 2 * MINUTE);
    assert_eq!(
        (second.until_ms, second.backoff_ms),
        (4 * MINUTE, 4 * MINUTE)
    );
    let mut long = second.clone();
    for _ in 0..10 {
        long = pause(Some(&long), None, long.until_ms);
    }
    assert_eq!(long.backoff_ms, LIMIT_BACKOFF_CAP_MS);
    // A stated reset wins (the later one while paused), backoff unchanged.
    let stated = pause(Some(&second), Some(10 * MINUTE), 5 * MINUTE);
    assert_eq!(
        (stated.until_ms, stated.backoff_ms),
        (10 * MINUTE, 4 * MINUTE)
    );
    let earlier = pause(Some(&stated), Some(6 * MINUTE), 5 * MINUTE);
    assert_eq!(earlier.until_ms, 10 * MINUTE);
    // A reset in the past is no reset time.
    assert_eq!(pause(None, Some(5), 100).until_ms, 100 + MINUTE);
}

#[test]
fn a_limited_attempt_is_requeued_without_a_retry_and_holds_only_its_group() {
    let mut s = State::new(agent_config());
    let jobs = vec![
        agent_job("a", "claude"),
        agent_job("b", "claude"),
        agent_job("x", "codex"),
        job("cmd", &[]),
    ];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    s.job_finished(1, a, ended_with(fail(), limited_run(None)), 1_000)
        .unwrap();
    let view = job_view(&s, id, "a", 1_000);
    assert_eq!(view.status, JobStatus::Queued);
    assert_eq!(view.history[0].outcome, AttemptOutcome::Limited);
    let held = "usage limit (claude): paused until 00:01:01 UTC";
    assert_eq!(view.reason.as_deref(), Some(held));
    assert_eq!(job_view(&s, id, "b", 1_000).reason.as_deref(), Some(held));
    assert_eq!(s.paused_groups(1_000).len(), 1);
    let session = s.view(id, OutputWanted::None, 0, &|_| None, 1_000).unwrap();
    assert_eq!(session.paused[0].group, "claude");
    // Other agents and commands run meanwhile.
    s.register_worker(2, worker("w2", 4), &[], 1_000).unwrap();
    assert_eq!(names(&s.dispatch(1_000)), ["cmd", "x"]);
    assert!(s.dispatch(60_999).is_empty());
    // The pause ends by itself; the job was never counted as a failure.
    assert_eq!(names(&s.dispatch(61_000)), ["a", "b"]);
    let again = s
        .job(JobKey {
            session: id,
            index: 0,
        })
        .unwrap();
    assert_eq!((again.attempts, again.failures, again.losses), (2, 0, 0));
}

#[test]
fn the_backoff_doubles_while_limits_continue_and_a_success_resets_it() {
    let mut s = State::new(agent_config());
    let jobs = vec![agent_job("a", "claude"), agent_job("b", "claude")];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let first = attempt_of(&s.dispatch(0)[0].1);
    s.job_finished(1, first, ended_with(ok(), limited_run(None)), 0)
        .unwrap();
    assert_eq!(s.paused_groups(0)[0].until_ms, MINUTE);
    let second = attempt_of(&s.dispatch(MINUTE)[0].1);
    s.job_finished(1, second, ended_with(ok(), limited_run(None)), MINUTE)
        .unwrap();
    assert_eq!(s.paused_groups(MINUTE)[0].until_ms, 3 * MINUTE);
    s.take_changes();
    let third = s.dispatch(3 * MINUTE).remove(0).1;
    s.job_finished(1, attempt_of(&third), ended(ok()), 3 * MINUTE)
        .unwrap();
    assert_eq!(
        s.take_changes().pauses_ended,
        ["claude"],
        "the backoff is reset"
    );
    let fourth = attempt_of(&s.dispatch(3 * MINUTE)[0].1);
    s.job_finished(1, fourth, ended_with(ok(), limited_run(None)), 4 * MINUTE)
        .unwrap();
    assert_eq!(s.paused_groups(4 * MINUTE)[0].until_ms, 5 * MINUTE);
    assert_eq!(s.summary(id).unwrap().count(JobStatus::Succeeded), 1);
}

#[test]
fn a_running_job_of_a_paused_group_runs_on_and_the_pause_survives_a_restart() {
    let mut s = State::new(agent_config());
    let jobs = vec![
        agent_job("a", "claude"),
        agent_job("b", "claude"),
        agent_job("c", "claude"),
    ];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w", 2), &[], 0).unwrap();
    let started: Vec<AttemptRef> = s.dispatch(0).iter().map(|(_, a)| attempt_of(a)).collect();
    let reset = 2 * 3600 * 1000;
    s.job_finished(
        1,
        started[0],
        ended_with(ok(), limited_run(Some(reset))),
        10,
    )
    .unwrap();
    assert_eq!(job_view(&s, id, "b", 10).status, JobStatus::Running);
    let mut r = State::rebuild(agent_config(), snapshot_of(&mut s), 20);
    r.register_worker(1, worker("w", 2), &started[1..], 20)
        .unwrap();
    assert!(
        r.dispatch(30).is_empty(),
        "the pause was lost in the restart"
    );
    let held = "usage limit (claude): paused until 02:00:00 UTC";
    assert_eq!(job_view(&r, id, "c", 30).reason.as_deref(), Some(held));
    assert_eq!(r.paused_groups(30)[0].until_ms, reset);
    assert_eq!(r.job_finished(1, started[1], ended(ok()), 40), Ok(()));
    assert_eq!(names(&r.dispatch(reset)), ["a", "c"]);
}

#[test]
fn a_far_reset_time_shows_its_date() {
    assert_eq!(clock_time(90_061_000, 0), "1970-01-02 01:01:01 UTC");
    assert_eq!(clock_time(3_661_000, 0), "01:01:01 UTC");
}

#[test]
fn a_big_session_s_status_page_reads_cached_facts_for_a_second_but_pauses_as_they_are() {
    use super::super::views::{FACTS_CACHE_JOBS, FACTS_MAX_AGE_MS};
    use aam_protocol::messages::JobPage;
    let mut s = State::new(agent_config());
    let jobs = (0..=FACTS_CACHE_JOBS)
        .map(|i| agent_job(&format!("j{i}"), "claude"))
        .collect();
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    let page = Some(JobPage {
        offset: 0,
        limit: 1,
    });
    let view = |s: &State, now| s.view_page(id, OutputWanted::None, page, 0, &|_| None, now);
    assert_eq!(view(&s, 0).unwrap().eta.slots, 0, "no worker yet");
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    s.job_finished(1, a, ended_with(fail(), limited_run(None)), 10)
        .unwrap();
    let cached = view(&s, 10).unwrap();
    assert_eq!(cached.eta.slots, 0, "the estimate is the cached one");
    assert_eq!(cached.paused.len(), 1, "a pause shows at once");
    assert_eq!(cached.paused[0].group, "claude");
    let renewed = view(&s, FACTS_MAX_AGE_MS).unwrap();
    assert_eq!(renewed.eta.slots, 1, "a second on, the facts are renewed");
    // A small session's facts are never cached.
    let (small, _) = s
        .submit(batch(vec![agent_job("k", "claude")]), None, 20)
        .unwrap();
    let eta = |s: &State| {
        s.view_page(small, OutputWanted::None, None, 0, &|_| None, 30)
            .unwrap()
            .eta
            .slots
    };
    assert_eq!(eta(&s), 1);
    s.register_worker(2, worker("w2", 2), &[], 30).unwrap();
    assert_eq!(eta(&s), 3);
}
