//! The log's frames laid over a snapshot of sled: what is durable when
//! sled lacks part of the log (a start right after a crash; a sled that
//! failed to write). Jobs, a million of them after a big commit, are laid
//! by key: the log's last word on each, decoded in key order on two
//! threads, merged with sled's records that the log does not name.

use crate::trees;
use crate::wal::Item;
use crate::{Notice, Result, Snapshot, StoreError};
use aam_protocol::agent_run::LimitPause;
use aam_protocol::codec;
use aam_protocol::model::{JobRecord, SessionRecord, SharedPolicies};
use std::collections::{BTreeMap, HashMap};

/// `snapshot` with the log's `frames` applied over it, in order. Every
/// item sets or removes what it names, so a sled that took in part of the
/// frames gives the same answer.
pub(super) fn overlay(snapshot: Snapshot, frames: &[Vec<Item>]) -> Result<Snapshot> {
    let decode_err = |e: codec::CodecError| StoreError::Corrupt(e.to_string());
    let mut sessions: BTreeMap<u64, SessionRecord> =
        snapshot.sessions.into_iter().map(|s| (s.id.0, s)).collect();
    // The log's last word on each job it names: a record, or its removal.
    let mut last_word: HashMap<(u64, u32), Option<&[u8]>> = HashMap::new();
    let mut next_session = snapshot.next_session;
    let mut notices: BTreeMap<[u8; 16], Notice> = snapshot
        .notices
        .into_iter()
        .map(|n| (Notice::key(n.seq, n.target), n))
        .collect();
    let mut next_notice = snapshot.next_notice;
    let mut next_audit = snapshot.next_audit;
    let mut owners: BTreeMap<u64, String> = snapshot
        .owners
        .into_iter()
        .map(|(id, name)| (id.0, name))
        .collect();
    let mut pauses: BTreeMap<String, LimitPause> = snapshot
        .pauses
        .into_iter()
        .map(|p| (p.group.clone(), p))
        .collect();
    for item in frames.iter().flatten() {
        match item {
            Item::Job(key, bytes) => {
                last_word.insert(job_of(key), Some(bytes));
            }
            Item::Session(_, bytes) => {
                let session: SessionRecord = codec::decode(bytes).map_err(decode_err)?;
                sessions.insert(session.id.0, session);
            }
            Item::NextSession(n) => next_session = *n,
            Item::Owner(key, name) => {
                let id = u64::from_be_bytes(*key);
                owners.insert(id, String::from_utf8_lossy(name).into_owned());
            }
            Item::Removed(id, count) => {
                sessions.remove(id);
                owners.remove(id);
                for index in 0..*count {
                    last_word.insert((*id, index), None);
                }
            }
            Item::Pause(_, bytes) => {
                let pause: LimitPause = codec::decode(bytes).map_err(decode_err)?;
                pauses.insert(pause.group.clone(), pause);
            }
            Item::PauseEnded(group) => {
                pauses.remove(&*String::from_utf8_lossy(group));
            }
            Item::Notice(key, event) => {
                notices.insert(*key, trees::notice_of(key, event.clone())?);
            }
            Item::NoticeDone(key) => {
                notices.remove(key);
            }
            Item::NextNotice(n) => next_notice = *n,
            Item::Audit(key, _) => {
                let (_, seq) = trees::audit_key(key)?;
                next_audit = next_audit.max(seq + 1);
            }
            // A migration's log is checkpointed before the store is used.
            // The snapshot is the model's: outputs, patches and the audit
            // log are read from the store when asked for.
            Item::Output(..) | Item::Patch(..) | Item::Schema(_) | Item::AuditBefore(_) => {}
        }
    }
    Ok(Snapshot {
        sessions: sessions.into_values().collect(),
        jobs: lay_jobs(snapshot.jobs, &last_word)?,
        next_session,
        pauses: pauses.into_values().collect(),
        notices: notices.into_values().collect(),
        next_notice,
        owners: owners
            .into_iter()
            .map(|(id, name)| (aam_protocol::SessionId(id), name))
            .collect(),
        next_audit,
    })
}

