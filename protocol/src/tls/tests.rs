//! Tests of the TLS set-up over real loopback handshakes: a generated
//! certificate names what it was asked to, a pin and a CA accept the
//! right certificate, and a wrong one fails with one line naming both.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn identity(names: &[&str]) -> (ServerIdentity, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let made = generate(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &made.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &made.key_pem).unwrap();
    let id =
        ServerIdentity::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    (id, dir)
}

/// Serves one TLS connection that echoes one byte; returns the address.
async fn serve_once(identity: &ServerIdentity) -> String {
    let config = Arc::new(server_config(identity, None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
            let mut byte = [0u8; 1];
            if tls.read_exact(&mut byte).await.is_ok() {
                let _ = tls.write_all(&byte).await;
                let _ = tls.flush().await;
            }
        }
    });
    addr
}

/// Dials `addr` as `name` (the host part) and exchanges a byte.
async fn exchange(tls: &ClientTls, addr: &str, name: &str) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let port = addr.rsplit_once(':').unwrap().1;
    let mut stream = tls.handshake(&format!("{name}:{port}"), tcp).await?;
    stream.write_all(b"x").await?;
    stream.flush().await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    Ok(())
}

#[tokio::test]
async fn a_pin_accepts_its_certificate_and_names_a_mismatch() {
    let (id, _dir) = identity(&["localhost", "127.0.0.1"]);
    let addr = serve_once(&id).await;
    exchange(
        &ClientTls::pinned(id.fingerprint()),
        &addr,
        "anything.invalid",
    )
    .await
    .unwrap();

    let wrong = Fingerprint::of(b"another certificate");
    let addr = serve_once(&id).await;
    let err = exchange(&ClientTls::pinned(wrong), &addr, "127.0.0.1")
        .await
        .unwrap_err();
    let mismatch = mismatch_of(&err).expect("a mismatch").to_string();
    assert_eq!(
        mismatch,
        format!(
            "presented certificate sha256:{} but --fingerprint pins sha256:{wrong}",
            id.fingerprint()
        )
    );
    assert!(!mismatch.contains('\n'));
}

#[tokio::test]
async fn a_generated_certificate_names_what_it_was_given_and_no_more() {
    let (id, dir) = identity(&["localhost", "127.0.0.1", "::1", "aam.example.test"]);
    let ca = ClientTls::new(&Trust::Ca(dir.path().join("cert.pem")), None).unwrap();
    for name in ["localhost", "127.0.0.1", "[::1]", "aam.example.test"] {
        let addr = serve_once(&id).await;
        exchange(&ca, &addr, name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let addr = serve_once(&id).await;
    let err = exchange(&ca, &addr, "other.example.test")
        .await
        .unwrap_err();
    let mismatch = mismatch_of(&err).expect("a mismatch").to_string();
    assert!(
        mismatch.contains("does not vouch for it for 'other.example.test'"),
        "{mismatch}"
    );
    assert!(mismatch.contains(&dir.path().join("cert.pem").display().to_string()));
}

#[test]
fn trust_comes_from_flags_then_files_and_never_from_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let fp = Fingerprint::of(b"c");
    let hex = fp.to_string();
    assert_eq!(
        choose_trust("h:1", Some(&cert), Some(&hex), &[]),
        Ok(Trust::Pin(fp))
    );
    assert_eq!(
        choose_trust("h:1", Some(&cert), None, &[]),
        Ok(Trust::Ca(cert.clone()))
    );
    let missing = dir.path().join("missing.pem");
    let refused = choose_trust("h:1", None, None, std::slice::from_ref(&missing)).unwrap_err();
    for needed in [
        "--ca",
        "--fingerprint",
        "AAM_CA",
        "AAM_FINGERPRINT",
        "DATA_DIR/tls/cert.pem",
        "h:1",
    ] {
        assert!(refused.contains(needed), "{needed}: {refused}");
    }
    assert!(refused.contains(&missing.display().to_string()));
    std::fs::write(&cert, "x").unwrap();
    assert_eq!(
        choose_trust("h:1", None, None, &[missing, cert.clone()]),
        Ok(Trust::Ca(cert))
    );
    let bad = choose_trust("h:1", None, Some("zz"), &[]).unwrap_err();
    assert!(bad.starts_with("--fingerprint: "), "{bad}");
}

#[test]
fn files_that_are_not_pem_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let err = load_certs(&empty).unwrap_err();
    assert!(
        err.contains("empty.pem") && err.contains("no PEM certificate"),
        "{err}"
    );
    let err = load_key(&dir.path().join("none.pem")).unwrap_err();
    assert!(err.contains("none.pem"), "{err}");
}
