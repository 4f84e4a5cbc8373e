//! A store written by schema version 2 (its records encoded from the v2
//! structs, in sled and in the log) opens migrated to the current schema,
//! a schema 3 job reads with no workspace of its own, and a version with
//! no migration is refused.

use super::v2::{AttemptRecordV2, JobRecordV2};
use super::*;
use crate::wal::testing::job_frame;
use crate::{job_key, session_key, Store, DEFAULT_CACHE_BYTES, LOG_FILE};
use aam_protocol::model::AttemptRecord;
use aam_protocol::worktree::Isolation;

fn key(session: u64, index: u32) -> JobKey {
    JobKey {
        session: SessionId(session),
        index,
    }
}

fn session(id: u64, job_count: u32) -> SessionRecord {
    SessionRecord {
        id: SessionId(id),
        name: format!("s{id}"),
        status: SessionStatus::Running,
        job_count,
        created_at_ms: 1,
        finished_at_ms: None,
        max_parallel: Some(2),
        idempotency_key: Some("k".into()),
        max_cost_usd: Some(1.5),
    }
}

fn attempt_v2(attempt: u32, outcome: AttemptOutcome) -> AttemptRecordV2 {
    AttemptRecordV2 {
        attempt,
        worker: Some("w".into()),
        started_at_ms: Some(10),
        finished_at_ms: Some(20),
        exit: Some(ExitInfo {
            code: Some(1),
            signal: None,
            duration_ms: 10,
        }),
        outcome,
        reason: Some("why".into()),
        teardown: None,
        agent_run: None,
    }
}

fn job_v2(key: JobKey, agent: Option<&str>, isolation: Isolation) -> JobRecordV2 {
    JobRecordV2 {
        key,
        name: format!("j{}", key.index),
        argv: vec!["printf".into(), "hi".into()],
        env: vec![("A".into(), "1".into())],
        workdir: Some("/repo".into()),
        agent: agent.map(str::to_string),
        depends_on: Vec::new(),
        status: JobStatus::Queued,
        attempts: 2,
        worker: None,
        started_at_ms: None,
        finished_at_ms: None,
        exit: None,
        reason: None,
        policy: RunPolicy::default(),
        failures: 1,
        losses: 1,
        not_before_ms: None,
        progress: None,
        progress_message: None,
        cancel_requested: false,
        teardown: None,
        history: vec![
            attempt_v2(1, AttemptOutcome::Failed),
            attempt_v2(2, AttemptOutcome::Requeued),
        ],
        gate: false,
        decision: None,
        priority: 3,
        requires: BTreeMap::from([("os".into(), "linux".into())]),
        format: agent.map(|_| AgentFormat::Text),
        limit_group: agent.map(str::to_string),
        max_cost_usd: Some(0.5),
        pinned_worker: Some("w".into()),
        agent_run: None,
        isolation,
        base: Some("main".into()),
        verify: Some(vec!["true".into()]),
        variant: None,
        variant_jobs: Vec::new(),
        pick: None,
        change: None,
        continues_branch: None,
    }
}

/// The schema 2 store `write_v2_store` writes: two sessions, two jobs in
/// sled and a third only in the log, as a crash would have left it.
fn v2_records() -> (Vec<SessionRecord>, Vec<JobRecordV2>) {
    let sessions = vec![session(1, 2), session(2, 1)];
    let jobs = vec![
        job_v2(key(1, 0), Some("claude"), Isolation::Worktree),
        job_v2(key(1, 1), None, Isolation::None),
        job_v2(key(2, 0), Some("echo"), Isolation::Worktree),
    ];
    (sessions, jobs)
}

fn write_v2_store(dir: &std::path::Path) {
    let (sessions, jobs) = v2_records();
    let trees = Trees::open(dir, DEFAULT_CACHE_BYTES).unwrap();
    for s in &sessions {
        let bytes = codec::encode(s).unwrap();
        trees.sessions.insert(session_key(s.id), bytes).unwrap();
    }
    for job in &jobs[..2] {
        let bytes = codec::encode(job).unwrap();
        trees.jobs.insert(job_key(job.key), bytes).unwrap();
    }
    trees.set_schema_version(2).unwrap();
    trees.flush().unwrap();
    drop(trees);
    let logged = &jobs[2];
    let frame = job_frame(job_key(logged.key), &codec::encode(logged).unwrap());
    std::fs::write(dir.join(LOG_FILE), frame).unwrap();
}

