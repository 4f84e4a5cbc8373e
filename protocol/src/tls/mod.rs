//! TLS on every connection (rustls, ring provider): fingerprints, the
//! manager's certificate (made or loaded) and server configuration, and
//! how workers and clients trust the manager.
//!
//! **Architecture invariant:** this module is the only place that builds
//! rustls configurations; the manager, the worker, the CLI and the tests
//! all take theirs from here.

mod client;
mod fingerprint;
mod server;

pub use client::{
    client_config, is_tls_refusal, mismatch_of, server_name, Identity, Mismatch, Trust,
};
pub use fingerprint::Fingerprint;
pub use server::{generate, server_config, without_tickets, Generated, ServerIdentity};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A worker's or client's TLS stream to the manager.
pub type ClientStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// The manager's TLS stream to one peer.
pub type ServerStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Where the manager keeps its certificate, under its data directory.
pub const CERT_FILE: &str = "tls/cert.pem";
/// Where the manager keeps the certificate's key, under its data directory.
pub const KEY_FILE: &str = "tls/key.pem";

/// The one crypto provider every configuration uses (named, never the
/// process default, so nothing depends on which provider features the
/// dependency graph happens to enable).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file; an error names the file.
pub fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("reading certificates from {}: {e}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading certificates from {}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(file)
        .map_err(|e| format!("reading a private key from {}: {e}", file.display()))
}

/// A worker's or client's TLS set-up: how it trusts the manager, and the
/// certificate it presents if any. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    pub fn new(trust: &Trust, identity: Option<&Identity>) -> Result<ClientTls, String> {
        Ok(ClientTls {
            config: Arc::new(client_config(trust, identity)?),
        })
    }

    /// Trusts exactly the certificate of `fingerprint` (what `aam run`
    /// and `aam up` use for the manager they started).
    pub fn pinned(fingerprint: Fingerprint) -> ClientTls {
        ClientTls::new(&Trust::Pin(fingerprint), None).expect("a pin needs no file")
    }

    /// The TLS handshake over `tcp`, verifying the manager at `addr`.
    pub async fn handshake(
        &self,
        addr: &str,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<ClientStream> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(server_name(addr), tcp)
            .await
    }
}

/// How a worker or client trusts the manager at `addr`: `--fingerprint`,
/// else `--ca`, else the first of `candidates` (the manager's
/// `DATA_DIR/tls/cert.pem` where this machine keeps one) that exists.
/// Never trust on first use: with none, the error says what to pass.
pub fn choose_trust(
    addr: &str,
    ca: Option<&Path>,
    fingerprint: Option<&str>,
    candidates: &[PathBuf],
) -> Result<Trust, String> {
    if let Some(fp) = fingerprint {
        return Fingerprint::parse(fp)
            .map(Trust::Pin)
            .map_err(|e| format!("--fingerprint: {e}"));
    }
    if let Some(file) = ca {
        return Ok(Trust::Ca(file.to_path_buf()));
    }
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(Trust::Ca(found.clone()));
    }
    let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(format!(
        "no way to verify the manager at {addr}: pass --ca FILE (or AAM_CA) with its certificate or CA, or --fingerprint HEX (or AAM_FINGERPRINT) with the SHA-256 fingerprint it logs at start; the manager keeps its certificate in DATA_DIR/{CERT_FILE} (looked for {})",
        if looked.is_empty() { "none here".to_string() } else { looked.join(", ") }
    ))
}

/// A connection's read side once its handshake is done: the bytes that
/// came behind the handshake (`leftover`, e.g. a client's first request
/// sent without waiting for the reply) and then the socket. The leftover
/// is read as bytes: a `FramedRead` given it in its buffer would not decode
/// it until the socket had more to read.
pub type AfterHandshake<R> = tokio::io::Chain<std::io::Cursor<bytes::BytesMut>, CloseOnEof<R>>;

/// `AfterHandshake` of `leftover`, then `read`.
pub fn after_handshake<R: tokio::io::AsyncRead + Unpin>(
    leftover: bytes::BytesMut,
    read: R,
) -> AfterHandshake<R> {
    use tokio::io::AsyncReadExt;
    std::io::Cursor::new(leftover).chain(CloseOnEof(read))
}

/// A TLS stream's read side on which a peer that closes its socket
/// without TLS's `close_notify` (a CLI that exits, a killed process) ends
/// the stream like a plain close, instead of an error per connection in
/// the logs. Safe for aam: frames carry their own length, so a stream cut
/// inside a frame is still an error (`CodecError::Truncated`).
pub struct CloseOnEof<R>(pub R);

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CloseOnEof<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
