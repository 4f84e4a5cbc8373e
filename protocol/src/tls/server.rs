//! The manager's side of TLS: the self-signed certificate made at first
//! start, the user's own certificate and key read from files, and the
//! rustls server configuration (with client certificates required when a
//! client CA is given).

use super::{load_certs, load_key, provider, Fingerprint};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// A certificate chain (the manager's first) and its key.
pub struct ServerIdentity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// The fingerprint clients pin: of the manager's own certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.certs[0].as_ref())
    }

    /// Reads the user's certificate chain and key; errors name the file.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerIdentity, String> {
        Ok(ServerIdentity {
            certs: load_certs(cert)?,
            key: load_key(key)?,
        })
    }
}

/// A generated certificate and key, PEM-encoded, to be written out.
pub struct Generated {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate naming `names` (DNS names or IP addresses),
/// for server authentication, valid for 10 years from today.
pub fn generate(names: &[String]) -> Result<Generated, String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("making the TLS certificate for {names:?}: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aam manager");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 24 * 3600)).into();
    let key = rcgen::KeyPair::generate().map_err(|e| format!("making a TLS key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("signing the TLS certificate: {e}"))?;
    Ok(Generated {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The manager's rustls configuration; with `client_ca`, every peer
/// must present a certificate that CA signed (mutual TLS).
pub fn server_config(
    identity: &ServerIdentity,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(file) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(file)? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "--client-ca {}: not a usable certificate: {e}",
                        file.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--client-ca {}: {e}", file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(|e| format!("the TLS certificate and key do not go together: {e}"))
}

/// `config` without TLS 1.3 session tickets, for the protocol port: each
/// CLI command is a new process and a worker keeps its connection, so no
/// peer there resumes a session, and every ticket would cost the manager
/// a key derivation, a cache entry and a record per connection. (HTTPS
/// keeps them: a browser does resume.)
pub fn without_tickets(config: &ServerConfig) -> ServerConfig {
    let mut config = config.clone();
    config.send_tls13_tickets = 0;
    config
}
