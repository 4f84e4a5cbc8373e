//! Writes the seed corpus of the fuzz targets (`fuzz/corpus/<target>/`):
//! real frames of every message type peers send, encoded by the codec;
//! handshakes followed by a session's first frames; the example batch files
//! in TOML and as JSON; the Claude Code stream-json fixtures; the example
//! agent definitions. Run from the workspace root:
//! `cargo run -p aam-protocol --features fuzzing --example fuzz_seeds`.

use aam_protocol::agent_run::{AgentFormat, AgentRun};
use aam_protocol::codec::{encode_frame, DEFAULT_MAX_FRAME};
use aam_protocol::fuzzing::fnv1a;
use aam_protocol::messages::*;
use aam_protocol::model::{ExitInfo, JobStatus, StopCause};
use aam_protocol::spec::{parse_batch, Format, SpecError, SpecErrors};
use aam_protocol::{JobKey, SessionId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new("fuzz/corpus");
    let batches = example_batches()?;
    frames(corpus, &batches)?;
    handshakes(corpus, &batches)?;
    for (name, text) in &batches {
        write(corpus, "batch_toml", text.as_bytes())?;
        let spec = parse_batch(text, Format::Toml).expect("the examples parse");
        let json = serde_json::to_string_pretty(&spec).expect("a batch is JSON");
        write(corpus, "batch_json", json.as_bytes())?;
        eprintln!("batch {name}");
    }
    copy_dir(
        Path::new("protocol/src/agent_output/fixtures"),
        "jsonl",
        corpus,
        "stream_json",
    )?;
    copy_dir(
        Path::new("examples/agents"),
        "md",
        corpus,
        "agent_definition",
    )?;
    Ok(())
}

/// (file name, text) of every examples/*.toml.
fn example_batches() -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("examples")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

/// A seed named by its content's hash, as cargo-fuzz names corpus files.
fn write(corpus: &Path, target: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("seed-{:016x}", fnv1a(bytes))), bytes)
}

fn copy_dir(from: &Path, ext: &str, corpus: &Path, target: &str) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            write(corpus, target, &std::fs::read(&path)?)?;
        }
    }
    Ok(())
}

fn frame<T: Serialize>(value: &T) -> Vec<u8> {
    encode_frame(value, DEFAULT_MAX_FRAME).expect("a seed encodes")
}

/// `frames` seeds: the selector byte of the message type, then frames.
fn frames(corpus: &Path, batches: &[(String, String)]) -> std::io::Result<()> {
    let seeds: Vec<(u8, Vec<Vec<u8>>)> = vec![
        (
            0,
            vec![frame(&Handshake::new(Role::Client, "secret-token"))],
        ),
        (1, replies().iter().map(frame).collect()),
        (2, client_requests(batches).iter().map(frame).collect()),
        (3, client_responses().iter().map(frame).collect()),
        (4, worker_messages().iter().map(frame).collect()),
        (5, manager_messages().iter().map(frame).collect()),
    ];
    for (selector, frames) in seeds {
        for one in &frames {
            write(corpus, "frames", &[&[selector][..], one].concat())?;
        }
        write(
            corpus,
            "frames",
            &[vec![selector], frames.concat()].concat(),
        )?;
    }
    Ok(())
}

/// `handshake` seeds: a handshake, then the frames of its role.
fn handshakes(corpus: &Path, batches: &[(String, String)]) -> std::io::Result<()> {
    let client = frame(&Handshake::new(Role::Client, "secret-token"));
    for request in client_requests(batches) {
        write(
            corpus,
            "handshake",
            &[client.clone(), frame(&request)].concat(),
        )?;
    }
    let worker = frame(&Handshake::new(Role::Worker, "secret-token"));
    let all: Vec<Vec<u8>> = worker_messages().iter().map(frame).collect();
    write(
        corpus,
        "handshake",
        &[worker.clone(), all.concat()].concat(),
    )?;
    write(corpus, "handshake", &worker)?;
    Ok(())
}

fn attempt() -> AttemptRef {
    AttemptRef {
        job: JobKey {
            session: SessionId(42),
            index: 3,
        },
        attempt: 2,
    }
}

