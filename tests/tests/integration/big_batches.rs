//! Batches too big for one frame and sessions too big for one answer: a
//! batch file goes to the manager in parts over one connection (a big
//! JSON file read as it goes) and is stored only whole; parts are held
//! per connection, refused past the job limit or the token's role, and
//! dropped with the connection; `aam status` pages a session's jobs with
//! its counts whole.

use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind, JobPage, Role};
use aam_protocol::spec::{BatchSpec, Dependency, JobSpec};
use aam_tests::wire::Wire;
use aam_tests::Cluster;
use serde_json::json;

/// A job of `echo` with a long argument, so a few thousand of them pass
/// the size of one part.
fn echo_job(i: usize) -> serde_json::Value {
    json!({"name": format!("t{i}"), "command": ["echo", format!("{i:0>400}")]})
}

#[test]
fn a_batch_bigger_than_a_frame_goes_in_parts_and_status_pages_its_jobs() {
    let c = Cluster::with_manager();
    // 12,000 jobs of ~430 encoded bytes: over 5 MB, more than one part
    // (4 MiB), and the last depends on the first across the parts.
    let n = 12_000;
    let mut jobs: Vec<_> = (0..n).map(echo_job).collect();
    jobs[n - 1]["depends_on"] = json!(["t0"]);
    let file = c.write(
        "big.json",
        &json!({"name": "big", "jobs": jobs}).to_string(),
    );
    assert!(std::fs::metadata(&file).unwrap().len() > 5_000_000);
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(0);
    let session = out.stdout.trim().to_string();

    let page = c
        .aam(&[
            "status", &session, "--json", "--offset", "11990", "--limit", "20",
        ])
        .expect_code(0)
        .json();
    assert_eq!(page["jobs_total"], n, "{page}");
    assert_eq!(page["offset"], 11990);
    let names: Vec<_> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].clone())
        .collect();
    let want: Vec<_> = (11990..n).map(|i| json!(format!("t{i}"))).collect();
    assert_eq!(
        names, want,
        "the page holds the batch's last ten jobs, in order"
    );
    assert_eq!(page["jobs"][9]["depends_on"][0]["job"], "t0");
    // Counts are the whole session's, whatever the page.
    let counted: u64 = page["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, n as u64);

    // The table shows the first 1,000 and says how to see the next.
    let table = c.aam(&["status", &session]).expect_code(0).stdout;
    assert!(
        table.contains("\nt999 ") && !table.contains("\nt1000 "),
        "{}",
        &table[..400]
    );
    assert!(
        table.contains("jobs 1-1000 of 12000 shown; the next with --offset 1000"),
        "{}",
        &table[table.len().saturating_sub(300)..]
    );
    let past = c
        .aam(&["status", &session, "--offset", "20000"])
        .expect_code(0)
        .stdout;
    assert!(
        past.contains("no jobs from --offset 20000: the session has 12000"),
        "{past}"
    );
    let all = c
        .aam(&["status", &session, "--json", "--limit", "0"])
        .expect_code(0)
        .json();
    assert_eq!(all["jobs"].as_array().unwrap().len(), n);
}

