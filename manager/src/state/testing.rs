//! Helpers for the model's unit tests: a small config, batches of `true`
//! jobs, workers, exits, agents and their runs, worktree jobs and their
//! changes, and a store snapshot of what the model changed.

pub use super::*;
pub use aam_protocol::agent::AgentDef;
pub use aam_protocol::agent_run::{AgentRun, TokenUsage, UsageLimit};
pub use aam_protocol::messages::{Assignment, AttemptRef, OutputWanted, Stopped};
pub use aam_protocol::model::{
    AttemptOutcome, ExitInfo, JobView, SessionStatus, StopCause, TeardownReceipt,
};
pub use aam_protocol::spec::{BatchSpec, Dependency, JobSpec, When};
pub use aam_protocol::worktree::{DiffStat, Isolation, JobChange, VerifyOutcome};
pub use aam_store::Snapshot;

pub fn config() -> StateConfig {
    StateConfig {
        output_cap: 1024,
        reconnect_grace_ms: 1000,
        disconnect_grace_ms: 1000,
        ..StateConfig::default()
    }
}

/// `config()` with two agents: `claude` (Claude Code's stream-json, its
/// own limit group) and `codex` (text).
pub fn agent_config() -> StateConfig {
    let claude = AgentDef {
        command: [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "{prompt}",
        ]
        .map(String::from)
        .to_vec(),
        ..AgentDef::default()
    };
    let codex = AgentDef {
        command: vec!["codex".into(), "exec".into(), "{prompt}".into()],
        ..AgentDef::default()
    };
    StateConfig {
        agents: [("claude".to_string(), claude), ("codex".to_string(), codex)].into(),
        ..config()
    }
}

/// A job of `agent` with a prompt.
pub fn agent_job(name: &str, agent: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        agent: Some(agent.into()),
        prompt: Some(format!("do {name}")),
        ..Default::default()
    }
}

/// A run of an agent in session `id` on `model` that used these tokens.
pub fn agent_run(id: &str, model: &str, input: u64, output: u64) -> AgentRun {
    let mut run = AgentRun {
        session_id: Some(id.into()),
        model: Some(model.into()),
        turns: 1,
        ..AgentRun::default()
    };
    let usage = TokenUsage {
        input_tokens: input,
        output_tokens: output,
        ..TokenUsage::default()
    };
    run.usage.insert(model.into(), usage);
    run
}

/// An attempt's end with its agent's final run.
pub fn ended_with(exit: Option<ExitInfo>, run: AgentRun) -> EndReport {
    EndReport {
        agent: Some(run),
        ..ended(exit)
    }
}

/// The job named `name` of session `id`, as clients see it.
pub fn job_view(state: &State, id: SessionId, name: &str, now: u64) -> JobView {
    let view = state
        .view(id, OutputWanted::None, 0, &|_| None, now)
        .unwrap();
    view.jobs.into_iter().find(|j| j.name == name).unwrap()
}

/// Job `index` of session 1.
pub fn key(index: u32) -> JobKey {
    JobKey {
        session: SessionId(1),
        index,
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
        prefetch: aam_protocol::messages::Prefetch::Fixed(0),
        recent_job_us: None,
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

/// An attempt's end as a worker reports it, with this exit alone.
pub fn ended(exit: Option<ExitInfo>) -> EndReport {
    EndReport {
        exit,
        ..EndReport::default()
    }
}

pub fn attempt_of(a: &Assignment) -> AttemptRef {
    a.attempt_ref()
}

pub fn status(state: &State, session: SessionId, name: &str) -> JobStatus {
    state.logs(session, name, 0, &|_| None).unwrap().status
}

/// The job records the model changed since the last call, as the store
/// would read them back.
pub fn stored_jobs(state: &mut State) -> Vec<JobRecord> {
    decoded(state.take_changes().jobs)
}

fn decoded(jobs: Vec<aam_store::StoredJob>) -> Vec<JobRecord> {
    jobs.iter().map(|j| j.decode().unwrap()).collect()
}

/// What the store would hold after persisting everything the model changed.
pub fn snapshot_of(state: &mut State) -> Snapshot {
    let changes = state.take_changes();
    Snapshot {
        sessions: changes.sessions,
        jobs: decoded(changes.jobs),
        next_session: changes.next_session.unwrap_or(1),
        pauses: changes.pauses,
        ..Snapshot::default()
    }
}

/// A `true` job in a worktree, waiting for `deps` to succeed.
pub fn worktree_job(name: &str, deps: &[&str]) -> JobSpec {
    JobSpec {
        isolation: Some("worktree".into()),
        ..job(name, deps)
    }
}

/// What a worktree job changed on `branch`: a commit adding `added` lines
/// and removing `removed` (none when both are 0: it changed nothing).
pub fn change(branch: &str, added: u32, removed: u32) -> JobChange {
    let changed = added + removed > 0;
    JobChange {
        repo: "/repo".into(),
        branch: branch.into(),
        base: "b0".into(),
        commit: changed.then(|| format!("c-{branch}")),
        stat: DiffStat {
            files: changed as u32,
            insertions: added,
            deletions: removed,
        },
        patch_bytes: 0,
        patch_cut: false,
        verify: None,
    }
}

/// `change` with a verify that exited `code`.
pub fn verified(mut change: JobChange, code: i32) -> JobChange {
    change.verify = Some(VerifyOutcome {
        exit_code: Some(code),
        passed: code == 0,
        duration_ms: 1,
        output_tail: String::new(),
    });
    change
}

/// An attempt's end with its change and patch.
pub fn ended_changed(exit: Option<ExitInfo>, change: JobChange, patch: &[u8]) -> EndReport {
    EndReport {
        change: Some(change),
        patch: patch.to_vec(),
        ..ended(exit)
    }
}

/// The record of job `name` of session `id`.
pub fn record<'a>(
    state: &'a State,
    id: SessionId,
    name: &str,
) -> &'a aam_protocol::model::JobRecord {
    let index = state.job_index(id, name).unwrap();
    state.sessions.get(id).unwrap().job(index)
}
