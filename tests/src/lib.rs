//! Helpers for starting the real aam binaries as separate processes, for the
//! integration tests and the benchmarks: build and find the binaries, run a
//! manager and workers in a scratch directory, run `aam` commands, poll with
//! deadlines, hold jobs at gate files, and dump every log when a test fails.
//!
//! - `AAM_BIN_DIR`: when set, [`bin`] takes `aam-manager`, `aam-worker` and
//!   `aam` from that directory and builds nothing (e.g. to benchmark an older
//!   build against the current one). It is read at each call, so one process
//!   can switch between the two.
//! - A failed test (its thread panicking) keeps its scratch directory, with
//!   every process log in it, and prints its path.
//! - `AAM_CLAUDE_BIN`: the Claude Code binary agent tests run (default: the
//!   one `.ci/run` installs under tests/agent-cli; see [`claude`]), against
//!   the stand-in model server of [`model_server`].
//! - `AAM_MCP_VENV`: the virtualenv with the MCP Python SDK the MCP tests
//!   drive `aam mcp` with (default tests/.venv; see [`mcp`]).

pub mod browser;
pub mod change;
pub mod claude;
pub mod container;
pub mod fake_kube;
pub mod git;
pub mod http;
pub mod mcp;
pub mod model_server;
pub mod netns;
pub mod proxy;
pub mod slurm;
pub mod tls;
pub mod usage;
pub mod wire;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Chromium aborts its page loads and requests (`ERR_NETWORK_CHANGED`)
/// when the machine's network interfaces change, which tests with test
/// hosts, containers or compose networks do. Those tests hold this lock
/// for writing while they run (`network_changes`), a browser holds it for
/// reading while it lives (`network_quiet`): the two never overlap.
static NETWORK: RwLock<()> = RwLock::new(());

/// Held by a test that adds or removes network interfaces.
pub fn network_changes() -> RwLockWriteGuard<'static, ()> {
    NETWORK.write().unwrap_or_else(|e| e.into_inner())
}

/// Held by a browser: no interface changes meanwhile.
pub fn network_quiet() -> RwLockReadGuard<'static, ()> {
    NETWORK.read().unwrap_or_else(|e| e.into_inner())
}

/// The directory holding the binaries of the profile this test was built with.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds the three binaries once per test process (a no-op when fresh),
/// so tests never run stale binaries of the other packages.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        let target_dir = dir.parent().expect("target dir").to_path_buf();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .args([
                "-p",
                "aam-manager",
                "-p",
                "aam-worker",
                "-p",
                "aam-cli",
                "--bins",
            ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("running cargo build");
        assert!(
            out.status.success(),
            "building the binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Path to one of the aam binaries: in `$AAM_BIN_DIR` when that is set
/// (nothing is built), else in this profile's target directory, built if
/// needed.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("AAM_BIN_DIR").filter(|d| !d.is_empty()) {
        let path = Path::new(&dir).join(name);
        // Absolute, as commands run in other working directories.
        return std::fs::canonicalize(&path).unwrap_or_else(|e| {
            panic!("AAM_BIN_DIR: {}: {e}", path.display());
        });
    }
    ensure_built();
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The workspace root (where examples/ lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Polls `check` every 20 ms until it returns Some or `timeout` passes.
/// A free TCP port on 127.0.0.1 below the ephemeral range (32768 and up),
/// for a server that binds it later or a port published by podman: no
/// `bind(port 0)` of another test can be handed it meanwhile.
pub fn free_port() -> u16 {
    use std::net::TcpListener;
    let start = 20_000 + (std::process::id() as u16 % 6_000) * 2;
    let mut seed = start as u32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1_000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let port = 20_000 + (seed >> 8) as u16 % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// Whether `pid` is a process that runs: it exists and is not a zombie
/// (one that has ended and waits for its reaper runs nothing).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory, removed when dropped unless the thread is panicking:
/// a failed test keeps it (with the logs in it) and prints where it is.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("aam-test-")
            .tempdir()
            .expect("tempdir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!(
                "kept the failed test's scratch directory: {}",
                self.0.path().display()
            );
        }
    }
}

