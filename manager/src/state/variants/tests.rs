//! Tests of best of N: a job of variants becomes variant jobs of its own
//! and a parent that runs nothing; the pick (the smallest passing change,
//! then the earliest; none passing fails, saying why); what dependents see;
//! the session's outcome; cancel and retry of a parent; a restart.

use super::super::testing::*;
use super::*;

/// `fix` (3 variants, verify) after `scan`, and `test` after `fix`.
fn best_of_three() -> BatchSpec {
    let fix = JobSpec {
        variants: Some(3),
        verify: Some(vec!["cargo".into(), "test".into()]),
        ..job("fix", &["scan"])
    };
    batch(vec![worktree_job("scan", &[]), fix, job("test", &["fix"])])
}

/// Submits `best_of_three` with one worker of 4 slots, and runs `scan`.
fn started(s: &mut State) -> SessionId {
    let (id, _) = s.submit(best_of_three(), None, 0).unwrap();
    s.register_worker(1, worker("w", 4), &[], 0).unwrap();
    let scan = s.dispatch(0).remove(0).1;
    let report = ended_changed(ok(), change("aam/s1/scan", 1, 0), b"p");
    s.job_finished(1, attempt_of(&scan), report, 1).unwrap();
    id
}

/// Ends each dispatched variant `fix.k` as `ends[k - 1]` says.
fn end_variants(s: &mut State, ends: &[(Option<ExitInfo>, JobChange)], now: u64) {
    let mut running: Vec<Assignment> = s.dispatch(now).into_iter().map(|(_, a)| a).collect();
    running.sort_by(|a, b| a.job_name.cmp(&b.job_name));
    assert_eq!(running.len(), ends.len());
    for (a, (exit, change)) in running.iter().zip(ends) {
        let report = ended_changed(*exit, change.clone(), b"patch");
        s.job_finished(1, attempt_of(a), report, now + 1).unwrap();
    }
}

fn variant(k: u32, added: u32, verify_exit: i32) -> (Option<ExitInfo>, JobChange) {
    let c = verified(change(&format!("aam/s1/fix.{k}"), added, 1), verify_exit);
    (ok(), c)
}

#[test]
fn a_job_of_variants_becomes_variant_jobs_after_the_batch_and_a_parent() {
    let mut s = State::new(config());
    let (id, jobs) = s.submit(best_of_three(), None, 0).unwrap();
    assert_eq!(jobs, 6);
    let entry = s.sessions.get(id).unwrap();
    let names: Vec<&str> = entry.jobs().iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["scan", "fix", "test", "fix.1", "fix.2", "fix.3"]);
    assert_eq!(entry.index_of("fix.2").unwrap(), 4);
    let fix = record(&s, id, "fix");
    assert_eq!(
        (fix.status, fix.variant_jobs.clone()),
        (JobStatus::Pending, vec![3, 4, 5])
    );
    for k in 1..=3u32 {
        let v = record(&s, id, &format!("fix.{k}"));
        assert_eq!(v.variant, Some(k));
        assert_eq!(
            v.depends_on, fix.depends_on,
            "a variant waits for what its parent does"
        );
        assert_eq!(v.isolation, Isolation::Worktree);
        assert_eq!(v.verify, fix.verify);
        assert!(v.env.contains(&(VARIANT_ENV.to_string(), k.to_string())));
    }
    let view = job_view(&s, id, "fix", 0);
    assert_eq!(view.variants, ["fix.1", "fix.2", "fix.3"]);
    assert_eq!(
        view.reason.as_deref(),
        Some("waiting for dependencies: scan")
    );
    assert_eq!(job_view(&s, id, "fix.2", 0).variant, Some(2));
    // Once scan has run, the variants run; the parent never does.
    s.register_worker(1, worker("w", 8), &[], 0).unwrap();
    let scan = s.dispatch(0).remove(0).1;
    s.job_finished(
        1,
        attempt_of(&scan),
        ended_changed(ok(), change("b", 1, 0), b""),
        1,
    )
    .unwrap();
    let mut names: Vec<String> = s.dispatch(2).into_iter().map(|(_, a)| a.job_name).collect();
    names.sort();
    assert_eq!(names, ["fix.1", "fix.2", "fix.3"]);
    let view = job_view(&s, id, "fix", 3);
    assert_eq!(
        view.reason.as_deref(),
        Some("waiting for its variants: fix.1, fix.2, fix.3")
    );
}

