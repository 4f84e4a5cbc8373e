//! Tests of worktree jobs: the order an assignment carries, a base job's
//! branch (pinned to its worker, resolved to its commit), a worktree that
//! could not be set up, a failed verify, the patch kept and answered,
//! follow-ups on the same branch, and the branches `gc` deletes.

use super::super::testing::*;
use super::*;

/// Submits `jobs` with one worker "w1" (id 1) of 4 slots.
fn submitted(s: &mut State, jobs: Vec<JobSpec>) -> SessionId {
    let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
    s.register_worker(1, worker("w1", 4), &[], 0).unwrap();
    id
}

fn order_of(a: &Assignment) -> &WorktreeOrder {
    a.worktree.as_deref().expect("a worktree order")
}

#[test]
fn a_worktree_assignment_orders_its_branch_path_base_verify_and_message() {
    let mut agents = agent_config();
    if let Some(codex) = agents.agents.get_mut("codex") {
        codex.isolation = Some("worktree".into());
    }
    let mut s = State::new(StateConfig {
        patch_cap: 4096,
        ..agents
    });
    let fix = JobSpec {
        base: Some("main".into()),
        verify: Some(vec!["cargo".into(), "test".into()]),
        ..agent_job("fix", "claude")
    };
    let id = submitted(
        &mut s,
        vec![fix, agent_job("review", "codex"), job("plain", &[])],
    );
    let mut assigned: Vec<Assignment> = s.dispatch(1).into_iter().map(|(_, a)| a).collect();
    assigned.sort_by(|a, b| a.job_name.cmp(&b.job_name));
    let [fix, plain, review] = &assigned[..] else {
        panic!("{assigned:?}")
    };
    let want = WorktreeOrder {
        branch: format!("aam/{id}/fix"),
        base: "main".into(),
        reuse_branch: false,
        path_key: format!("{id}/fix"),
        verify: Some(vec!["cargo".into(), "test".into()]),
        message: format!("aam {id}/fix (session b, agent claude)"),
        patch_cap: 4096,
        workspace: None,
    };
    assert_eq!(order_of(fix), &want);
    assert!(plain.worktree.is_none(), "isolation defaults to none");
    // Its agent's default: a worktree, from HEAD.
    let review = order_of(review);
    assert_eq!(
        (review.base.as_str(), review.verify.as_ref()),
        ("HEAD", None)
    );
    assert_eq!(
        review.message,
        format!("aam {id}/review (session b, agent codex)")
    );
    let command = commit_message(
        id,
        "b",
        &JobRecord {
            variant: Some(2),
            ..JobRecord::new(
                JobKey {
                    session: id,
                    index: 0,
                },
                "fix.2".into(),
                Vec::new(),
            )
        },
    );
    assert_eq!(
        command,
        format!("aam {id}/fix.2 (session b, command, variant 2)")
    );
}

#[test]
fn a_base_job_pins_the_job_to_its_worker_and_starts_from_its_commit() {
    let mut s = State::new(config());
    let test = JobSpec {
        base: Some("job:fix".into()),
        ..worktree_job("test", &["fix"])
    };
    let id = submitted(&mut s, vec![worktree_job("fix", &[]), test]);
    let fix = s.dispatch(1).remove(0).1;
    let report = ended_changed(ok(), change(&format!("aam/{id}/fix"), 3, 0), b"p");
    s.job_finished(1, attempt_of(&fix), report, 2).unwrap();
    s.worker_gone(1, false, 3);
    s.register_worker(2, worker("w2", 4), &[], 3).unwrap();
    assert_eq!(
        job_view(&s, id, "test", 4).reason.as_deref(),
        Some("waiting for worker w1 to connect (the branch it starts from lives there)")
    );
    assert!(s.dispatch(4).is_empty(), "ran away from its base branch");
    s.register_worker(3, worker("w1", 1), &[], 5).unwrap();
    let (on, test) = s.dispatch(5).remove(0);
    assert_eq!(on, 3);
    let order = order_of(&test);
    assert_eq!(order.base, format!("c-aam/{id}/fix"));
    assert_eq!(order.branch, format!("aam/{id}/test"));
}