/// A job's (session, index) from its key in the store.
fn job_of(key: &[u8; 12]) -> (u64, u32) {
    let (session, index) = key.split_at(8);
    (
        u64::from_be_bytes(session.try_into().expect("8 bytes")),
        u32::from_be_bytes(index.try_into().expect("4 bytes")),
    )
}

/// sled's jobs (in key order) with the log's last word on each laid over
/// them, in key order.
fn lay_jobs(
    sled: Vec<JobRecord>,
    last_word: &HashMap<(u64, u32), Option<&[u8]>>,
) -> Result<Vec<JobRecord>> {
    if last_word.is_empty() {
        return Ok(sled);
    }
    let mut logged: Vec<((u64, u32), &[u8])> = last_word
        .iter()
        .filter_map(|(key, word)| word.map(|bytes| (*key, bytes)))
        .collect();
    logged.sort_unstable_by_key(|(key, _)| *key);
    let mut from_log = decode_in_order(&logged)?.into_iter().peekable();
    let mut from_sled = sled
        .into_iter()
        .filter(|j| !last_word.contains_key(&(j.key.session.0, j.key.index)))
        .peekable();
    let mut jobs = Vec::with_capacity(logged.len() + from_sled.size_hint().0);
    loop {
        let next = match (from_sled.peek(), from_log.peek()) {
            (Some(a), Some(b)) if a.key < b.key => from_sled.next(),
            (Some(_), Some(_)) | (None, Some(_)) => from_log.next(),
            (Some(_), None) => from_sled.next(),
            (None, None) => break,
        };
        jobs.extend(next);
    }
    Ok(jobs)
}

/// The records of `logged`, decoded in its order: half on another thread
/// when there are many.
fn decode_in_order(logged: &[((u64, u32), &[u8])]) -> Result<Vec<JobRecord>> {
    const SPLIT_FROM: usize = 16_384;
    // The log's records share their run policies as sled's do (`load`).
    let decode = |part: &[((u64, u32), &[u8])]| -> Result<Vec<JobRecord>> {
        let mut policies = SharedPolicies::default();
        part.iter()
            .map(|(_, bytes)| {
                let mut job: JobRecord =
                    codec::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                job.policy = policies.share(job.policy);
                Ok(job)
            })
            .collect()
    };
    if logged.len() < SPLIT_FROM {
        return decode(logged);
    }
    let (first, second) = logged.split_at(logged.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| decode(second));
        let mut jobs = decode(first)?;
        match other.join() {
            Ok(rest) => jobs.extend(rest?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        Ok(jobs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::job;

    fn logged(session: u64, index: u32, name: &str) -> Item {
        let mut record = job(session, index);
        record.name = name.into();
        let key = crate::job_key(record.key);
        Item::Job(
            key,
            crate::StoredJob::encode(&record).bytes().unwrap().to_vec(),
        )
    }

    #[test]
    fn the_log_s_jobs_are_laid_over_sled_s_by_key_in_key_order() {
        let sled: Vec<JobRecord> = [(1, 0), (1, 1), (2, 0), (3, 0), (3, 1)]
            .map(|(s, i)| job(s, i))
            .into();
        let mut frame = vec![
            logged(1, 1, "changed"),
            Item::Removed(3, 2),
            logged(3, 0, "back after its removal"),
            logged(0, 0, "before every sled key"),
            logged(2, 0, "changed, then removed"),
            Item::Removed(2, 1),
        ];
        // A big session, enough to be decoded on two threads.
        frame.extend((0..20_000).map(|i| logged(4, i, &format!("big{i}"))));
        let snapshot = Snapshot {
            jobs: sled,
            ..Default::default()
        };
        let laid = overlay(snapshot, &[frame]).unwrap();
        let keys: Vec<(u64, u32)> = laid
            .jobs
            .iter()
            .map(|j| (j.key.session.0, j.key.index))
            .collect();
        let mut expected = vec![(0, 0), (1, 0), (1, 1), (3, 0)];
        expected.extend((0..20_000).map(|i| (4, i)));
        assert_eq!(keys, expected);
        let names: Vec<&str> = laid.jobs[..4].iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "before every sled key",
                "j0",
                "changed",
                "back after its removal"
            ]
        );
        assert_eq!(laid.jobs[4 + 12_345].name, "big12345");
    }
}