#[test]
fn a_big_json_file_is_streamed_and_what_is_wrong_in_it_stores_nothing() {
    let c = Cluster::with_manager();
    let n = 12_000;
    let big = |jobs: &[serde_json::Value]| json!({"name": "big", "jobs": jobs}).to_string();
    let mut jobs: Vec<_> = (0..n).map(echo_job).collect();

    // A job that waits for one that is not there: the manager's check,
    // after every part went, named with the file and the job.
    jobs[n - 1]["depends_on"] = json!(["nowhere"]);
    let file = c.write("unknown-dependency.json", &big(&jobs));
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
    assert!(
        out.stderr.contains(
            "unknown-dependency.json: job 't11999': field 'depends_on': unknown job 'nowhere'"
        ),
        "{}",
        out.stderr
    );

    // A job that is not a job's JSON, past the first parts: its line.
    jobs[n - 1] = json!({"name": "t11999", "command": "echo"});
    let text = big(&jobs).replace("},{", "},\n{");
    let file = c.write("bad-type.json", &text);
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
    assert!(
        out.stderr.contains(&format!(
            "bad-type.json: line {n}: job 't11999': field 'command': invalid type"
        )),
        "{}",
        out.stderr
    );

    // A generated batch wrong in every job: the first hundred problems and
    // a count of the rest, not an answer too big to send.
    let every_bad: Vec<_> = (0..n)
        .map(|i| {
            let mut j = echo_job(i);
            j["depends_on"] = json!(["nowhere"]);
            j
        })
        .collect();
    let file = c.write("every-job-bad.json", &big(&every_bad));
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
    assert!(
        out.stderr.contains(&format!(
            "and {} more problems (only the first 100 are listed)",
            n - 100
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.lines().count() < 120, "{}", out.stderr);

    // A job whose own fields are wrong is found as the file is read: the
    // rest is not sent, so the manager's check across jobs (the dependency
    // on a job that is not there) never runs.
    let mut bad_early: Vec<_> = (0..n).map(echo_job).collect();
    bad_early[3]["timeout"] = json!("soon");
    bad_early[n - 1]["depends_on"] = json!(["nowhere"]);
    let file = c.write("bad-early.json", &big(&bad_early));
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
    assert!(
        out.stderr
            .contains("bad-early.json: job 't3': field 'timeout': "),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("nowhere"), "{}", out.stderr);
    // `aam run` streams it the same way, to the manager it embeds.
    let run = c
        .aam(&["run", file.to_str().unwrap(), "--data-dir", "run-data"])
        .expect_code(2);
    assert!(
        run.stderr
            .contains("bad-early.json: job 't3': field 'timeout': ")
            && !run.stderr.contains("nowhere"),
        "{}",
        run.stderr
    );

    // Text that ends before the batch does.
    let cut = big(&jobs[..n - 1]);
    let file = c.write("cut.json", &cut[..cut.len() - 10]);
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
    assert!(out.stderr.contains("cut.json: line 1: "), "{}", out.stderr);

    // The parts that went before each of those were dropped.
    assert_eq!(session_count(&c), 0);

    // Read as it went, the batch's name comes from the end of the file.
    let jobs_text = serde_json::to_string(&jobs[..n - 1]).unwrap();
    let text = format!("{{\"jobs\": {jobs_text}, \"name\": \"named-last\"}}");
    let file = c.write("named-last.json", &text);
    let out = c
        .aam(&["submit", "--json", file.to_str().unwrap()])
        .expect_code(0)
        .json();
    assert_eq!(
        (out["name"].as_str(), out["jobs"].as_u64()),
        (Some("named-last"), Some(n as u64 - 1)),
        "{out}"
    );
    assert_eq!(session_count(&c), 1);
}

fn job(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        command: Some(vec!["true".into()]),
        ..Default::default()
    }
}

fn batch(jobs: Vec<JobSpec>) -> BatchSpec {
    BatchSpec {
        name: "parts".into(),
        max_parallel: None,
        max_cost_usd: None,
        jobs,
    }
}

fn part(wire: &mut Wire, names: &[&str]) -> ClientResponse {
    wire.send(&ClientRequest::SubmitPart {
        jobs: names.iter().map(|n| job(n)).collect(),
    });
    wire.recv()
}

fn submit(wire: &mut Wire, names: &[&str]) -> ClientResponse {
    wire.send(&ClientRequest::Submit {
        batch: batch(names.iter().map(|n| job(n)).collect()),
        idempotency_key: None,
    });
    wire.recv()
}

fn session_count(c: &Cluster) -> usize {
    let mut wire = Wire::connect(&c.addr, Role::Client, &c.token);
    wire.send(&ClientRequest::ListSessions {
        limit: 0,
        offset: 0,
    });
    match wire.recv() {
        ClientResponse::Sessions { sessions, .. } => sessions.len(),
        other => panic!("not a session list: {other:?}"),
    }
}

#[test]
fn parts_are_held_by_their_connection_refused_past_the_limit_or_the_role_and_dropped_with_it() {
    let mut c = Cluster::new();
    c.manager_env
        .push(("AAM_MAX_JOBS_PER_SESSION".into(), "5".into()));
    let reader = "reader-read-token-0123456789";
    let capped = "capped-submit-token-0123456789";
    c.manager_config = Some(c.write(
        "aam.toml",
        &format!(
            "[tokens.reader]\ntoken = \"{reader}\"\nrole = \"read\"\n\
             [tokens.capped]\ntoken = \"{capped}\"\nrole = \"submit\"\nmax_queued_jobs = 3\n"
        ),
    ));
    c.start_manager();

    // Parts of a connection that closes before its Submit are dropped.
    let mut gone = Wire::connect(&c.addr, Role::Client, &c.token);
    assert_eq!(
        part(&mut gone, &["a", "b", "c"]),
        ClientResponse::PartReceived { jobs: 3 }
    );
    drop(gone);
    assert_eq!(session_count(&c), 0);

    // Past max_jobs_per_session the parts are refused and what was held
    // is dropped: the next Submit has only its own jobs.
    let mut over = Wire::connect(&c.addr, Role::Client, &c.token);
    assert_eq!(
        part(&mut over, &["a", "b", "c"]),
        ClientResponse::PartReceived { jobs: 3 }
    );
    match part(&mut over, &["d", "e", "f"]) {
        ClientResponse::Error {
            kind: ErrorKind::BadRequest,
            message,
        } => assert_eq!(
            message,
            "the batch has more than 5 jobs, the most one session may have (max_jobs_per_session)"
        ),
        other => panic!("six jobs held: {other:?}"),
    }
    let ClientResponse::Submitted { jobs, .. } = submit(&mut over, &["x", "y"]) else {
        panic!("the submit after a refused part failed")
    };
    assert_eq!(jobs, 2);

    // Parts and their Submit make one session, in the order sent, and a
    // dependency may name a job of an earlier part.
    let mut whole = Wire::connect(&c.addr, Role::Client, &c.token);
    assert_eq!(
        part(&mut whole, &["first", "second"]),
        ClientResponse::PartReceived { jobs: 2 }
    );
    let mut last = job("third");
    last.depends_on = vec![Dependency::after("first")];
    whole.send(&ClientRequest::Submit {
        batch: batch(vec![last]),
        idempotency_key: None,
    });
    let ClientResponse::Submitted { session, jobs, .. } = whole.recv() else {
        panic!("parts and their submit were not stored")
    };
    assert_eq!(jobs, 3);
    whole.send(&ClientRequest::Session {
        session,
        output: aam_protocol::messages::OutputWanted::None,
        page: Some(JobPage {
            offset: 1,
            limit: 5,
        }),
    });
    let ClientResponse::Session(view) = whole.recv() else {
        panic!("no status")
    };
    let names: Vec<_> = view.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        (view.offset, names, view.summary.total),
        (1, vec!["second", "third"], 3)
    );

    // A token that may not submit may not send parts either.
    let mut read_only = Wire::connect(&c.addr, Role::Client, reader);
    match part(&mut read_only, &["a"]) {
        ClientResponse::Error {
            kind: ErrorKind::PermissionDenied,
            message,
        } => {
            assert_eq!(message, "permission denied: token reader has role read")
        }
        other => panic!("a read token's part: {other:?}"),
    }
    assert_eq!(session_count(&c), 2);

    // A quota counts the jobs of the parts with the Submit's own.
    let mut quota = Wire::connect(&c.addr, Role::Client, capped);
    assert_eq!(
        part(&mut quota, &["a", "b"]),
        ClientResponse::PartReceived { jobs: 2 }
    );
    match submit(&mut quota, &["c", "d"]) {
        ClientResponse::Error {
            kind: ErrorKind::QuotaExceeded,
            message,
        } => assert_eq!(
            message,
            "quota reached: token capped has 0 jobs waiting to run and asks for 4 more, its max_queued_jobs is 3"
        ),
        other => panic!("four jobs past a quota of three: {other:?}"),
    }
    assert_eq!(session_count(&c), 2);
}
