//! A real MCP client for the tests: the official MCP Python SDK, pinned in
//! `tests/mcp/requirements.txt`, in a virtualenv (`tests/.venv`, or
//! `$AAM_MCP_VENV`) that `.ci/run` creates and that is created here on
//! first use when missing (`python3 -m venv`, then pip). `tests/mcp/client.py`
//! spawns `aam mcp` over stdio; [`McpClient`] drives it one JSON line at a
//! time, so one MCP session stays open across a test's steps.

use crate::{bin, workspace_root, Cluster};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

/// How long one MCP request may take in a test (a `wait` call waits at
/// most what the test asks, well under this).
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

/// The virtualenv holding the MCP SDK.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("AAM_MCP_VENV")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tests/.venv"))
}

/// The version of the `mcp` package that `tests/mcp/requirements.txt` pins.
fn pinned_version() -> String {
    let path = workspace_root().join("tests/mcp/requirements.txt");
    let text = std::fs::read_to_string(&path).expect("tests/mcp/requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("mcp=="))
        .unwrap_or_else(|| panic!("{} pins no mcp==VERSION", path.display()))
        .trim()
        .to_string()
}

/// The version of `mcp` installed in the virtualenv, if it runs at all.
fn installed_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('mcp'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The virtualenv's python, with the pinned SDK: made (once per test
/// process) if missing or of another version. Panics, saying how to
/// install it, when that fails: MCP tests never skip.
pub fn python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let venv = venv_dir();
            let python = venv.join("bin/python");
            let pinned = pinned_version();
            if installed_version(&python).as_deref() != Some(pinned.as_str()) {
                install(&venv);
            }
            let found = installed_version(&python);
            assert_eq!(
                found.as_deref(),
                Some(pinned.as_str()),
                "the MCP Python SDK {pinned} is not installed in {}: run `.ci/run`, or \
                 `python3 -m venv {0} && {0}/bin/pip install -r tests/mcp/requirements.txt` \
                 (Debian needs `apt-get install python3-venv`), or set AAM_MCP_VENV",
                venv.display()
            );
            python
        })
        .clone()
}

/// `python3 -m venv VENV`, then pip installs the requirements into it.
fn install(venv: &Path) {
    let requirements = workspace_root().join("tests/mcp/requirements.txt");
    let steps: [(PathBuf, Vec<&std::ffi::OsStr>); 2] = [
        (
            PathBuf::from("python3"),
            // --clear: a virtualenv left by a python that is gone is redone.
            vec![
                "-m".as_ref(),
                "venv".as_ref(),
                "--clear".as_ref(),
                venv.as_os_str(),
            ],
        ),
        (
            venv.join("bin/pip"),
            vec![
                "install".as_ref(),
                "-q".as_ref(),
                "-r".as_ref(),
                requirements.as_os_str(),
            ],
        ),
    ];
    for (program, args) in steps {
        match Command::new(&program).args(&args).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "{} {args:?} failed:\n{}",
                    program.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                return;
            }
            Err(e) => {
                eprintln!("cannot run {}: {e}", program.display());
                return;
            }
        }
    }
}

/// What a tool call answered.
#[derive(Debug)]
pub struct ToolAnswer {
    pub is_error: bool,
    /// The text content blocks.
    pub text: Vec<String>,
    /// The structured content, or null.
    pub structured: Value,
}

impl ToolAnswer {
    /// The first text block as JSON (the tools answer JSON text).
    pub fn json(&self) -> Value {
        let text = self
            .text
            .first()
            .unwrap_or_else(|| panic!("no text in {self:?}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Asserts success and returns the answer's JSON.
    pub fn ok(&self) -> Value {
        assert!(!self.is_error, "the tool failed: {self:?}");
        self.json()
    }

    /// Asserts a tool error and returns its message.
    pub fn error(&self) -> &str {
        assert!(self.is_error, "the tool did not fail: {self:?}");
        self.text.first().expect("an error message")
    }
}

/// One MCP session of the Python SDK with `aam mcp`, aimed at a cluster's
/// manager; the client and the server are stopped when it is dropped.
pub struct McpClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// The server's name from the handshake.
    pub server: Value,
}

impl McpClient {
    /// Starts the client (which starts `aam mcp`) in the cluster's
    /// directory with its manager's address and token.
    pub fn start(c: &Cluster) -> McpClient {
        McpClient::start_with(c.dir.path(), &c.addr, &c.token)
    }

    /// Starts the client in `dir`, `aam mcp` aimed at `addr` with `token`.
    pub fn start_with(dir: &Path, addr: &str, token: &str) -> McpClient {
        let script = workspace_root().join("tests/mcp/client.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(bin("aam"))
            .current_dir(dir)
            .env("AAM_MANAGER", addr)
            .env("AAM_TOKEN", token)
            .env("AAM_CA", crate::tls::cert_for(addr))
            // The server's log (on the client's stderr, shown with the
            // test's): its warnings only.
            .env("AAM_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the MCP client (tests/mcp/client.py)");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut client = McpClient {
            child,
            stdin,
            lines,
            server: Value::Null,
        };
        let ready = client.next_answer();
        assert_eq!(
            ready["ready"], true,
            "the MCP client did not start: {ready}"
        );
        client.server = ready["server"].clone();
        client
    }

    /// The next line the client printed, as JSON.
    fn next_answer(&mut self) -> Value {
        match self.lines.recv_timeout(ANSWER_WITHIN) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the MCP client printed no JSON ({e}): {line}")),
            Err(RecvTimeoutError::Timeout) => {
                panic!("the MCP client did not answer within {ANSWER_WITHIN:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("the MCP client exited ({status:?}); its stderr is above")
            }
        }
    }

    fn request(&mut self, request: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("the client's stdin is open");
        writeln!(stdin, "{request}").expect("writing to the MCP client");
        stdin.flush().expect("flushing to the MCP client");
        let answer = self.next_answer();
        assert!(
            answer.get("exception").is_none(),
            "the MCP client failed on {request}: {answer}"
        );
        answer
    }

    /// `tools/list`: each tool's `name`, `description` and `input_schema`.
    pub fn list_tools(&mut self) -> Vec<Value> {
        let answer = self.request(json!({"op": "list_tools"}));
        answer["tools"].as_array().expect("tools").clone()
    }

    /// `tools/call`.
    pub fn call(&mut self, tool: &str, arguments: Value) -> ToolAnswer {
        let answer = self.request(json!({"op": "call", "tool": tool, "arguments": arguments}));
        ToolAnswer {
            is_error: answer["is_error"].as_bool().expect("is_error"),
            text: serde_json::from_value(answer["text"].clone()).expect("text blocks"),
            structured: answer["structured"].clone(),
        }
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        // End of input ends the client, which closes the server's stdin:
        // both exit. Killed if they do not.
        drop(self.stdin.take());
        let exited = crate::poll(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        });
        if exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