fn replies() -> Vec<HandshakeReply> {
    vec![
        HandshakeReply::Accepted {
            manager_version: "0.1.0".into(),
        },
        HandshakeReply::Rejected {
            reason: "invalid token".into(),
        },
    ]
}

fn client_requests(batches: &[(String, String)]) -> Vec<ClientRequest> {
    let session = SessionId(42);
    let mut out: Vec<ClientRequest> = batches
        .iter()
        .map(|(_, text)| ClientRequest::Submit {
            batch: parse_batch(text, Format::Toml).expect("the examples parse"),
            idempotency_key: Some("key-1".into()),
        })
        .collect();
    out.extend([
        ClientRequest::ListSessions {
            limit: 50,
            offset: 0,
        },
        ClientRequest::Session {
            session,
            output: OutputWanted::Tail(4096),
            page: None,
        },
        ClientRequest::Logs {
            session,
            job: "build".into(),
            from: 100,
        },
        ClientRequest::Watch { session },
        ClientRequest::Cancel {
            session,
            job: Some("build".into()),
            grace_ms: Some(5000),
            wait: true,
        },
        ClientRequest::Agents,
        ClientRequest::Gc {
            older_than_ms: Some(86_400_000),
        },
        ClientRequest::Retry { session },
        ClientRequest::Decide {
            session,
            job: "deploy".into(),
            approve: true,
            comment: Some("looks good".into()),
        },
        ClientRequest::Continue {
            session,
            job: "review".into(),
            prompt: "and the tests?".into(),
        },
        ClientRequest::Patch {
            session,
            job: "fix".into(),
        },
    ]);
    out
}

fn client_responses() -> Vec<ClientResponse> {
    vec![
        ClientResponse::Invalid(SpecErrors(vec![SpecError::job(
            "build", "command", "is empty",
        )])),
        ClientResponse::Logs {
            status: JobStatus::Running,
            attempt: 1,
            output: b"hello\n".to_vec(),
            output_bytes: 6,
            format: Some(AgentFormat::ClaudeStreamJson),
        },
        ClientResponse::Cancelled {
            cancelled: vec!["a".into()],
            stopped: vec!["b".into()],
        },
        ClientResponse::Error {
            kind: ErrorKind::NotFound,
            message: "no session 42".into(),
        },
    ]
}

fn worker_messages() -> Vec<WorkerToManager> {
    vec![
        WorkerToManager::Register {
            name: "worker-1".into(),
            instance: 0x1234_5678_9abc_def0,
            slots: 4,
            prefetch: aam_protocol::messages::Prefetch::Fixed(2),
            labels: BTreeMap::from([("gpu".to_string(), "true".to_string())]),
            assigned: vec![attempt()],
        },
        WorkerToManager::Heartbeat,
        WorkerToManager::Output {
            attempt: attempt(),
            data: b"compiling...\n::progress:: 50 halfway\n".to_vec(),
        },
        WorkerToManager::Progress {
            attempt: attempt(),
            percent: 50,
            message: Some("halfway".into()),
        },
        WorkerToManager::Finished {
            attempt: attempt(),
            exit: ExitInfo {
                code: Some(0),
                signal: None,
                duration_ms: 1234,
            },
            stopped: None,
            agent: Some(AgentRun::default()),
            change: None,
            patch: Vec::new(),
            workspace: None,
        },
        WorkerToManager::SpawnFailed {
            attempt: attempt(),
            error: "no such program".into(),
        },
        WorkerToManager::Draining,
    ]
}

fn manager_messages() -> Vec<ManagerToWorker> {
    vec![
        ManagerToWorker::Registered {
            heartbeat_ms: 1000,
            lease_ms: 10_000,
            output_cap: 1 << 20,
        },
        ManagerToWorker::Pong,
        ManagerToWorker::Ack(attempt()),
        ManagerToWorker::Stop {
            attempt: attempt(),
            cause: StopCause::Cancelled,
            grace_ms: 5000,
        },
        ManagerToWorker::Refused {
            reason: "invalid token".into(),
        },
    ]
}
