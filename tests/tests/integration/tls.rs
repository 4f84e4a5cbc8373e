//! TLS on every connection: the certificate the manager makes, how clients
//! and workers trust it (a pin in every spelling, a CA, the file found on
//! this machine, never nothing), what a wrong certificate or a plaintext
//! peer gets, the user's own certificate, mutual TLS, HTTPS, and idle
//! half-open connections that cannot keep a real client out.

use aam_protocol::tls::{Fingerprint, Trust, KEY_FILE};
use aam_tests::http::{bearer, get};
use aam_tests::tls::{self, fingerprint_of};
use aam_tests::{bin, poll, run_command, without_tls_env, Cluster};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `aam ARGS` at the cluster with no trust of its own in the environment.
fn aam_untrusting(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = c.aam_command(args);
    without_tls_env(&mut cmd);
    cmd
}

fn run(cmd: Command) -> aam_tests::CmdOutput {
    run_command(cmd, Duration::from_secs(60))
}

/// A CA, and a certificate it signed naming `names` for `usage`, written
/// as `NAME-ca.pem`, `NAME.pem` and `NAME.key` in the cluster's directory.
fn signed(
    c: &Cluster,
    name: &str,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &issuer).unwrap();
    c.write(&format!("{name}.pem"), &cert.pem());
    c.write(&format!("{name}.key"), &key.serialize_pem());
    c.write(&format!("{name}-ca.pem"), &ca_cert.pem())
}

#[test]
fn the_generated_certificate_names_its_sans_keeps_its_key_private_and_is_reused() {
    let mut c = Cluster::new();
    c.manager_config = Some(c.write(
        "aam.toml",
        "tls_san = [\"aam.example.test\", \"10.9.8.7\"]\n",
    ));
    c.start_manager();
    let key = c.data_dir().join(KEY_FILE);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());

    let der = aam_protocol::tls::load_certs(&c.cert()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
    let sans = cert
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN extension");
    let names: Vec<String> = sans
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                _ => std::net::IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
            },
            other => format!("{other:?}"),
        })
        .collect();
    for want in [
        "localhost",
        "127.0.0.1",
        "::1",
        "aam.example.test",
        "10.9.8.7",
    ] {
        assert!(names.contains(&want.to_string()), "{want} not in {names:?}");
    }

    // Logged with how clients pin it; the same certificate after a restart.
    let fp = fingerprint_of(&c.cert());
    let log = c.manager.as_ref().unwrap().log_text();
    assert!(log.contains(&format!("--fingerprint {fp}")), "{log}");
    c.kill_manager();
    c.start_manager();
    assert_eq!(fingerprint_of(&c.cert()), fp);
    c.aam(&["sessions"]).expect_code(0);
}

#[test]
fn a_pinned_fingerprint_in_every_spelling_is_trusted() {
    let c = Cluster::with_manager();
    let shown = fingerprint_of(&c.cert()).to_string();
    let bare = shown.replace(':', "");
    for spelling in [
        shown.clone(),
        shown.to_lowercase(),
        bare.clone(),
        bare.to_lowercase(),
        format!("sha256:{shown}"),
        format!("SHA256:{bare}"),
    ] {
        let mut by_env = aam_untrusting(&c, &["sessions"]);
        by_env.env("AAM_FINGERPRINT", &spelling);
        run(by_env).expect_code(0);
        let by_flag = aam_untrusting(&c, &["sessions", "--fingerprint", &spelling]);
        run(by_flag).expect_code(0);
    }
}

#[test]
fn a_wrong_fingerprint_is_exit_3_and_one_line_naming_both_for_clients_and_workers() {
    let c = Cluster::with_manager();
    let real = fingerprint_of(&c.cert());
    let wrong = Fingerprint::of(b"not the manager's certificate");
    let mut cmd = aam_untrusting(&c, &["sessions"]);
    cmd.env("AAM_FINGERPRINT", wrong.to_string());
    let out = run(cmd).expect_code(3);
    let expected = format!(
        "the manager at {} presented certificate sha256:{real} but --fingerprint pins sha256:{wrong}",
        c.addr
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.dump());
    assert!(out.stderr.contains(&expected), "{}", out.dump());

    // A worker does not retry a mismatch forever: it says so and exits.
    let mut worker = Command::new(bin("aam-worker"));
    worker
        .args(["--manager", &c.addr, "--name", "w", "--fingerprint"])
        .arg(wrong.to_string())
        .env("AAM_TOKEN", &c.token);
    without_tls_env(&mut worker);
    let out = run(worker);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert!(out.stderr.contains(&expected), "{}", out.dump());
}

