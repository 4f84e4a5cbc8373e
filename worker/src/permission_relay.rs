//! The worker's end of relayed permission prompts (issue 16, agent key
//! `permissions = "relay"`): for each such job a unix socket and an MCP
//! config naming `aam-worker permission-prompt --socket PATH`, given to
//! the agent's CLI with `--permission-prompt-tool mcp__aam__permission`.
//! Each ask that arrives on the socket gets a number, goes to the manager
//! (`JobEvent::PermissionAsked`), and is answered on its connection when
//! the manager's decision comes back.

use crate::child::{EventSink, JobEvent};
use aam_protocol::messages::AttemptRef;
use aam_protocol::permission::{answer_text, MAX_INPUT_BYTES, MCP_SERVER, MCP_TOOL};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

/// A decision from the manager: (ask, allowed, message).
pub type Decision = (u64, bool, String);

/// Numbers the relays of this process (short socket paths).
static NEXT_RELAY: AtomicU64 = AtomicU64::new(1);

/// One job's socket and MCP config; both removed when dropped.
pub struct Relay {
    socket: PathBuf,
    config: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Relay {
    /// What the agent's argv gains: its MCP config and permission tool.
    pub fn argv(&self) -> [String; 4] {
        [
            "--mcp-config".to_string(),
            self.config.display().to_string(),
            "--permission-prompt-tool".to_string(),
            format!("mcp__{MCP_SERVER}__{MCP_TOOL}"),
        ]
    }
}

/// The MCP config that starts this executable's `permission-prompt` on
/// `socket`.
fn mcp_config(exe: &std::path::Path, socket: &std::path::Path) -> String {
    let config = serde_json::json!({
        "mcpServers": {
            MCP_SERVER: {
                "type": "stdio",
                "command": exe.display().to_string(),
                "args": ["permission-prompt", "--socket", socket.display().to_string()],
            }
        }
    });
    config.to_string()
}

/// Opens a job's socket and writes its MCP config (in the worker's private
/// scratch directory), and starts relaying its asks on the job's
/// `LocalSet` until the returned task is aborted.
pub fn start<S: EventSink>(
    attempt: AttemptRef,
    sink: S,
    decided: UnboundedReceiver<Decision>,
) -> std::io::Result<(Relay, tokio::task::JoinHandle<()>)> {
    let dir = crate::inputs::scratch_dir()?;
    let n = NEXT_RELAY.fetch_add(1, Ordering::Relaxed);
    let relay = Relay {
        socket: dir.join(format!("perm-{n}.sock")),
        config: dir.join(format!("perm-{n}.json")),
    };
    let listener = UnixListener::bind(&relay.socket)?;
    let exe = std::env::current_exe()?;
    std::fs::write(&relay.config, mcp_config(&exe, &relay.socket))?;
    let task = tokio::task::spawn_local(serve(listener, attempt, sink, decided));
    Ok((relay, task))
}

type Waiting = Rc<RefCell<HashMap<u64, oneshot::Sender<(bool, String)>>>>;

async fn serve<S: EventSink>(
    listener: UnixListener,
    attempt: AttemptRef,
    sink: S,
    mut decided: UnboundedReceiver<Decision>,
) {
    let waiting: Waiting = Rc::default();
    let mut next_ask = 1u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let ask = next_ask;
                next_ask += 1;
                let relayed = ask_one(stream, ask, attempt, sink.clone(), waiting.clone());
                tokio::task::spawn_local(relayed);
            }
            decision = decided.recv() => {
                let Some((ask, allow, message)) = decision else { return };
                if let Some(to) = waiting.borrow_mut().remove(&ask) {
                    let _ = to.send((allow, message));
                }
            }
        }
    }
}

/// Reads one ask from the MCP server, relays it, and writes its answer.
async fn ask_one<S: EventSink>(
    stream: UnixStream,
    ask: u64,
    attempt: AttemptRef,
    sink: S,
    waiting: Waiting,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let limit = (MAX_INPUT_BYTES * 2) as u64;
    if BufReader::new(read.take(limit))
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let call: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    let tool = call["tool_name"].as_str().unwrap_or("?").to_string();
    let input = call.get("input").cloned().unwrap_or_default();
    let (to, answer) = oneshot::channel();
    waiting.borrow_mut().insert(ask, to);
    let event = JobEvent::PermissionAsked {
        attempt,
        ask,
        tool,
        input: input.to_string(),
    };
    sink.send(event).await;
    let Ok((allow, message)) = answer.await else {
        return;
    };
    let mut text = answer_text(allow, &input, &message);
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_starts_this_executables_permission_prompt() {
        let config = mcp_config("/bin/aam-worker".as_ref(), "/tmp/x/perm-1.sock".as_ref());
        let v: serde_json::Value = serde_json::from_str(&config).unwrap();
        let server = &v["mcpServers"]["aam"];
        assert_eq!(server["command"], "/bin/aam-worker");
        assert_eq!(
            server["args"],
            serde_json::json!(["permission-prompt", "--socket", "/tmp/x/perm-1.sock"])
        );
    }
}
