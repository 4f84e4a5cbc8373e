//! `permission` (`cargo bench -p aam-tests --bench throughput --
//! permission`): the time from an agent's permission request to the job
//! showing `needs input`, in what `aam status --json` reads (polled over
//! the wire, and by the `aam` CLI itself) and on the dashboard's event
//! stream (`/api/events`), through the real manager and worker. The agent
//! is a Python script that does what Claude Code does under `permissions =
//! "relay"`: it starts the MCP server its `--mcp-config` names (`aam-worker
//! permission-prompt`), calls its permission tool, notes when it asked
//! (wall clock, the same as the bench's), and waits for the answer; the
//! bench allows each request over the wire once it has seen it
//! everywhere. The agent waits a quiet 300 ms before each ask, so each
//! meets a stream that has written nothing for its `MIN_GAP` (a burst is
//! coalesced into one write per 100 ms by design; the answer's own event,
//! sent within 100 ms of the ask's, goes out up to 100 ms later).

use super::say::{arrival, now_ns};
use super::{quantiles, Client};
use aam_protocol::messages::{ClientRequest, ClientResponse, OutputWanted};
use aam_tests::http::{bearer, Events, Next};
use aam_tests::Cluster;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent: asks `$ASKS` permissions one after the other (300 ms after
/// the last answer) through the MCP server its `--mcp-config` names, each
/// ask's time (ns since the
/// epoch) appended to `$GOT` just before it is sent.
const AGENT: &str = r#"
import json, os, subprocess, sys, time
args = sys.argv[1:]
config = json.load(open(args[args.index("--mcp-config") + 1]))
server = list(config["mcpServers"].values())[0]
mcp = subprocess.Popen([server["command"]] + server["args"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def send(message):
    mcp.stdin.write((json.dumps(message) + "\n").encode()); mcp.stdin.flush()
def answer(id):
    while True:
        message = json.loads(mcp.stdout.readline())
        if message.get("id") == id:
            return message
send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
      "capabilities": {}, "clientInfo": {"name": "bench-agent", "version": "1"}}})
answer(0)
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
got = open(os.environ["GOT"], "a", buffering=1)
for i in range(int(os.environ["ASKS"])):
    time.sleep(0.3)
    got.write(f"{time.time_ns()}\n")
    send({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": "permission",
          "arguments": {"tool_name": "Write", "input": {"file_path": f"f{i}.txt", "content": "x"},
                        "tool_use_id": f"toolu_{i}"}}})
    answer(i + 1)
mcp.stdin.close()
mcp.wait()
print('{"type":"result","subtype":"success","result":"asked"}', flush=True)
"#;

/// Whether the job's request `id` is open in the session's status.
fn open_in(view: &aam_protocol::model::SessionView, id: u32) -> bool {
    view.jobs[0]
        .permissions
        .iter()
        .any(|r| r.id == id && r.decision.is_none())
}

pub fn permission() {
    const N: usize = 100;
    const CLI: usize = 30;
    let total = N + CLI;
    let mut c = Cluster::new();
    c.http = true;
    let script = c.write("agent.py", AGENT);
    let got = c.path("asked.log");
    let config = format!(
        "[agents.asker]\ncommand = [\"python3\", \"-u\", {script:?}]\npermissions = \"relay\"\n\
         env = {{ GOT = {got:?}, ASKS = \"{total}\" }}\n",
        script = script.display().to_string(),
        got = got.display().to_string(),
    );
    c.set_config(&config);
    c.start_manager();
    c.start_worker("bench", 2);
    // The stream, read on a thread of its own: each event's arrival and
    // the session's `needs_input` in it.
    let (header, token) = bearer(&c.token);
    let events = Events::open(&c.url("/api/events"), &[(header, &token)]);
    let seen: Arc<Mutex<Vec<(u128, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Next::Event(e) = events.wait(Duration::from_millis(50)) {
                    if e.event == "session" {
                        let needs = e.json()["needs_input"].as_u64().unwrap_or(0);
                        seen.lock().unwrap().push((now_ns(), needs));
                    }
                }
            }
        })
    };
    let session = c.submit_json(&serde_json::json!({"name": "asks", "jobs": [
        { "name": "ask", "agent": "asker", "prompt": "ask" },
    ]}));
    let id = aam_protocol::SessionId(session.trim_start_matches('s').parse().unwrap());
    let mut client = Client::connect(&c.addr, &c.token);
    let (mut by_wire, mut by_cli, mut by_stream) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..total {
        let request = i as u32 + 1;
        let asked = arrival(&got, i + 1);
        let shown = if i < N {
            // `aam status --json`'s request, polled over the wire.
            loop {
                client.write(&ClientRequest::Session {
                    session: id,
                    output: OutputWanted::None,
                    page: None,
                });
                let ClientResponse::Session(view) = client.read() else {
                    panic!("status failed")
                };
                if open_in(&view, request) {
                    break now_ns();
                }
            }
        } else {
            // The CLI itself, run until one of its answers shows it.
            loop {
                let out = c.aam(&["status", &session, "--json"]).expect_code(0);
                if out.stdout.contains("\"needs_input\": true") {
                    break now_ns();
                }
            }
        };
        let sample = Duration::from_nanos(shown.saturating_sub(asked) as u64);
        if i < N {
            by_wire.push(sample);
        } else {
            by_cli.push(sample);
        }
        // The stream's first event after the ask that shows it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let streamed = loop {
            let hit = seen
                .lock()
                .unwrap()
                .iter()
                .find(|(at, needs)| *at >= asked && *needs > 0)
                .map(|(at, _)| *at);
            if let Some(at) = hit {
                break at;
            }
            assert!(
                Instant::now() < deadline,
                "no event showed request {request}"
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        by_stream.push(Duration::from_nanos((streamed - asked) as u64));
        seen.lock().unwrap().clear();
        client.write(&ClientRequest::DecidePermission {
            session: id,
            job: "ask".into(),
            request: Some(request),
            allow: true,
            always: false,
            message: None,
        });
        match client.read() {
            ClientResponse::PermissionDecided { .. } => {}
            other => panic!("allow failed: {other:?}"),
        }
    }
    c.aam(&["wait", &session]).expect_code(0);
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    for samples in [&mut by_wire, &mut by_cli, &mut by_stream] {
        samples.sort();
    }
    let q = [("p50", 0.5), ("p99", 0.99), ("max", 1.0)];
    println!("permission: an agent's request until its job shows `needs input` (one at a time)");
    println!(
        "  status over the wire ({N}):   {}",
        quantiles(&by_wire, &q)
    );
    println!(
        "  aam status --json CLI ({CLI}): {}",
        quantiles(&by_cli, &q)
    );
    println!(
        "  /api/events stream ({total}):   {}",
        quantiles(&by_stream, &q)
    );
}
