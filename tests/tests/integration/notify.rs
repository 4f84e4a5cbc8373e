//! Notifications (`[[notify]]`): a failed job, a waiting gate and a
//! session's end reach a local HTTP receiver and a command, once each;
//! a receiver that answers 500 gets the event by a retry; a manager
//! killed with SIGKILL repeats nothing that was delivered, and delivers
//! after its restart what a receiver that was down had not taken.

use aam_tests::{poll, Cluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A tiny HTTP receiver: records every POST's body and the status it
/// answered (500 to the first `fail_first` requests, then 200).
struct Receiver {
    port: u16,
    /// (status answered, body) of every request, in order.
    seen: Arc<Mutex<Vec<(u16, Value)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let count = AtomicUsize::new(0);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let fail = count.fetch_add(1, Ordering::SeqCst) < fail_first;
                if let Some(body) = answer(conn, if fail { 500 } else { 200 }) {
                    seen2
                        .lock()
                        .unwrap()
                        .push((if fail { 500 } else { 200 }, body));
                }
            }
        });
        Receiver {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook/secret-path", self.port)
    }

    fn seen(&self) -> Vec<(u16, Value)> {
        self.seen.lock().unwrap().clone()
    }

    /// The events it answered 200 to.
    fn delivered(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, e)| e)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it with `status`; the body as JSON.
