//! `aam-worker permission-prompt --socket PATH`: the stdio MCP server the
//! worker names in the MCP config it gives an agent whose permissions are
//! relayed (`permissions = "relay"`; the agent's CLI gets
//! `--permission-prompt-tool mcp__aam__permission`). Its one tool,
//! `permission`, takes the CLI's `{tool_name, input, tool_use_id}`, relays
//! it to the worker on the job's unix socket (`permission_relay.rs`) and
//! answers with the one text block the CLI reads: `{"behavior":"allow",
//! "updatedInput":{...}}` or `{"behavior":"deny","message":"..."}`. Stdout
//! carries only the protocol.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::schemars::{self, JsonSchema};
use rmcp::{tool, tool_handler, tool_router, ServerHandler, ServiceExt};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The server: the job's socket, and its one tool.
#[derive(Clone)]
pub struct PermissionPrompt {
    socket: PathBuf,
    tool_router: ToolRouter<PermissionPrompt>,
}

/// What the agent's CLI asks.
#[derive(Deserialize, Serialize, JsonSchema)]
pub struct PermissionArgs {
    /// The tool the agent wants to run (`Write`, `Bash`, ...).
    pub tool_name: String,
    /// Its input, as the agent gave it.
    #[serde(default)]
    pub input: serde_json::Value,
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

#[tool_router]
impl PermissionPrompt {
    #[tool(
        description = "Asks aam whether the agent may run a tool: the answer comes from the job's rules or from a person (aam allow / aam deny)."
    )]
    async fn permission(&self, Parameters(args): Parameters<PermissionArgs>) -> CallToolResult {
        let denied = |why: String| {
            let text = aam_protocol::permission::answer_text(false, &args.input, &why);
            CallToolResult::success(vec![ContentBlock::text(text)])
        };
        match relay(&self.socket, &args).await {
            Ok(answer) => CallToolResult::success(vec![ContentBlock::text(answer)]),
            Err(e) => denied(format!("aam could not relay the request: {e}")),
        }
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "aam",
    instructions = "aam relays this agent's permission prompts to the people who run it."
)]
impl ServerHandler for PermissionPrompt {}

/// Sends the ask as one JSON line on the job's socket and reads the
/// answer's line back (it comes when someone or a rule decided).
async fn relay(socket: &std::path::Path, args: &PermissionArgs) -> std::io::Result<String> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(args)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    if answer.trim().is_empty() {
        return Err(std::io::Error::other("the worker closed the request"));
    }
    Ok(answer.trim_end().to_string())
}

/// Serves the tool on stdin/stdout until the agent's CLI closes stdin.
pub async fn serve(socket: PathBuf) -> anyhow::Result<()> {
    let server = PermissionPrompt {
        socket,
        tool_router: PermissionPrompt::tool_router(),
    };
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("permission-prompt: the MCP handshake failed: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("permission-prompt: serving MCP on stdio: {e}"))?;
    Ok(())
}

/// `permission-prompt --socket PATH` (argv's first element is the
/// executable): parses its flag, serves, and exits; an error goes to
/// stderr. Both `aam-worker` and `aam` (whose `aam run` embeds a worker)
/// start it so.
pub fn main_from_args() -> ! {
    #[derive(clap::Parser)]
    #[command(name = "permission-prompt")]
    struct PromptArgs {
        /// The job's socket, from the MCP config the worker wrote
        #[arg(long)]
        socket: PathBuf,
    }
    let args = <PromptArgs as clap::Parser>::parse_from(std::env::args_os().skip(1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let served = match runtime {
        Ok(rt) => rt.block_on(serve(args.socket)),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = served {
        eprintln!("permission-prompt: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0)
}
