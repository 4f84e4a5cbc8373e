//! Bad input of every kind: invalid batch files (exit 2, nothing stored),
//! a wrong token or no manager (exit 3, also behind a first request sent
//! with the handshake), a port that is not aam's or says nothing after TLS
//! (exit 3, no reconnecting), garbage on the manager's port (the manager
//! keeps serving), and a hostile prompt (reaches argv intact).

use aam_protocol::codec;
use aam_protocol::messages::{ClientRequest, ClientResponse, Handshake, HandshakeReply, Role};
use aam_tests::tls::TlsStream;
use aam_tests::Cluster;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

fn config_with_echo_agent(c: &Cluster) -> std::path::PathBuf {
    c.write(
        "aam.toml",
        r#"
[agents.echo]
command = ["printf", "%s", "{prompt}"]
description = "prints its prompt"
[agents.modelled]
command = ["printf", "%s|%s", "{model}", "{prompt}"]
"#,
    )
}

#[test]
fn invalid_batch_files_exit_2_naming_the_problem_and_store_nothing() {
    let mut c = Cluster::new();
    c.manager_config = Some(config_with_echo_agent(&c));
    c.manager_env
        .push(("AAM_MAX_JOBS_PER_SESSION".into(), "5".into()));
    c.start_manager();
    let six_jobs: String = (0..6)
        .map(|i| format!("[[jobs]]\nname = \"j{i}\"\ncommand = [\"true\"]\n"))
        .collect();
    let huge_prompt = "p".repeat(300 * 1024);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "dup.toml",
            "name = \"x\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n".into(),
            vec!["dup.toml: job 'a': field 'name': duplicate job name"],
        ),
        (
            "both.toml",
            "name = \"x\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\nagent = \"echo\"\n".into(),
            vec!["both.toml: job 'a': field 'command'", "not both"],
        ),
        (
            "neither.toml",
            "name = \"x\"\n[[jobs]]\nname = \"a\"\n".into(),
            vec!["neither.toml: job 'a': field 'command'"],
        ),
        (
            "unknown-agent.toml",
            "name = \"x\"\n[[jobs]]\nname = \"r\"\nagent = \"nope\"\nprompt = \"hi\"\n".into(),
            vec!["unknown-agent.toml: job 'r': field 'agent': unknown agent 'nope'", "echo"],
        ),
        (
            "no-model.toml",
            "name = \"x\"\n[[jobs]]\nname = \"m\"\nagent = \"modelled\"\nprompt = \"hi\"\n".into(),
            vec!["no-model.toml: job 'm': field 'model'"],
        ),
        (
            "unknown-dep.toml",
            "name = \"x\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\ndepends_on = [\"zz\"]\n".into(),
            vec!["unknown-dep.toml: job 'a': field 'depends_on': unknown job 'zz'"],
        ),
        (
            "cycle.toml",
            "name = \"x\"\n[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\ndepends_on = [\"b\"]\n[[jobs]]\nname = \"b\"\ncommand = [\"true\"]\ndepends_on = [\"a\"]\n".into(),
            vec!["cycle.toml: job 'a': field 'depends_on': dependency cycle: a -> b -> a"],
        ),
        (
            "syntax.toml",
            "name = \"x\"\n[[jobs]]\nname = \"a\ncommand = [\"true\"]\n".into(),
            vec!["syntax.toml: line 3:"],
        ),
        (
            "type.toml",
            "name = \"x\"\n[[jobs]]\nname = \"t\"\ncommand = \"cargo test\"\n".into(),
            vec!["type.toml: line 4: job 't': field 'command'"],
        ),
        (
            "bad-name.toml",
            "name = \"x\"\n[[jobs]]\nname = \"has space\"\ncommand = [\"true\"]\n".into(),
            vec!["bad-name.toml: job 'has space': field 'name'"],
        ),
        (
            "huge-field.toml",
            format!("name = \"x\"\n[[jobs]]\nname = \"h\"\nagent = \"echo\"\nprompt = \"{huge_prompt}\"\n"),
            vec!["huge-field.toml: job 'h': field 'prompt': 307200 bytes exceed the limit of 262144 bytes"],
        ),
        (
            "too-many.toml",
            format!("name = \"x\"\n{six_jobs}"),
            vec!["too-many.toml: field 'jobs': 6 jobs exceed the limit of 5 jobs per session"],
        ),
        (
            "typo.json",
            r#"{"name": "x", "jobs": [{"name": "a", "comand": ["true"]}]}"#.into(),
            vec!["typo.json: line 1: job 'a'", "unknown field `comand`"],
        ),
        ("empty.toml", "name = \"x\"\n".into(), vec!["empty.toml: field 'jobs': the batch has no jobs"]),
    ];
    for (name, text, wanted) in &cases {
        let path = c.write(name, text);
        let out = c.aam(&["submit", path.to_str().unwrap()]).expect_code(2);
        for w in wanted {
            assert!(
                out.stderr.contains(w),
                "{name}: expected '{w}' in the error\n{}",
                out.dump()
            );
        }
    }
    let missing = c.aam(&["submit", "does-not-exist.toml"]).expect_code(2);
    assert!(
        missing.stderr.contains("does-not-exist.toml: cannot read"),
        "{}",
        missing.dump()
    );
    let run = c
        .aam(&["run", "cycle.toml", "--data-dir", "run-data"])
        .expect_code(2);
    assert!(run.stderr.contains("dependency cycle"), "{}", run.dump());

    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(
        sessions,
        serde_json::json!([]),
        "a rejected batch was stored"
    );
}

