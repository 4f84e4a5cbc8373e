//! Where to reach the manager, how to authenticate and how to trust it:
//! flags and environment first, then a manager `aam up` started in this
//! directory, then the defaults of a plain `aam-manager`. The manager's
//! certificate is found as its token is: `tls/cert.pem` in the directory
//! of the token file in use.

use crate::args::ManagerFlags;
use crate::client::Client;
use crate::exit::{bad_input, unreachable};
use crate::local::Local;
use aam_protocol::tls::{choose_trust, ClientTls, Identity, CERT_FILE};
use std::path::{Path, PathBuf};

/// Connects to the manager the flags point to (exit 3 if it cannot).
pub async fn connect(flags: &ManagerFlags) -> anyhow::Result<Client> {
    let (addr, token, token_dir) = resolve(flags)?;
    let tls = tls(flags, &addr, &token_dir)?;
    Client::connect(&addr, &token, tls).await
}

/// How to trust the manager at `addr`: `--fingerprint`, `--ca`, else the
/// certificate beside the token (`token_dir`), else `./aam-data`'s.
fn tls(flags: &ManagerFlags, addr: &str, token_dir: &Path) -> anyhow::Result<ClientTls> {
    let mut candidates = vec![token_dir.join(CERT_FILE)];
    let default = PathBuf::from("aam-data").join(CERT_FILE);
    if !candidates.contains(&default) {
        candidates.push(default);
    }
    let trust = choose_trust(
        addr,
        flags.ca.as_deref(),
        flags.fingerprint.as_deref(),
        &candidates,
    )
    .map_err(unreachable)?;
    let identity = match (&flags.cert, &flags.key) {
        (Some(cert), Some(key)) => Some(Identity {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(bad_input(
                "--cert and --key (AAM_CERT, AAM_KEY) go together",
            ))
        }
    };
    ClientTls::new(&trust, identity.as_ref()).map_err(unreachable)
}

/// The manager's address, the token to present to it, and the directory
/// of the token file (where a manager keeps its certificate too).
fn resolve(flags: &ManagerFlags) -> anyhow::Result<(String, String, PathBuf)> {
    let local = Local::here();
    let started_here = flags.manager.is_none() && local.addr_file().exists();
    let addr = match (&flags.manager, started_here) {
        (Some(m), _) => m.clone(),
        (None, true) => local.addr()?,
        (None, false) => aam_protocol::DEFAULT_MANAGER_ADDR.to_string(),
    };
    let path = match &flags.token_file {
        Some(p) => p.clone(),
        None if started_here => local.token_file(),
        None => PathBuf::from("aam-data/token"),
    };
    let token_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Some(t) = &flags.token {
        return Ok((addr, t.clone(), token_dir));
    }
    if flags.token_file.is_none() && !started_here && !path.exists() {
        return Err(unreachable(format!(
            "no token to authenticate to the manager at {addr}: pass --token or --token-file, or set AAM_TOKEN (the manager writes its token to DATA_DIR/token), or start one here with `aam up`"
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| unreachable(format!("reading token file {}: {e}", path.display())))?;
    Ok((addr, text.trim().to_string(), token_dir))
}
