//! `say` (`cargo bench -p aam-tests --bench throughput -- say`): the time
//! from a message said to a running agent to its line on the agent's
//! stdin, through the real manager and worker. The agent is a Python
//! script reading stream-json on stdin (`input = "stream-json"`, a linger
//! of an hour) that notes when each line came (wall clock, the same as
//! the bench's) and answers each with a `result` line. Said N times over
//! the wire (`ClientRequest::Say`, answered once the message is stored),
//! and M times with the `aam` CLI (its start included), one at a time;
//! as a peer, the same line written straight into a pipe to the same
//! script.

use super::{quantiles, Client};
use aam_protocol::messages::{ClientRequest, ClientResponse};
use aam_tests::Cluster;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The agent: each stdin line's arrival (ns since the epoch) appended to
/// `$GOT`, then a `result` line, so its turn ends.
const AGENT: &str = r#"
import os, sys, time
got = open(os.environ["GOT"], "a", buffering=1)
for line in sys.stdin:
    got.write(f"{time.time_ns()}\n")
    print('{"type":"result","subtype":"success","result":"ok"}', flush=True)
"#;

/// Wall-clock time in ns since the epoch (as the scripts' `time.time_ns()`).
pub(super) fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Waits until `file` has `lines` lines; the last one's number.
pub(super) fn arrival(file: &std::path::Path, lines: usize) -> u128 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let got: Vec<&str> = text.lines().collect();
        if got.len() >= lines {
            return got[lines - 1].parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent got {} of {lines} lines",
            got.len()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn say() {
    const N: usize = 200;
    const CLI: usize = 50;
    let mut c = Cluster::new();
    let script = c.write("agent.py", AGENT);
    let got = c.path("got.log");
    let config = format!(
        "[agents.echo]\ncommand = [\"python3\", \"-u\", {script:?}]\ninput = \"stream-json\"\n\
         linger = \"1h\"\nenv = {{ GOT = {got:?} }}\n",
        script = script.display().to_string(),
        got = got.display().to_string(),
    );
    c.set_config(&config);
    c.start_manager();
    c.start_worker("bench", 2);
    let session = c.submit_json(&serde_json::json!({"name": "talk", "jobs": [
        { "name": "talk", "agent": "echo", "prompt": "hello" },
    ]}));
    arrival(&got, 1);
    let mut client = Client::connect(&c.addr, &c.token);
    let id = session.trim_start_matches('s').parse().unwrap();
    let mut over_wire = Vec::with_capacity(N);
    for i in 0..N {
        let sent = now_ns();
        client.write(&ClientRequest::Say {
            session: aam_protocol::SessionId(id),
            job: Some("talk".into()),
            text: format!("message {i}"),
        });
        match client.read() {
            ClientResponse::Said { jobs } => assert_eq!(jobs.len(), 1),
            other => panic!("say failed: {other:?}"),
        }
        let came = arrival(&got, i + 2);
        over_wire.push(Duration::from_nanos((came - sent) as u64));
    }
    let mut by_cli = Vec::with_capacity(CLI);
    let target = format!("{session}/talk");
    for i in 0..CLI {
        let sent = now_ns();
        c.aam(&["say", &target, &format!("cli message {i}")])
            .expect_code(0);
        let came = arrival(&got, N + i + 2);
        by_cli.push(Duration::from_nanos((came - sent) as u64));
    }
    // The peer: the same line into a pipe to the same script, by hand.
    let by_hand_got = c.path("by-hand.log");
    let mut agent = Command::new("python3")
        .arg("-u")
        .arg(&script)
        .env("GOT", &by_hand_got)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = agent.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(agent.stdout.take().unwrap());
    let mut by_hand = Vec::with_capacity(N);
    for i in 0..N {
        let sent = now_ns();
        stdin
            .write_all(aam_protocol::say::input_line(&format!("m{i}")).as_bytes())
            .unwrap();
        let came = arrival(&by_hand_got, i + 1);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        by_hand.push(Duration::from_nanos((came - sent) as u64));
    }
    drop(stdin);
    let _ = agent.wait();
    for samples in [&mut over_wire, &mut by_cli, &mut by_hand] {
        samples.sort();
    }
    let q = [("p50", 0.5), ("p99", 0.99), ("max", 1.0)];
    println!(
        "say: a message to a running agent until its line is on the agent's stdin (one at a time)"
    );
    println!("  over the wire ({N}):    {}", quantiles(&over_wire, &q));
    println!("  aam say CLI ({CLI}):      {}", quantiles(&by_cli, &q));
    println!("  a pipe, by hand ({N}):  {}", quantiles(&by_hand, &q));
    c.aam(&["cancel", &session]).expect_code(0);
}
