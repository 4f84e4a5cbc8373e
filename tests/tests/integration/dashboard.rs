//! The dashboard in a real browser (headless chromium over the DevTools
//! protocol): a wrong token is refused, the form signs in, a click on a
//! session survives a live update of the list, a session's
//! jobs show their live statuses in the table and the graph, a job's log
//! is tailed while it runs, a click on a gate's Approve decides it and one
//! on a job's Cancel stops it (as `aam status` then says), the page fits a
//! phone, and signing out brings the form back. A second test fills the
//! page with agent jobs and takes the README's screenshot.

use crate::job;
use aam_tests::browser::Browser;
use aam_tests::{Cluster, Gate, WAIT_FOR_GATE};
use serde_json::{json, Value};

/// A progress message that would run script if the page took it as HTML.
const HTML: &str = "compiling <img src=x onerror=window.__pwned=1>";

/// `document.getElementById(id)`, visible (not `hidden`).
fn visible(id: &str) -> String {
    format!("!document.getElementById('{id}').hidden")
}

/// The text of a job's status cell in the jobs table ('' while absent).
fn status_cell(job: &str) -> String {
    let sel = json!(format!("#jobs tr[data-job=\"{job}\"] td.status"));
    format!("(document.querySelector({sel}) || {{}}).textContent || ''")
}

/// Waits until the jobs table shows `job` as `status`.
fn shows(b: &mut Browser, job: &str, status: &str) {
    b.wait_for(
        &format!("{job} shown as {status}"),
        &format!("{} === {}", status_cell(job), json!(status)),
    );
}

/// The sign-in form: types `token` and submits it.
pub(crate) fn sign_in(b: &mut Browser, token: &str) {
    b.type_into("#token", token);
    b.click("#login-form button[type=submit]");
}

#[test]
fn the_dashboard_signs_in_follows_a_session_and_approves_a_gate() {
    let mut c = Cluster::new();
    c.http = true;
    c.start_manager();
    c.start_worker("w", 2);
    let build_may_end = c.gate("build-may-end");
    // `build` runs until the test opens its gate file; the person's gate
    // waits from the start; `release` needs both.
    let session = c.submit_json(&json!({"name": "dash", "jobs": [
        {"name": "build", "command": ["sh", "-c", format!("echo building; echo '::progress:: 10 {HTML}'; {WAIT_FOR_GATE}; echo built")],
         "env": {"GATE": build_may_end.env()}},
        {"name": "approve-release", "gate": true},
        {"name": "release", "command": ["echo", "released"], "depends_on": ["build", "approve-release"]},
        {"name": "idle", "command": ["sh", "-c", WAIT_FOR_GATE], "env": {"GATE": c.gate("never").env()}},
    ]}));

    let mut b = Browser::start(&c.cert());
    b.navigate(&c.url("/"));
    signs_in(&mut b, &c);
    follows_the_session_and_approves(&mut b, &c, &session, &build_may_end);
    fits_a_phone(&mut b);
    assert_eq!(b.errors(), Vec::<String>::new(), "the page threw");
    signs_out(&mut b, &c, &session);
}

/// A wrong token is refused; the right one signs in, and the page never
/// holds it (the cookie is HttpOnly).
fn signs_in(b: &mut Browser, c: &Cluster) {
    b.wait_for("the sign-in form", &visible("login"));
    sign_in(b, "not-the-token");
    let error = b.wait_for(
        "the sign-in error",
        &format!(
            "{} && document.getElementById('login-error').textContent",
            visible("login-error")
        ),
    );
    assert_eq!(error, "Wrong token.");
    assert_eq!(b.eval(&visible("app")), false);

    sign_in(b, &c.token);
    b.wait_for("the signed-in page", &visible("app"));
    assert_eq!(b.eval("document.getElementById('token').value"), "");
    let cookies = b.eval("document.cookie");
    assert!(!cookies.as_str().unwrap().contains(&c.token), "{cookies}");
}