#[test]
fn the_smallest_passing_change_wins_and_dependents_see_it() {
    let mut s = State::new(config());
    let id = started(&mut s);
    // fix.1 fails its verify; fix.2 is the smallest that passes.
    end_variants(
        &mut s,
        &[variant(1, 1, 1), variant(2, 5, 0), variant(3, 9, 0)],
        10,
    );
    assert_eq!(status(&s, id, "fix.1"), JobStatus::Failed);
    assert_eq!(status(&s, id, "fix"), JobStatus::Succeeded);
    let fix = record(&s, id, "fix");
    let pick = fix.pick.clone().unwrap();
    assert_eq!(pick.winner.as_deref(), Some("fix.2"));
    assert_eq!(
        pick.reason,
        "fix.2 passed with the smallest change (+5 -1 in 1 file); 2 of the 3 variants passed"
    );
    assert_eq!(fix.change.as_ref().unwrap().branch, "aam/s1/fix.2");
    // `test` depends on the parent, and is given the winner's change.
    let (_, test) = s.dispatch(20).remove(0);
    assert_eq!(test.job_name, "test");
    let inputs = s.inputs_for(test.job, &|_| None);
    assert_eq!(inputs[0].name, "fix");
    assert_eq!(inputs[0].change.as_ref().unwrap().branch, "aam/s1/fix.2");
    s.job_finished(1, attempt_of(&test), ended(ok()), 21)
        .unwrap();
    // A variant that lost does not fail the session.
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Succeeded);
}

#[test]
fn a_tie_goes_to_the_earliest_and_a_change_of_nothing_is_the_smallest() {
    let mut s = State::new(config());
    let id = started(&mut s);
    end_variants(
        &mut s,
        &[variant(1, 5, 0), variant(2, 3, 0), variant(3, 3, 0)],
        10,
    );
    let pick = record(&s, id, "fix").pick.clone().unwrap();
    assert_eq!(pick.winner.as_deref(), Some("fix.2"));
    assert!(
        pick.reason
            .ends_with(", as small as fix.3: the earliest wins"),
        "{}",
        pick.reason
    );
    let one = |change: JobChange| JobRecord {
        status: JobStatus::Succeeded,
        change: Some(Box::new(change)),
        ..JobRecord::new(
            JobKey {
                session: id,
                index: 0,
            },
            "v".into(),
            Vec::new(),
        )
    };
    let (a, b) = (one(change("x", 4, 0)), one(change("y", 0, 0)));
    assert_eq!(pick_of(&[&a, &b]), Some(1));
    let silent = JobRecord {
        change: None,
        ..one(change("z", 0, 0))
    };
    assert_eq!(
        pick_of(&[&silent, &a]),
        Some(1),
        "no change reported ranks last"
    );
}

fn pick_of(variants: &[&JobRecord]) -> Option<usize> {
    pick(variants).0
}

#[test]
fn none_passing_fails_the_parent_saying_why_and_its_dependents_are_skipped() {
    let mut s = State::new(config());
    let id = started(&mut s);
    let exited_1 = (fail(), change("aam/s1/fix.3", 2, 0));
    end_variants(&mut s, &[variant(1, 1, 1), variant(2, 1, 2), exited_1], 10);
    assert_eq!(status(&s, id, "fix"), JobStatus::Failed);
    let fix = job_view(&s, id, "fix", 20);
    let pick = fix.pick.unwrap();
    assert_eq!(pick.winner, None);
    assert_eq!(
        pick.reason,
        "none of the 3 variants passed: fix.1 failed (verify failed: exit 1); \
         fix.2 failed (verify failed: exit 2); fix.3 failed"
    );
    assert_eq!(fix.reason.as_deref(), Some(pick.reason.as_str()));
    assert_eq!(fix.change, None);
    assert_eq!(status(&s, id, "test"), JobStatus::Skipped);
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Failed);
}

