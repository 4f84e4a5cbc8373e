//! The client side of TLS (workers and clients alike): how the manager is
//! trusted (a CA or certificate file, or one pinned fingerprint), the
//! peer's own certificate for mutual TLS, and the verifier that names a
//! mismatch in one line.

use super::{load_certs, load_key, provider, Fingerprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the manager's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Certificates (a CA's, or the manager's own) trusted as roots; the
    /// manager's must name the host dialed.
    Ca(PathBuf),
    /// Exactly the certificate of this fingerprint, whatever it names.
    Pin(Fingerprint),
}

/// A peer's own certificate and key, for a manager that requires them.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The manager's certificate is not the one trusted: carried out of the
/// verifier inside rustls' error, so the dial can say it in one line.
#[derive(Debug)]
pub struct Mismatch {
    pub presented: Fingerprint,
    /// What was expected instead, as the user gave it.
    pub expected: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "presented certificate sha256:{} but {}",
            self.presented, self.expected
        )
    }
}

impl std::error::Error for Mismatch {}

/// Verifies the manager: by pin or by roots; the handshake's signatures
/// are checked either way (a pin does not skip proof of the key).
#[derive(Debug)]
struct ManagerVerifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Check {
    Pin(Fingerprint),
    Roots {
        verifier: Arc<WebPkiServerVerifier>,
        file: PathBuf,
    },
}

fn mismatch(presented: Fingerprint, expected: String) -> rustls::Error {
    let other = rustls::OtherError(Arc::new(Mismatch {
        presented,
        expected,
    }));
    rustls::Error::InvalidCertificate(CertificateError::Other(other))
}

impl ServerCertVerifier for ManagerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity.as_ref());
        match &self.check {
            Check::Pin(pinned) if presented == *pinned => Ok(ServerCertVerified::assertion()),
            Check::Pin(pinned) => Err(mismatch(
                presented,
                format!("--fingerprint pins sha256:{pinned}"),
            )),
            Check::Roots { verifier, file } => verifier
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| match e {
                    rustls::Error::InvalidCertificate(why) => mismatch(
                        presented,
                        format!(
                            "--ca {} does not vouch for it for '{}' ({})",
                            file.display(),
                            server_name.to_str(),
                            rustls::Error::InvalidCertificate(why)
                        ),
                    ),
                    other => other,
                }),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Roots read from a CA or certificate file (every certificate in it).
fn roots(file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(file)? {
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: not a usable certificate: {e}", file.display()))?;
    }
    Ok(roots)
}

/// The rustls configuration of a worker or client.
pub fn client_config(trust: &Trust, identity: Option<&Identity>) -> Result<ClientConfig, String> {
    let provider = provider();
    let check = match trust {
        Trust::Pin(fp) => Check::Pin(*fp),
        Trust::Ca(file) => Check::Roots {
            verifier: WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(file)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("--ca {}: {e}", file.display()))?,
            file: file.clone(),
        },
    };
    let verifier = Arc::new(ManagerVerifier {
        check,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => builder
            .with_client_auth_cert(load_certs(&id.cert)?, load_key(&id.key)?)
            .map_err(|e| {
                format!(
                    "--cert {} / --key {}: {e}",
                    id.cert.display(),
                    id.key.display()
                )
            }),
    }
}

/// The name to verify the manager as: the host part of `addr` (an IP or
/// a DNS name); with a pin it does not matter, so a name rustls cannot
/// take becomes `localhost`.
pub fn server_name(addr: &str) -> ServerName<'static> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"))
}

/// The `Mismatch` inside an I/O error from a TLS handshake, if that is
/// why it failed.
pub fn mismatch_of(error: &std::io::Error) -> Option<&Mismatch> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<Mismatch>()
        }
        _ => None,
    }
}

/// Whether an I/O error is rustls refusing or being refused (not worth
/// retrying as is: another certificate, or a client certificate, is needed).
pub fn is_tls_refusal(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some())
}
