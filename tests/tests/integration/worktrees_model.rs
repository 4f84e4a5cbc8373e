//! The manager's half of worktree jobs, against the real manager with a
//! forged worker that speaks the protocol (so it stands apart from the
//! worker's git): a worktree job's assignment carries its order, its change
//! and patch come back and are answered by `Patch` (from the store after a
//! restart), a `base = "job:..."` job starts from its dependency's commit,
//! a worktree that could not be set up fails its job with the worker's
//! reason, the pick of a job's variants, and `gc` with `gc_branches` tells
//! the worker which branches to delete.

use aam_protocol::messages::{
    Assignment, ClientRequest, ClientResponse, ManagerToWorker, OutputWanted, Role, WorkerToManager,
};
use aam_protocol::model::{ExitInfo, JobStatus, JobView, SessionStatus};
use aam_protocol::worktree::{DiffStat, JobChange, VerifyOutcome};
use aam_protocol::SessionId;
use aam_tests::wire::{registration, Wire};
use aam_tests::Cluster;
use serde_json::json;

/// A manager that deletes the branches of the sessions it removes.
fn cluster() -> Cluster {
    let mut c = Cluster::new();
    c.manager_config = Some(c.write("aam.toml", "gc_branches = true\n"));
    c.start_manager();
    c
}

/// The forged worker "fw" (one slot), registered.
fn forged(c: &Cluster, slots: u32) -> Wire {
    let mut register = registration("fw", 11);
    if let WorkerToManager::Register { slots: s, .. } = &mut register {
        *s = slots;
    }
    let (wire, answer) = Wire::register(&c.addr, &c.token, register);
    assert!(
        matches!(answer, ManagerToWorker::Registered { .. }),
        "{answer:?}"
    );
    wire
}

/// The next message the manager sends that `pick` takes.
fn next<T>(wire: &mut Wire, mut pick: impl FnMut(ManagerToWorker) -> Option<T>) -> T {
    loop {
        if let Some(found) = pick(wire.recv()) {
            return found;
        }
    }
}

fn assignment(wire: &mut Wire) -> Assignment {
    next(wire, |m| match m {
        ManagerToWorker::Assign(a) => Some(a),
        _ => None,
    })
}

/// Ends `a` with exit 0 and `change` (its patch: `patch`), and waits for
/// the manager's `Ack`.
fn finish(wire: &mut Wire, a: &Assignment, change: Option<JobChange>, patch: &[u8]) {
    let attempt = a.attempt_ref();
    wire.send(&WorkerToManager::Finished {
        attempt,
        exit: ExitInfo {
            code: Some(0),
            signal: None,
            duration_ms: 3,
        },
        stopped: None,
        agent: None,
        change: change.map(Box::new),
        patch: patch.to_vec(),
        workspace: None,
    });
    next(wire, |m| (m == ManagerToWorker::Ack(attempt)).then_some(()));
}

/// A change of `a`'s order: commit `commit`, `added` lines added.
fn change_of(a: &Assignment, commit: &str, added: u32, verify_exit: Option<i32>) -> JobChange {
    let order = a.worktree.as_deref().expect("a worktree order");
    JobChange {
        repo: "/srv/repo".into(),
        branch: order.branch.clone(),
        base: "b0".into(),
        commit: Some(commit.into()),
        stat: DiffStat {
            files: 1,
            insertions: added,
            deletions: 0,
        },
        patch_bytes: 10,
        patch_cut: false,
        verify: verify_exit.map(|code| VerifyOutcome {
            exit_code: Some(code),
            passed: code == 0,
            duration_ms: 1,
            output_tail: String::new(),
        }),
    }
}

fn ask(c: &Cluster, request: ClientRequest) -> ClientResponse {
    let mut client = Wire::connect(&c.addr, Role::Client, &c.token);
    client.send(&request);
    client.recv()
}

fn job_view(c: &Cluster, session: SessionId, name: &str) -> JobView {
    let request = ClientRequest::Session {
        session,
        output: OutputWanted::None,
        page: None,
    };
    let ClientResponse::Session(view) = ask(c, request) else {
        panic!("no session {session}");
    };
    view.jobs.into_iter().find(|j| j.name == name).expect("job")
}

fn patch(c: &Cluster, session: SessionId, job: &str) -> ClientResponse {
    let job = job.into();
    ask(c, ClientRequest::Patch { session, job })
}

