//! Tests of the attempt fence, of outputs kept and stored at an attempt's
//! end, and of the pure decisions: how an end is classified, and retries.

use super::super::testing::*;
use super::*;

fn policy() -> RunPolicy {
    RunPolicy {
        timeout_ms: Some(90_000),
        idle_timeout_ms: Some(300_000),
        grace_ms: 10,
        retries: 2,
        retry_backoff_ms: 1_000,
        retry_on: vec![JobStatus::Failed],
    }
}

fn exit(code: i32) -> Option<ExitInfo> {
    Some(exit_after(code, 5))
}

#[test]
fn a_stale_or_repeated_report_changes_nothing() {
    let mut s = State::new(config());
    let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    let stale = AttemptRef {
        attempt: a.attempt + 1,
        ..a
    };
    assert!(s.job_finished(1, stale, ended(fail()), 1).is_err());
    assert!(s.job_output(1, stale, b"not mine").is_err());
    assert!(s.job_finished(1, a, ended(ok()), 1).is_ok());
    assert!(s.job_finished(1, a, ended(fail()), 2).is_err());
    assert_eq!(status(&s, id, "a"), JobStatus::Succeeded);
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Succeeded);
}

#[test]
fn a_worker_cannot_report_on_an_attempt_assigned_to_another() {
    let mut s = State::new(config());
    let (id, _) = s
        .submit(batch(vec![job("a", &[]), job("b", &[])]), None, 0)
        .unwrap();
    s.register_worker(1, worker("honest", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    s.register_worker(2, worker("liar", 1), &[], 0).unwrap();
    s.job_output(1, a, b"mine").unwrap();
    let forged = OutputCapture::from_parts(1024, b"forged".to_vec(), vec![], 6);
    assert_eq!(s.job_output(2, a, b"forged"), Err(Fenced::NotYours));
    assert_eq!(s.output_sync(2, a, &forged), Err(Fenced::NotYours));
    assert_eq!(
        s.job_progress(2, a, 99, Some("forged".into())),
        Err(Fenced::NotYours)
    );
    assert_eq!(s.job_finished(2, a, ended(ok()), 1), Err(Fenced::NotYours));
    // Nothing changed: still running on its worker, with its own output;
    // its slot is still taken, so the liar got the other job.
    assert_eq!(status(&s, id, "a"), JobStatus::Running);
    assert_eq!(s.logs(id, "a", 0, &|_| None).unwrap().output, b"mine");
    let next = s.dispatch(2);
    assert_eq!((next.len(), next[0].0), (1, 2));
    // A stale report is stale whoever sends it (and acknowledged as such).
    let stale = AttemptRef { attempt: 9, ..a };
    assert_eq!(s.job_finished(2, stale, ended(ok()), 3), Err(Fenced::Stale));
    // The worker it is assigned to is heard.
    assert_eq!(s.job_finished(1, a, ended(ok()), 3), Ok(()));
    assert_eq!(status(&s, id, "a"), JobStatus::Succeeded);
}

#[test]
fn a_synced_output_is_kept_within_our_cap_whatever_it_claims() {
    let mut s = State::new(config());
    let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    let forged = OutputCapture::from_parts(usize::MAX, vec![b'x'; 100_000], b"end".to_vec(), 1);
    s.output_sync(1, a, &forged).unwrap();
    let logs = s.logs(id, "a", 0, &|_| None).unwrap();
    assert!(logs.output.len() < 1100, "{}", logs.output.len());
    assert_eq!(logs.output_bytes, 100_003);
    assert!(logs.output.ends_with(b"end"));
}

#[test]
fn output_is_capped_and_stored_at_the_end() {
    let mut s = State::new(config());
    s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
    s.register_worker(1, worker("w", 1), &[], 0).unwrap();
    let a = attempt_of(&s.dispatch(0)[0].1);
    s.take_changes();
    for _ in 0..10 {
        assert!(s.job_output(1, a, &[b'x'; 1000]).is_ok());
    }
    s.job_finished(1, a, ended(ok()), 1).unwrap();
    let changes = s.take_changes();
    assert_eq!(changes.outputs.len(), 1);
    let stored: OutputCapture = aam_protocol::codec::decode(&changes.outputs[0].1).unwrap();
    let out = stored.render();
    assert!(out.len() < 1100, "{}", out.len());
    assert!(String::from_utf8_lossy(&out).contains("8976 bytes of output omitted"));
    assert_eq!(stored.total(), 10_000);
}

#[test]
fn endings_are_classified_by_stop_cause_then_exit() {
    let p = policy();
    let classify = |exit, stop, cancel| classify_end(exit, stop, None, &p, cancel);
    assert_eq!(
        classify(exit(0), None, false),
        (AttemptEnd::Final(JobStatus::Succeeded), None)
    );
    assert_eq!(
        classify(exit(0), Some(StopCause::Cancelled), false),
        (
            AttemptEnd::Final(JobStatus::Cancelled),
            Some("cancelled".into())
        ),
        "a stop wins over the exit it caused"
    );
    assert_eq!(
        classify(exit(1), None, true).0,
        AttemptEnd::Final(JobStatus::Cancelled),
        "a job that failed while being cancelled was cancelled"
    );
    assert_eq!(
        classify(exit(1), Some(StopCause::Timeout), false),
        (
            AttemptEnd::Final(JobStatus::TimedOut),
            Some("timeout: ran longer than 1m 30s".into())
        )
    );
    assert_eq!(
        classify(exit(1), Some(StopCause::Idle), false),
        (
            AttemptEnd::Final(JobStatus::TimedOut),
            Some("idle: printed nothing for 5m".into())
        )
    );
    for cause in [StopCause::Shutdown, StopCause::Superseded] {
        assert_eq!(classify(None, Some(cause), false).0, AttemptEnd::Requeue);
    }
    let killed = Some(ExitInfo {
        code: None,
        signal: Some(9),
        duration_ms: 1,
    });
    assert_eq!(
        classify(killed, None, false),
        (
            AttemptEnd::Final(JobStatus::Failed),
            Some("killed by signal 9".into())
        )
    );
    let given = classify_end(exit(1), None, Some("could not start".into()), &p, false);
    assert_eq!(given.1.as_deref(), Some("could not start"));
}

#[test]
fn backoff_doubles_per_retry_up_to_its_cap_and_jitter_keeps_the_upper_half() {
    assert_eq!(backoff_ms(1_000, 1, 60_000), 1_000);
    assert_eq!(backoff_ms(1_000, 2, 60_000), 2_000);
    assert_eq!(backoff_ms(1_000, 4, 60_000), 8_000);
    assert_eq!(backoff_ms(1_000, 40, 60_000), 60_000);
    assert_eq!(backoff_ms(0, 1, 60_000), 1, "never zero");
    let key = JobKey {
        session: SessionId(3),
        index: 7,
    };
    let mut last = 0;
    for attempt in 1..6u32 {
        let delay = backoff_ms(1_000, attempt, 60_000);
        let j = jittered(delay, key, attempt);
        assert!((delay / 2..=delay).contains(&j), "{j} of {delay}");
        assert_eq!(j, jittered(delay, key, attempt), "deterministic");
        assert!(j >= last, "each gap at least the last");
        last = j;
    }
}

#[test]
fn retries_follow_the_policy_and_the_limits() {
    let rules = RetryRules {
        max_losses: 3,
        backoff_cap_ms: 60_000,
    };
    let key = JobKey {
        session: SessionId(1),
        index: 0,
    };
    let mut job = JobRecord::new(key, "a".into(), vec![]);
    job.policy = policy().into();
    job.attempts = 1;
    job.failures = 1;
    let failed = AttemptEnd::Final(JobStatus::Failed);
    let (next, reason) = next_step(failed, &job, Some("exit 1"), rules);
    let Next::RetryAfter(delay) = next else {
        panic!("a first failure is retried: {next:?}");
    };
    assert!((500..=1_000).contains(&delay));
    let reason = reason.unwrap();
    assert!(
        reason.starts_with("attempt 1 failed (exit 1); retry 1 of 2 in "),
        "{reason}"
    );
    let timed_out = AttemptEnd::Final(JobStatus::TimedOut);
    assert_eq!(
        next_step(timed_out, &job, None, rules).0,
        Next::End(JobStatus::TimedOut),
        "not in retry_on"
    );
    job.failures = 3;
    assert_eq!(
        next_step(failed, &job, None, rules).0,
        Next::End(JobStatus::Failed)
    );
    job.failures = 1;
    job.cancel_requested = true;
    assert_eq!(
        next_step(failed, &job, None, rules).0,
        Next::End(JobStatus::Failed)
    );
    job.losses = 2;
    assert_eq!(
        next_step(AttemptEnd::Lost, &job, None, rules),
        (Next::Requeue, None)
    );
    job.losses = 3;
    assert_eq!(
        next_step(AttemptEnd::Lost, &job, None, rules),
        (
            Next::End(JobStatus::Failed),
            Some("worker lost (3 times)".into())
        )
    );
}
