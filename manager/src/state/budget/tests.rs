//! Tests of budgets: a session that reached its budget skips the agent jobs
//! it has not started (and their dependents settle), running ones finish;
//! a job past its own budget is stopped once, fails `budget` and is not
//! retried; the config's default budget.

use super::super::testing::*;
use super::*;

fn costing(usd: f64) -> AgentRun {
    AgentRun {
        reported_cost_usd: Some(usd),
        ..agent_run("conv", "claude-sonnet-4-5", 1, 1)
    }
}

/// Sonnet's tokens worth about `usd` (input at $3 per million).
fn priced(usd: f64) -> AgentRun {
    agent_run("conv", "claude-sonnet-4-5", (usd / 3.0 * 1e6) as u64, 0)
}

#[test]
fn a_session_past_its_budget_skips_its_agent_jobs_not_started() {
    let mut s = State::new(agent_config());
    let jobs = vec![
        agent_job("a", "claude"),
        agent_job("b", "claude"),
        agent_job("c", "claude"),
        job("after-c", &["c"]),
        job("cmd", &[]),
    ];
    let spec = BatchSpec {
        max_cost_usd: Some(1.0),
        ..batch(jobs)
    };
    let (id, _) = s.submit(spec, None, 0).unwrap();
    s.register_worker(1, worker("w", 2), &[], 0).unwrap();
    let started: Vec<AttemptRef> = s.dispatch(0).iter().map(|(_, a)| attempt_of(a)).collect();
    s.job_finished(1, started[0], ended_with(ok(), costing(0.6)), 1)
        .unwrap();
    assert_eq!(job_view(&s, id, "c", 1).status, JobStatus::Queued);
    // b, still running, brings the session to its budget.
    assert_eq!(s.agent_update(1, started[1], priced(0.5), 2), Ok(None));
    let c = job_view(&s, id, "c", 2);
    assert_eq!(c.status, JobStatus::Skipped);
    assert_eq!(c.reason.as_deref(), Some("budget: spent $1.10 of $1.00"));
    assert_eq!(job_view(&s, id, "after-c", 2).status, JobStatus::Skipped);
    assert_eq!(job_view(&s, id, "b", 2).status, JobStatus::Running);
    // Plain commands still run; the running agent finishes.
    let cmd = s.dispatch(3).remove(0).1;
    assert_eq!(cmd.job_name, "cmd");
    s.job_finished(1, started[1], ended_with(ok(), costing(0.45)), 4)
        .unwrap();
    assert_eq!(job_view(&s, id, "b", 4).status, JobStatus::Succeeded);
    assert!((s.summary(id).unwrap().cost_usd - 1.05).abs() < 1e-9);
    s.job_finished(1, attempt_of(&cmd), ended(ok()), 5).unwrap();
    let status = s.summary(id).unwrap().status;
    assert_eq!(status, SessionStatus::Failed, "work was left undone");
}

#[test]
fn a_job_past_its_own_budget_is_stopped_once_and_fails_without_a_retry() {
    let mut s = State::new(agent_config());
    let spec = JobSpec {
        max_cost_usd: Some(0.5),
        retries: Some(3),
        ..agent_job("a", "claude")
    };
    let (id, _) = s.submit(batch(vec![spec]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    assert_eq!(s.agent_update(1, a, priced(0.4), 1), Ok(None));
    let stop = BudgetStop {
        worker: 1,
        attempt: a,
        grace_ms: StateConfig::default().default_grace_ms,
    };
    assert_eq!(s.agent_update(1, a, priced(0.6), 2), Ok(Some(stop)));
    assert_eq!(s.agent_update(1, a, priced(0.7), 3), Ok(None), "sent once");
    let stopped = Stopped {
        cause: StopCause::Budget,
        receipt: TeardownReceipt::default(),
    };
    let report = EndReport {
        stopped: Some(stopped),
        ..ended_with(Some(exit_after(143, 3)), costing(0.72))
    };
    s.job_finished(1, a, report, 4).unwrap();
    let view = job_view(&s, id, "a", 5);
    assert_eq!(
        (view.status, view.reason.as_deref()),
        (JobStatus::Failed, Some("budget"))
    );
    assert_eq!(view.agent.unwrap().cost_usd, 0.72);
    assert!(s.dispatch(6).is_empty(), "retried past its budget");
}

#[test]
fn a_job_requeued_past_its_own_budget_does_not_start_again() {
    let mut s = State::new(agent_config());
    let spec = JobSpec {
        max_cost_usd: Some(0.5),
        ..agent_job("a", "claude")
    };
    let (id, _) = s.submit(batch(vec![spec]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    let mut limited = costing(0.8);
    limited.limit = Some(UsageLimit {
        resets_at_ms: Some(10),
        message: "limit".into(),
    });
    s.job_finished(1, a, ended_with(ok(), limited), 1).unwrap();
    assert!(s.dispatch(20).is_empty());
    let view = job_view(&s, id, "a", 20);
    assert_eq!(
        (view.status, view.reason.as_deref()),
        (JobStatus::Failed, Some("budget"))
    );
}

#[test]
fn the_config_budget_applies_to_sessions_that_set_none() {
    let config = StateConfig {
        default_max_cost_usd: Some(2.0),
        ..agent_config()
    };
    let mut s = State::new(config);
    let (mine, _) = s
        .submit(batch(vec![agent_job("a", "claude")]), None, 0)
        .unwrap();
    let own = BatchSpec {
        max_cost_usd: Some(9.0),
        ..batch(vec![agent_job("a", "claude")])
    };
    let (theirs, _) = s.submit(own, None, 0).unwrap();
    let budgets: Vec<Option<f64>> = s
        .take_changes()
        .sessions
        .iter()
        .filter(|r| [mine, theirs].contains(&r.id))
        .map(|r| r.max_cost_usd)
        .collect();
    assert_eq!(budgets, [Some(2.0), Some(9.0)]);
}

#[test]
fn a_final_cost_past_the_budget_skips_dependents_for_the_budget() {
    let mut s = State::new(agent_config());
    let spec = BatchSpec {
        max_cost_usd: Some(1.0),
        ..batch(vec![
            agent_job("a", "claude"),
            JobSpec {
                depends_on: vec![Dependency::after("a")],
                ..agent_job("b", "claude")
            },
        ])
    };
    let (id, _) = s.submit(spec, None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    s.job_finished(1, a, ended_with(ok(), costing(1.5)), 1)
        .unwrap();
    let b = job_view(&s, id, "b", 2);
    assert_eq!(b.reason.as_deref(), Some("budget: spent $1.50 of $1.00"));
}