#[test]
fn with_no_trust_a_client_refuses_and_says_which_flag_and_finds_the_file_by_the_token() {
    let c = Cluster::with_manager();
    let out = run(aam_untrusting(&c, &["sessions"])).expect_code(3);
    for needed in [
        "--ca",
        "--fingerprint",
        "AAM_CA",
        "AAM_FINGERPRINT",
        "DATA_DIR/tls/cert.pem",
    ] {
        assert!(out.stderr.contains(needed), "{needed}: {}", out.dump());
    }
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.dump());

    // A token file in the manager's data directory: its certificate is
    // found beside it, as on the manager's own machine.
    let token_file = c.data_dir().join("client-token");
    std::fs::write(&token_file, format!("{}\n", c.token)).unwrap();
    let mut cmd = aam_untrusting(&c, &["sessions", "--token-file"]);
    cmd.arg(&token_file).env_remove("AAM_TOKEN");
    run(cmd).expect_code(0);
}

#[test]
fn a_plaintext_peer_gets_no_aam_answer_and_no_session_data_in_clear() {
    let c = Cluster::with_manager();
    let name = "secret-session-name-xyzzy";
    let batch = c.write(
        "b.toml",
        &format!("name = \"{name}\"\n[[jobs]]\nname = \"g\"\ngate = true\n"),
    );
    c.aam(&["submit", batch.to_str().unwrap()]).expect_code(0);

    let got = tls::plaintext_handshake(c.addr.parse().unwrap(), &c.token);
    tls::assert_nothing_in_clear(&got, &[name.as_bytes()]);
    let contains = |needle: &[u8]| got.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(b"Accepted") && !contains(b"invalid token"),
        "{got:?}"
    );
    // Logged once the connection is dropped, so maybe just after our read.
    let manager = c.manager.as_ref().unwrap();
    let logged = poll(Duration::from_secs(10), || {
        manager
            .log_text()
            .contains("TLS handshake failed")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", manager.log_text());
    c.aam(&["sessions"]).expect_code(0);
}

#[test]
fn a_users_own_certificate_is_served_and_trusted_with_ca() {
    let mut c = Cluster::new();
    let ca = signed(
        &c,
        "server",
        &["127.0.0.1", "localhost"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cert, key) = (c.path("server.pem"), c.path("server.key"));
    c.manager_config = Some(c.write(
        "aam.toml",
        &format!("tls_cert = {:?}\ntls_key = {:?}\n", cert, key),
    ));
    c.start_manager();
    assert!(!c.cert().exists(), "a certificate was generated anyway");
    let mut cmd = aam_untrusting(&c, &["sessions", "--ca"]);
    cmd.arg(&ca);
    run(cmd).expect_code(0);
    // Another CA's certificate does not vouch for it.
    let other = signed(
        &c,
        "other",
        &["127.0.0.1"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let mut cmd = aam_untrusting(&c, &["sessions"]);
    cmd.env("AAM_CA", &other);
    let out = run(cmd).expect_code(3);
    assert!(
        out.stderr.contains(&format!("--ca {}", other.display())),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr
            .contains(&format!("sha256:{}", fingerprint_of(&cert))),
        "{}",
        out.dump()
    );
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_and_takes_one_with() {
    let mut c = Cluster::new();
    let client_ca = signed(
        &c,
        "client",
        &["client"],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    c.manager_config = Some(c.write("aam.toml", &format!("client_ca = {client_ca:?}\n")));
    c.start_manager();
    let out = c.aam(&["sessions"]).expect_code(3);
    assert!(out.stderr.contains("--cert"), "{}", out.dump());
    let mut cmd = c.aam_command(&["sessions"]);
    cmd.env("AAM_CERT", c.path("client.pem"))
        .env("AAM_KEY", c.path("client.key"));
    run(cmd).expect_code(0);
}

#[test]
fn https_answers_with_the_certificate_and_fails_without_trust() {
    let c = Cluster::with_http();
    let auth = bearer(&c.token);
    get(&c.url("/api/sessions"), &[(auth.0, &auth.1)]).expect(200);

    let addr = c.url("").trim_start_matches("https://").to_string();
    let wrong = Trust::Pin(Fingerprint::of(b"another certificate"));
    let Err(err) = aam_tests::tls::connect_trusting(&addr, &wrong) else {
        panic!("a wrong pin was accepted by {addr}");
    };
    assert!(aam_protocol::tls::mismatch_of(&err).is_some(), "{err}");
    // An HTTPS client with only the system's roots refuses it too.
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let plain = agent.get(c.url("/api/sessions")).call();
    assert!(
        plain.is_err(),
        "trusted a self-signed certificate: {plain:?}"
    );
}

#[test]
fn idle_half_open_connections_do_not_keep_a_real_client_out() {
    aam_manager::listener::raise_fd_limit();
    let c = Cluster::with_manager();
    // Connected, never a ClientHello.
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(&c.addr).expect("connect"))
        .collect();
    let start = Instant::now();
    let answered = poll(Duration::from_secs(30), || {
        (c.aam(&["status"]).code == 0).then_some(start.elapsed())
    })
    .expect("aam status never answered");
    // Well inside the handshake timeout: nothing waited for the idle ones.
    assert!(
        answered < Duration::from_secs(8),
        "answered after {answered:?}"
    );
    drop(idle);
}