/// The session in the list; a click shows its jobs, whose statuses change
/// on the page as they do on the manager; a job's log is tailed; a click
/// on Approve decides the gate, and one on Cancel stops a job, as `aam
/// status` sees it.
fn follows_the_session_and_approves(
    b: &mut Browser,
    c: &Cluster,
    session: &str,
    build_may_end: &Gate,
) {
    let row = format!("#sessions tr[data-session=\"{session}\"]");
    // A live update re-renders the list between the press and the release
    // (as events do at any time): the click still selects the session.
    let at = b.press(&row);
    b.eval("renderSessions()");
    b.release(at);
    shows(b, "build", "running");
    shows(b, "idle", "running");
    shows(b, "approve-release", "awaiting approval");
    shows(b, "release", "pending");
    let graph = b.eval(
        "[...document.querySelectorAll('#graph g.node')].map(g => g.dataset.job + ':' + g.getAttribute('class')).sort().join(' ')",
    );
    assert_eq!(
        graph,
        "approve-release:node st-gate build:node st-running idle:node st-running release:node st-pending"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#graph path.edge').length"),
        2
    );

    // The log while it runs; the rest after it ends.
    b.click("button[data-action=log][data-job=build]");
    b.wait_for(
        "build's log",
        "document.getElementById('log-text').textContent.includes('building')",
    );
    // What jobs print is shown as text, never run as HTML.
    let literal = json!(HTML);
    b.wait_for(
        "the progress message as text",
        &format!("document.querySelector('#jobs tr[data-job=build] td.activity').textContent.includes({literal})"),
    );
    let injected = "document.querySelectorAll('main img').length + (window.__pwned ? 100 : 0)";
    assert_eq!(b.eval(injected), 0);
    build_may_end.open();
    shows(b, "build", "succeeded");
    b.wait_for(
        "the end of build's log",
        "document.getElementById('log-text').textContent.includes('built')",
    );

    b.click("button[data-action=approve][data-job=approve-release]");
    let status = c.poll_status(session, "the gate approved", |s| {
        job(s, "approve-release")["decision"]["approved"] == true
    });
    assert_eq!(job(&status, "approve-release")["decision"]["by"], "admin");
    shows(b, "approve-release", "succeeded");
    shows(b, "release", "succeeded");

    // Cancel asks first (yes, here), then stops the job; the session ends.
    b.eval("window.confirm = () => true");
    b.click("button[data-action=cancel][data-job=idle]");
    let status = c.poll_status(session, "idle cancelled", |s| {
        job(s, "idle")["status"] == "cancelled" && s["finished_at"].is_string()
    });
    shows(b, "idle", "cancelled");
    let ended = status["status"].as_str().unwrap().to_string();
    b.wait_for(
        &format!("the session {ended} in the list"),
        &format!(
            "(document.querySelector({}) || {{}}).textContent.includes({})",
            json!(row),
            json!(ended)
        ),
    );
}

/// A phone: nothing wider than the screen (the tables scroll inside).
fn fits_a_phone(b: &mut Browser) {
    b.viewport(390, 844, 2.0, true);
    b.wait_for("the phone layout", "window.innerWidth === 390");
    let width = b.eval("document.documentElement.scrollWidth");
    assert!(
        width.as_u64().unwrap() <= 390,
        "the page is {width} px wide at 390"
    );
}

/// A cookie gone (expired, cleared): the next call's 401 brings the form
/// back. Signing out: the form, and the API refuses the browser.
fn signs_out(b: &mut Browser, c: &Cluster, session: &str) {
    b.call("Network.clearBrowserCookies", json!({}));
    b.click(&format!("#sessions tr[data-session=\"{session}\"]"));
    b.wait_for("the sign-in form after a 401", &visible("login"));
    sign_in(b, &c.token);
    b.wait_for("the signed-in page again", &visible("app"));

    b.click("#logout");
    b.wait_for("the sign-in form after signing out", &visible("login"));
    let code = b.eval("fetch('/api/sessions').then(r => r.status)");
    assert_eq!(code, 401);
}

/// A stand-in agent: Claude Code's stream-json for `$TURNS` tool calls of
/// `$TOOL` (a `"name":..,"input":..` fragment), then it waits at `$GATE`
/// when set, then its result.
const FAKE_AGENT: &str = r#"printf '%s\n' '{"type":"system","subtype":"init","cwd":"/w","session_id":"demo","model":"claude-sonnet-4"}'
i=1
while [ "$i" -le "$TURNS" ]; do
  printf '{"type":"assistant","message":{"id":"m%s","model":"claude-sonnet-4","content":[{"type":"tool_use","id":"t%s",%s}],"usage":{"input_tokens":9000,"output_tokens":700}}}\n' "$i" "$i" "$TOOL"
  i=$((i + 1))
