//! Tests of accounts and of the resume after a pause: the pick, a limit
//! moving a job to another account without a retry, the wait when every
//! account is paused, the env kept out of the record, and the starts
//! after a pause ends.

use super::super::testing::*;
use super::*;
use aam_protocol::account::AccountDef;

const MINUTE: u64 = 60_000;

fn limited_run(resets_at_ms: Option<u64>) -> AgentRun {
    AgentRun {
        error: Some("rate limited".into()),
        api_error_status: Some(429),
        limit: Some(UsageLimit {
            resets_at_ms,
            message: "Claude AI usage limit reached".into(),
        }),
        ..agent_run("conv", "claude-sonnet-4-5", 1, 0)
    }
}

/// `agent_config()` whose `claude` runs on accounts `work` and `personal`.
fn accounts_config() -> StateConfig {
    let mut c = agent_config();
    let account = |dir: &str| AccountDef {
        env: [("CLAUDE_CONFIG_DIR".to_string(), dir.to_string())].into(),
        ..AccountDef::default()
    };
    let mut personal = account("/secret/personal");
    personal.secret_env = [("ANTHROPIC_API_KEY".to_string(), "PERSONAL_KEY".to_string())].into();
    c.accounts = [
        ("work".to_string(), account("/secret/work")),
        ("personal".to_string(), personal),
    ]
    .into();
    let claude = c.agents.get_mut("claude").unwrap();
    claude.secret_env = vec!["ANTHROPIC_API_KEY".into()];
    claude.accounts = vec!["work".into(), "personal".into()];
    claude.env = [("CLAUDE_CONFIG_DIR".to_string(), "/agent".to_string())].into();
    c
}

fn env_of<'a>(a: &'a Assignment, name: &str) -> Vec<&'a str> {
    a.env
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn agent_jobs(n: usize) -> Vec<JobSpec> {
    (0..n)
        .map(|i| agent_job(&format!("j{i}"), "claude"))
        .collect()
}

#[test]
fn the_pick_is_the_open_account_with_fewest_running_jobs_first_listed_on_a_tie() {
    let accounts: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let running = |counts: [u32; 3]| move |x: &str| counts[(x.as_bytes()[0] - b'a') as usize];
    assert_eq!(
        pick_account(&accounts, |_| true, running([0, 0, 0])),
        Some("a")
    );
    assert_eq!(
        pick_account(&accounts, |_| true, running([2, 1, 1])),
        Some("b")
    );
    assert_eq!(
        pick_account(&accounts, |x| x != "b", running([2, 1, 1])),
        Some("c")
    );
    assert_eq!(pick_account(&accounts, |_| false, running([0, 0, 0])), None);
    assert_eq!(pick_account(&[], |_| true, running([0, 0, 0])), None);
}

#[test]
fn jobs_spread_over_accounts_and_a_limited_one_moves_to_another_at_once() {
    let mut s = State::new(accounts_config());
    let (id, _) = s.submit(batch(agent_jobs(3)), None, 0).unwrap();
    s.register_worker(1, worker("w", 4), &[], 0).unwrap();
    let started = s.dispatch(0);
    let on: Vec<Vec<&str>> = started
        .iter()
        .map(|(_, a)| env_of(a, "CLAUDE_CONFIG_DIR"))
        .collect();
    // The account's env replaces the agent's variable of the same name.
    assert_eq!(
        on,
        [["/secret/work"], ["/secret/personal"], ["/secret/work"]]
    );
    // Only `personal` names a key of the worker's; it replaces the agent's
    // own secret_env entry of that name.
    let secrets: Vec<&Vec<String>> = started.iter().map(|(_, a)| &a.secret_env).collect();
    assert_eq!(
        secrets,
        [
            &vec!["ANTHROPIC_API_KEY".to_string()],
            &vec!["ANTHROPIC_API_KEY=PERSONAL_KEY".to_string()],
            &vec!["ANTHROPIC_API_KEY".to_string()],
        ]
    );
    // The env is in the assignment only: never in a stored record.
    let changes = format!("{:?}", s.take_changes().jobs);
    assert!(!changes.contains("/secret/"), "{changes}");
    let view = format!("{:?}", s.view(id, OutputWanted::None, 0, &|_| None, 0));
    assert!(!view.contains("/secret/"), "{view}");

    let reset = 2 * 3600 * 1000;
    let first = attempt_of(&started[0].1);
    s.job_finished(1, first, ended_with(fail(), limited_run(Some(reset))), 10)
        .unwrap();
    // Requeued and started again at once, on the other account, no retry.
    let again = s.dispatch(10);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.job_name, "j0");
    assert_eq!(
        env_of(&again[0].1, "CLAUDE_CONFIG_DIR"),
        ["/secret/personal"]
    );
    let job = s.job(again[0].1.job).unwrap();
    assert_eq!((job.attempts, job.failures), (2, 0));

    let accounts = s.accounts(20);
    let (personal, work) = (&accounts[0], &accounts[1]);
    assert_eq!(work.name, "work");
    assert_eq!(work.paused_until_ms, Some(reset));
    assert_eq!(work.running, [format!("{id}/j2")]);
    assert_eq!(personal.paused_until_ms, None);
    assert_eq!(personal.running, [format!("{id}/j0"), format!("{id}/j1")]);
}