#[test]
fn a_base_job_that_changed_nothing_gives_its_start_and_one_without_a_branch_fails_the_job() {
    let mut s = State::new(config());
    let after = |name: &str, when: When| JobSpec {
        base: Some("job:fix".into()),
        depends_on: vec![Dependency {
            job: "fix".into(),
            when,
        }],
        ..worktree_job(name, &[])
    };
    submitted(
        &mut s,
        vec![worktree_job("fix", &[]), after("test", When::Succeeded)],
    );
    let fix = s.dispatch(1).remove(0).1;
    let nothing = ended_changed(ok(), change("aam/s1/fix", 0, 0), b"");
    s.job_finished(1, attempt_of(&fix), nothing, 2).unwrap();
    assert_eq!(order_of(&s.dispatch(3).remove(0).1).base, "b0");
    // A base job whose worktree could not be set up left no branch.
    let (other, _) = s
        .submit(
            batch(vec![
                worktree_job("fix", &[]),
                after("next", When::Finished),
            ]),
            None,
            4,
        )
        .unwrap();
    let fix = s.dispatch(4).remove(0).1;
    s.worktree_failed(1, attempt_of(&fix), "not a git repository: /x".into(), 5)
        .unwrap();
    assert!(s.dispatch(6).is_empty());
    assert_eq!(status(&s, other, "next"), JobStatus::Failed);
    assert_eq!(
        job_view(&s, other, "next", 6).reason.as_deref(),
        Some("base job:fix: 'fix' left no branch to start from (it ended failed: not a git repository: /x)")
    );
}

#[test]
fn a_batch_is_refused_for_a_base_job_in_place_or_a_name_git_refuses() {
    let mut s = State::new(config());
    let test = JobSpec {
        base: Some("job:fix".into()),
        ..worktree_job("test", &["fix"])
    };
    let e = s
        .submit(
            batch(vec![job("fix", &[]), test, worktree_job("a..b", &[])]),
            None,
            0,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("job 'test': field 'base': 'fix' does not run in a worktree"),
        "{e}"
    );
    assert!(
        e.contains("job 'a..b': field 'name': a worktree job's name makes a git branch"),
        "{e}"
    );
}

#[test]
fn a_worktree_that_could_not_be_set_up_fails_with_its_reason_and_is_not_retried() {
    let mut s = State::new(config());
    let spec = JobSpec {
        retries: Some(3),
        ..worktree_job("fix", &[])
    };
    let id = submitted(&mut s, vec![spec]);
    let a = attempt_of(&s.dispatch(1).remove(0).1);
    let reason = "not a git repository: /srv/x".to_string();
    assert_eq!(
        s.worktree_failed(2, a, reason.clone(), 2),
        Err(Fenced::NotYours)
    );
    s.worktree_failed(1, a, reason.clone(), 2).unwrap();
    let view = job_view(&s, id, "fix", 3);
    assert_eq!(
        (view.status, view.reason),
        (JobStatus::Failed, Some(reason))
    );
    assert!(s.dispatch(4).is_empty(), "retried");
    assert_eq!(
        s.worktree_failed(1, a, "again".into(), 5),
        Err(Fenced::Stale)
    );
    let e = s.patch(id, "fix", &|_| None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{id}/fix has no change: it ended failed without one: not a git repository: /srv/x"
        )
    );
}

#[test]
fn a_failed_verify_fails_the_job_naming_its_exit() {
    let mut s = State::new(config());
    let id = submitted(&mut s, vec![worktree_job("fix", &[])]);
    let a = attempt_of(&s.dispatch(1).remove(0).1);
    let report = ended_changed(ok(), verified(change("aam/s1/fix", 2, 0), 101), b"p");
    s.job_finished(1, a, report, 2).unwrap();
    let view = job_view(&s, id, "fix", 3);
    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.reason.as_deref(), Some("verify failed: exit 101"));
    assert_eq!(view.change.unwrap().verify.unwrap().exit_code, Some(101));
}