fn answer(conn: TcpStream, status: u16) -> Option<Value> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    (&conn).write_all(reply.as_bytes()).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The events the command wrote, one JSON document a line.
fn command_events(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON event a line"))
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(events: &'a [Value], event: &str, job: Option<&str>) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == event && job.is_none_or(|j| e["job"] == j))
        .unwrap_or_else(|| panic!("no {event} {job:?} in {events:?}"))
}

/// How many times the manager's log says each id left the outbox.
fn removals(c: &Cluster, id: &str) -> usize {
    let log = std::fs::read_to_string(c.path("manager.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("out of the outbox"))
        .filter_map(|l| l.split("ids=").nth(1))
        .flat_map(|ids| ids.split_whitespace().next().unwrap_or("").split(','))
        .filter(|i| *i == id)
        .count()
}

/// Polls until every id left the outbox `times` times (once per target
/// that settled it): only then is it safe to kill the manager without a
/// repeat.
fn wait_removed(c: &Cluster, ids: &[String], times: usize) {
    let done = poll(Duration::from_secs(20), || {
        ids.iter().all(|id| removals(c, id) >= times).then_some(())
    });
    assert!(
        done.is_some(),
        "{ids:?} never left the outbox\n{}",
        c.logs()
    );
}

const EVENTS: &str = r#"["session_finished", "gate_waiting", "job_failed"]"#;

#[test]
fn events_reach_a_url_and_a_command_once_each_also_across_a_restart() {
    let receiver = Receiver::start(1);
    let mut c = Cluster::new();
    let file = c.path("events.jsonl");
    let up = c.path("command-up");
    std::fs::write(&up, "").unwrap();
    // The user's own sh -c, as argv: it fails while `up` is missing.
    let script = format!(
        "test -e '{}' && cat >> '{}' && echo >> '{}'",
        up.display(),
        file.display(),
        file.display()
    );
    let config = format!(
        "[[notify]]\non = {EVENTS}\nurl = \"{}\"\nretry_backoff = \"100ms\"\n\n\
         [[notify]]\non = {EVENTS}\ncommand = [\"sh\", \"-c\", {}]\n\
         retry_backoff = \"100ms\"\nretry_backoff_max = \"500ms\"\nmax_attempts = 1000\n",
        receiver.url(),
        Value::String(script)
    );
    c.manager_config = Some(c.write("aam.toml", &config));
    c.start_manager();
    c.start_worker("w", 2);
    let batch = r#"
name = "notified"
[[jobs]]
name = "ok"
command = ["true"]
[[jobs]]
name = "bad"
command = ["sh", "-c", "exit 3"]
[[jobs]]
name = "review"
gate = true
depends_on = ["ok"]
"#;
    let session = c.submit(&c.write("batch.toml", batch));

    // A failed job and a waiting gate, at both; the first POST got a 500.
    let both = poll(Duration::from_secs(30), || {
        let http = receiver.delivered();
        let cmd = command_events(&file);
        (http.len() >= 2 && cmd.len() >= 2).then_some((http, cmd))
    });
    let (http, cmd) = both.unwrap_or_else(|| panic!("events did not arrive\n{}", c.logs()));
    let seen = receiver.seen();
    assert_eq!(seen[0].0, 500, "{seen:?}");
    assert_eq!(seen[1].1["id"], seen[0].1["id"], "retried: {seen:?}");
    let failed = find(&http, "job_failed", Some("bad"));
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["session"]["id"], session);
    assert_eq!(failed["session"]["name"], "notified");
    let waiting = find(&http, "gate_waiting", Some("review"));
    assert_eq!(waiting["gate"], "review");
    let first: BTreeSet<String> = ids(&http).into_iter().collect();
    assert_eq!(first.len(), 2, "{http:?}");
    assert_eq!(ids(&cmd).into_iter().collect::<BTreeSet<_>>(), first);
    wait_removed(&c, &ids(&http), 2);

    // The command goes down; the gate is rejected: the URL hears at once,
    // the command's events wait in the outbox.
    std::fs::remove_file(&up).unwrap();
    c.aam(&["reject", &format!("{session}/review"), "--comment", "no"])
        .expect_code(0);
    let four = poll(Duration::from_secs(30), || {
        let http = receiver.delivered();
        (http.len() >= 4).then_some(http)
    });
    let http = four.unwrap_or_else(|| panic!("no rejection events\n{}", c.logs()));
    let rejected = find(&http, "job_failed", Some("review"));
    assert_eq!(rejected["comment"], "no");
    let finished = find(&http, "session_finished", None);
    assert_eq!(finished["session"]["status"], "failed");
    let later: Vec<String> = ids(&http)[2..].to_vec();
    wait_removed(&c, &later, 1);
    assert_eq!(command_events(&file).len(), 2, "the command is down");

    // kill -9, the command back up, the same data directory.
    c.kill_manager();
    std::fs::write(&up, "").unwrap();
    c.start_manager();
    let cmd = poll(Duration::from_secs(30), || {
        let cmd = command_events(&file);
        (cmd.len() >= 4).then_some(cmd)
    })
    .unwrap_or_else(|| panic!("the outbox was not delivered\n{}", c.logs()));
    let all: BTreeSet<String> = ids(&http).into_iter().collect();
    assert_eq!(all.len(), 4);
    assert_eq!(ids(&cmd).into_iter().collect::<BTreeSet<_>>(), all);

    // A new event after the restart: each target sends in order, so once
    // it arrived, no repeat of an older one can still come.
    let again = r#"
name = "after"
[[jobs]]
name = "bad2"
command = ["false"]
"#;
    c.submit(&c.write("again.toml", again));
    let last = poll(Duration::from_secs(30), || {
        let http = receiver.delivered();
        let cmd = command_events(&file);
        let done = |e: &[Value]| {
            e.iter()
                .any(|e| e["session"]["name"] == "after" && e["event"] == "session_finished")
        };
        (done(&http) && done(&cmd)).then_some((http, cmd))
    });
    let (http, cmd) = last.unwrap_or_else(|| panic!("no event after the restart\n{}", c.logs()));
    for (name, events) in [("url", &http), ("command", &cmd)] {
        let ids = ids(events);
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{name} got a repeat: {ids:?}");
        assert_eq!(ids.len(), 6, "{name}: {ids:?}");
    }
    // The URL's path (a secret, for some receivers) is not in the log.
    let log = std::fs::read_to_string(c.path("manager.log")).unwrap();
    assert!(!log.contains("secret-path"), "{log}");
}
