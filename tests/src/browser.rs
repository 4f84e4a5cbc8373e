//! A headless chromium driven over the Chrome DevTools protocol, for the
//! dashboard's tests and its README screenshot: navigate, evaluate
//! JavaScript, click and type as a person would (real input events at an
//! element's place on screen), resize to a phone, take a screenshot. The
//! browser runs in its own scratch profile and is killed when dropped.
//!
//! `AAM_CHROMIUM`: the browser binary (default `chromium`, Debian's
//! package, which `.ci/run` installs).

use crate::{poll, Scratch};
use serde_json::{json, Value};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long one DevTools command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Run before a page's own scripts: keeps what they throw.
const RECORD_ERRORS: &str = "window.__aamErrors = [];
addEventListener('error', (e) => window.__aamErrors.push(String(e.message)));
addEventListener('unhandledrejection', (e) => window.__aamErrors.push('unhandled: ' + String(e.reason)));";

/// One browser process and a websocket to its single page.
pub struct Browser {
    child: Child,
    page: WebSocket<TcpStream>,
    next_id: u64,
    /// The profile directory (and the browser's log); kept on failure.
    pub dir: Scratch,
    /// No test changes the network interfaces while it lives.
    _quiet: std::sync::RwLockReadGuard<'static, ()>,
}

/// BASE64(SHA-256(SubjectPublicKeyInfo)) of the certificate in `cert`:
/// how chromium's `--ignore-certificate-errors-spki-list` names a key.
fn spki_hash(cert: &Path) -> String {
    let der = aam_protocol::tls::load_certs(cert).expect("the manager's certificate");
    let (_, parsed) =
        x509_parser::parse_x509_certificate(der[0].as_ref()).expect("a parsable certificate");
    let spki = parsed.tbs_certificate.subject_pki.raw;
    data_encoding::BASE64.encode(&aam_protocol::tls::Fingerprint::of(spki).0)
}

impl Browser {
    /// Starts chromium headless on a free DevTools port and opens a page;
    /// it trusts the certificate in `cert` (a manager's self-signed one)
    /// by its public key, and no other that fails verification.
    pub fn start(cert: &Path) -> Browser {
        let quiet = crate::network_quiet();
        let dir = Scratch::new();
        let profile = dir.path().join("profile");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("browser log");
        let binary = std::env::var("AAM_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let child = Command::new(&binary)
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--no-sandbox",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!(
                "--ignore-certificate-errors-spki-list={}",
                spki_hash(cert)
            ))
            .arg("about:blank")
            // Its own process group, so the renderers and helpers it forks
            // die with it (see `kill_group`).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {binary} (apt-get install chromium, or set AAM_CHROMIUM): {e}")
            });
        let mut child = KillOnDrop(Some(child));
        // Chromium writes the port it bound (and the browser's websocket
        // path) to this file once DevTools listens.
        let port_file = profile.join("DevToolsActivePort");
        let (port, path) = poll(Duration::from_secs(30), || {
            if let Some(status) = child.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{binary} exited at once ({status}):\n{}",
                    std::fs::read_to_string(dir.path().join("chromium.log")).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(&port_file).ok()?;
            let mut lines = text.lines();
            let port = lines.next()?.trim().parse::<u16>().ok()?;
            Some((port, lines.next()?.trim().to_string()))
        })
        .expect("chromium never wrote its DevTools port");
        let target = first_page(port, &path);
        let page = connect(&format!("ws://127.0.0.1:{port}/devtools/page/{target}"));
        let mut browser = Browser {
            child: child.0.take().expect("child"),
            page,
            next_id: 0,
            dir,
            _quiet: quiet,
        };
        browser.call("Page.enable", json!({}));
        // Every page it loads notes its uncaught errors, for `errors`.
        browser.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": RECORD_ERRORS}),
        );
        browser
    }

    /// The uncaught errors and unhandled promise rejections of the page
    /// loaded last.
    pub fn errors(&mut self) -> Vec<String> {
        let v = self.eval("window.__aamErrors || []");
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends one DevTools command to the page and returns its result;
    /// panics on an error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        command(&mut self.page, &mut self.next_id, method, params)
    }

    /// Loads `url` and waits until the document has loaded. A load that
    /// Chromium aborts because the machine's interfaces changed (other
    /// tests make and remove their test networks meanwhile) is tried
    /// again, up to five times.
    pub fn navigate(&mut self, url: &str) {
        for attempt in 1.. {
            let answer = self.call("Page.navigate", json!({"url": url}));
            match answer.get("errorText").and_then(Value::as_str) {
                None => break,
                Some("net::ERR_NETWORK_CHANGED") if attempt < 5 => continue,
                Some(err) => panic!("loading {url}: {err}"),
            }
        }
        self.wait_for("the page to load", "document.readyState === 'complete'");
    }

    /// The value of a JavaScript expression (awaited when a promise);
    /// panics on an exception, with its text.
    pub fn eval(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = answer.get("exceptionDetails") {
            panic!("{expression} threw: {}", ex["exception"]["description"]);
        }
        answer["result"]["value"].clone()
    }

    /// Polls `expression` (for up to 20 s) until it is truthy and returns
    /// its value; panics naming `what` with the page's text otherwise.
    pub fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let found = poll(Duration::from_secs(20), || {
            let v = self.eval(expression);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            truthy.then_some(v)
        });
        found.unwrap_or_else(|| {
            let text = self.eval("document.body ? document.body.innerText : ''");
            panic!(
                "never saw {what} (waited for `{expression}`); the page says:\n{}",
                text.as_str().unwrap_or_default()
            )
        })
    }

    /// Clicks the first element `selector` matches with real mouse events
    /// at its centre (so it must be visible and not covered).
    pub fn click(&mut self, selector: &str) {
        let at = self.press(selector);
        self.release(at);
    }

    /// Presses the left button over `selector` (visible, scrolled into
    /// view): the first half of a click, which `release` ends.
    pub fn press(&mut self, selector: &str) -> (Value, Value) {
        let sel = json!(selector);
        let at = self.wait_for(
            &format!("a visible {selector}"),
            &format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null;
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
                 return r.width > 0 && r.height > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
            ),
        );
        let at = (at[0].clone(), at[1].clone());
        self.mouse("mousePressed", &at);
        at
    }

    /// Releases the left button where `press` pressed it.
    pub fn release(&mut self, at: (Value, Value)) {
        self.mouse("mouseReleased", &at);
    }

    fn mouse(&mut self, kind: &str, (x, y): &(Value, Value)) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
        );
    }

    /// Clicks into the field `selector` matches, clears it and types `text`.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        let sel = json!(selector);
        self.eval(&format!("document.querySelector({sel}).value = ''"));
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Makes the page `width` x `height` CSS pixels (a phone when `mobile`).
    pub fn viewport(&mut self, width: u32, height: u32, scale: f64, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
        );
    }

    /// A PNG of what the page shows: the viewport, or the whole document
    /// (cut to its size) when `full_page`.
    pub fn screenshot(&mut self, full_page: bool) -> Vec<u8> {
        let mut params = json!({"format": "png"});
        if full_page {
            let size = self.eval(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]",
            );
            params["captureBeyondViewport"] = json!(true);
            params["clip"] =
                json!({"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1});
        }
        let answer = self.call("Page.captureScreenshot", params);
        let data = answer["data"].as_str().expect("screenshot data");
        data_encoding::BASE64
            .decode(data.as_bytes())
            .expect("screenshot is base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills the browser if starting it fails half-way.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill_group(child);
        }
    }
}