done
if [ -n "$GATE" ]; then WAIT_FOR_GATE; fi
printf '{"type":"result","subtype":"success","is_error":false,"result":"done","num_turns":%s,"session_id":"demo"}\n' "$TURNS""#;

/// An agent job of the screenshot's session.
fn agent_job(name: &str, turns: u32, tool: &str, gate: Option<&str>, deps: &[&str]) -> Value {
    json!({"name": name, "agent": "fake", "prompt": format!("do {name}"), "depends_on": deps,
           "env": {"TURNS": turns.to_string(), "TOOL": tool, "GATE": gate.unwrap_or("")}})
}

fn tool(name: &str, arg: &str, value: &str) -> String {
    format!("\"name\":\"{name}\",\"input\":{{\"{arg}\":\"{value}\"}}")
}

/// The README's picture: a session of agent jobs, some done, some
/// running, a gate waiting. Written to `$AAM_DASHBOARD_PNG` when that is
/// set (`docs/dashboard.png`); checked either way.
#[test]
fn the_dashboard_shows_agent_jobs_and_takes_the_readme_screenshot() {
    let mut c = Cluster::new();
    c.http = true;
    let script = FAKE_AGENT.replace("WAIT_FOR_GATE", WAIT_FOR_GATE);
    let config = format!(
        "[agents.fake]\ncommand = [\"sh\", \"-c\", {}, \"fake\", \"--output-format\", \"stream-json\", \"{{prompt}}\"]\n",
        json!(script)
    );
    c.manager_config = Some(c.write("aam.toml", &config));
    c.start_manager();
    c.start_worker_with("laptop", 4, &["--label", "zone=eu-west"]);
    let hold = c.gate("hold");
    let held = Some(hold.env());
    let session = c.submit_json(&json!({"name": "http-api-review", "jobs": [
        agent_job("plan", 4, &tool("Read", "file_path", "/w/ARCHITECTURE.md"), None, &[]),
        agent_job("review-api", 7, &tool("Edit", "file_path", "/w/src/http/api.rs"), held, &["plan"]),
        agent_job("review-auth", 3, &tool("Grep", "pattern", "SameSite"), held, &["plan"]),
        {"name": "tests", "command": ["sh", "-c", format!("echo '::progress:: 40 running unit tests'; {WAIT_FOR_GATE}")],
         "env": {"GATE": hold.env()}, "depends_on": ["plan"]},
        agent_job("merge", 2, &tool("Bash", "command", "git merge"), None, &["review-api", "review-auth", "tests"]),
        {"name": "approve-deploy", "gate": true, "depends_on": ["plan"]},
        {"name": "deploy", "command": ["echo", "deployed"], "depends_on": ["merge", "approve-deploy"]},
    ]}));
    c.poll_status(&session, "three jobs running", |s| {
        s["counts"]["running"] == 3 && job(s, "approve-deploy")["reason"] == "awaiting approval"
    });

    let mut b = Browser::start(&c.cert());
    b.viewport(1200, 900, 1.0, false);
    b.navigate(&c.url(&format!("/#{session}")));
    sign_in(&mut b, &c.token);
    shows(&mut b, "plan", "succeeded");
    shows(&mut b, "review-api", "running");
    shows(&mut b, "approve-deploy", "awaiting approval");
    let activity = |job: &str| {
        format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(format!("#jobs tr[data-job=\"{job}\"] td.activity"))
        )
    };
    b.wait_for(
        "review-api's turns and last tool",
        &format!(
            "{}.includes('7 turns · Edit src/http/api.rs')",
            activity("review-api")
        ),
    );
    b.wait_for(
        "the tests' progress",
        &format!("{}.includes('40%')", activity("tests")),
    );
    b.wait_for("the worker's slots", "(document.querySelector('#workers tr[data-worker=laptop]') || {}).textContent?.includes('3/4')");
    b.click("button[data-action=log][data-job=review-api]");
    b.wait_for(
        "review-api's log",
        "document.getElementById('log-text').textContent.includes('tool_use')",
    );
    // The log shows a screenful, not all of it.
    b.eval("document.getElementById('log-text').style.maxHeight = '150px'");

    assert_eq!(b.errors(), Vec::<String>::new(), "the page threw");
    let png = b.screenshot(true);
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() < 300_000, "the screenshot is {} bytes", png.len());
    if let Some(path) = std::env::var_os("AAM_DASHBOARD_PNG") {
        std::fs::write(&path, &png).expect("writing the screenshot");
    }
    hold.open();
}