#[test]
fn the_session_list_shows_the_newest_and_says_how_many_are_older() {
    let c = Cluster::with_manager();
    std::fs::write(
        c.path("one.toml"),
        "name = \"one\"\n[[jobs]]\nname = \"g\"\ngate = true\n",
    )
    .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|_| {
            c.aam(&["submit", "one.toml"])
                .expect_code(0)
                .stdout
                .trim()
                .to_string()
        })
        .collect();
    let listed = |args: &[&str]| -> Vec<String> {
        let mut line = vec!["status", "--json"];
        line.extend_from_slice(args);
        let out = c.aam(&line).expect_code(0);
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&["--limit", "2"]), ids[1..].to_vec());
    assert_eq!(
        listed(&["--limit", "2", "--offset", "2"]),
        ids[..1].to_vec()
    );
    assert_eq!(listed(&[]), ids);
    let table = c.aam(&["status", "--limit", "1"]).expect_code(0);
    assert!(table.stdout.contains(&ids[2]), "{}", table.dump());
    assert!(
        !table.stdout.contains(&format!("{} ", ids[1])),
        "{}",
        table.dump()
    );
    assert!(
        table.stdout.contains(
            "the newest 1 of 3 sessions; 2 older: --offset 1 shows them, --limit 0 lists all"
        ),
        "{}",
        table.dump()
    );
    let json = c
        .aam(&["sessions", "--json", "--limit", "1"])
        .expect_code(0);
    assert!(
        json.stderr.contains("aam: the newest 1 of 3 sessions"),
        "{}",
        json.dump()
    );
}

#[test]
fn a_wrong_token_or_no_manager_exits_3() {
    let c = Cluster::with_manager();
    let mut cmd = c.aam_command(&["sessions"]);
    cmd.env("AAM_TOKEN", "not-the-token");
    let out = aam_tests::run_command(cmd, Duration::from_secs(30)).expect_code(3);
    assert!(
        out.stderr.contains(&c.addr) && out.stderr.contains("invalid token"),
        "{}",
        out.dump()
    );

    // A port nobody listens on: bind one, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = c.aam_command(&["sessions"]);
    cmd.env("AAM_MANAGER", free.to_string());
    let out = aam_tests::run_command(cmd, Duration::from_secs(30)).expect_code(3);
    assert!(
        out.stderr.contains(&format!("cannot connect to {free}")),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "one clear line\n{}",
        out.dump()
    );
}

