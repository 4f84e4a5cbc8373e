//! The test peers' TLS: which certificate each manager address serves
//! (registered when a cluster starts its manager), and blocking TLS
//! streams (the raw protocol peers of `wire.rs`, hand-written HTTP) and
//! ureq agents that trust exactly that certificate.

use aam_protocol::tls::{client_config, Trust};
use std::collections::BTreeMap;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A blocking TLS connection to a manager (either port).
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The certificate each address (host:port) serves.
static TRUSTED: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// Records that `addr` serves the certificate in `cert`.
pub fn register(addr: &str, cert: &Path) {
    TRUSTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(addr.to_string(), cert.to_path_buf());
}

/// The certificate `addr` serves; panics naming an address no cluster
/// registered.
pub fn cert_for(addr: &str) -> PathBuf {
    let trusted = TRUSTED.lock().unwrap_or_else(|e| e.into_inner());
    trusted
        .get(addr)
        .cloned()
        .unwrap_or_else(|| panic!("no manager of these tests serves TLS at {addr}"))
}

/// A TCP connection to `addr` (TCP_NODELAY) with the TLS handshake done,
/// trusting the certificate registered for it.
pub fn connect(addr: &str) -> io::Result<TlsStream> {
    connect_trusting(addr, &Trust::Ca(cert_for(addr)))
}

/// `connect`, trusting as `trust` says.
pub fn connect_trusting(addr: &str, trust: &Trust) -> io::Result<TlsStream> {
    let config = client_config(trust, None).map_err(io::Error::other)?;
    let name = aam_protocol::tls::server_name(addr);
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    tcp.set_read_timeout(None)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// A ureq TLS configuration trusting the certificate `addr` serves.
pub fn ureq_tls(addr: &str) -> ureq::tls::TlsConfig {
    let pem = std::fs::read(cert_for(addr)).expect("reading the manager's certificate");
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
        .build()
}

/// The fingerprint of the (first) certificate in `cert`.
pub fn fingerprint_of(cert: &Path) -> aam_protocol::tls::Fingerprint {
    let der = aam_protocol::tls::load_certs(cert).expect("a certificate");
    aam_protocol::tls::Fingerprint::of(der[0].as_ref())
}

/// Sends a client's handshake with `token` in clear to `addr`, as a peer
/// that does not speak TLS would, and returns every byte that came back
/// before the manager closed the connection (or 15 s passed).
pub fn plaintext_handshake(addr: std::net::SocketAddr, token: &str) -> Vec<u8> {
    use aam_protocol::messages::{Handshake, Role};
    use std::io::{Read, Write};
    let mut tcp = TcpStream::connect(addr).expect("connecting in clear");
    let payload = aam_protocol::codec::encode(&Handshake::new(Role::Client, token)).unwrap();
    tcp.write_all(&(payload.len() as u32).to_be_bytes())
        .unwrap();
    tcp.write_all(&payload).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    got
}

/// What a plaintext peer got back holds nothing in clear: no bytes, or a
/// TLS alert record (content type 21); never a frame's magic or any of
/// `secrets`.
pub fn assert_nothing_in_clear(got: &[u8], secrets: &[&[u8]]) {
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
    let contains = |needle: &[u8]| got.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&aam_protocol::messages::MAGIC), "{got:?}");
    for secret in secrets {
        assert!(
            !contains(secret),
            "{:?} in clear: {got:?}",
            String::from_utf8_lossy(secret)
        );
    }
}