/// SIGKILL to the browser's whole process group, then reaps the browser.
fn kill_group(child: &mut Child) {
    // SAFETY: signalling the group our own child leads.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Sends one DevTools command over `ws` and returns its result; panics on
/// an error or past [`COMMAND_TIMEOUT`].
fn command(ws: &mut WebSocket<TcpStream>, next_id: &mut u64, method: &str, params: Value) -> Value {
    *next_id += 1;
    let id = *next_id;
    let request = json!({"id": id, "method": method, "params": params});
    ws.send(Message::text(request.to_string()))
        .unwrap_or_else(|e| panic!("sending {method} to chromium: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "chromium did not answer {method}"
        );
        let text = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                continue
            }
            Err(e) => panic!("reading chromium's answer to {method}: {e}"),
        };
        // Events (no id) and answers to other commands pass by.
        let msg: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
        if msg["id"] != id {
            continue;
        }
        if let Some(err) = msg.get("error") {
            panic!("chromium refused {method} {params}: {err}");
        }
        return msg["result"].clone();
    }
}

/// A websocket to a DevTools endpoint, whose reads time out (so a silent
/// browser fails the test instead of hanging it).
fn connect(url: &str) -> WebSocket<TcpStream> {
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("host:port");
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    // The handshake may wait on a busy machine; a command's reads wake up
    // often enough to check their deadline.
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .expect("read timeout");
    let (ws, _) =
        tungstenite::client(url, stream).unwrap_or_else(|e| panic!("websocket to {url}: {e}"));
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    ws
}

/// The id of the browser's first page (the about:blank it started with),
/// asked of the browser's own DevTools endpoint (`path`, from
/// DevToolsActivePort).
fn first_page(port: u16, path: &str) -> String {
    let mut ws = connect(&format!("ws://127.0.0.1:{port}{path}"));
    let mut next_id = 0;
    let found = poll(Duration::from_secs(20), || {
        let targets = command(&mut ws, &mut next_id, "Target.getTargets", json!({}));
        targets["targetInfos"]
            .as_array()?
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["targetId"].as_str().map(String::from))
    });
    let _ = ws.close(None);
    found.expect("chromium lists no page")
}