/// The CLI sends its first request right behind its handshake, without
/// waiting for the reply: here that request is a 4 MiB part of a big
/// batch. The manager refuses the token (and drops what is on its way
/// before closing); the client still reports why (exit 3, the reason) and
/// nothing is stored. (On Linux the client would also read the refusal
/// after a reset, so this holds the outcome, not the manager's draining.)
#[test]
fn a_wrong_token_is_reported_even_behind_a_big_first_request() {
    let c = Cluster::with_manager();
    let command = "x".repeat(300);
    let jobs: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"name":"j{i}","command":["/bin/echo","{command}"]}}"#))
        .collect();
    c.write(
        "big.json",
        &format!(r#"{{"name":"big","jobs":[{}]}}"#, jobs.join(",")),
    );
    let mut cmd = c.aam_command(&["submit", "big.json"]);
    cmd.env("AAM_TOKEN", "not-the-token");
    let out = aam_tests::run_command(cmd, Duration::from_secs(60)).expect_code(3);
    assert!(
        out.stderr.contains(&c.addr) && out.stderr.contains("invalid token"),
        "{}",
        out.dump()
    );
    let sessions = c.aam(&["sessions", "--json"]).expect_code(0).json();
    assert_eq!(sessions, serde_json::json!([]), "{}", out.dump());
}

/// A port that does TLS with the manager's certificate but does not speak
/// aam (here the manager's own HTTPS port, which answers the handshake
/// with an HTTP error): every command exits 3 at once naming the bad reply,
/// the ones that follow a session and reconnect after a lost connection
/// (`watch`, `wait`, `logs --follow`) included, instead of dialing again
/// and again.
#[test]
fn a_port_that_is_not_aam_behind_tls_is_exit_3_for_every_command() {
    let c = Cluster::with_http();
    let http = c.http_addr.replace("0.0.0.0:", "127.0.0.1:");
    for args in [
        &["sessions"][..],
        &["watch", "s1"],
        &["wait", "s1"],
        &["logs", "s1/a", "--follow"],
    ] {
        let mut cmd = c.aam_command(args);
        cmd.env("AAM_MANAGER", &http);
        let out = aam_tests::run_command(cmd, Duration::from_secs(30)).expect_code(3);
        // Mostly the HTTP answer read as a frame; the HTTPS server may
        // also reset a connection (a loaded machine, its TLS deadline).
        let said = ["bad handshake reply", "cannot connect to"];
        assert!(
            out.stderr.contains(&http) && said.iter().any(|s| out.stderr.contains(s)),
            "{}",
            out.dump()
        );
        assert!(!out.stderr.contains("reconnecting"), "{}", out.dump());
    }
}

/// A server that does TLS with the manager's certificate and then says
/// nothing: a command gives up on the handshake's reply after 10 s (exit
/// 3), as it did when it waited for the reply before its request.
#[test]
fn no_handshake_reply_within_10_s_is_exit_3() {
    use aam_protocol::tls::{server_config, ServerIdentity, KEY_FILE};
    let c = Cluster::with_manager();
    let identity = ServerIdentity::load(&c.cert(), &c.data_dir().join(KEY_FILE)).unwrap();
    let config = std::sync::Arc::new(server_config(&identity, None).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap().to_string();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    // Not joined: were the command never to connect, it would wait in accept.
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(config).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).unwrap();
        }
        // Holds the connection, silent, until the test is over.
        let _ = finished.recv_timeout(Duration::from_secs(60));
    });
    let mut cmd = c.aam_command(&["sessions"]);
    cmd.env("AAM_MANAGER", &silent);
    let out = aam_tests::run_command(cmd, Duration::from_secs(30)).expect_code(3);
    let _ = done.send(());
    assert!(
        out.stderr.contains(&silent) && out.stderr.contains("no handshake reply within 10 s"),
        "{}",
        out.dump()
    );
}

/// A request that arrives with the handshake (in the same read, here the
/// same TLS record) is answered without the client sending anything more:
/// the manager reads the bytes behind the handshake before its socket.
#[test]
fn a_request_right_behind_the_handshake_is_answered() {
    let c = Cluster::with_manager();
    let mut s = aam_tests::tls::connect(&c.addr).unwrap();
    let mut both = codec::encode_frame(&Handshake::new(Role::Client, &c.token), 1 << 20).unwrap();
    both.extend(
        codec::encode_frame(
            &ClientRequest::ListSessions {
                limit: 0,
                offset: 0,
            },
            1 << 20,
        )
        .unwrap(),
    );
    s.write_all(&both).unwrap();
    s.flush().unwrap();
    s.sock
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut frame = || {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("a frame within 15 s");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        body
    };
    let reply: HandshakeReply = codec::decode(&frame()).unwrap();
    assert!(
        matches!(reply, HandshakeReply::Accepted { .. }),
        "{reply:?}"
    );
    let answer: ClientResponse = codec::decode(&frame()).unwrap();
    assert!(
        matches!(answer, ClientResponse::Sessions { ref sessions, .. } if sessions.is_empty()),
        "{answer:?}"
    );
}