#[test]
fn jobs_wait_for_the_first_reset_when_every_account_is_paused() {
    let mut s = State::new(accounts_config());
    let (id, _) = s.submit(batch(agent_jobs(3)), None, 0).unwrap();
    s.register_worker(1, worker("w", 2), &[], 0).unwrap();
    let started = s.dispatch(0);
    let (work_reset, personal_reset) = (2 * 3600 * 1000, 3600 * 1000);
    for (at, (_, a)) in [work_reset, personal_reset].into_iter().zip(&started) {
        s.job_finished(
            1,
            attempt_of(a),
            ended_with(fail(), limited_run(Some(at))),
            10,
        )
        .unwrap();
    }
    assert!(s.dispatch(20).is_empty());
    let reason = job_view(&s, id, "j2", 20).reason;
    assert_eq!(
        reason.as_deref(),
        Some(
            "usage limit: every account paused (work, personal); the first resumes at 01:00:00 UTC"
        )
    );
    let session = s.view(id, OutputWanted::None, 0, &|_| None, 20).unwrap();
    assert_eq!(session.paused.len(), 2);
    // The first reset: the personal account resumes, two at a time.
    let resumed = s.dispatch(personal_reset);
    assert_eq!(resumed.len(), 2);
    for (_, a) in &resumed {
        assert_eq!(env_of(a, "CLAUDE_CONFIG_DIR"), ["/secret/personal"]);
    }
}

#[test]
fn after_a_pause_jobs_start_a_burst_per_interval_until_one_runs_through() {
    let mut s = State::new(StateConfig {
        resume_burst: 2,
        resume_interval_ms: 10_000,
        ..agent_config()
    });
    let (id, _) = s.submit(batch(agent_jobs(6)), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let first = attempt_of(&s.dispatch(0)[0].1);
    s.job_finished(1, first, ended_with(fail(), limited_run(None)), 0)
        .unwrap();
    s.register_worker(2, worker("w2", 8), &[], 0).unwrap();
    assert!(s.dispatch(MINUTE - 1).is_empty());
    // The pause ends: two start, the others wait for the next window.
    assert_eq!(s.dispatch(MINUTE).len(), 2);
    let held = job_view(&s, id, "j5", MINUTE).reason;
    assert_eq!(
        held.as_deref(),
        Some("resuming after a usage limit (claude): 2 started, more at 00:01:10 UTC")
    );
    assert!(s.dispatch(MINUTE + 9_999).is_empty());
    let second = s.dispatch(MINUTE + 10_000);
    assert_eq!(second.len(), 2);
    // One runs through without a limit: the rest start at once.
    s.job_finished(2, attempt_of(&second[0].1), ended(ok()), MINUTE + 11_000)
        .unwrap();
    assert_eq!(s.dispatch(MINUTE + 11_000).len(), 2);
}

#[test]
fn a_failure_without_a_limit_also_ends_the_resume() {
    let mut s = State::new(StateConfig {
        resume_burst: 1,
        ..agent_config()
    });
    s.submit(batch(agent_jobs(4)), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let first = attempt_of(&s.dispatch(0)[0].1);
    s.job_finished(1, first, ended_with(fail(), limited_run(None)), 0)
        .unwrap();
    s.register_worker(2, worker("w2", 8), &[], 0).unwrap();
    let resumed = s.dispatch(MINUTE);
    assert_eq!(resumed.len(), 1);
    s.job_finished(2, attempt_of(&resumed[0].1), ended(fail()), MINUTE + 1)
        .unwrap();
    assert_eq!(s.dispatch(MINUTE + 1).len(), 3);
}

#[test]
fn a_follow_up_keeps_the_account_its_conversation_ran_on() {
    let mut s = State::new(accounts_config());
    let (id, _) = s.submit(batch(agent_jobs(2)), None, 0).unwrap();
    s.register_worker(1, worker("w", 4), &[], 0).unwrap();
    for (_, a) in s.dispatch(0) {
        let run = agent_run("conv", "claude-sonnet-4-5", 1, 1);
        s.job_finished(1, attempt_of(&a), ended_with(ok(), run), 1)
            .unwrap();
    }
    // j1 ran on `personal`; with nothing running, `work` would come first.
    let (new, _) = s.continue_job(id, "j1", "more".into(), 2).unwrap();
    let started = s.dispatch(3);
    assert_eq!(started[0].1.job.session, new);
    assert_eq!(
        env_of(&started[0].1, "CLAUDE_CONFIG_DIR"),
        ["/secret/personal"]
    );
}
