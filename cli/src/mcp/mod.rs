//! `aam mcp`: an MCP server on stdio (the `rmcp` crate) through which an AI
//! assistant submits sessions, follows them, reads their results and logs,
//! cancels jobs and decides gates. It is a client of the manager like any
//! `aam` command (same `--manager` / `AAM_MANAGER`, token and `./.aam`
//! discovery), connecting anew for each tool call, so a manager that is
//! down or restarting is a tool error naming its address, never the end of
//! the server. Stdout carries only the protocol; logs go to stderr.
//!
//! `tools.rs` declares the tools (names, descriptions, argument schemas),
//! `ops.rs` carries them out, answering with the JSON documents of
//! `aam ... --json` (`aam_protocol::json`), and `args.rs` holds the checks
//! of their arguments that need no manager.

mod args;
mod ops;
mod tools;

use crate::args::ManagerFlags;
use rmcp::ServiceExt;

/// Serves the tools on stdin/stdout until the client closes stdin.
pub async fn run(flags: &ManagerFlags) -> anyhow::Result<i32> {
    let server = tools::Aam::new(flags.clone());
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("aam mcp: the MCP handshake on stdio failed: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("aam mcp: serving MCP on stdio: {e}"))?;
    Ok(0)
}