/// Reads what the manager answers (inside TLS) before it closes the connection.
fn answer_of(mut stream: TlsStream) -> Vec<u8> {
    let _ = stream.flush();
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    buf
}

fn rejection(answer: &[u8]) -> String {
    assert!(answer.len() > 4, "no answer before the close: {answer:?}");
    match codec::decode::<HandshakeReply>(&answer[4..]) {
        Ok(HandshakeReply::Rejected { reason }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn garbage_on_the_port_is_rejected_while_the_manager_keeps_serving() {
    let mut c = Cluster::with_manager();
    c.start_worker("w", 2);

    // Random bytes (a fixed xorshift sequence, so failures reproduce).
    let mut s = aam_tests::tls::connect(&c.addr).unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = s.write_all(&noise);
    let reason = rejection(&answer_of(s));
    assert!(reason.contains("bad handshake frame"), "{reason}");

    // A length prefix of 4 GiB.
    let mut s = aam_tests::tls::connect(&c.addr).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    let reason = rejection(&answer_of(s));
    assert!(
        reason.contains("4294967295 bytes exceeds the limit"),
        "{reason}"
    );

    // A frame cut short by the peer closing its side.
    let mut s = aam_tests::tls::connect(&c.addr).unwrap();
    s.write_all(&[0, 0, 0, 100, 1, 2, 3, 4, 5]).unwrap();
    // TLS's own close first: the manager sees a clean end of stream.
    s.conn.send_close_notify();
    s.flush().unwrap();
    s.sock.shutdown(Shutdown::Write).unwrap();
    let reason = rejection(&answer_of(s));
    assert!(
        reason.contains("closed in the middle of a frame"),
        "{reason}"
    );

    // A well-framed payload that is not a handshake.
    let mut s = aam_tests::tls::connect(&c.addr).unwrap();
    s.write_all(&[0, 0, 0, 3, 0xde, 0xad, 0xbe]).unwrap();
    let reason = rejection(&answer_of(s));
    assert!(reason.contains("undecodable"), "{reason}");

    // A peer of another protocol version.
    let mut s = aam_tests::tls::connect(&c.addr).unwrap();
    let mut old = Handshake::new(Role::Client, c.token.clone());
    old.version = 999;
    let payload = codec::encode(&old).unwrap();
    s.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&payload).unwrap();
    let reason = rejection(&answer_of(s));
    assert!(
        reason.contains("protocol version 999 is not supported"),
        "{reason}"
    );

    // The manager logged each one and still runs a session.
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(log.matches("rejected connection").count() >= 5, "{log}");
    let file = c.write(
        "ok.toml",
        "name = \"ok\"\n[[jobs]]\nname = \"a\"\ncommand = [\"echo\", \"still here\"]\n",
    );
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(0);
    let logs = c.aam(&["logs", &format!("{session}/a")]).expect_code(0);
    assert_eq!(logs.stdout, "still here\n");
}

#[test]
fn a_hostile_prompt_reaches_argv_byte_for_byte_and_runs_nothing() {
    let mut c = Cluster::new();
    c.manager_config = Some(config_with_echo_agent(&c));
    c.start_manager();
    c.start_worker("w", 1);
    let dir = c.path("victim");
    std::fs::create_dir_all(dir.join("canary")).unwrap();
    let d = dir.display();
    let prompt = format!(
        "$(touch {d}/pwned); rm -rf {d}/canary `touch {d}/pwned2` ${{HOME}} 'single' \"double\" \\ {{model}} {{prompt}} ; | & > {d}/pwned3"
    );
    let batch = serde_json::json!({
        "name": "hostile",
        "jobs": [{ "name": "h", "agent": "echo", "prompt": prompt }],
    });
    let file = c.write("hostile.json", &batch.to_string());
    let session = c.submit(&file);
    c.aam(&["wait", &session]).expect_code(0);
    let out = c.aam(&["logs", &format!("{session}/h")]).expect_code(0);
    assert_eq!(out.stdout, prompt, "the prompt did not arrive intact");
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(!dir.join(f).exists(), "{f} was created: the prompt ran");
    }
    assert!(
        dir.join("canary").exists(),
        "the canary was removed: the prompt ran"
    );
}