#[test]
fn a_schema_2_store_opens_migrated_with_every_record_intact() {
    let dir = tempfile::tempdir().unwrap();
    write_v2_store(dir.path());
    let (sessions, jobs) = v2_records();
    for _ in 0..2 {
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(
            store.with(|t| t.schema_version()).unwrap(),
            crate::SCHEMA_VERSION
        );
        let snap = store.load().unwrap();
        assert_eq!(snap.sessions, sessions);
        assert_eq!(snap.jobs.len(), 3);
        for (now, old) in snap.jobs.iter().zip(&jobs) {
            assert_eq!((now.ports, now.uses.len()), (0, 0), "{}", now.name);
            assert_eq!(
                (now.key, &now.name, &now.env),
                (old.key, &old.name, &old.env)
            );
            assert_eq!(
                (now.isolation, now.base()),
                (old.isolation, old.base.as_deref())
            );
            assert_eq!(
                (now.format, &now.limit_group),
                (old.format, &old.limit_group)
            );
            assert_eq!((now.priority, &now.requires), (old.priority, &old.requires));
            assert_eq!(now.history.len(), 2);
            for (a, o) in now.history.iter().zip(&old.history) {
                assert_eq!((a.setup_ms, a.teardown_ms), (None, None));
                assert_eq!(
                    (a.attempt, a.outcome, &a.reason),
                    (o.attempt, o.outcome, &o.reason)
                );
            }
            assert_eq!(
                *now,
                JobRecord::from(super::v5::JobRecordV5::from(super::v4::JobRecordV4::from(
                    super::v3::JobRecordV3::from(old.clone())
                )))
            );
        }
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            0,
            "the log still holds records of schema 2"
        );
    }
}

#[test]
fn an_attempt_of_schema_2_keeps_its_fields_and_ran_no_workspace_step() {
    let old = attempt_v2(4, AttemptOutcome::TimedOut);
    let now = AttemptRecord::from(old.clone());
    assert_eq!(
        (now.attempt, now.worker, now.exit, now.outcome),
        (old.attempt, old.worker, old.exit, old.outcome)
    );
    assert_eq!((now.setup_ms, now.teardown_ms), (None, None));
}

#[test]
fn only_versions_older_than_the_current_one_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let trees = Trees::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    for from in [0, crate::SCHEMA_VERSION, crate::SCHEMA_VERSION + 1] {
        let err = rewrite(&trees, from).unwrap_err().to_string();
        assert!(err.contains(&format!("schema version {from}")), "{err}");
    }
}

#[test]
fn a_job_of_schema_3_reads_with_no_workspace_of_its_own() {
    let old: super::v3::JobRecordV3 = job_v2(key(1, 0), Some("claude"), Isolation::Worktree).into();
    let bytes = codec::encode(&old).unwrap();
    let now = job_from(3, b"k", &bytes).unwrap();
    assert_eq!(now.input, None);
    assert_eq!(now.permissions, None);
    assert_eq!(now.workspace, None);
    assert_eq!(
        (now.name.as_str(), now.isolation),
        ("j0", Isolation::Worktree)
    );
    assert_eq!(now.history.len(), 2);
}

#[test]
fn a_job_of_schema_5_keeps_its_input_and_relays_no_permission() {
    let v3: super::v3::JobRecordV3 = job_v2(key(1, 0), Some("claude"), Isolation::None).into();
    let mut old = super::v5::JobRecordV5::from(super::v4::JobRecordV4::from(v3));
    let input = aam_protocol::say::AgentInput {
        prompt: "hi".into(),
        linger_ms: 5,
        ..Default::default()
    };
    old.input = Some(Box::new(input.clone()));
    let bytes = codec::encode(&old).unwrap();
    let now = job_from(5, b"k", &bytes).unwrap();
    assert_eq!(now.input.as_deref(), Some(&input));
    assert_eq!(now.permissions, None);
    assert_eq!(now.name, "j0");
}
