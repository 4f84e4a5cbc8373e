//! Tests of cancel, retry and gate decisions.

use super::super::testing::*;

#[test]
fn cancel_ends_unstarted_jobs_at_once_and_asks_workers_to_stop_running_ones() {
    let mut s = State::new(config());
    let jobs = vec![job("run", &[]), job("wait", &[]), job("after", &["run"])];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let running = attempt_of(&s.dispatch(0)[0].1);
    let out = s.cancel(id, None, Some(250), 1).unwrap();
    assert_eq!(out.cancelled, vec!["wait", "after"]);
    assert_eq!(out.stopping, vec![(1, running, 250)]);
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Running);
    // The worker stops it: the stop is the end of the job.
    let stopped = Stopped {
        cause: StopCause::Cancelled,
        receipt: TeardownReceipt::default(),
    };
    assert!(s
        .job_finished(
            1,
            running,
            EndReport {
                stopped: Some(stopped),
                ..ended(ok())
            },
            2
        )
        .is_ok());
    assert_eq!(status(&s, id, "run"), JobStatus::Cancelled);
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Cancelled);
    assert!(s.dispatch(3).is_empty());
}

#[test]
fn a_cancel_is_ordered_again_when_the_worker_reconnects() {
    let mut s = State::new(config());
    let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let running = attempt_of(&s.dispatch(0)[0].1);
    let out = s.cancel(id, None, Some(300), 1).unwrap();
    assert_eq!(out.stopping.len(), 1);
    // The connection (or the manager) dies before the stop arrives; the
    // worker comes back still running the job.
    s.worker_gone(1, false, 2);
    let reg = s.register_worker(2, worker("w", 1), &[running], 3).unwrap();
    assert_eq!(reg.adopted, vec![running]);
    assert_eq!(reg.cancel, vec![(running, 10_000)]);
}

#[test]
fn cancelling_a_job_whose_worker_is_gone_ends_it_at_once() {
    let mut s = State::new(config());
    let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    s.dispatch(0);
    s.worker_gone(1, false, 1);
    let out = s.cancel(id, Some("a"), None, 2).unwrap();
    assert_eq!(out.cancelled, vec!["a"]);
    assert!(out.stopping.is_empty());
    assert_eq!(status(&s, id, "a"), JobStatus::Cancelled);
    assert_eq!(
        s.expire_orphans(1_000_000),
        0,
        "a cancelled job is not requeued"
    );
}

#[test]
fn errors_say_what_is_missing_or_refused_with_their_kind() {
    let mut s = State::new(config());
    let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
    let missing = SessionId(id.0 + 1);
    let e = s.retry(missing, 1).unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string()),
        (ErrorKind::NotFound, format!("no session {missing}"))
    );
    let e = s.cancel(id, Some("nope"), None, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = s.retry(id, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("has nothing to retry"), "{e}");
    let e = s.decide(id, "a", true, "me", None, 1).unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string()),
        (ErrorKind::Conflict, format!("{id}/a is not a gate"))
    );
}

#[test]
fn a_gate_is_decided_once_and_its_decision_runs_what_depends_on_it() {
    let mut s = State::new(config());
    let gate = JobSpec {
        name: "approve".into(),
        gate: true,
        depends_on: vec![Dependency::after("build")],
        ..Default::default()
    };
    let jobs = vec![job("build", &[]), gate, job("deploy", &["approve"])];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    let e = s.decide(id, "approve", true, "ops", None, 1).unwrap_err();
    assert!(
        e.to_string().contains("waiting for its dependencies"),
        "{e}"
    );
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let build = attempt_of(&s.dispatch(1)[0].1);
    s.job_finished(1, build, ended(ok()), 2).unwrap();
    let view = s.view(id, OutputWanted::None, 0, &|_| None, 3).unwrap();
    assert_eq!(view.jobs[1].reason.as_deref(), Some(AWAITING));
    let decided = s.decide(id, "approve", true, "ops", Some("ship it".into()), 4);
    assert_eq!(decided, Ok(JobStatus::Succeeded));
    let again = s.decide(id, "approve", false, "eve", None, 5).unwrap_err();
    assert_eq!(
        again.to_string(),
        format!("{id}/approve was already approved by ops")
    );
    assert_eq!(s.dispatch(6)[0].1.job_name, "deploy");
}

#[test]
fn retry_runs_again_what_did_not_succeed_as_new_attempts_and_keeps_the_rest() {
    let mut s = State::new(config());
    let jobs = vec![job("good", &[]), job("bad", &[]), job("after", &["bad"])];
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w", 2), &[], 0).unwrap();
    let first = s.dispatch(0);
    s.job_progress(1, attempt_of(&first[1].1), 40, None)
        .unwrap();
    s.job_finished(1, attempt_of(&first[0].1), ended(ok()), 1)
        .unwrap();
    s.job_finished(1, attempt_of(&first[1].1), ended(fail()), 1)
        .unwrap();
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Failed);
    let again = s.retry(id, 2).unwrap();
    assert_eq!(again, vec!["bad", "after"]);
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Running);
    let view = s.view(id, OutputWanted::None, 0, &|_| None, 2).unwrap();
    assert_eq!(
        view.jobs[1].progress, None,
        "a rerun starts with no progress"
    );
    assert_eq!(view.jobs[1].exit_code, None);
    let second = s.dispatch(3);
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].1.job_name.as_str(), second[0].1.attempt),
        ("bad", 2)
    );
    assert_eq!(status(&s, id, "good"), JobStatus::Succeeded);
}