#[test]
fn cancelling_the_parent_cancels_its_variants_and_a_retry_runs_them_again() {
    let mut s = State::new(config());
    let id = started(&mut s);
    s.dispatch(10); // the three variants run
    let out = s.cancel(id, Some("fix"), Some(0), 11).unwrap();
    assert_eq!(out.cancelled, ["fix"]);
    assert_eq!(out.stopping_names, ["fix.1", "fix.2", "fix.3"]);
    assert_eq!(
        job_view(&s, id, "fix", 11).reason.as_deref(),
        Some("cancelled, with its variants")
    );
    for (_, attempt, _) in out.stopping {
        let stopped = Stopped {
            cause: StopCause::Cancelled,
            receipt: TeardownReceipt::default(),
        };
        let report = EndReport {
            stopped: Some(stopped),
            ..ended(fail())
        };
        s.job_finished(1, attempt, report, 12).unwrap();
    }
    assert_eq!(status(&s, id, "fix"), JobStatus::Cancelled, "not picked");
    assert_eq!(s.summary(id).unwrap().status, SessionStatus::Cancelled);
    let again = s.retry(id, 20).unwrap();
    assert_eq!(again, ["fix", "test", "fix.1", "fix.2", "fix.3"]);
    end_variants(
        &mut s,
        &[variant(1, 2, 0), variant(2, 1, 1), variant(3, 1, 0)],
        30,
    );
    let pick = record(&s, id, "fix").pick.clone().unwrap();
    assert_eq!(pick.winner.as_deref(), Some("fix.3"));
}

#[test]
fn a_retry_leaves_the_variants_that_lost_to_a_winner() {
    let mut s = State::new(config());
    let id = started(&mut s);
    end_variants(
        &mut s,
        &[variant(1, 1, 1), variant(2, 1, 0), variant(3, 1, 1)],
        10,
    );
    let (_, test) = s.dispatch(20).remove(0);
    s.job_finished(1, attempt_of(&test), ended(fail()), 21)
        .unwrap();
    assert_eq!(s.retry(id, 30).unwrap(), ["test"]);
}

#[test]
fn a_parent_whose_variants_end_after_a_restart_is_picked() {
    let mut s = State::new(config());
    let id = started(&mut s);
    let running: Vec<AttemptRef> = s.dispatch(10).iter().map(|(_, a)| attempt_of(a)).collect();
    let mut r = State::rebuild(config(), snapshot_of(&mut s), 20);
    assert_eq!(status(&r, id, "fix"), JobStatus::Pending);
    r.register_worker(2, worker("w", 4), &running, 21).unwrap();
    for (k, attempt) in running.into_iter().enumerate() {
        let c = verified(change("b", k as u32 + 1, 0), 0);
        r.job_finished(2, attempt, ended_changed(ok(), c, b""), 22)
            .unwrap();
    }
    assert_eq!(status(&r, id, "fix"), JobStatus::Succeeded);
    assert!(r.dispatch(23).iter().all(|(_, a)| a.job_name == "test"));
}

#[test]
fn a_batch_too_large_with_its_variants_is_refused() {
    let mut config = config();
    config.limits.max_jobs = 4;
    let mut s = State::new(config);
    let e = s.submit(best_of_three(), None, 0).unwrap_err();
    assert!(
        e.to_string()
            .contains("6 jobs with their variants, more than the 4 allowed"),
        "{e}"
    );
}

#[test]
fn variants_cancelled_before_their_dependency_ended_leave_the_parent_to_fail_once_it_does() {
    let mut s = State::new(config());
    let (id, _) = s.submit(best_of_three(), None, 0).unwrap();
    for k in 1..=3 {
        let out = s.cancel(id, Some(&format!("fix.{k}")), None, 1).unwrap();
        assert_eq!(out.cancelled, [format!("fix.{k}")]);
    }
    assert_eq!(
        status(&s, id, "fix"),
        JobStatus::Pending,
        "it waits for scan"
    );
    s.register_worker(1, worker("w", 4), &[], 2).unwrap();
    let scan = s.dispatch(2).remove(0).1;
    s.job_finished(1, attempt_of(&scan), ended(ok()), 3)
        .unwrap();
    assert_eq!(status(&s, id, "fix"), JobStatus::Failed);
    let test = job_view(&s, id, "test", 4);
    assert_eq!(test.status, JobStatus::Skipped);
    assert_eq!(
        test.reason.as_deref(),
        Some("dependency 'fix' ended failed, not succeeded")
    );
    let counts = s.summary(id).unwrap();
    assert_eq!(counts.count(JobStatus::Skipped), 1);
    assert!(s.dispatch(5).is_empty());
}
