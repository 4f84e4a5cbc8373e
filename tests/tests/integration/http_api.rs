//! The manager's HTTP API against the real binaries: every endpoint answers
//! what the CLI's `--json` prints, tokens (bearer and the sign-in cookie)
//! guard every /api route, a bad batch gets the CLI's message, event
//! streams carry a running session's changes, gates and cancels work, and
//! `aam up` prints the dashboard's address.

use crate::job;
use aam_tests::http::{bearer, get, post, Events, Reply};
use aam_tests::{aam_here, poll, Cluster, Down, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(20);

/// GET with the cluster's token.
fn api_get(c: &Cluster, path: &str) -> Reply {
    let (name, value) = bearer(&c.token);
    get(&c.url(path), &[(name, &value)])
}

/// POST with the cluster's token.
fn api_post(c: &Cluster, path: &str, body: &str) -> Reply {
    let (name, value) = bearer(&c.token);
    post(&c.url(path), &[(name, &value)], body)
}

/// A session's status through the API, polled until `until` holds.
fn poll_api(c: &Cluster, session: &str, until: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    poll(SOON, || {
        last = api_get(c, &format!("/api/sessions/{session}"))
            .expect(200)
            .json();
        until(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("never saw the awaited status; last:\n{last}\n{}", c.logs()))
}

fn submit(c: &Cluster, batch: &Value) -> String {
    let answer = api_post(c, "/api/sessions", &batch.to_string()).expect(201);
    answer.json()["session"].as_str().unwrap().to_string()
}

#[test]
fn every_endpoint_answers_what_the_cli_prints_with_json() {
    let mut c = Cluster::with_http();
    c.start_worker("w1", 2);
    let batch = json!({
        "name": "web",
        "jobs": [
            {"name": "hello", "command": ["sh", "-c", "printf 'one\\ntwo\\nthree\\n'"]},
            {"name": "fails", "command": ["sh", "-c", "echo no; exit 3"]},
        ]
    });
    let answer = api_post(&c, "/api/sessions", &batch.to_string()).expect(201);
    let doc = answer.json();
    let session = doc["session"].as_str().unwrap().to_string();
    assert_eq!(
        answer.header("location"),
        Some(format!("/api/sessions/{session}").as_str())
    );
    assert_eq!(
        (doc["name"].clone(), doc["jobs"].clone()),
        (json!("web"), json!(2))
    );
    assert_eq!(doc["existing"], false);
    assert!(doc["estimate"].is_object(), "{doc}");
    poll_api(&c, &session, |s| s["status"] == "failed");

    // The same documents as the CLI's --json, once nothing changes.
    let status = api_get(&c, &format!("/api/sessions/{session}")).expect(200);
    assert_eq!(status.json(), c.status(&session));
    let results = api_get(&c, &format!("/api/sessions/{session}/results")).expect(200);
    let cli = c
        .aam(&["results", &session, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(results.json(), cli);
    assert_eq!(job(&results.json(), "hello")["output"], "one\ntwo\nthree\n");
    let failed = api_get(&c, &format!("/api/sessions/{session}/results?failed=true"));
    let cli = c.aam(&["results", &session, "--json", "--failed"]);
    assert_eq!(failed.expect(200).json(), cli.expect_code(0).json());
    let list = api_get(&c, "/api/sessions").expect(200).json();
    let cli = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(list["sessions"], cli);
    assert_eq!(list["paused"], json!([]));
    let total = list["total"].as_u64().unwrap();
    assert_eq!(total, cli.as_array().unwrap().len() as u64);
    let newest = api_get(&c, "/api/sessions?limit=1").expect(200).json();
    assert_eq!(newest["total"], json!(total));
    assert_eq!(newest["sessions"], json!([cli.as_array().unwrap().last()]));
    let past = api_get(&c, &format!("/api/sessions?offset={total}"))
        .expect(200)
        .json();
    assert_eq!(past["sessions"], json!([]));
    let bad = api_get(&c, "/api/sessions?limit=abc").expect(400).json();
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .starts_with("the query string: "),
        "{bad}"
    );
    let agents = api_get(&c, "/api/agents").expect(200).json();
    assert_eq!(agents, c.aam(&["agents", "--json"]).expect_code(0).json());
    let workers = api_get(&c, "/api/workers").expect(200).json();
    let cli = c.aam(&["workers", "--json"]).expect_code(0).json();
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|w| (w["name"].clone(), w["slots"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&workers), names(&cli));
    assert_eq!(names(&workers), vec![(json!("w1"), json!(2))]);

    // Logs: from an offset, with the next one in X-Aam-Next; or the tail.
    let log =
        |query: &str| api_get(&c, &format!("/api/jobs/{session}/hello/log{query}")).expect(200);
    let all = log("");
    assert_eq!(all.body, "one\ntwo\nthree\n");
    assert_eq!(all.header("x-aam-next"), Some("14"));
    assert_eq!(all.header("x-aam-status"), Some("succeeded"));
    assert_eq!(all.header("x-aam-attempt"), Some("1"));
    assert_eq!(log("?from=4").body, "two\nthree\n");
    let end = log("?from=14");
    assert_eq!(
        (end.body.as_str(), end.header("x-aam-next")),
        ("", Some("14"))
    );
    assert_eq!(log("?tail=6").body, "three\n");

    // What does not exist is 404, what is malformed 400, each in JSON.
    let missing = api_get(&c, "/api/sessions/s999").expect(404);
    assert_eq!(missing.json(), json!({"error": "no session s999"}));
    let no_job = api_get(&c, &format!("/api/jobs/{session}/nope/log")).expect(404);
    assert_eq!(
        no_job.json()["error"],
        format!("session {session} has no job 'nope'")
    );
    let bad = api_get(&c, "/api/sessions/twelve").expect(400);
    assert_eq!(
        bad.json()["error"],
        "'twelve' is not a session id (like s42)"
    );
    api_get(&c, "/api/nothing-here").expect(404);
    // Answers to permission requests: a malformed body is 400 naming what
    // is wrong; a job that relays none, 409 saying so.
    let answer = |verb: &str, body: &str, status: u16| {
        let path = format!("/api/jobs/{session}/hello/{verb}");
        api_post(&c, &path, body).expect(status).json()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let e = answer("allow", r#"{"message": "no"}"#, 400);
    assert!(e.contains("`message` is for a denial"), "{e}");
    let e = answer("deny", r#"{"always": true}"#, 400);
    assert!(e.contains("`always` is for an allow"), "{e}");
    let e = answer("allow", r#"{"reqest": 1}"#, 400);
    assert!(e.contains("unknown field `reqest`"), "{e}");
    let e = answer("allow", "", 409);
    assert!(e.contains("does not relay permission prompts"), "{e}");
    api_get(&c, &format!("/api/jobs/{session}/hello/log?from=1&tail=2")).expect(400);

    // An idempotency key answers with the session it made, 200 not 201.
    let key = [
        ("Idempotency-Key", "web-1"),
        (bearer(&c.token).0, &format!("Bearer {}", c.token)),
    ];
    let first = post(&c.url("/api/sessions"), &key, &batch.to_string())
        .expect(201)
        .json();
    let again = post(&c.url("/api/sessions"), &key, &batch.to_string())
        .expect(200)
        .json();
    assert_eq!(
        (again["session"].clone(), again["existing"].clone()),
        (first["session"].clone(), json!(true))
    );
}

#[test]
fn every_api_route_needs_a_token_and_the_cookie_sign_in_is_http_only_and_strict() {
    let mut c = Cluster::new();
    c.http = true;
    // A second, named token: its name is who decides a gate.
    let config = c.write("aam.toml", "[tokens]\nalice = \"alice-token-0123456789\"\n");
    c.manager_config = Some(config);
    c.start_manager();
    let session = submit(
        &c,
        &json!({"name": "g", "jobs": [{"name": "ok", "gate": true}]}),
    );
    let routes = [
        ("GET", "/api/sessions".to_string()),
        ("POST", "/api/sessions".to_string()),
        ("GET", format!("/api/sessions/{session}")),
        ("GET", format!("/api/sessions/{session}/results")),
        ("POST", format!("/api/sessions/{session}/cancel")),
        ("GET", format!("/api/jobs/{session}/ok/log")),
        ("POST", format!("/api/jobs/{session}/ok/cancel")),
        ("POST", format!("/api/jobs/{session}/ok/approve")),
        ("POST", format!("/api/jobs/{session}/ok/reject")),
        ("POST", format!("/api/jobs/{session}/ok/say")),
        ("POST", format!("/api/sessions/{session}/say")),
        ("POST", format!("/api/jobs/{session}/ok/allow")),
        ("POST", format!("/api/jobs/{session}/ok/deny")),
        ("GET", "/api/workers".to_string()),
        ("GET", "/api/agents".to_string()),
        ("GET", "/api/events".to_string()),
    ];
    for (method, path) in &routes {
        for headers in [
            vec![],
            vec![("Authorization", "Bearer wrong-token-0123456789".to_string())],
            vec![("Cookie", "aam_token=77726f6e67".to_string())],
        ] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let answer = match *method {
                "GET" => get(&c.url(path), &headers),
                _ => post(&c.url(path), &headers, "{}"),
            };
            let answer = answer.expect(401);
            assert_eq!(
                answer.header("www-authenticate"),
                Some("Bearer"),
                "{method} {path}"
            );
            let error = answer.json()["error"].as_str().unwrap().to_string();
            let expected = if headers.is_empty() {
                "a token is needed"
            } else {
                "invalid token"
            };
            assert!(error.starts_with(expected), "{method} {path}: {error}");
        }
    }
    // Probes and metrics need none on loopback; the dashboard neither.
    assert_eq!(get(&c.url("/healthz"), &[]).expect(200).body, "ok\n");
    assert_eq!(get(&c.url("/readyz"), &[]).expect(200).body, "ready\n");
    get(&c.url("/metrics"), &[]).expect(200);
    let page = get(&c.url("/"), &[]).expect(200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "{page:?}"
    );
    get(&c.url("/app.js"), &[]).expect(200);
    get(&c.url("/style.css"), &[]).expect(200);

    // Sign in: a cookie the page's script cannot read, sent to this site only.
    post(&c.url("/api/login"), &[], r#"{"token": "not-it"}"#).expect(401);
    post(&c.url("/api/login"), &[], "token=x").expect(400);
    let login = post(
        &c.url("/api/login"),
        &[],
        r#"{"token": "alice-token-0123456789"}"#,
    )
    .expect(204);
    let set = login.header("set-cookie").expect("a cookie").to_string();
    assert!(set.starts_with("aam_token="), "{set}");
    assert!(
        set.contains("; HttpOnly") && set.contains("; SameSite=Strict") && set.contains("; Path=/"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let with_cookie = [("Cookie", cookie.as_str())];
    get(&c.url("/api/sessions"), &with_cookie).expect(200);
    // Decided under the cookie's token: its name is recorded.
    post(
        &c.url(&format!("/api/jobs/{session}/ok/approve")),
        &with_cookie,
        "",
    )
    .expect(200);
    let decision = job(&c.status(&session), "ok")["decision"].clone();
    assert_eq!(decision["by"], "alice", "{decision}");
    let logout = post(&c.url("/api/logout"), &with_cookie, "").expect(204);
    assert!(
        logout.header("set-cookie").unwrap().contains("Max-Age=0"),
        "{logout:?}"
    );
}

#[test]
fn probes_and_metrics_need_the_token_when_not_bound_to_loopback() {
    let mut c = Cluster::new();
    c.http = true;
    c.http_bind = "0.0.0.0:0".into();
    c.start_manager();
    let auth = bearer(&c.token);
    for path in ["/healthz", "/readyz", "/metrics"] {
        get(&c.url(path), &[]).expect(401);
        get(&c.url(path), &[(auth.0, &auth.1)]).expect(200);
    }
}

#[test]
fn a_bad_batch_gets_the_message_the_cli_prints_for_it() {
    let mut c = Cluster::new();
    c.http = true;
    // A small frame: a bigger body is refused before it is read whole.
    c.manager_env = vec![
        ("AAM_MAX_FRAME_BYTES".into(), "65536".into()),
        ("AAM_PATCH_CAP_BYTES".into(), "16384".into()),
    ];
    c.start_manager();
    let bad = [
        // A type error, located by line, job and field.
        "{\"name\": \"b\",\n \"jobs\": [{\"name\": \"a\", \"command\": \"true\"}]}",
        // An unknown field.
        r#"{"name": "b", "jobs": [{"name": "a", "command": ["true"], "after": ["x"]}]}"#,
        // Structure: a dependency on no job, a cycle.
        r#"{"name": "b", "jobs": [{"name": "a", "command": ["true"], "depends_on": ["nope"]}]}"#,
        r#"{"name": "b", "jobs": [{"name": "a", "command": ["true"], "depends_on": ["b"]}, {"name": "b", "command": ["true"], "depends_on": ["a"]}]}"#,
        // Found by the manager: an agent it does not know.
        r#"{"name": "b", "jobs": [{"name": "a", "agent": "nobody", "prompt": "hi"}]}"#,
        "not json",
    ];
    for text in bad {
        let file = c.write("bad.json", text);
        let cli = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
        let answer = api_post(&c, "/api/sessions", text).expect(400);
        let message = answer.json()["error"].as_str().unwrap().to_string();
        // The CLI says the same, each line after the file's name.
        for line in message.lines() {
            let expected = format!("{}: {line}", file.display());
            assert!(
                cli.stderr.contains(&expected),
                "HTTP: {message}\n{}",
                cli.dump()
            );
        }
        assert_eq!(
            message.lines().count(),
            cli.stderr.lines().count(),
            "HTTP: {message}\n{}",
            cli.dump()
        );
    }
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(70_000));
    let refused = api_post(&c, "/api/sessions", &big).expect(413);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("limit of 65536 bytes"),
        "{refused:?}"
    );
    assert_eq!(
        api_get(&c, "/api/sessions").expect(200).json()["sessions"],
        json!([])
    );
}

#[test]
fn events_carry_a_running_session_s_changes_as_they_happen() {
    let mut c = Cluster::with_http();
    c.start_worker("w1", 2);
    let gate = c.gate("go");
    let auth = bearer(&c.token);
    let headers = [(auth.0, auth.1.as_str())];
    let all = Events::open(&c.url("/api/events"), &headers);
    let subscribed = all.next(SOON).expect("the stream's first comment");
    assert_eq!(
        (subscribed.event.as_str(), subscribed.data.as_str()),
        ("comment", "subscribed")
    );
    let held = json!({"name": "live", "jobs": [
        {"name": "held", "command": ["sh", "-c", WAIT_FOR_GATE], "env": {"GATE": gate.env()}},
    ]});
    let session = submit(&c, &held);
    let is = |status: &'static str, running: u64| {
        let session = session.clone();
        move |e: &aam_tests::http::Event| {
            let doc = e.json();
            e.event == "session"
                && doc["id"] == session.as_str()
                && doc["status"] == status
                && doc["counts"]["running"] == running
        }
    };
    all.find(SOON, is("running", 1))
        .unwrap_or_else(|| panic!("no event of the running job\n{}", c.logs()));
    // One session's stream starts with the session as it is.
    let one = Events::open(&c.url(&format!("/api/events?session={session}")), &headers);
    one.next(SOON).expect("the stream's first comment");
    let first = one
        .find(SOON, |e| e.event == "session")
        .expect("the session as it is");
    assert_eq!(
        (
            first.json()["id"].clone(),
            first.json()["counts"]["running"].clone()
        ),
        (json!(session), json!(1))
    );
    // Another session shows on the stream of all, not on that one.
    let other = submit(
        &c,
        &json!({"name": "other", "jobs": [{"name": "t", "command": ["true"]}]}),
    );
    all.find(SOON, |e| {
        e.event == "session"
            && e.json()["id"] == other.as_str()
            && e.json()["status"] == "succeeded"
    })
    .unwrap_or_else(|| panic!("no event of the other session\n{}", c.logs()));
    gate.open();
    let ended = one.find(SOON, |e| {
        e.event == "session" && e.json()["status"] != "running"
    });
    let ended = ended.unwrap_or_else(|| panic!("no event of the end\n{}", c.logs()));
    assert_eq!(ended.json()["status"], "succeeded");
    all.find(SOON, is("succeeded", 0))
        .expect("the end on the stream of all");
    // Nothing of the other session reached the one-session stream.
    while let Some(e) = one.next(Duration::from_millis(200)) {
        assert!(
            e.event != "session" || e.json()["id"] == session.as_str(),
            "{e:?}"
        );
    }
    // A session that does not exist has no stream.
    get(&c.url("/api/events?session=s999"), &headers).expect(404);
    // A manager that stops ends its streams (and does not wait for them).
    let started = std::time::Instant::now();
    c.manager
        .as_mut()
        .unwrap()
        .stop(libc::SIGTERM, Duration::from_secs(15));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
    assert!(
        all.ended_within(SOON),
        "the event stream outlived the manager"
    );
}

#[test]
fn gates_and_cancels_through_the_api_show_in_aam_status() {
    let mut c = Cluster::with_http();
    c.start_worker("w1", 2);
    let gate = c.gate("never");
    let session = submit(
        &c,
        &json!({"name": "ops", "jobs": [
            {"name": "build", "command": ["true"]},
            {"name": "ship", "gate": true, "depends_on": ["build"]},
            {"name": "risky", "gate": true, "depends_on": ["build"]},
            {"name": "slow", "command": ["sh", "-c", WAIT_FOR_GATE], "env": {"GATE": gate.env()}},
            {"name": "after", "command": ["true"], "depends_on": ["slow"]},
        ]}),
    );
    c.poll_status(&session, "gates awaiting and slow running", |s| {
        job(s, "build")["status"] == "succeeded" && job(s, "slow")["status"] == "running"
    });
    let approved = api_post(
        &c,
        &format!("/api/jobs/{session}/ship/approve"),
        r#"{"comment": "looks good"}"#,
    );
    assert_eq!(
        approved.expect(200).json(),
        json!({"job": format!("{session}/ship"), "decision": "approved", "status": "succeeded"})
    );
    api_post(&c, &format!("/api/jobs/{session}/risky/reject"), "").expect(200);
    // Decided already, or not a gate: 409 with the CLI's words.
    let again = api_post(&c, &format!("/api/jobs/{session}/ship/reject"), "").expect(409);
    let cli = c
        .aam(&["reject", &format!("{session}/ship")])
        .expect_code(2);
    let message = again.json()["error"].as_str().unwrap().to_string();
    assert!(
        cli.stderr.contains(&message),
        "HTTP: {message}\n{}",
        cli.dump()
    );
    api_post(&c, &format!("/api/jobs/{session}/build/approve"), "").expect(409);
    api_post(
        &c,
        &format!("/api/jobs/{session}/ship/approve"),
        r#"{"comment": 3}"#,
    )
    .expect(400);
    let long = json!({"comment": "x".repeat(5000)}).to_string();
    api_post(&c, &format!("/api/jobs/{session}/risky/approve"), &long).expect(400);
    let status = c.status(&session);
    assert_eq!(job(&status, "ship")["status"], "succeeded");
    assert_eq!(job(&status, "ship")["decision"]["comment"], "looks good");
    assert_eq!(job(&status, "risky")["status"], "failed");

    let cancelled = api_post(&c, &format!("/api/jobs/{session}/slow/cancel"), "")
        .expect(200)
        .json();
    assert_eq!(cancelled, json!({"cancelled": [], "stopped": ["slow"]}));
    let status = c.poll_status(&session, "slow cancelled", |s| {
        job(s, "slow")["status"] == "cancelled"
    });
    assert_eq!(job(&status, "after")["status"], "skipped");
    assert_eq!(status["status"], "failed");

    let other = submit(
        &c,
        &json!({"name": "stop-me", "jobs": [{"name": "wait", "gate": true}]}),
    );
    let stopped = api_post(&c, &format!("/api/sessions/{other}/cancel"), "")
        .expect(200)
        .json();
    assert_eq!(stopped, json!({"cancelled": ["wait"], "stopped": []}));
    assert_eq!(c.status(&other)["status"], "cancelled");
    api_post(&c, "/api/sessions/s999/cancel", "").expect(404);
}

#[test]
fn aam_up_prints_the_dashboard_address_and_aam_run_serves_none() {
    let dir = aam_tests::Scratch::new();
    let _down = Down(dir.path());
    let up = aam_here(dir.path(), &["up", "--slots", "1"]).expect_code(0);
    let line = up
        .stdout
        .lines()
        .find(|l| l.contains("dashboard: https://"));
    let line = line.unwrap_or_else(|| panic!("no dashboard address\n{}", up.dump()));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap();
    assert!(
        url.starts_with("https://127.0.0.1:") && url.ends_with('/'),
        "{line}"
    );
    // The certificate `aam up` made, and the fingerprint it printed of it.
    let cert = dir.path().join(".aam").join(aam_protocol::tls::CERT_FILE);
    let der = aam_protocol::tls::load_certs(&cert).unwrap();
    let fingerprint = aam_protocol::tls::Fingerprint::of(der[0].as_ref());
    assert!(
        up.stdout
            .contains(&format!("SHA-256 fingerprint {fingerprint}")),
        "{}",
        up.dump()
    );
    let authority = url.trim_start_matches("https://").trim_end_matches('/');
    aam_tests::tls::register(authority, &cert);
    let page = get(url, &[]).expect(200);
    assert!(page.body.contains("<html"), "{page:?}");
    let again = aam_here(dir.path(), &["up"]).expect_code(0);
    assert!(
        again.stdout.contains(&format!("dashboard: {url}")),
        "{}",
        again.dump()
    );
    aam_here(dir.path(), &["down"]).expect_code(0);

    let run_dir = aam_tests::Scratch::new();
    std::fs::write(
        run_dir.path().join("one.toml"),
        "name = \"one\"\n[[jobs]]\nname = \"t\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let data = run_dir.path().join("data");
    let data = data.to_str().unwrap();
    aam_here(run_dir.path(), &["run", "one.toml", "--data-dir", data]).expect_code(0);
    assert!(
        !run_dir.path().join("data/http.addr").exists(),
        "aam run served HTTP"
    );
}