/// Shell code that blocks until the file named by `$GATE` exists: a job
/// runs it to wait for the test, which opens the [`Gate`] when it wants the
/// job to go on (rather than hoping a sleep lasts long enough).
pub const WAIT_FOR_GATE: &str = r#"while [ ! -e "$GATE" ]; do sleep 0.01; done"#;

/// A file jobs wait for (see [`WAIT_FOR_GATE`]; pass [`Gate::env`] as
/// their `GATE`).
pub struct Gate(PathBuf);

impl Gate {
    pub fn new(path: PathBuf) -> Gate {
        Gate(path)
    }

    /// The path, for a job's `GATE` variable.
    pub fn env(&self) -> &str {
        self.0.to_str().expect("utf-8 gate path")
    }

    /// Lets every job waiting at it go on (and later ones pass at once).
    pub fn open(&self) {
        std::fs::write(&self.0, "").expect("opening a gate");
    }

    /// Makes jobs that reach it wait again.
    pub fn close(&self) {
        std::fs::remove_file(&self.0).expect("closing a gate");
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// `sig`, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, sig: i32, grace: Duration) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(sig);
            if poll(grace, || self.child.try_wait().ok().flatten()).is_some() {
                return;
            }
        }
        self.kill();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The result of one `aam` command.
pub struct CmdOutput {
    pub command: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    fn from(command: String, out: Output) -> CmdOutput {
        CmdOutput {
            command,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn dump(&self) -> String {
        format!(
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code, showing everything when it is wrong.
    pub fn expect_code(self, code: i32) -> CmdOutput {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.dump());
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.dump()))
    }
}

/// Runs a command to completion with a deadline (killed past it).
pub fn run_command(mut cmd: Command, timeout: Duration) -> CmdOutput {
    let text = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {text}: {e}"));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = poll(timeout, || child.try_wait().ok().flatten());
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{text} did not finish within {timeout:?}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
                String::from_utf8_lossy(&out_reader.join().unwrap_or_default()),
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default())
            );
        }
    };
    let out = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    CmdOutput::from(text, out)
}

/// An `aam` command run in `dir` with no manager address, token or config
/// in its environment (as after `aam up` there), to its end.
pub fn aam_here(dir: &Path, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(bin("aam"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("AAM_MANAGER")
        .env_remove("AAM_TOKEN")
        .env_remove("AAM_CONFIG");
    without_tls_env(&mut cmd);
    run_command(cmd, Duration::from_secs(60))
}

/// Removes the TLS trust variables, so a command finds its trust as a
/// user's would (or says it has none).
pub fn without_tls_env(cmd: &mut Command) {
    for name in ["AAM_CA", "AAM_FINGERPRINT", "AAM_CERT", "AAM_KEY"] {
        cmd.env_remove(name);
    }
}

/// Runs `aam down` in a directory when dropped, so a failing test leaves no
/// background manager of `aam up` behind.
pub struct Down<'a>(pub &'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = aam_here(self.0, &["down"]);
    }
}

/// A manager and its workers, each a real process, in a scratch directory.
pub struct Cluster {
    /// Kept when the test fails (see [`Scratch`]).
    pub dir: Scratch,
    pub token: String,
    pub addr: String,
    pub manager: Option<Proc>,
    pub workers: Vec<Proc>,
    /// Extra environment for the manager (e.g. AAM_LEASE_MS).
    pub manager_env: Vec<(String, String)>,
    pub manager_config: Option<PathBuf>,
    /// Extra environment for the workers started from now on (a
    /// `secret_env` variable only they have).
    pub worker_env: Vec<(String, String)>,
    pub debug_log: bool,
    /// Serve HTTP (`--http`, on a free loopback port; else `--http off`,
    /// so managers of tests run at once never clash on its default port).
    pub http: bool,
    /// Where it binds with `http` the first time (default 127.0.0.1:0).
    pub http_bind: String,
    /// The HTTP server's address once started with `http` (host:port).
    pub http_addr: String,
    /// The test host the manager runs on (None: this machine, on loopback).
    pub manager_host: Option<netns::Host>,
    /// The test host `aam` commands run on (None: this machine).
    pub client_host: Option<netns::Host>,
    /// Where `aam` commands connect, when not to `addr` (a proxy).
    pub client_addr: Option<String>,
    /// Extra environment for `aam` commands (e.g. AAM_FINGERPRINT).
    pub client_env: Vec<(String, String)>,
}

