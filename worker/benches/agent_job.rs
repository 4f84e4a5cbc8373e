//! The worker's CPU per agent job against a plain command job (`cargo bench
//! -p aam-worker --bench agent_job`): the same command, `cat` of a recorded
//! Claude Code stream-json output repeated to about 1 MB, run through
//! `run_job` once as an agent job (format `claude-stream-json`: its stdout
//! is read and AgentUpdates made) and once as a command (format none). The
//! CPU is this process's own (getrusage RUSAGE_SELF: the job's processes
//! are not counted), per job; the events go to a sink that drops them, so
//! what is measured is the job's side of the worker (pipes, progress lines,
//! the reader, updates), not the link.

use aam_protocol::agent_run::AgentFormat;
use aam_protocol::messages::Assignment;
use aam_worker::child::{run_job, EventSink, JobEvent};
use std::time::Instant;

const RECORDED: &str = include_str!("../../protocol/src/agent_output/fixtures/claude-tools.jsonl");
/// Jobs run each way.
const JOBS: usize = 40;

#[derive(Clone)]
struct Drop;

impl EventSink for Drop {
    async fn send(&self, event: JobEvent) {
        std::hint::black_box(event);
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("stream.jsonl");
    let output = stream_of_about(1_000_000);
    std::fs::write(&path, &output).expect("writing the stream");
    let mb = output.len() as f64 / 1e6;
    println!("worker CPU per job: `cat` of {mb:.2} MB of stream-json, {JOBS} jobs each way");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    let path = path.to_string_lossy().into_owned();
    let mut cpu = [0.0f64; 2];
    let mut wall = [0.0f64; 2];
    // Alternate the two kinds so drift on a shared machine hits both alike.
    for round in 0..JOBS * 2 {
        let kind = round % 2;
        let format = (kind == 1).then_some(AgentFormat::ClaudeStreamJson);
        let (cpu_before, started) = (cpu_secs(), Instant::now());
        local.block_on(&runtime, run_one(&path, format, round));
        cpu[kind] += cpu_secs() - cpu_before;
        wall[kind] += started.elapsed().as_secs_f64();
    }
    let per_job = |total: f64| total * 1e6 / JOBS as f64;
    println!(
        "  command job: {:>7.0} us CPU per job ({:.1} ms wall)",
        per_job(cpu[0]),
        per_job(wall[0]) / 1e3
    );
    println!(
        "  agent job:   {:>7.0} us CPU per job ({:.1} ms wall)",
        per_job(cpu[1]),
        per_job(wall[1]) / 1e3
    );
    println!(
        "  the reader's share: {:.0} us per job, {:.0} us per MB",
        per_job(cpu[1] - cpu[0]),
        per_job(cpu[1] - cpu[0]) / mb
    );
}

async fn run_one(path: &str, format: Option<AgentFormat>, round: usize) {
    let assignment = Assignment {
        job: aam_protocol::JobKey {
            session: aam_protocol::SessionId(1),
            index: round as u32,
        },
        attempt: 1,
        session_name: "bench".into(),
        job_name: format!("job{round}"),
        argv: vec!["cat".into(), path.into()],
        env: Vec::new(),
        secret_env: Vec::new(),
        workdir: None,
        timeout_ms: None,
        idle_timeout_ms: None,
        grace_ms: 100,
        format,
        worktree: None,
        inputs: Vec::new(),
        ports: 0,
        input: None,
        permission_relay: false,
    };
    let (_stop, stop_rx) = tokio::sync::oneshot::channel();
    run_job(assignment, std::env::temp_dir().into(), Drop, stop_rx).await;
}

/// The recorded run's events between its init and its result, repeated
/// with fresh message ids until the output is about `bytes` long.
fn stream_of_about(bytes: usize) -> Vec<u8> {
    let lines: Vec<&str> = RECORDED.lines().collect();
    let (init, rest) = lines.split_first().expect("a recorded run");
    let (result, middle) = rest.split_last().expect("a recorded run");
    let mut out = format!("{init}\n");
    let mut turn = 0;
    while out.len() < bytes {
        for line in middle {
            out.push_str(&line.replace("\"msg_0", &format!("\"msg_{turn}_")));
            out.push('\n');
        }
        turn += 1;
    }
    out.push_str(result);
    out.push('\n');
    out.into_bytes()
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