#[test]
fn a_worktree_job_s_order_change_and_patch_travel_and_gc_deletes_its_branch() {
    let mut c = cluster();
    let id: SessionId = c
        .submit_json(&json!({"name": "wt", "jobs": [
            {"name": "fix", "command": ["true"], "isolation": "worktree", "verify": ["make"]},
            {"name": "test", "command": ["true"], "depends_on": ["fix"], "base": "job:fix"},
        ]}))
        .parse()
        .expect("session id");
    let mut worker = forged(&c, 1);
    let fix = assignment(&mut worker);
    let order = fix.worktree.as_deref().expect("a worktree order");
    assert_eq!(
        (
            order.branch.as_str(),
            order.path_key.as_str(),
            order.base.as_str()
        ),
        (
            format!("aam/{id}/fix").as_str(),
            format!("{id}/fix").as_str(),
            "HEAD"
        )
    );
    assert!(!order.reuse_branch);
    assert_eq!(order.verify, Some(vec!["make".to_string()]));
    assert_eq!(order.message, format!("aam {id}/fix (session wt, command)"));
    assert_eq!(order.patch_cap, 8 * 1024 * 1024);
    let change = change_of(&fix, "c1", 2, Some(0));
    finish(&mut worker, &fix, Some(change.clone()), b"From c1\n");
    // The dependent starts from that commit, and its worktree fails.
    let test = assignment(&mut worker);
    assert_eq!(
        test.worktree.as_deref().map(|o| o.base.as_str()),
        Some("c1")
    );
    let reason = "not a git repository: /srv/elsewhere";
    worker.send(&WorkerToManager::WorktreeFailed {
        attempt: test.attempt_ref(),
        reason: reason.into(),
    });
    next(&mut worker, |m| {
        (m == ManagerToWorker::Ack(test.attempt_ref())).then_some(())
    });
    let failed = job_view(&c, id, "test");
    assert_eq!(
        (failed.status, failed.reason.as_deref()),
        (JobStatus::Failed, Some(reason))
    );
    assert_eq!(job_view(&c, id, "fix").change, Some(change.clone()));

    // The patch is answered from the store after a restart.
    drop(worker);
    c.kill_manager();
    c.start_manager();
    let answer = patch(&c, id, "fix");
    let want = ClientResponse::Patch {
        change,
        patch: b"From c1\n".to_vec(),
    };
    assert_eq!(answer, want);
    match patch(&c, id, "test") {
        ClientResponse::Error { message, .. } => {
            assert!(
                message.starts_with(&format!("{id}/test has no change")),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut worker = forged(&c, 1);
    let gc = ClientRequest::Gc {
        older_than_ms: Some(0),
    };
    assert!(matches!(ask(&c, gc), ClientResponse::Collected { .. }));
    let deleted = next(&mut worker, |m| match m {
        ManagerToWorker::DeleteBranches { repo, branches } => Some((repo, branches)),
        _ => None,
    });
    assert_eq!(deleted, ("/srv/repo".into(), vec![format!("aam/{id}/fix")]));
}

#[test]
fn a_job_of_variants_picks_the_smallest_passing_change_and_answers_its_patch() {
    let c = cluster();
    let id: SessionId = c
        .submit_json(&json!({"name": "best", "jobs": [
            {"name": "fix", "command": ["true"], "variants": 3, "verify": ["make"]},
        ]}))
        .parse()
        .expect("session id");
    let mut worker = forged(&c, 3);
    let mut variants: Vec<Assignment> = (0..3).map(|_| assignment(&mut worker)).collect();
    variants.sort_by(|a, b| a.job_name.cmp(&b.job_name));
    for (k, (a, (added, verify))) in variants.iter().zip([(1, 1), (4, 0), (2, 0)]).enumerate() {
        let k = k + 1;
        assert_eq!(a.job_name, format!("fix.{k}"));
        assert!(a.env.contains(&("AAM_VARIANT".to_string(), k.to_string())));
        let change = change_of(a, &format!("c{k}"), added, Some(verify));
        finish(
            &mut worker,
            a,
            Some(change),
            format!("patch {k}").as_bytes(),
        );
    }
    let fix = job_view(&c, id, "fix");
    assert_eq!(fix.status, JobStatus::Succeeded);
    assert_eq!(fix.variants, ["fix.1", "fix.2", "fix.3"]);
    let pick = fix.pick.expect("a pick");
    assert_eq!(pick.winner.as_deref(), Some("fix.3"));
    assert_eq!(
        job_view(&c, id, "fix.1").reason.as_deref(),
        Some("verify failed: exit 1")
    );
    let ClientResponse::Patch { change, patch } = patch(&c, id, "fix") else {
        panic!("no patch");
    };
    assert_eq!(
        (change.commit.as_deref(), patch.as_slice()),
        (Some("c3"), &b"patch 3"[..])
    );
    let request = ClientRequest::Session {
        session: id,
        output: OutputWanted::None,
        page: None,
    };
    let ClientResponse::Session(view) = ask(&c, request) else {
        panic!("no session");
    };
    assert_eq!(
        view.summary.status,
        SessionStatus::Succeeded,
        "fix.1 lost, and that is fine"
    );
}
