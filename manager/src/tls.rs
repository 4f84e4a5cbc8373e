//! The manager's TLS certificate: the user's own (`tls_cert`/`tls_key`),
//! or one made at first start into `DATA_DIR/tls/` (key mode 0600) and
//! reused after; the rustls configuration built from it serves both the
//! TCP port (without session tickets) and HTTP (`aam_protocol::tls` builds it).

use crate::config::ManagerConfig;
use aam_protocol::tls::{self, Fingerprint, ServerIdentity};
use anyhow::Context as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the listener and HTTP server serve, and what clients are told.
#[derive(Clone)]
pub struct ManagerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the manager's certificate (what `--fingerprint` pins).
    pub fingerprint: Fingerprint,
    /// The certificate file (what `--ca` trusts).
    pub cert_file: PathBuf,
}

/// Loads the configured certificate, or the generated one (making it
/// the first time), and logs its fingerprint.
pub fn load_or_generate(config: &ManagerConfig) -> anyhow::Result<ManagerTls> {
    let (cert_file, key_file) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let names = names(&config.listen, &config.tls_san);
            generated(&config.data_dir, &names)?
        }
    };
    let identity = ServerIdentity::load(&cert_file, &key_file).map_err(anyhow::Error::msg)?;
    let server = tls::server_config(&identity, config.client_ca.as_deref())
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!(
                "TLS certificate {} with key {}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    let fingerprint = identity.fingerprint();
    tracing::info!(
        cert = %cert_file.display(),
        "TLS certificate SHA-256 fingerprint {fingerprint}: clients and workers on other machines pin it with --fingerprint {fingerprint} (or AAM_FINGERPRINT), or trust the file with --ca (or AAM_CA)"
    );
    if let Some(ca) = &config.client_ca {
        tracing::info!(
            "mutual TLS: peers must present a certificate signed by {}",
            ca.display()
        );
    }
    Ok(ManagerTls {
        config: Arc::new(server),
        fingerprint,
        cert_file,
    })
}

/// The names a generated certificate carries: `localhost`, the loopback
/// addresses, this host's name, the listen address's host, and `extra`.
pub fn names(listen: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = host_name() {
        names.push(host);
    }
    match listen.parse::<SocketAddr>() {
        // A wildcard names no address of its own: pass --tls-san for those.
        Ok(addr) if !addr.ip().is_unspecified() => names.push(addr.ip().to_string()),
        Ok(_) => {}
        Err(_) => {
            if let Some((host, _)) = listen.rsplit_once(':') {
                names.push(host.trim_matches(|c| c == '[' || c == ']').to_string());
            }
        }
    }
    names.extend(extra.iter().map(|n| n.trim().to_string()));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(normal(n)));
    names
}

/// A name as compared for duplicates (IPs in their canonical form).
fn normal(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// `DATA_DIR/tls/cert.pem` and `key.pem`, made if the certificate is not
/// there yet (the key first: a certificate is never there without it).
fn generated(data_dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = data_dir.join(tls::CERT_FILE);
    let key = data_dir.join(tls::KEY_FILE);
    if cert.exists() {
        return Ok((cert, key));
    }
    let dir = cert.parent().expect("tls/ has a parent");
    aam_store::files::ensure_private_dir(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let made = tls::generate(names).map_err(anyhow::Error::msg)?;
    aam_store::files::write_private(&key, made.key_pem.as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    aam_store::files::write_private(&cert, made.cert_pem.as_bytes())
        .with_context(|| format!("writing {}", cert.display()))?;
    aam_store::files::sync_dir(dir)?;
    tracing::info!(names = ?names, "made a self-signed TLS certificate in {}", cert.display());
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::default();
        config.data_dir = dir.path().to_path_buf();
        config.tls_san = vec!["aam.example.test".into()];
        let first = load_or_generate(&config).unwrap();
        let key = dir.path().join(tls::KEY_FILE);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_generate(&config).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.cert_file, dir.path().join(tls::CERT_FILE));
    }

    #[test]
    fn names_cover_loopback_the_listen_address_and_extras() {
        let names = names(
            "10.1.2.3:7410",
            &["aam.example.test".into(), "LOCALHOST".into()],
        );
        for n in [
            "localhost",
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "aam.example.test",
        ] {
            assert!(names.contains(&n.to_string()), "{n}: {names:?}");
        }
        assert!(!names.contains(&"LOCALHOST".to_string()), "{names:?}");
        let wildcard = super::names("0.0.0.0:7410", &[]);
        assert!(!wildcard.contains(&"0.0.0.0".to_string()));
        assert!(super::names("aam.internal:7410", &[]).contains(&"aam.internal".to_string()));
    }

    #[test]
    fn a_users_certificate_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::default();
        config.data_dir = dir.path().to_path_buf();
        config.tls_cert = Some(dir.path().join("mine.pem"));
        config.tls_key = Some(dir.path().join("mine.key"));
        let err = format!("{:#}", load_or_generate(&config).err().unwrap());
        assert!(err.contains("mine.pem"), "{err}");
    }
}