#[test]
fn a_patch_is_stored_with_the_job_and_answered_from_memory_then_the_store() {
    let mut s = State::new(StateConfig {
        patch_cap: 8,
        ..config()
    });
    let id = submitted(&mut s, vec![worktree_job("fix", &[]), job("plain", &[])]);
    let key = JobKey {
        session: id,
        index: 0,
    };
    for (_, a) in s.dispatch(1) {
        let report = match a.job_name.as_str() {
            "fix" => ended_changed(ok(), change("aam/s1/fix", 1, 0), b"From abc\n+x\n"),
            _ => ended(ok()),
        };
        s.job_finished(1, attempt_of(&a), report, 2).unwrap();
    }
    // Cut at the manager's cap, and said so.
    let stored = s.take_changes().patches;
    assert_eq!(stored, [(key, b"From abc".to_vec())]);
    let (kept, patch) = s.patch(id, "fix", &|_| None).unwrap();
    assert_eq!((patch.as_slice(), kept.patch_cut), (&b"From abc"[..], true));
    s.outputs_committed(&[(key, 1)]);
    assert_eq!(s.patch(id, "fix", &|_| None).unwrap().1, b"");
    let from_store = move |k: JobKey| (k == key).then(|| b"stored".to_vec());
    assert_eq!(s.patch(id, "fix", &from_store).unwrap().1, b"stored");
    let refused = |s: &State, name: &str| s.patch(id, name, &from_store).unwrap_err();
    let e = refused(&s, "plain");
    assert_eq!(e.kind(), aam_protocol::messages::ErrorKind::Conflict);
    assert_eq!(
        e.to_string(),
        format!("{id}/plain has no change: it did not run in a worktree")
    );
    assert_eq!(
        refused(&s, "nope").kind(),
        aam_protocol::messages::ErrorKind::NotFound
    );
    let (nothing, _) = s
        .submit(batch(vec![worktree_job("same", &[])]), None, 3)
        .unwrap();
    let a = attempt_of(&s.dispatch(3).remove(0).1);
    s.job_finished(1, a, ended_changed(ok(), change("b", 0, 0), b""), 4)
        .unwrap();
    assert!(
        s.take_changes().patches.is_empty(),
        "a first attempt's empty patch"
    );
    let e = s.patch(nothing, "same", &|_| None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{nothing}/same has no change: it changed nothing")
    );
}

#[test]
fn a_parent_of_variants_answers_its_winner_s_patch() {
    let mut s = State::new(config());
    let fix = JobSpec {
        variants: Some(2),
        ..worktree_job("fix", &[])
    };
    let id = submitted(&mut s, vec![fix]);
    assert_eq!(
        s.patch(id, "fix", &|_| None).unwrap_err().to_string(),
        format!("{id}/fix has no change yet: its variants have not all ended")
    );
    for (_, a) in s.dispatch(1) {
        let lines = if a.job_name == "fix.2" { 1 } else { 5 };
        let patch = format!("patch of {}", a.job_name);
        let report = ended_changed(ok(), change(&a.job_name, lines, 0), patch.as_bytes());
        s.job_finished(1, attempt_of(&a), report, 2).unwrap();
    }
    let (change, patch) = s.patch(id, "fix", &|_| None).unwrap();
    assert_eq!(
        (change.branch.as_str(), patch.as_slice()),
        ("fix.2", &b"patch of fix.2"[..])
    );
}

#[test]
fn a_new_attempt_forgets_the_last_one_s_change_and_a_retry_the_pick() {
    let mut job = JobRecord {
        change: Some(Box::new(change("b", 1, 0))),
        pick: Some(Box::new(aam_protocol::worktree::VariantPick {
            winner: None,
            reason: "none".into(),
        })),
        ..JobRecord::new(
            JobKey {
                session: SessionId(1),
                index: 0,
            },
            "j".into(),
            Vec::new(),
        )
    };
    job.reset_for_rerun();
    assert_eq!((job.change.is_none(), job.pick.is_none()), (true, true));
    job.change = Some(Box::new(change("b", 1, 0)));
    job.begin_attempt("w".into(), 1);
    assert!(job.change.is_none());
}

