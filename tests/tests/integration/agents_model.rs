//! The manager's half of "agents understood", against the real manager
//! with a forged worker that speaks the protocol (so it stands apart from
//! the worker's output readers): an agent's run reaches the session view
//! and its sums, a usage limit pauses its group while other jobs run and
//! the pause survives a restart, budgets stop a job and skip the rest of a
//! session, and `continue` resumes the conversation on the worker that
//! holds it.

use aam_protocol::agent_run::{AgentRun, TokenUsage, UsageLimit};
use aam_protocol::messages::{
    Assignment, AttemptRef, ClientRequest, ClientResponse, ErrorKind, ManagerToWorker,
    OutputWanted, Role, Stopped, WorkerToManager,
};
use aam_protocol::model::{
    AttemptOutcome, ExitInfo, JobStatus, JobView, SessionStatus, SessionView, StopCause,
    TeardownReceipt,
};
use aam_protocol::{now_ms, SessionId};
use aam_tests::wire::Wire;
use aam_tests::Cluster;
use serde_json::json;
use std::collections::BTreeMap;

/// A manager whose `claude` agent streams JSON (the forged worker runs
/// nothing of it).
fn cluster() -> Cluster {
    let mut c = Cluster::new();
    let config = "[agents.claude]\ncommand = [\"claude\", \"-p\", \"--output-format\", \"stream-json\", \"--verbose\", \"{prompt}\"]\n";
    c.manager_config = Some(c.write("aam.toml", config));
    c.start_manager();
    c
}

fn submit(c: &Cluster, batch: serde_json::Value) -> SessionId {
    let file = c.write("batch.json", &batch.to_string());
    c.submit(&file).parse().expect("session id")
}

/// A forged worker named "fw" with one slot, registered, holding `assigned`.
fn forged_worker(c: &Cluster, assigned: Vec<AttemptRef>) -> Wire {
    let register = WorkerToManager::Register {
        name: "fw".into(),
        instance: 7,
        slots: 1,
        prefetch: aam_protocol::messages::Prefetch::Fixed(0),
        labels: BTreeMap::new(),
        assigned,
    };
    let (wire, answer) = Wire::register(&c.addr, &c.token, register);
    assert!(
        matches!(answer, ManagerToWorker::Registered { .. }),
        "{answer:?}"
    );
    wire
}

/// Reads what the manager sends until `wanted` picks something out.
fn until<T>(wire: &mut Wire, mut wanted: impl FnMut(ManagerToWorker) -> Option<T>) -> T {
    loop {
        if let Some(found) = wanted(wire.recv()) {
            return found;
        }
    }
}

fn next_assignment(wire: &mut Wire) -> Assignment {
    until(wire, |m| match m {
        ManagerToWorker::Assign(a) => Some(a),
        _ => None,
    })
}

fn acked(wire: &mut Wire, attempt: AttemptRef) {
    until(wire, |m| (m == ManagerToWorker::Ack(attempt)).then_some(()));
}

/// Heartbeats until a `Pong` comes back (the manager has handled every
/// report before it); returns what else it sent meanwhile.
fn until_pong(wire: &mut Wire) -> Vec<ManagerToWorker> {
    let mut other = Vec::new();
    wire.send(&WorkerToManager::Heartbeat);
    until(wire, |m| match m {
        ManagerToWorker::Pong => Some(()),
        m => {
            other.push(m);
            None
        }
    });
    other
}

fn exit(code: i32) -> ExitInfo {
    ExitInfo {
        code: Some(code),
        signal: None,
        duration_ms: 5,
    }
}

/// A run of conversation `id` on Sonnet that used these tokens.
fn run(id: &str, input: u64, reported_cost_usd: Option<f64>) -> AgentRun {
    let mut run = AgentRun {
        session_id: Some(id.into()),
        model: Some("claude-sonnet-4-5".into()),
        turns: 1,
        reported_cost_usd,
        ..AgentRun::default()
    };
    let usage = TokenUsage {
        input_tokens: input,
        ..TokenUsage::default()
    };
    run.usage.insert("claude-sonnet-4-5".into(), usage);
    run
}

/// A run that ended on a rate limit resetting at `resets_at`, costing $0.01.
fn limited_run(resets_at: u64) -> AgentRun {
    AgentRun {
        error: Some("API Error: 429 rate_limit_error".into()),
        api_error_status: Some(429),
        limit: Some(UsageLimit {
            resets_at_ms: Some(resets_at),
            message: "rate limited".into(),
        }),
        ..run("conv-a", 1_000, Some(0.01))
    }
}

fn ask(c: &Cluster, request: ClientRequest) -> ClientResponse {
    let mut client = Wire::connect(&c.addr, Role::Client, &c.token);
    client.send(&request);
    client.recv()
}

fn view(c: &Cluster, session: SessionId) -> SessionView {
    let request = ClientRequest::Session {
        session,
        output: OutputWanted::None,
        page: None,
    };
    match ask(c, request) {
        ClientResponse::Session(view) => view,
        other => panic!("{other:?}"),
    }
}

fn job<'a>(view: &'a SessionView, name: &str) -> &'a JobView {
    view.jobs.iter().find(|j| j.name == name).expect("job")
}

