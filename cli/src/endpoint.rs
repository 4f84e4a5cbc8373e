//! Where to reach the manager and how to authenticate: flags and
//! environment first, then a manager `aam up` started in this directory,
//! then the defaults of a plain `aam-manager`.

use crate::args::ManagerFlags;
use crate::client::Client;
use crate::exit::unreachable;
use crate::local::Local;
use std::path::PathBuf;

/// Connects to the manager the flags point to (exit 3 if it cannot).
pub async fn connect(flags: &ManagerFlags) -> anyhow::Result<Client> {
    let (addr, token) = resolve(flags)?;
    Client::connect(&addr, &token).await
}

/// The manager's address and the token to present to it.
fn resolve(flags: &ManagerFlags) -> anyhow::Result<(String, String)> {
    let local = Local::here();
    let started_here = flags.manager.is_none() && local.addr_file().exists();
    let addr = match (&flags.manager, started_here) {
        (Some(m), _) => m.clone(),
        (None, true) => local.addr()?,
        (None, false) => aam_protocol::DEFAULT_MANAGER_ADDR.to_string(),
    };
    if let Some(t) = &flags.token {
        return Ok((addr, t.clone()));
    }
    let path = match &flags.token_file {
        Some(p) => p.clone(),
        None if started_here => local.token_file(),
        None => {
            let default = PathBuf::from("aam-data/token");
            if !default.exists() {
                return Err(unreachable(format!(
                    "no token to authenticate to the manager at {addr}: pass --token or --token-file, or set AAM_TOKEN (the manager writes its token to DATA_DIR/token), or start one here with `aam up`"
                )));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| unreachable(format!("reading token file {}: {e}", path.display())))?;
    Ok((addr, text.trim().to_string()))
}
