//! `GET /metrics` of a real manager: the text parses as the Prometheus text
//! format (every line a HELP, a TYPE or a sample of a typed family), and
//! what it counts matches `aam status --json` while jobs run and queue, and
//! after the sessions end.

use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

const STATUSES: [&str; 8] = [
    "pending",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "skipped",
];

/// `GET path` over HTTP/1.1 written by hand (inside TLS); the body of a 200 answer.
fn get(addr: &str, path: &str) -> String {
    let mut stream = aam_tests::tls::connect(addr).expect("connecting to the HTTP server");
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream.flush().unwrap();
    let mut bytes = Vec::new();
    // The answer is whole when the server closes, with or without TLS's
    // close_notify (the body's length is checked by the parser below).
    let _ = stream.read_to_end(&mut bytes);
    let answer = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("chunked"), "expected a sized body: {head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// A scrape, parsed; every line must be understood and every sample's
/// family typed (the parser alone skips lines it does not know).
struct Metrics {
    samples: Vec<Sample>,
    text: String,
}

impl Metrics {
    fn scrape(c: &Cluster) -> Metrics {
        let text = get(&c.http_addr, "/metrics");
        let mut typed = BTreeSet::new();
        for line in text.lines() {
            match LineInfo::parse(line) {
                LineInfo::Type { metric_name, .. } => {
                    typed.insert(metric_name.trim_end_matches("_bucket").to_string());
                }
                LineInfo::Sample { metric_name, .. } => {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| metric_name.strip_suffix(s))
                        .filter(|f| typed.contains(*f))
                        .unwrap_or(metric_name);
                    assert!(typed.contains(family), "no TYPE for {line}");
                    assert!(family.starts_with("aam_"), "{line}");
                }
                LineInfo::Doc { .. } | LineInfo::Empty => {}
                LineInfo::Ignored => panic!("not Prometheus text: {line:?}"),
            }
        }
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let samples = Scrape::parse(lines).expect("parsing /metrics").samples;
        Metrics { samples, text }
    }

    /// The value of `metric` whose labels include `labels`.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let sample = self
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no {metric} {labels:?} in\n{}", self.text));
        match sample.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
            ref other => panic!("{metric} is not a number: {other:?}"),
        }
    }

    /// Observations of a histogram, summed over its series.
    fn count(&self, histogram: &str) -> f64 {
        let name = format!("{histogram}_count");
        let series = self.samples.iter().filter(|s| s.metric == name);
        series
            .map(|s| match s.value {
                Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => v,
                ref other => panic!("{name}: {other:?}"),
            })
            .sum()
    }

    /// Jobs per status, as the gauge says.
    fn jobs(&self) -> BTreeMap<&'static str, u64> {
        STATUSES
            .iter()
            .map(|s| (*s, self.value("aam_jobs", &[("status", s)]) as u64))
            .collect()
    }
}

/// Jobs per status over these sessions, as `aam status --json` says.
fn status_counts(c: &Cluster, sessions: &[&str]) -> BTreeMap<&'static str, u64> {
    let docs: Vec<Json> = sessions.iter().map(|s| c.status(s)).collect();
    STATUSES
        .iter()
        .map(|st| {
            let n = docs.iter().map(|d| d["counts"][st].as_u64().unwrap()).sum();
            (*st, n)
        })
        .collect()
}

/// Attempts started over these sessions.
fn attempts(c: &Cluster, sessions: &[&str]) -> u64 {
    let docs = sessions.iter().map(|s| c.status(s));
    docs.flat_map(|d| d["jobs"].as_array().unwrap().clone())
        .map(|j| j["attempts"].as_u64().unwrap())
        .sum()
}