/// The port managers listen on on a test host (each host is a network of
/// its own, so they never clash).
pub const HOST_MANAGER_PORT: u16 = 7400;

/// `program`, to run on `host` (None: on this machine).
fn command_on(host: Option<&netns::Host>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match host {
        Some(h) => h.command(program),
        None => Command::new(program),
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            dir: Scratch::new(),
            token: format!("test-token-{}", std::process::id()),
            addr: String::new(),
            manager: None,
            workers: Vec::new(),
            manager_env: Vec::new(),
            manager_config: None,
            worker_env: Vec::new(),
            debug_log: false,
            http: false,
            http_bind: "127.0.0.1:0".into(),
            http_addr: String::new(),
            manager_host: None,
            client_host: None,
            client_addr: None,
            client_env: Vec::new(),
        }
    }

    /// A cluster with a running manager serving HTTP (`http_addr`).
    pub fn with_http() -> Cluster {
        let mut c = Cluster::new();
        c.http = true;
        c.start_manager();
        c
    }

    /// `https://ADDR` of the HTTP server, followed by `path`.
    pub fn url(&self, path: &str) -> String {
        assert!(!self.http_addr.is_empty(), "the manager serves no HTTP");
        // Bound to every interface: reached on loopback.
        let addr = self.http_addr.replace("0.0.0.0:", "127.0.0.1:");
        format!("https://{addr}{path}")
    }

    /// A cluster with a running manager.
    pub fn with_manager() -> Cluster {
        let mut c = Cluster::new();
        c.start_manager();
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("manager-data")
    }

    /// The certificate the manager made at its first start (what workers
    /// and `aam` commands of the cluster trust, as `AAM_CA`).
    pub fn cert(&self) -> PathBuf {
        self.data_dir().join(aam_protocol::tls::CERT_FILE)
    }

    fn log_file(&self, name: &str) -> (PathBuf, std::fs::File) {
        let path = self.path(&format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("log file");
        (path, file)
    }

    /// Starts the manager: on a free port the first time, on the same
    /// address (and data directory) after a kill.
    pub fn start_manager(&mut self) {
        let listen = match (&self.manager_host, self.addr.is_empty()) {
            (_, false) => self.addr.clone(),
            (Some(host), true) => host.addr(HOST_MANAGER_PORT).to_string(),
            (None, true) => "127.0.0.1:0".to_string(),
        };
        let http = match (self.http, self.http_addr.is_empty()) {
            (false, _) => "off".to_string(),
            (true, true) => self.http_bind.clone(),
            (true, false) => self.http_addr.clone(),
        };
        let addr_file = self.data_dir().join("manager.addr");
        let _ = std::fs::remove_file(&addr_file);
        let (log, file) = self.log_file("manager");
        let mut cmd = command_on(self.manager_host.as_ref(), bin("aam-manager"));
        cmd.arg("--listen")
            .arg(&listen)
            .arg("--http")
            .arg(&http)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--token")
            .arg(&self.token)
            .env_remove("AAM_CONFIG")
            .env("AAM_LOG", if self.debug_log { "debug" } else { "info" })
            .envs(self.manager_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        if let Some(config) = &self.manager_config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd.spawn().expect("spawning aam-manager");
        let mut proc = Proc {
            name: "manager".into(),
            child,
            log,
        };
        let addr = poll(Duration::from_secs(20), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("aam-manager exited early ({status}):\n{}", proc.log_text());
            }
            let text = std::fs::read_to_string(&addr_file).ok()?;
            let addr = text.trim().to_string();
            let opens = match &self.manager_host {
                Some(host) => addr.parse().is_ok_and(|a| host.connects(a)),
                None => TcpStream::connect(&addr).is_ok(),
            };
            (!addr.is_empty() && opens).then_some(addr)
        })
        .unwrap_or_else(|| panic!("aam-manager did not come up:\n{}", proc.log_text()));
        self.addr = addr;
        tls::register(&self.addr, &self.cert());
        if self.http {
            // Written before manager.addr.
            let text = std::fs::read_to_string(self.data_dir().join("http.addr"))
                .expect("the manager wrote http.addr");
            self.http_addr = text.trim().to_string();
            tls::register(&self.http_addr, &self.cert());
            // Bound to every interface: reached on loopback (`url`).
            tls::register(
                &self.http_addr.replace("0.0.0.0:", "127.0.0.1:"),
                &self.cert(),
            );
        }
        self.manager = Some(proc);
    }

    /// Runs `aam-manager` on this cluster's data directory to its end, for
    /// runs that end at once (a refusal to start, `--recover`).
    pub fn run_manager(&self, extra: &[&str]) -> CmdOutput {
        let mut cmd = Command::new(bin("aam-manager"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--http")
            .arg("off")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--token")
            .arg(&self.token)
            .args(extra)
            .env_remove("AAM_CONFIG")
            .env("AAM_LOG", "info");
        run_command(cmd, Duration::from_secs(60))
    }

    /// kill -9 the manager.
    pub fn kill_manager(&mut self) {
        // Its log file stays in the scratch directory for failure dumps.
        if let Some(mut m) = self.manager.take() {
            m.kill();
        }
    }

    /// Starts a worker process and waits until the manager lists it.
    pub fn start_worker(&mut self, name: &str, slots: u32) -> usize {
        self.start_worker_with(name, slots, &[])
    }

    /// Starts a worker with extra flags.
    pub fn start_worker_with(&mut self, name: &str, slots: u32, extra: &[&str]) -> usize {
        self.start_worker_on(None, name, slots, extra)
    }

    /// Starts a worker on a test host (None: this machine).
    pub fn start_worker_on(
        &mut self,
        host: Option<&netns::Host>,
        name: &str,
        slots: u32,
        extra: &[&str],
    ) -> usize {
        let (log, file) = self.log_file(&format!("worker-{name}"));
        let workdir = self.path("work");
        std::fs::create_dir_all(&workdir).expect("workdir");
        let mut cmd = command_on(host, bin("aam-worker"));
        // The jobs inherit the worker's environment: a real key or a parent
        // Claude Code session must not leak into the agents tests run.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("ANTHROPIC_") || name.starts_with("CLAUDE") {
                cmd.env_remove(name.as_ref());
            }
        }
        let child = cmd
            .arg("--manager")
            .arg(&self.addr)
            .arg("--name")
            .arg(name)
            .arg("--slots")
            .arg(slots.to_string())
            .arg("--workdir")
            .arg(&workdir)
            .args(extra)
            .env("AAM_TOKEN", &self.token)
            .env("AAM_CA", self.cert())
            .env("AAM_LOG", if self.debug_log { "debug" } else { "info" })
            .envs(self.worker_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawning aam-worker");
        self.workers.push(Proc {
            name: name.into(),
            child,
            log,
        });
        let index = self.workers.len() - 1;
        let listed = poll(Duration::from_secs(20), || {
            // A worker that exits at once (a flag it does not know) says
            // why in its log: no use waiting for it.
            if let Ok(Some(status)) = self.workers[index].child.try_wait() {
                return Some(Err(status));
            }
            let out = self.aam(&["workers", "--json"]);
            (out.code == 0 && out.json().as_array()?.iter().any(|w| w["name"] == name))
                .then_some(Ok(()))
        });
        match listed {
            Some(Ok(())) => index,
            Some(Err(status)) => panic!(
                "aam-worker {name} exited early ({status}):\n{}",
                self.workers[index].log_text()
            ),
            None => panic!("worker {name} never registered\n{}", self.logs()),
        }
    }

    /// An `aam` command aimed at this cluster's manager.
    pub fn aam_command(&self, args: &[&str]) -> Command {
        let mut cmd = command_on(self.client_host.as_ref(), bin("aam"));
        cmd.args(args)
            .env(
                "AAM_MANAGER",
                self.client_addr.as_ref().unwrap_or(&self.addr),
            )
            .env("AAM_TOKEN", &self.token)
            .env("AAM_CA", self.cert())
            .envs(self.client_env.iter().cloned())
            .env_remove("AAM_CONFIG")
            .current_dir(self.dir.path());
        cmd
    }

    pub fn aam(&self, args: &[&str]) -> CmdOutput {
        run_command(self.aam_command(args), Duration::from_secs(120))
    }

    /// An `aam` command aimed at this cluster's manager, run in `dir` (a
    /// user's checkout, for `aam apply`).
    pub fn aam_in(&self, dir: &Path, args: &[&str]) -> CmdOutput {
        let mut cmd = self.aam_command(args);
        cmd.current_dir(dir);
        run_command(cmd, Duration::from_secs(120))
    }

    /// Writes a file in the scratch directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("writing a test file");
        path
    }

    /// Submits a batch file and returns the session id.
    pub fn submit(&self, file: &Path) -> String {
        let out = self
            .aam(&["submit", "--json", file.to_str().expect("utf-8 path")])
            .expect_code(0);
        out.json()["session"]
            .as_str()
            .expect("session id in the submit answer")
            .to_string()
    }

    /// Writes `batch` as a JSON batch file and submits it.
    pub fn submit_json(&self, batch: &serde_json::Value) -> String {
        let file = self.write("batch.json", &batch.to_string());
        self.submit(&file)
    }

    /// The workers a session's jobs last ran on.
    pub fn workers_that_ran(&self, session: &str) -> std::collections::BTreeSet<String> {
        let s = self.status(session);
        s["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["worker"].as_str().map(str::to_string))
            .collect()
    }

    pub fn status(&self, session: &str) -> serde_json::Value {
        self.aam(&["status", session, "--json"])
            .expect_code(0)
            .json()
    }

    /// Polls `aam status SESSION --json` (for up to 20 s) until `until`
    /// holds, and returns that status; panics naming `what` with the last
    /// status and the logs otherwise. An unreachable manager (a restart)
    /// counts as not yet.
    pub fn poll_status(
        &self,
        session: &str,
        what: &str,
        until: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let found = poll(Duration::from_secs(20), || {
            let out = self.aam(&["status", session, "--json"]);
            if out.code != 0 {
                return None;
            }
            last = out.json();
            until(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            panic!(
                "never saw {what} in session {session}; last status:\n{last}\n{}",
                self.logs()
            )
        })
    }

    /// A gate file in the scratch directory, not yet open.
    pub fn gate(&self, name: &str) -> Gate {
        Gate::new(self.path(name))
    }

    /// Every process log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries {
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                out.push_str(&format!("=== {} (last 60 lines) ===\n", path.display()));
                for line in tail.iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // Workers first: SIGINT makes a worker stop its jobs at once (SIGKILL
        // of the worker would leave them behind; SIGTERM would drain them).
        for w in &mut self.workers {
            w.stop(libc::SIGINT, Duration::from_secs(5));
        }
        if let Some(m) = &mut self.manager {
            m.stop(libc::SIGTERM, Duration::from_secs(5));
        }
    }
}