#[test]
fn a_usage_limit_pauses_its_group_while_others_run_and_survives_a_restart() {
    let mut c = cluster();
    let id = submit(
        &c,
        json!({"name": "limits", "jobs": [
            {"name": "a", "agent": "claude", "prompt": "one"},
            {"name": "b", "agent": "claude", "prompt": "two"},
            {"name": "cmd", "command": ["true"]},
        ]}),
    );
    let mut worker = forged_worker(&c, Vec::new());
    let a = next_assignment(&mut worker);
    assert_eq!(a.job_name, "a");
    let attempt = a.attempt_ref();
    worker.send(&WorkerToManager::AgentUpdate {
        attempt,
        run: run("conv-a", 1_000, None),
    });
    let resets_at = now_ms() + 600_000;
    worker.send(&WorkerToManager::Finished {
        attempt,
        exit: exit(1),
        stopped: None,
        agent: Some(limited_run(resets_at)),
        change: None,
        patch: Vec::new(),
        workspace: None,
    });
    acked(&mut worker, attempt);
    // The other agent job is held with it; the command runs.
    let cmd = next_assignment(&mut worker);
    assert_eq!(cmd.job_name, "cmd");
    let shown = view(&c, id);
    for name in ["a", "b"] {
        let held = job(&shown, name);
        assert_eq!(held.status, JobStatus::Queued, "{name}");
        let reason = held.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("usage limit (claude): paused until "),
            "{reason}"
        );
    }
    let a_view = job(&shown, "a");
    assert_eq!(a_view.history[0].outcome, AttemptOutcome::Limited);
    assert_eq!(
        a_view.agent.as_ref().unwrap().session_id.as_deref(),
        Some("conv-a")
    );
    assert_eq!(shown.summary.cost_usd, 0.01);
    assert_eq!(
        (shown.paused.len(), shown.paused[0].until_ms),
        (1, resets_at)
    );

    c.kill_manager();
    c.start_manager();
    let mut worker = forged_worker(&c, vec![cmd.attempt_ref()]);
    match ask(
        &c,
        ClientRequest::ListSessions {
            limit: 0,
            offset: 0,
        },
    ) {
        ClientResponse::Sessions { paused, .. } => assert_eq!(paused[0].group, "claude"),
        other => panic!("{other:?}"),
    }
    worker.send(&WorkerToManager::Finished {
        attempt: cmd.attempt_ref(),
        exit: exit(0),
        stopped: None,
        agent: None,
        change: None,
        patch: Vec::new(),
        workspace: None,
    });
    acked(&mut worker, cmd.attempt_ref());
    let sent = until_pong(&mut worker);
    assert!(
        !sent.iter().any(|m| matches!(m, ManagerToWorker::Assign(_))),
        "a job of the paused group started after the restart: {sent:?}"
    );
    let reason = job(&view(&c, id), "b").reason.clone().unwrap_or_default();
    assert!(reason.starts_with("usage limit (claude)"), "{reason}");
}

#[test]
fn budgets_stop_a_job_and_skip_the_rest_and_continue_resumes_on_its_worker() {
    let c = cluster();
    let id = submit(
        &c,
        json!({"name": "budget", "max_cost_usd": 0.05, "jobs": [
            {"name": "a", "agent": "claude", "prompt": "one", "max_cost_usd": 0.01},
            {"name": "b", "agent": "claude", "prompt": "two"},
        ]}),
    );
    let mut worker = forged_worker(&c, Vec::new());
    let attempt = next_assignment(&mut worker).attempt_ref();
    // 10,000 Sonnet input tokens: $0.03, past the job's $0.01.
    worker.send(&WorkerToManager::AgentUpdate {
        attempt,
        run: run("conv-a", 10_000, None),
    });
    let cause = until(&mut worker, |m| match m {
        ManagerToWorker::Stop {
            attempt: a, cause, ..
        } if a == attempt => Some(cause),
        _ => None,
    });
    assert_eq!(cause, StopCause::Budget);
    worker.send(&WorkerToManager::Finished {
        attempt,
        exit: exit(143),
        stopped: Some(Stopped {
            cause: StopCause::Budget,
            receipt: TeardownReceipt::default(),
        }),
        agent: Some(run("conv-a", 20_000, Some(0.06))),
        change: None,
        patch: Vec::new(),
        workspace: None,
    });
    acked(&mut worker, attempt);
    let shown = view(&c, id);
    assert_eq!(job(&shown, "a").reason.as_deref(), Some("budget"));
    let b = job(&shown, "b");
    assert_eq!(b.status, JobStatus::Skipped);
    assert_eq!(
        b.reason.as_deref(),
        Some("budget: spent $0.0600 of $0.0500")
    );
    assert_eq!(shown.summary.status, SessionStatus::Failed);

    let follow_up = ClientRequest::Continue {
        session: id,
        job: "a".into(),
        prompt: "go on".into(),
    };
    let ClientResponse::Submitted { session, .. } = ask(&c, follow_up) else {
        panic!("continue was not submitted");
    };
    let resumed = next_assignment(&mut worker);
    assert_eq!(resumed.job.session, session);
    assert_eq!(
        resumed.argv[..3],
        ["claude", "--resume", "conv-a"].map(String::from)
    );
    let never_ran = ClientRequest::Continue {
        session: id,
        job: "b".into(),
        prompt: "go on".into(),
    };
    match ask(&c, never_ran) {
        ClientResponse::Error { kind, message } => {
            assert_eq!(kind, ErrorKind::Conflict);
            assert!(message.contains(&format!("{id}/b")), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
