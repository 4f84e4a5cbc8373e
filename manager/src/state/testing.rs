//! Helpers for the model's unit tests: a small config, batches of `true`
//! jobs, workers, exits, and a store snapshot of what the model changed.

pub use super::*;
pub use aam_protocol::messages::{Assignment, AttemptRef, OutputWanted, Stopped};
pub use aam_protocol::model::{ExitInfo, SessionStatus, StopCause, TeardownReceipt};
pub use aam_protocol::spec::{BatchSpec, Dependency, JobSpec, When};
pub use aam_store::Snapshot;

pub fn config() -> StateConfig {
    StateConfig {
        output_cap: 1024,
        reconnect_grace_ms: 1000,
        disconnect_grace_ms: 1000,
        ..StateConfig::default()
    }
}

pub fn batch(jobs: Vec<JobSpec>) -> BatchSpec {
    BatchSpec {
        max_cost_usd: None,
        max_parallel: None,
        name: "b".into(),
        jobs,
    }
}

/// A `true` job waiting for `deps` to succeed.
pub fn job(name: &str, deps: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        command: Some(vec!["true".into()]),
        depends_on: deps.iter().map(|d| Dependency::after(d)).collect(),
        ..Default::default()
    }
}

pub fn worker(name: &str, slots: u32) -> WorkerEntry {
    WorkerEntry {
        name: name.into(),
        instance: 1,
        address: "test".into(),
        slots,
        prefetch: 0,
        labels: Default::default(),
        assigned: Default::default(),
        draining: false,
        connected_at_ms: 0,
        last_heartbeat_ms: 0,
    }
}

pub fn exit_after(code: i32, duration_ms: u64) -> ExitInfo {
    ExitInfo {
        code: Some(code),
        signal: None,
        duration_ms,
    }
}

pub fn ok() -> Option<ExitInfo> {
    Some(exit_after(0, 1))
}

pub fn fail() -> Option<ExitInfo> {
    Some(exit_after(1, 1))
}

pub fn attempt_of(a: &Assignment) -> AttemptRef {
    a.attempt_ref()
}

pub fn status(state: &State, session: SessionId, name: &str) -> JobStatus {
    state.logs(session, name, 0, &|_| None).unwrap().status
}

/// What the store would hold after persisting everything the model changed.
pub fn snapshot_of(state: &mut State) -> Snapshot {
    let changes = state.take_changes();
    Snapshot {
        sessions: changes.sessions,
        jobs: changes.jobs,
        next_session: changes.next_session.unwrap_or(1),
        pauses: changes.pauses,
    }
}