#[test]
fn a_follow_up_continues_the_branch_at_the_first_job_s_path_on_its_worker() {
    let mut s = State::new(agent_config());
    let spec = JobSpec {
        isolation: Some("worktree".into()),
        verify: Some(vec!["make".into()]),
        ..agent_job("fix", "claude")
    };
    let first = submitted(&mut s, vec![spec]);
    let a = attempt_of(&s.dispatch(1).remove(0).1);
    let branch = format!("aam/{first}/fix");
    let run = agent_run("conv-1", "claude-sonnet-4-5", 1, 1);
    let report = EndReport {
        agent: Some(run),
        ..ended_changed(ok(), change(&branch, 2, 0), b"p")
    };
    s.job_finished(1, a, report, 2).unwrap();
    let (second, _) = s.continue_job(first, "fix", "more".into(), 3).unwrap();
    let follow_up = record(&s, second, "fix");
    assert_eq!(follow_up.isolation, Isolation::Worktree);
    assert_eq!(follow_up.pinned_worker(), Some("w1"));
    let path_key = format!("{first}/fix");
    assert_eq!(
        follow_up.continues_branch,
        Some(Box::new((branch.clone(), path_key.clone())))
    );
    let order = order_of(&s.dispatch(4).remove(0).1).clone();
    assert_eq!(
        (order.branch.as_str(), order.path_key.as_str()),
        (branch.as_str(), path_key.as_str())
    );
    assert!(order.reuse_branch);
    assert_eq!(
        order.base,
        format!("c-{branch}"),
        "where it starts again if the branch is gone"
    );
    assert_eq!(order.verify, Some(vec!["make".into()]));
    // Its follow-up keeps the first job's path and branch.
    let a = AttemptRef {
        job: JobKey {
            session: second,
            index: 0,
        },
        attempt: 1,
    };
    let report = EndReport {
        agent: Some(agent_run("conv-1", "claude-sonnet-4-5", 1, 1)),
        ..ended_changed(ok(), change(&branch, 0, 0), b"")
    };
    s.job_finished(1, a, report, 5).unwrap();
    let (third, _) = s.continue_job(second, "fix", "again".into(), 6).unwrap();
    let third = record(&s, third, "fix");
    assert_eq!(third.continues_branch, Some(Box::new((branch, path_key))));
}

#[test]
fn gc_orders_each_worker_to_delete_the_branches_it_holds_but_not_those_still_continued() {
    let mut s = State::new(StateConfig {
        gc_branches: true,
        ..agent_config()
    });
    let spec = |name: &str| JobSpec {
        isolation: Some("worktree".into()),
        ..agent_job(name, "claude")
    };
    let old = submitted(&mut s, vec![spec("a"), spec("b"), job("plain", &[])]);
    s.register_worker(2, worker("w2", 4), &[], 0).unwrap();
    for (worker, a) in s.dispatch(1) {
        let run = agent_run("conv", "claude-sonnet-4-5", 1, 1);
        let report = EndReport {
            agent: Some(run),
            ..ended_changed(
                ok(),
                change(&format!("aam/{old}/{}", a.job_name), 1, 0),
                b"p",
            )
        };
        s.job_finished(worker, attempt_of(&a), report, 2).unwrap();
    }
    let holder_b = record(&s, old, "b").worker.clone().unwrap();
    // A follow-up of `a` still continues its branch: that one stays.
    let (follow_up, _) = s.continue_job(old, "a", "more".into(), 3).unwrap();
    s.cancel(follow_up, None, None, 4).unwrap();
    let collected = s.gc(3);
    assert_eq!(collected.removed, [(old, 3)]);
    let want = BranchDeletion {
        worker: holder_b,
        repo: "/repo".into(),
        branches: vec![format!("aam/{old}/b")],
    };
    assert_eq!(collected.branches, [want]);
    // Without gc_branches, no branch is touched.
    let collected = {
        s.config.gc_branches = false;
        s.gc(10)
    };
    assert_eq!(collected.removed, [(follow_up, 1)]);
    assert!(collected.branches.is_empty());
}
