//! A store written by schema version 1 (its records encoded from the v1
//! structs, in sled and in the log) opens migrated.

use super::*;
use crate::wal::testing::job_frame;
use crate::{job_key, session_key, Store, DEFAULT_CACHE_BYTES, LOG_FILE, SCHEMA_VERSION};

fn key(session: u64, index: u32) -> JobKey {
    JobKey {
        session: SessionId(session),
        index,
    }
}

fn session_v1(id: u64, job_count: u32) -> SessionRecordV1 {
    SessionRecordV1 {
        id: SessionId(id),
        name: format!("s{id}"),
        status: SessionStatus::Running,
        job_count,
        created_at_ms: 1,
        finished_at_ms: None,
        max_parallel: Some(2),
        idempotency_key: Some("k".into()),
    }
}

fn attempt_v1(attempt: u32, outcome: JobStatus) -> AttemptRecordV1 {
    AttemptRecordV1 {
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
    }
}

fn job_v1(key: JobKey, agent: Option<&str>, argv: &[&str]) -> JobRecordV1 {
    JobRecordV1 {
        key,
        name: format!("j{}", key.index),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec![("A".into(), "1".into())],
        workdir: None,
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
            attempt_v1(1, JobStatus::Failed),
            attempt_v1(2, JobStatus::Queued),
        ],
        gate: false,
        decision: None,
        priority: 3,
        requires: BTreeMap::new(),
    }
}

/// Writes a schema 1 store into `dir`: a session of two jobs in sled, and
/// a third job (of a second session) only in the log, as a crash would
/// have left it.
fn write_v1_store(dir: &std::path::Path) {
    let trees = Trees::open(dir, DEFAULT_CACHE_BYTES).unwrap();
    let put = |tree: &sled::Tree, k: &[u8], v: Vec<u8>| {
        tree.insert(k, v).unwrap();
    };
    put(
        &trees.sessions,
        &session_key(SessionId(1)),
        codec::encode(&session_v1(1, 2)).unwrap(),
    );
    put(
        &trees.sessions,
        &session_key(SessionId(2)),
        codec::encode(&session_v1(2, 1)).unwrap(),
    );
    let agent = job_v1(
        key(1, 0),
        Some("claude"),
        &["claude", "--output-format", "stream-json", "-p", "hi"],
    );
    put(
        &trees.jobs,
        &job_key(agent.key),
        codec::encode(&agent).unwrap(),
    );
    let command = job_v1(key(1, 1), None, &["true"]);
    put(
        &trees.jobs,
        &job_key(command.key),
        codec::encode(&command).unwrap(),
    );
    trees.set_schema_version(1).unwrap();
    trees.flush().unwrap();
    drop(trees);
    let logged = job_v1(key(2, 0), Some("echo"), &["printf", "%s", "hi"]);
    let frame = job_frame(job_key(logged.key), &codec::encode(&logged).unwrap());
    std::fs::write(dir.join(LOG_FILE), frame).unwrap();
}

#[test]
fn a_schema_1_store_opens_migrated_with_its_log_and_stays_migrated() {
    let dir = tempfile::tempdir().unwrap();
    write_v1_store(dir.path());
    for _ in 0..2 {
        let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let snap = store.load().unwrap();
        let version = store.with(|t| t.schema_version()).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(snap.sessions.len(), 2);
        assert_eq!(snap.sessions[0].max_parallel, Some(2));
        assert_eq!(snap.sessions[0].max_cost_usd, None);
        assert_eq!(snap.jobs.len(), 3);
        let agent = &snap.jobs[0];
        assert_eq!(agent.format, Some(AgentFormat::ClaudeStreamJson));
        assert_eq!(agent.limit_group.as_deref(), Some("claude"));
        assert_eq!((agent.priority, agent.failures, agent.losses), (3, 1, 1));
        let outcomes: Vec<AttemptOutcome> = agent.history.iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [AttemptOutcome::Failed, AttemptOutcome::Requeued]);
        assert!(agent.history.iter().all(|a| a.agent_run.is_none()));
        assert!(agent.history.iter().all(|a| a.setup_ms.is_none()));
        assert_eq!((agent.ports, agent.uses.len()), (0, 0));
        let command = &snap.jobs[1];
        assert_eq!(
            (command.format, command.limit_group.as_deref()),
            (None, None)
        );
        let logged = &snap.jobs[2];
        assert_eq!(logged.key, key(2, 0));
        assert_eq!(logged.format, Some(AgentFormat::Text));
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            0,
            "the log still holds records of schema 1"
        );
    }
}

#[test]
fn every_old_outcome_has_a_new_one() {
    use AttemptOutcome as New;
    let expected = [
        (JobStatus::Pending, New::Requeued),
        (JobStatus::Queued, New::Requeued),
        (JobStatus::Running, New::Requeued),
        (JobStatus::Succeeded, New::Succeeded),
        (JobStatus::Failed, New::Failed),
        (JobStatus::Cancelled, New::Cancelled),
        (JobStatus::TimedOut, New::TimedOut),
        (JobStatus::Skipped, New::Failed),
    ];
    for (old, new) in expected {
        assert_eq!(outcome_from_v1(old), new, "{old}");
    }
}

/// A crash after the migration's frame was synced, before sled took it in:
/// the next open replays it over the old records and finds the current
/// schema.
#[test]
fn a_migration_left_in_the_log_is_replayed_not_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    write_v1_store(dir.path());
    let log = dir.path().join(LOG_FILE);
    {
        let trees = Trees::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let (_wal, frames) = crate::wal::Wal::open(&log).unwrap();
        for items in frames {
            trees.replay(&items).unwrap();
        }
        let (changes, counts) = rewrite(&trees, 1).unwrap();
        assert_eq!((counts.sessions, counts.jobs, counts.attempts), (2, 3, 6));
        let body = crate::wal::encode_migration(&changes, SCHEMA_VERSION).unwrap();
        let mut bytes = std::fs::read(&log).unwrap();
        crate::wal::push_frame(&mut bytes, &body);
        std::fs::write(&log, bytes).unwrap();
    }
    let (store, _writer) = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(store.with(|t| t.schema_version()).unwrap(), SCHEMA_VERSION);
    let snap = store.load().unwrap();
    assert_eq!(snap.jobs.len(), 3);
    assert_eq!(snap.jobs[2].limit_group.as_deref(), Some("echo"));
}