#[test]
fn metrics_parse_and_count_what_aam_status_shows() {
    let mut c = Cluster::with_http();
    // No prefetch: a job prefetched behind the held ones would be given
    // back after a second, one more attempt than the count below.
    c.start_worker_with("w", 2, &["--prefetch", "0"]);

    // Three succeed, one fails twice (a retry), one is skipped after it.
    let mut jobs: Vec<Json> = (0..3)
        .map(|i| json!({ "name": format!("ok-{i}"), "command": ["true"] }))
        .collect();
    jobs.push(
        json!({ "name": "flaky", "command": ["false"], "retries": 1, "retry_backoff": "10ms" }),
    );
    jobs.push(json!({ "name": "after", "command": ["true"], "depends_on": ["flaky"] }));
    let first = c.submit_json(&json!({ "name": "first", "jobs": jobs }));
    c.aam(&["wait", &first]).expect_code(1);

    // Two jobs hold both slots, one queues behind them, a gate waits.
    let gate = c.gate("hold");
    let hold = |name: &str| json!({ "name": name, "command": ["sh", "-c", WAIT_FOR_GATE], "env": { "GATE": gate.env() } });
    let second = c.submit_json(&json!({ "name": "second", "jobs": [
        hold("hold-1"),
        hold("hold-2"),
        { "name": "behind", "command": ["true"] },
        { "name": "approve", "gate": true },
    ]}));
    let both = [first.as_str(), second.as_str()];
    c.poll_status(&second, "both slots taken", |s| s["counts"]["running"] == 2);
    let m = Metrics::scrape(&c);
    assert_eq!(m.jobs(), status_counts(&c, &both), "{}", m.text);
    assert_eq!(m.value("aam_running_jobs", &[]), 2.0);
    assert_eq!(m.value("aam_queue_length", &[]), 1.0);
    assert_eq!(m.value("aam_jobs_queued_unclaimed", &[]), 1.0);
    assert_eq!(m.value("aam_jobs_running", &[]), 2.0);
    assert!(
        m.value("aam_oldest_queued_seconds", &[]) > 0.0,
        "{}",
        m.text
    );
    assert_eq!(m.value("aam_workers", &[]), 1.0);
    assert_eq!(m.value("aam_worker_slots", &[]), 2.0);
    assert_eq!(m.value("aam_worker_slots_free", &[]), 0.0);
    assert_eq!(m.value("aam_sessions", &[("status", "running")]), 1.0);
    assert_eq!(m.value("aam_sessions", &[("status", "failed")]), 1.0);
    assert_eq!(m.value("aam_limit_groups_paused", &[]), 0.0);

    // Both sessions end; every attempt started and ended is counted once.
    gate.open();
    c.aam(&["approve", &format!("{second}/approve")])
        .expect_code(0);
    c.aam(&["wait", &second]).expect_code(0);
    let m = poll(Duration::from_secs(10), || {
        // The scrape may come a moment before the last attempt's end.
        let m = Metrics::scrape(&c);
        (m.value("aam_running_jobs", &[]) == 0.0).then_some(m)
    })
    .expect("no job left running");
    assert_eq!(m.jobs(), status_counts(&c, &both), "{}", m.text);
    let started = attempts(&c, &both) as f64;
    assert_eq!(started, 8.0, "ok-0..2, flaky twice, hold-1, hold-2, behind");
    assert_eq!(m.count("aam_dispatch_latency_seconds"), started);
    assert_eq!(m.count("aam_job_duration_seconds"), started);
    let ended = |outcome| m.value("aam_job_duration_seconds_count", &[("outcome", outcome)]);
    assert_eq!((ended("succeeded"), ended("failed")), (6.0, 2.0));
    assert_eq!(m.value("aam_sessions", &[("status", "succeeded")]), 1.0);
    assert_eq!(m.value("aam_worker_slots_free", &[]), 2.0);
    assert_eq!(m.value("aam_queue_length", &[]), 0.0);
    assert_eq!(m.value("aam_oldest_queued_seconds", &[]), 0.0);
    let commits = m.count("aam_commit_group_size");
    assert!(commits >= 1.0, "{}", m.text);
    assert_eq!(m.count("aam_commit_duration_seconds"), commits);
    assert_eq!(
        m.count("aam_fdatasync_seconds"),
        commits,
        "one fdatasync a group"
    );
    let sets = m.value("aam_commit_group_size_sum", &[]);
    assert!(sets >= commits, "every group holds a change set at least");
}
