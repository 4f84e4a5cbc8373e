//! An agent job run for real (`sh` printing recorded stream-json): its
//! stdout, and only its stdout, is read; updates are throttled and the
//! latest state goes out while the agent is quiet; the end carries the run.

use super::*;
use crate::run_reader::UPDATE_EVERY;
use aam_protocol::agent_run::AgentFormat;
use std::time::Duration;

/// Every event a job reported, with when it arrived.
#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<(Instant, JobEvent)>>>);

impl EventSink for Recorder {
    async fn send(&self, event: JobEvent) {
        self.0.borrow_mut().push((Instant::now(), event));
    }
}

const INIT: &str = r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"s-1","model":"claude-opus-4-8[1m]"}"#;
const TEXT: &str = r#"{"type":"assistant","message":{"id":"m1","model":"claude-opus-4-8","content":[{"type":"text","text":"working"}],"usage":{"input_tokens":10,"output_tokens":1}}}"#;
const TOOL: &str = r#"{"type":"assistant","message":{"id":"m1","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"t1","name":"Edit","input":{"file_path":"/w/src/lib.rs"}}],"usage":{"input_tokens":10,"output_tokens":1}}}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"the answer","num_turns":1,"total_cost_usd":0.25,"session_id":"s-1"}"#;

/// Runs `script` under `sh -c` as a job reading its output as `format`.
fn run_script(script: &str, format: Option<AgentFormat>) -> Vec<(Instant, JobEvent)> {
    let assignment = Assignment {
        job: aam_protocol::JobKey {
            session: aam_protocol::SessionId(9),
            index: 0,
        },
        attempt: 1,
        session_name: "s".into(),
        job_name: "agent".into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: Vec::new(),
        secret_env: Vec::new(),
        workdir: None,
        timeout_ms: Some(30_000),
        idle_timeout_ms: None,
        grace_ms: 100,
        format,
        worktree: None,
        inputs: Vec::new(),
        ports: 0,
        input: None,
        permission_relay: false,
    };
    let recorder = Recorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_stop, stop_rx) = oneshot::channel();
    let job = run_job(
        assignment,
        std::env::temp_dir().into(),
        recorder.clone(),
        stop_rx,
    );
    tokio::task::LocalSet::new().block_on(&runtime, job);
    recorder.0.take()
}

fn agent_updates(events: &[(Instant, JobEvent)]) -> Vec<(Instant, &AgentRun)> {
    events
        .iter()
        .filter_map(|(at, e)| match e {
            JobEvent::AgentUpdate { run, .. } => Some((*at, run)),
            _ => None,
        })
        .collect()
}

fn end_run(events: &[(Instant, JobEvent)]) -> Option<&AgentRun> {
    match events.last() {
        Some((_, JobEvent::Finished { agent, .. })) => agent.as_ref(),
        _ => panic!("the last event is not the end"),
    }
}

#[test]
fn only_stdout_is_read_and_the_end_carries_the_run() {
    let decoy = RESULT.replace("the answer", "from stderr");
    let script = format!(
        "echo '{INIT}'; echo 'not json' >&2; echo '{decoy}' >&2; echo '{TOOL}'; printf '%s' '{RESULT}'"
    );
    let events = run_script(&script, Some(AgentFormat::ClaudeStreamJson));
    let run = end_run(&events).expect("an agent job ends with its run");
    assert_eq!(run.result.as_deref(), Some("the answer"));
    assert_eq!(run.unparsed_lines, 0, "stderr is not read");
    assert_eq!(run.last_tool.as_deref(), Some("Edit src/lib.rs"));
    assert_eq!(run.model.as_deref(), Some("claude-opus-4-8"));
    assert_eq!(run.reported_cost_usd, Some(0.25));
    assert!(!agent_updates(&events).is_empty());
}

#[test]
fn updates_are_throttled_and_the_latest_goes_out_while_the_agent_is_quiet() {
    // A burst of changes, then a quiet spell, then the end.
    let script = format!(
        "echo '{INIT}'; echo '{TEXT}'; sleep 0.05; echo '{TOOL}'; sleep 0.8; echo '{RESULT}'"
    );
    let events = run_script(&script, Some(AgentFormat::ClaudeStreamJson));
    let updates = agent_updates(&events);
    for pair in updates.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= UPDATE_EVERY - Duration::from_millis(5),
            "{gap:?} between updates"
        );
    }
    // The tool call came within the throttle of the first update, yet it
    // went out during the quiet spell, before the result was printed.
    let with_tool = updates
        .iter()
        .position(|(_, run)| run.last_tool.is_some())
        .expect("the tool call was reported before the end");
    assert_eq!(updates[with_tool].1.result, None);
    let (ended_at, _) = events.last().unwrap();
    assert!(*ended_at - updates[with_tool].0 >= Duration::from_millis(400));
    assert_eq!(
        end_run(&events).unwrap().result.as_deref(),
        Some("the answer")
    );
}

#[test]
fn a_plain_command_has_no_run() {
    let events = run_script(&format!("echo '{RESULT}'"), None);
    assert!(agent_updates(&events).is_empty());
    assert!(end_run(&events).is_none());
}
