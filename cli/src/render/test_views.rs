//! Views built by hand for the renderers' tests: a plain command job, an
//! agent job, a worktree job, a job run as variants, a session of them.

use aam_protocol::agent_run::AgentView;
use aam_protocol::model::{
    Estimate, JobStatus, JobView, SessionStatus, SessionSummary, SessionView,
};
use aam_protocol::worktree::{branch_name, DiffStat, JobChange, VariantPick, VerifyOutcome};
use aam_protocol::SessionId;

/// A job that ran 1.5 s on `w1` and ended with `status` (exit 0 when it
/// succeeded, else 1), with `output` captured.
pub fn job(name: &str, status: JobStatus, output: &str) -> JobView {
    let ended = status.is_terminal();
    JobView {
        name: name.into(),
        status,
        attempts: 1,
        exit_code: ended.then_some(if status == JobStatus::Succeeded { 0 } else { 1 }),
        signal: None,
        worker: Some("w1".into()),
        started_at_ms: Some(1_000),
        finished_at_ms: ended.then_some(2_500),
        duration_ms: ended.then_some(1_500),
        reason: None,
        expected_remaining_ms: None,
        progress: None,
        progress_message: None,
        teardown: None,
        history: Vec::new(),
        gate: false,
        decision: None,
        priority: 0,
        requires: Default::default(),
        depends_on: Vec::new(),
        output: output.as_bytes().to_vec(),
        output_bytes: output.len() as u64,
        agent: None,
        change: None,
        variant: None,
        variants: Vec::new(),
        pick: None,
        takes_input: false,
        waiting_for_input: false,
        permissions: Vec::new(),
    }
}

pub fn agent_view(turns: u32, last_tool: Option<&str>, cost_usd: f64) -> AgentView {
    AgentView {
        session_id: Some("0b7e-conversation".into()),
        model: Some("claude-sonnet-4-5".into()),
        turns,
        tool_calls: u32::from(last_tool.is_some()),
        last_tool: last_tool.map(String::from),
        input_tokens: 1_200,
        output_tokens: 340,
        cache_read_tokens: 5_000,
        cost_usd,
        ..AgentView::default()
    }
}

/// An agent job: `job` with `agent` and a raw stream-json output.
pub fn agent_job(name: &str, status: JobStatus, agent: AgentView) -> JobView {
    JobView {
        agent: Some(agent),
        ..job(
            name,
            status,
            "{\"type\":\"result\",\"subtype\":\"success\"}\n",
        )
    }
}

/// Session `s7`, named `review`, of `jobs`, with its counts and spend
/// summed from them.
pub fn session(status: SessionStatus, jobs: Vec<JobView>) -> SessionView {
    let mut counts = [0u32; 8];
    for j in &jobs {
        let at = JobStatus::ALL.iter().position(|s| *s == j.status).unwrap();
        counts[at] += 1;
    }
    let agents = jobs.iter().filter_map(|j| j.agent.as_ref());
    let summary = SessionSummary {
        id: "s7".parse::<SessionId>().unwrap(),
        name: "review".into(),
        status,
        created_at_ms: 0,
        finished_at_ms: status.is_terminal().then_some(3_000),
        counts,
        total: jobs.len() as u32,
        cost_usd: agents.clone().map(|a| a.cost_usd).sum(),
        input_tokens: agents.clone().map(|a| a.input_tokens).sum(),
        output_tokens: agents.map(|a| a.output_tokens).sum(),
        needs_input: 0,
        waiting_for_input: 0,
    };
    SessionView {
        summary,
        jobs,
        offset: 0,
        eta: Estimate::default(),
        paused: Vec::new(),
    }
}

/// A worktree job of session `s7` that committed `+insertions -deletions`
/// in `files` files on its branch `aam/s7/NAME` (base `b0`, commit `c1`).
pub fn worktree_job(
    name: &str,
    status: JobStatus,
    files: u32,
    insertions: u32,
    deletions: u32,
) -> JobView {
    JobView {
        change: Some(JobChange {
            repo: "/srv/repo".into(),
            branch: branch_name("s7", name),
            base: "b0".into(),
            commit: Some("c1".into()),
            stat: DiffStat {
                files,
                insertions,
                deletions,
            },
            patch_bytes: 900,
            patch_cut: false,
            verify: None,
        }),
        ..job(name, status, "")
    }
}

/// Variant `k` of the job `parent` (`fix.2`), a worktree job whose
/// verify exited `verify_exit` after 2 s.
pub fn variant_job(
    parent: &str,
    k: u32,
    status: JobStatus,
    verify_exit: i32,
    lines: u32,
) -> JobView {
    let mut variant = worktree_job(&format!("{parent}.{k}"), status, 1, lines, 0);
    variant.variant = Some(k);
    if let Some(change) = variant.change.as_mut() {
        change.verify = Some(VerifyOutcome {
            exit_code: Some(verify_exit),
            passed: verify_exit == 0,
            duration_ms: 2_000,
            output_tail: format!("exit {verify_exit}\n"),
        });
    }
    variant
}

/// The job `name` run as `variants`, with `winner`'s change and the pick
/// (none won: the job failed, saying so).
pub fn variants_parent(
    name: &str,
    variants: &[JobView],
    winner: Option<&str>,
    reason: &str,
) -> JobView {
    let status = if winner.is_some() {
        JobStatus::Succeeded
    } else {
        JobStatus::Failed
    };
    let mut parent = job(name, status, "");
    parent.variants = variants.iter().map(|v| v.name.clone()).collect();
    parent.pick = Some(VariantPick {
        winner: winner.map(String::from),
        reason: reason.into(),
    });
    parent.change = winner
        .and_then(|w| variants.iter().find(|v| v.name == w))
        .and_then(|v| v.change.clone());
    if winner.is_none() {
        parent.reason = Some(reason.into());
    }
    parent
}
