// aam's dashboard: signs in with a token, lists sessions, shows one
// session's jobs as a table and a dependency graph, tails a job's log,
// cancels, approves and rejects, answers agents' permission requests and
// says something to running agents (the jobs waiting for someone listed
// first), lists workers, and follows the manager's event stream. It talks only to the HTTP API (/api/...), whose answers
// have the same shape as `aam ... --json`. Every text from the server goes
// into the page as a text node or an attribute, never as HTML.
'use strict';

// ---------------------------------------------------------------- state

const state = {
  sessions: [],       // summary_json of the newest LIST_MAX sessions and those events brought since
  total: 0,           // how many sessions the manager keeps
  paused: [],         // limit groups paused on a usage limit
  waiting: [],        // running jobs waiting for someone (waiting_json), needing a decision first
  selected: null,     // id of the session shown, from the URL's #hash
  session: null,      // its session_json
  workers: [],
  log: null,          // the tailed log: {session, job, next, attempt, text, timer, decoder}
  events: null,       // the EventSource
};

const LIVE = new Set(['pending', 'queued', 'running']);
const LIST_MAX = 200;        // sessions shown in the list
const LOG_KEEP = 200000;       // characters of a log the page keeps
const LOG_FIRST = 32768;       // bytes of a log read when it is opened
const LOG_POLL_MS = 1000;
const REFRESH_MIN_MS = 400;    // at most one re-read of the shown session per this
const WORKERS_POLL_MS = 10000; // workers change without an event

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

// An element with attributes and children; strings become text nodes, so
// nothing the server sends is ever parsed as HTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// Replaces a table's rows; not while a mouse button is down: a row
// replaced between the press and the release would lose the click (live
// updates re-render the lists), so the newest rows wait for the click
// (a second at most, should the release never come).
const heldFills = new Map();
let pressed = false;
let pressTimer = null;
function fill(tbody, rows) {
  if (pressed) heldFills.set(tbody, rows);
  else tbody.replaceChildren(...rows);
}
function released() {
  pressed = false;
  clearTimeout(pressTimer);
  for (const [tbody, rows] of heldFills) tbody.replaceChildren(...rows);
  heldFills.clear();
}
document.addEventListener('pointerdown', () => {
  pressed = true;
  clearTimeout(pressTimer);
  pressTimer = setTimeout(released, 1000);
}, true);
for (const end of ['pointerup', 'pointercancel']) {
  // After this task: the click that follows the release comes first.
  document.addEventListener(end, () => setTimeout(released, 0), true);
}
window.addEventListener('blur', released);

function badge(status, text) {
  return el('span', { class: 'badge st-' + status }, text || status.replace('_', ' '));
}

function show(node, visible) {
  node.hidden = !visible;
}

// ---------------------------------------------------------------- formatting

function usd(x) {
  if (!x) return '–';
  return x < 0.01 ? '$' + x.toFixed(4) : '$' + x.toFixed(2);
}

function duration(ms) {
  if (ms === null || ms === undefined) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return (ms / 1000).toFixed(s < 10 ? 1 : 0) + 's';
  const m = Math.floor(s / 60);
  if (m < 60) return m + 'm' + String(s % 60).padStart(2, '0') + 's';
  return Math.floor(m / 60) + 'h' + String(m % 60).padStart(2, '0') + 'm';
}

function age(rfc3339) {
  if (!rfc3339) return '–';
  const s = Math.max(0, (Date.now() - Date.parse(rfc3339)) / 1000);
  if (s < 60) return Math.floor(s) + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

function tokens(n) {
  return n >= 1000 ? (n / 1000).toFixed(1) + 'k' : String(n || 0);
}

// A running job's time so far; a finished one's duration.
function jobDuration(j) {
  if (j.duration_ms !== null && j.duration_ms !== undefined) return j.duration_ms;
  if (j.started_at && !j.finished_at) return Date.now() - Date.parse(j.started_at);
  return null;
}

// A gate that a person may decide now (as `aam approve` would accept).
function awaiting(j) {
  return j.gate && j.status === 'pending' && !j.decision && j.reason === 'awaiting approval';
}

// What a job is doing or why it is as it is (the CLI's NOTE column).
function activity(j) {
  const parts = [];
  if (j.status === 'running' && j.progress !== null && j.progress !== undefined) {
    parts.push(el('progress', { max: 100, value: j.progress }), ' ' + j.progress + '%');
    if (j.progress_message) parts.push(' ' + j.progress_message);
  }
  const a = j.agent;
  if (a && (a.turns || j.attempts > 0)) {
    const bits = [a.turns + ' turn' + (a.turns === 1 ? '' : 's')];
    if (a.last_tool) bits.push(a.last_tool);
    if (a.retrying) bits.push('retrying: ' + a.retrying);
    if (a.error) bits.push(a.error);
    parts.push(el('span', { class: 'agent' }, (parts.length ? ' · ' : '') + bits.join(' · ')));
  }
  if (j.waiting_for_input) {
    parts.push(el('span', { class: 'chip' }, 'waiting for input'));
  }
  if (j.status === 'running') {
    for (const r of (j.permissions || []).filter((r) => !r.decision)) {
      parts.push(el('span', { class: 'chip needs' }, 'needs input'), el('code', {}, '[' + r.id + '] ' + r.call));
    }
  }
  if (j.decision) {
    const verb = j.decision.approved ? 'approved' : 'rejected';
    parts.push(verb + ' by ' + j.decision.by + (j.decision.comment ? ': ' + j.decision.comment : ''));
  } else if (j.reason && !(j.status === 'running' && parts.length)) {
    parts.push(el('span', { class: 'reason' }, (parts.length ? ' · ' : '') + j.reason));
  }
  if (j.status === 'running' && j.expected_remaining_ms) {
    parts.push(el('span', { class: 'hint' }, ' (~' + duration(j.expected_remaining_ms) + ' left)'));
  }
  return parts;
}

// ---------------------------------------------------------------- API

class Unauthorized extends Error {}

// One API call; a 401 brings the sign-in form back. Returns the parsed
// JSON (or the Response for `raw`); throws with the server's message.
async function api(method, path, body, raw) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetchRetrying(path, init);
  if (res.status === 401) {
    signedOut();
    throw new Unauthorized('signed out');
  }
  if (!res.ok) {
    let msg = res.status + ' ' + res.statusText;
    try { msg = (await res.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

// A read that fails on the network (a kept-alive connection the server
// closed just as the browser reused it, a busy machine) is tried twice
// more before it counts; a write is not, since it may have been done.
async function fetchRetrying(path, init) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetch(path, init);
    } catch (e) {
      if (init.method !== 'GET' || attempt === 3) throw e;
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}

function notice(err) {
  if (err instanceof Unauthorized) return;
  $('notice').textContent = err ? String(err.message || err) : '';
  show($('notice'), !!err);
}

// ---------------------------------------------------------------- sign-in

async function signIn(ev) {
  ev.preventDefault();
  const err = $('login-error');
  show(err, false);
  const res = await fetch('/api/login', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token: $('token').value }),
  }).catch((e) => ({ ok: false, status: 0, statusText: e.message }));
  // The server set the cookie; the page forgets the token at once.
  $('token').value = '';
  if (!res.ok) {
    err.textContent = res.status === 401 ? 'Wrong token.' : 'Cannot sign in: ' + res.status + ' ' + res.statusText;
    show(err, true);
    $('token').focus();
    return;
  }
  await start();
}

async function signOut() {
  await fetch('/api/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => {});
  signedOut();
}

// Back to the form: stop everything that polls or listens.
function signedOut() {
  if (state.events) state.events.close();
  state.events = null;
  closeLog();
  setLive(false);
  show($('app'), false);
  show($('logout'), false);
  show($('login'), true);
  $('token').focus();
}

// ---------------------------------------------------------------- sessions list

// Summaries that events brought while the list was being read: newer than
// (or as new as) what the read returns, so they win over it.
let listReads = 0;
const duringRead = new Map();

async function loadSessions() {
  listReads++;
  try {
    const doc = await api('GET', '/api/sessions?limit=' + LIST_MAX);
    state.total = doc.total || 0;
    state.sessions = (doc.sessions || []).map((s) => duringRead.get(s.id) || s);
    for (const s of duringRead.values()) {
      if (!state.sessions.some((x) => x.id === s.id)) state.sessions.push(s);
    }
    state.paused = doc.paused || [];
    state.waiting = doc.waiting || [];
    renderSessions();
    renderWaiting();
  } finally {
    if (--listReads === 0) duringRead.clear();
  }
}

// Newest first (ids grow: s9 < s10); the page lists at most LIST_MAX.
function bySessionAge(a, b) {
  return Number(b.id.slice(1)) - Number(a.id.slice(1)) || (a.id < b.id ? 1 : -1);
}

function renderSessions() {
  state.sessions.sort(bySessionAge);
  const shown = state.sessions.slice(0, LIST_MAX);
  const rows = shown.map((s) => el('tr', {
    'data-session': s.id,
    class: s.id === state.selected ? 'selected' : null,
    tabindex: 0,
    onclick: () => select(s.id),
    onkeydown: (e) => { if (e.key === 'Enter') select(s.id); },
  },
  el('td', {}, el('a', { href: '#' + s.id }, s.id)),
  el('td', { class: 'name' }, s.name),
  el('td', {}, badge(s.status)),
  el('td', { class: 'num' }, s.jobs_finished + '/' + s.jobs_total),
  el('td', {}, counts(s.counts), s.needs_input ? el('span', { class: 'chip needs' }, s.needs_input + ' needs input') : null,
    s.waiting_for_input ? el('span', { class: 'chip' }, s.waiting_for_input + ' waiting for input') : null),
  el('td', { class: 'num' }, usd(s.cost_usd)),
  el('td', { class: 'num', title: s.created_at }, age(s.created_at))));
  const older = Math.max(state.total, state.sessions.length) - shown.length;
  if (older > 0) {
    rows.push(el('tr', {}, el('td', { colspan: 7, class: 'hint' },
      older + ' older sessions not shown (aam status --limit 0 lists them all)')));
  }
  fill($('sessions').tBodies[0], rows);
  show($('no-sessions'), state.sessions.length === 0);
  const paused = state.paused.map((p) => 'limit group ' + p.group + ' paused until ' + p.until + ': ' + p.message);
  $('paused').textContent = paused.join('\n');
  show($('paused'), paused.length > 0);
}

// Non-zero job counts as small coloured chips.
function counts(c) {
  return Object.entries(c || {}).filter(([, n]) => n > 0)
    .map(([st, n]) => el('span', { class: 'chip st-' + st, title: st }, n + ' ' + st.replace('_', ' ')));
}

// A session's summary from an event: replace it, or add a new one on top.
// A change in what waits for someone re-reads the list of waiting jobs.
function upsertSession(summary) {
  if (listReads > 0) duringRead.set(summary.id, summary);
  const i = state.sessions.findIndex((s) => s.id === summary.id);
  const was = i >= 0 ? state.sessions[i] : null;
  if (i >= 0) state.sessions[i] = summary;
  else {
    // A session newer than every one held is new to the manager too; an
    // older one (past the page read) was counted in `total` already.
    const id = (s) => Number(s.id.slice(1));
    if (state.sessions.every((s) => id(s) < id(summary))) state.total++;
    state.sessions.unshift(summary);
  }
  renderSessions();
  const waits = (s) => (s ? (s.needs_input || 0) + ':' + (s.waiting_for_input || 0) : '0:0');
  if (waits(was) !== waits(summary)) refreshWaiting();
}

// Re-reads the list (and with it the waiting jobs), at most once per
// REFRESH_MIN_MS.
let waitingTimer = null;
function refreshWaiting() {
  if (waitingTimer) return;
  waitingTimer = setTimeout(() => {
    waitingTimer = null;
    loadSessions().catch(notice);
  }, REFRESH_MIN_MS);
}

// ---------------------------------------------------------------- waiting for someone

function jobPath(session, job) {
  return '/api/jobs/' + encodeURIComponent(session) + '/' + encodeURIComponent(job);
}

// The buttons that answer one open permission request.
function requestButtons(label, path, r) {
  const data = { 'data-job': label, 'data-request': r.id };
  return [
    el('button', Object.assign({ type: 'button', class: 'ok', 'data-action': 'allow',
      title: 'Let the agent make this call', onclick: () => answer(path, r.id, true, false) }, data), 'Allow'),
    el('button', Object.assign({ type: 'button', class: 'quiet', 'data-action': 'allow-always',
      title: 'Allow ' + r.tool + ' for the rest of this job',
      onclick: () => answer(path, r.id, true, true) }, data), 'Always ' + r.tool),
    el('button', Object.assign({ type: 'button', class: 'danger', 'data-action': 'deny',
      onclick: () => deny(label, path, r.id) }, data), 'Deny'),
  ];
}

// One open request: its id, the call in short, and its buttons.
function requestLine(label, path, r) {
  return el('div', { class: 'request' },
    el('span', { class: 'chip needs' }, 'needs input'),
    el('code', {}, '[' + r.id + '] ' + r.call),
    el('span', { class: 'hint' }, age(r.asked_at) + ' ago'),
    ...requestButtons(label, path, r));
}

function renderWaiting() {
  const rows = state.waiting.map((w) => {
    const path = jobPath(w.session, w.name);
    const what = w.requests.map((r) => requestLine(w.job, path, r));
    const actions = [];
    if (w.waiting_for_input) {
      what.push(el('div', { class: 'request' },
        el('span', { class: 'chip' }, 'waiting for input'),
        w.last_answer ? el('span', { class: 'hint' }, shorten(w.last_answer, 160)) : null));
      actions.push(el('button', { type: 'button', class: 'ok', 'data-action': 'say', 'data-job': w.job,
        onclick: () => say(w.job, path) }, 'Say'));
    }
    return el('tr', { 'data-job': w.job, class: w.needs_input ? 'needs-input' : null },
      el('td', { class: 'name' }, el('a', { href: '#' + w.session }, w.job)),
      el('td', { class: 'activity' }, ...what),
      el('td', { class: 'actions' }, ...actions));
  });
  fill($('waiting-jobs').tBodies[0], rows);
  show($('waiting'), rows.length > 0);
}

function shorten(text, n) {
  const line = (text.split('\n').find((l) => l.trim()) || '').trim();
  return line.length > n || line.length < text.trim().length ? line.slice(0, n) + '…' : line;
}

// ---------------------------------------------------------------- one session

function select(id) {
  if (location.hash !== '#' + id) location.hash = id; // hashchange calls back
  else showSession(id);
}

function showSession(id) {
  if (state.selected !== id) closeLog();
  state.selected = id || null;
  state.session = null;
  renderSessions();
  show($('session'), !!id);
  if (id) refreshSession();
}

// Re-reads the shown session, at most once per REFRESH_MIN_MS however many
// events arrive (one trailing read catches the last of a burst), and one
// read at a time: an event during a read asks for one more after it, so an
// older answer that arrives late never covers a newer one.
let refreshAt = 0;
let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;
function refreshSession() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  if (refreshTimer) return;
  const wait = Math.max(0, refreshAt + REFRESH_MIN_MS - Date.now());
  refreshTimer = setTimeout(readSession, wait);
}

async function readSession() {
  refreshTimer = null;
  refreshAt = Date.now();
  const id = state.selected;
  if (!id) return;
  refreshing = true;
  try {
    const doc = await api('GET', '/api/sessions/' + encodeURIComponent(id));
    if (state.selected === id) {
      state.session = doc;
      renderSession();
      notice(null);
    }
  } catch (e) {
    notice(e);
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refreshSession();
    }
  }
}

function renderSession() {
  const s = state.session;
  $('session-title').replaceChildren(s.name + ' ', el('span', { class: 'hint' }, s.id), ' ', badge(s.status));
  const facts = [s.jobs_finished + '/' + s.jobs_total + ' jobs done'];
  if (s.cost_usd) facts.push(usd(s.cost_usd) + ' (' + tokens(s.input_tokens) + ' in, ' + tokens(s.output_tokens) + ' out tokens)');
  if (s.status === 'running' && s.eta) {
    if (s.eta.ms !== null && s.eta.ms !== undefined) facts.push('ETA ~' + duration(s.eta.ms));
    if (s.eta.gates) facts.push(s.eta.gates + ' gate(s) awaiting a person');
  }
  facts.push('created ' + age(s.created_at) + ' ago');
  for (const p of s.paused || []) facts.push('paused (' + p.group + ') until ' + p.until);
  $('session-facts').textContent = facts.join(' · ');
  const cancel = $('cancel-session');
  show(cancel, s.status === 'running');
  cancel.onclick = () => act('cancel session ' + s.id, 'POST', '/api/sessions/' + encodeURIComponent(s.id) + '/cancel', true);
  renderJobs(s);
  renderGraph(s);
  if (state.log) followLog();
}

// Jobs waiting for someone first (a decision, then a message), the rest
// as the session lists them.
function attention(j) {
  if (j.needs_input) return 0;
  if (awaiting(j)) return 1;
  if (j.waiting_for_input) return 2;
  return 3;
}

function renderJobs(s) {
  const jobs = s.jobs.map((j, i) => [attention(j), i, j]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((x) => x[2]);
  const rows = jobs.map((j) => el('tr', {
    'data-job': j.name,
    class: j.needs_input ? 'needs-input' : awaiting(j) ? 'gate-waiting' : (state.log && state.log.job === j.name ? 'selected' : null),
  },
  el('td', { class: 'name' }, j.name, j.gate ? el('span', { class: 'chip' }, 'gate') : null, j.variant ? el('span', { class: 'hint' }, ' #' + j.variant) : null),
  el('td', { class: 'status' }, awaiting(j) ? badge('gate', 'awaiting approval') : badge(j.status)),
  el('td', { class: 'num' }, j.attempts),
  el('td', {}, j.worker || '–'),
  el('td', { class: 'num duration' }, duration(jobDuration(j))),
  el('td', { class: 'activity' }, activity(j)),
  el('td', { class: 'num cost' }, j.agent ? usd(j.agent.cost_usd) : '–'),
  el('td', { class: 'actions' }, jobActions(s, j))));
  fill($('jobs').tBodies[0], rows);
}

function jobActions(s, j) {
  const path = jobPath(s.id, j.name);
  const out = [];
  if (j.status === 'running') {
    for (const r of (j.permissions || []).filter((r) => !r.decision)) {
      out.push(...requestButtons(s.id + '/' + j.name, path, r));
    }
  }
  if (awaiting(j)) {
    out.push(el('button', { type: 'button', class: 'ok', 'data-action': 'approve', 'data-job': j.name,
      onclick: () => act(null, 'POST', path + '/approve', false, {}) }, 'Approve'));
    out.push(el('button', { type: 'button', class: 'danger', 'data-action': 'reject', 'data-job': j.name,
      onclick: () => reject(path) }, 'Reject'));
  } else if (LIVE.has(j.status) && !j.gate) {
    if (j.status === 'running' && j.takes_input) {
      out.push(el('button', { type: 'button', class: 'ok', 'data-action': 'say', 'data-job': j.name,
        onclick: () => say(s.id + '/' + j.name, path) }, 'Say'));
    }
    out.push(el('button', { type: 'button', class: 'danger', 'data-action': 'cancel', 'data-job': j.name,
      onclick: () => act('cancel job ' + s.id + '/' + j.name, 'POST', path + '/cancel', true) }, 'Cancel'));
  }
  if (!j.gate && (j.attempts > 0 || j.status === 'running')) {
    out.push(el('button', { type: 'button', class: 'quiet', 'data-action': 'log', 'data-job': j.name,
      onclick: () => openLog(s.id, j.name) }, 'Log'));
  }
  return out;
}

// One more message of a running agent's conversation (`aam say`).
async function say(label, path) {
  const text = await ask('Say to ' + label + ':', 'Send');
  if (!text || !text.trim()) return;
  await act(null, 'POST', path + '/say', false, { text });
}

// `aam allow` (`always`: the same tool for the rest of the job).
async function answer(path, id, allow, always) {
  await act(null, 'POST', path + (allow ? '/allow' : '/deny'), false, allow ? { request: id, always } : { request: id });
  loadSessions().catch(notice);
}

// `aam deny --message`: what the agent is told, optional.
async function deny(label, path, id) {
  const message = await ask('Deny request ' + id + ' of ' + label + '. What should the agent be told? (optional)', 'Deny');
  if (message === null) return;
  await act(null, 'POST', path + '/deny', false, message.trim() ? { request: id, message } : { request: id });
  loadSessions().catch(notice);
}

// A text box in a dialog: resolves with its text, or null if cancelled.
function ask(label, send) {
  const dialog = $('ask');
  $('ask-label').textContent = label;
  $('ask-send').textContent = send;
  $('ask-text').value = '';
  return new Promise((resolve) => {
    const done = (value) => {
      $('ask-form').onsubmit = null;
      $('ask-cancel').onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    $('ask-form').onsubmit = (ev) => { ev.preventDefault(); done($('ask-text').value); };
    $('ask-cancel').onclick = () => done(null);
    dialog.onclose = () => done(null);
    dialog.showModal();
    $('ask-text').focus();
  });
}

async function reject(path) {
  const comment = prompt('Reject this gate. Why? (optional)');
  if (comment === null) return;
  await act(null, 'POST', path + '/reject', false, comment ? { comment } : {});
}

// A button's request; `confirmText` asks first. The event stream brings
// the change, but the shown session is re-read at once too.
async function act(confirmText, method, path, ask, body) {
  if (ask && !confirm('Really ' + confirmText + '?')) return;
  try {
    await api(method, path, body);
    notice(null);
  } catch (e) {
    notice(e);
  }
  refreshSession();
}

// ---------------------------------------------------------------- dependency graph

// Jobs in columns by dependency depth (a job one column right of its
// deepest dependency), ordered in a column by where their dependencies
// sit. Returns the columns and each job's column and row.
function layoutGraph(s) {
  const byName = new Map(s.jobs.map((j) => [j.name, j]));
  const depth = new Map();
  const depthOf = (j, seen) => {
    if (depth.has(j.name)) return depth.get(j.name);
    if (seen.has(j.name)) return 0; // a cycle is refused at submit; never loop
    seen.add(j.name);
    let d = 0;
    for (const dep of j.depends_on) {
      const up = byName.get(dep.job);
      if (up) d = Math.max(d, depthOf(up, seen) + 1);
    }
    depth.set(j.name, d);
    return d;
  };
  const columns = [];
  for (const j of s.jobs) {
    const d = depthOf(j, new Set());
    (columns[d] = columns[d] || []).push(j);
  }
  // One barycentre pass: fewer crossings, and stable for equal keys.
  const row = new Map();
  columns.forEach((col, d) => {
    if (d > 0) {
      const key = (j) => {
        const ups = j.depends_on.map((x) => row.get(x.job)).filter((r) => r !== undefined);
        return ups.length ? ups.reduce((a, b) => a + b, 0) / ups.length : 0;
      };
      col.sort((a, b) => key(a) - key(b));
    }
    col.forEach((j, i) => row.set(j.name, i));
  });
  return { byName, columns, depth, row };
}

const G = { W: 168, H: 46, GX: 56, GY: 14, PAD: 10 };

// The graph: edges from each dependency to its dependent (dashed by their
// `when`), then the nodes over them, coloured by status.
function renderGraph(s) {
  const { byName, columns, depth, row } = layoutGraph(s);
  const tall = Math.max(1, ...columns.map((c) => c.length));
  const colX = (d) => G.PAD + d * (G.W + G.GX);
  // Short columns are centred.
  const colTop = (d) => G.PAD + (tall - columns[d].length) * (G.H + G.GY) / 2;
  const at = (name) => ({ d: depth.get(name), x: colX(depth.get(name)), y: colTop(depth.get(name)) + row.get(name) * (G.H + G.GY) });
  const edges = [], nodes = [];
  for (const j of s.jobs) {
    const b = at(j.name);
    for (const dep of j.depends_on) {
      if (!byName.has(dep.job)) continue;
      edges.push(svg('path', {
        d: edgePath(at(dep.job), b, colX, colTop, columns),
        class: 'edge when-' + dep.when, 'marker-end': 'url(#arrow)',
      }));
    }
    nodes.push(graphNode(s, j, b, G.W, G.H));
  }
  const defs = svg('defs', {}, svg('marker', {
    id: 'arrow', viewBox: '0 0 8 8', refX: 4, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto',
  }, svg('path', { d: 'M0,0 L8,4 L0,8 z', class: 'arrow' })));
  const width = G.PAD * 2 + columns.length * G.W + (columns.length - 1) * G.GX;
  const height = G.PAD * 2 + tall * G.H + (tall - 1) * G.GY;
  const graph = $('graph');
  graph.setAttribute('viewBox', `0 0 ${width} ${height}`);
  graph.setAttribute('width', width);
  graph.setAttribute('height', height);
  graph.replaceChildren(defs, ...edges, ...nodes);
}

// An edge from node a's right side to node b's left side. One that skips
// columns passes each of them between two nodes, not through one.
function edgePath(a, b, colX, colTop, columns) {
  const x1 = a.x + G.W, y1 = a.y + G.H / 2, x2 = b.x, y2 = b.y + G.H / 2;
  let path = `M${x1},${y1}`;
  let x = x1, y = y1;
  for (let d = a.d + 1; d < b.d; d++) {
    const cx = colX(d), top = colTop(d), step = G.H + G.GY;
    let gy = y1 + (y2 - y1) * (cx - x1) / (x2 - x1);
    const k = Math.floor((gy - top + G.GY / 2) / step); // the slot gy falls in
    if (k >= 0 && k < columns[d].length && gy > top + k * step - 3 && gy < top + k * step + G.H + 3) {
      // Inside node k: take the nearer gap, above or below it.
      gy = gy - (top + k * step) < G.H / 2 ? top + k * step - G.GY / 2 : top + k * step + G.H + G.GY / 2;
    }
    const mx = (x + cx) / 2;
    path += ` C${mx},${y} ${mx},${gy} ${cx},${gy} L${cx + G.W},${gy}`;
    x = cx + G.W;
    y = gy;
  }
  const mx = (x + x2) / 2;
  return path + ` C${mx},${y} ${mx},${y2} ${x2 - 4},${y2}`;
}

function graphNode(s, j, p, W, H) {
  const status = awaiting(j) ? 'gate' : j.status;
  const name = j.name.length > 22 ? j.name.slice(0, 21) + '…' : j.name;
  let line = awaiting(j) ? 'awaiting approval' : j.status.replace('_', ' ');
  if (j.status === 'running' && j.progress !== null && j.progress !== undefined) line += ' ' + j.progress + '%';
  else if (j.agent && j.agent.turns) line += ' · ' + j.agent.turns + ' turns';
  if (j.attempts > 1) line += ' · try ' + j.attempts;
  const g = svg('g', { class: 'node st-' + status, 'data-job': j.name, transform: `translate(${p.x},${p.y})` },
    svg('title', {}, j.name + ': ' + line + (j.reason ? ' (' + j.reason + ')' : '')),
    svg('rect', { width: W, height: H, rx: 6 }),
    svg('text', { x: 10, y: 19, class: 'n' }, name),
    svg('text', { x: 10, y: 36, class: 's' }, line));
  if (!j.gate) g.addEventListener('click', () => openLog(s.id, j.name));
  return g;
}

// ---------------------------------------------------------------- log tail

// Shows a job's log: its last LOG_FIRST bytes, then what it adds while it
// runs (polled from the offset the server named last).
function openLog(session, job) {
  closeLog();
  state.log = { session, job, next: null, attempt: undefined, text: '', timer: null, decoder: new TextDecoder() };
  $('log-title').textContent = 'Log of ' + session + '/' + job;
  $('log-text').textContent = '';
  show($('log'), true);
  if (state.session) renderJobs(state.session);
  pollLog();
}

function closeLog() {
  if (state.log && state.log.timer) clearTimeout(state.log.timer);
  state.log = null;
  show($('log'), false);
}

function logJob() {
  const l = state.log;
  if (!l || !state.session || state.session.id !== l.session) return null;
  return state.session.jobs.find((j) => j.name === l.job) || null;
}

async function pollLog() {
  const l = state.log;
  if (!l) return;
  l.timer = null;
  const base = '/api/jobs/' + encodeURIComponent(l.session) + '/' + encodeURIComponent(l.job) + '/log';
  const url = l.next === null ? base + '?tail=' + LOG_FIRST : base + '?from=' + l.next;
  try {
    const res = await api('GET', url, undefined, true);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (state.log !== l) return; // closed or replaced meanwhile
    const attempt = res.headers.get('X-Aam-Attempt');
    const next = Number(res.headers.get('X-Aam-Next') || NaN);
    if (l.attempt !== undefined && attempt !== l.attempt) {
      // A new attempt: its output starts over at 0 (as `aam logs -f`).
      if (l.attempt && l.attempt !== '0') appendLog(l, '\n[attempt ' + attempt + ']\n');
      l.attempt = attempt;
      l.next = 0;
      l.decoder = new TextDecoder();
      l.timer = setTimeout(pollLog, 0);
      return;
    }
    l.attempt = attempt;
    // Behind where we are: the manager has not caught up yet (a restart,
    // before the worker resent the output); ask again from here.
    if (Number.isFinite(next) && next >= (l.next || 0)) {
      l.next = next;
      appendLog(l, l.decoder.decode(bytes, { stream: true }));
    }
  } catch (e) {
    if (state.log !== l) return;
    $('log-state').textContent = String(e.message || e);
  }
  followLog();
}

function appendLog(l, text) {
  if (!text) return;
  const pre = $('log-text');
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  l.text = (l.text + text).slice(-LOG_KEEP);
  pre.textContent = l.text;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

// Polls again while the job may still write; one last read after it ends.
function followLog() {
  const l = state.log;
  if (!l || l.timer) return;
  const j = logJob();
  const running = !j || LIVE.has(j.status);
  $('log-state').textContent = running ? 'following…' : (j ? j.status : '');
  if (running) l.timer = setTimeout(pollLog, LOG_POLL_MS);
  else if (!l.final) {
    l.final = true;
    l.timer = setTimeout(pollLog, 0);
  }
}

// ---------------------------------------------------------------- workers

async function loadWorkers() {
  try {
    state.workers = await api('GET', '/api/workers');
    renderWorkers();
  } catch (e) {
    notice(e);
  }
}

function renderWorkers() {
  // `running` names the jobs (SESSION/JOB) it runs.
  const rows = state.workers.map((w) => el('tr', { 'data-worker': w.name },
    el('td', { class: 'name' }, w.name),
    el('td', {}, w.address),
    el('td', { class: 'num', title: w.running.join('\n') },
      el('span', { class: 'slots' }, slotBar(w.running.length, w.slots)), ' ' + w.running.length + '/' + w.slots),
    el('td', {}, Object.entries(w.labels || {}).map(([k, v]) => el('span', { class: 'chip' }, k + '=' + v))),
    el('td', { class: 'num', title: w.last_heartbeat }, age(w.last_heartbeat) + ' ago')));
  fill($('workers').tBodies[0], rows);
  show($('no-workers'), state.workers.length === 0);
}

function slotBar(running, slots) {
  const cells = [];
  for (let i = 0; i < Math.min(slots, 16); i++) cells.push(el('i', { class: i < running ? 'busy' : null }));
  return cells;
}

// ---------------------------------------------------------------- live updates

function setLive(on) {
  $('live').textContent = on ? 'live' : 'offline';
  $('live').className = 'live ' + (on ? 'on' : 'off');
}

// Every session change arrives as its summary: the list updates from it,
// and the shown session is re-read. A stream the server closed (a restart,
// a token gone) is reopened after a pause, or the form comes back.
function listen() {
  if (state.events) state.events.close();
  const es = new EventSource('/api/events');
  state.events = es;
  es.onopen = () => {
    setLive(true);
    // Changes made while the stream was down are read once.
    loadSessions().catch(notice);
    if (state.selected) refreshSession();
  };
  es.addEventListener('session', (ev) => {
    let summary;
    try { summary = JSON.parse(ev.data); } catch (_) { return; }
    upsertSession(summary);
    if (summary.id === state.selected) refreshSession();
  });
  es.onerror = () => {
    setLive(false);
    if (es.readyState !== EventSource.CLOSED || state.events !== es) return;
    setTimeout(() => {
      if (state.events !== es) return;
      // Still signed in? api() shows the form on a 401.
      loadSessions().then(listen, notice);
    }, 3000);
  };
}

// ---------------------------------------------------------------- start

async function start() {
  try {
    await loadSessions();
  } catch (e) {
    if (!(e instanceof Unauthorized)) {
      show($('login'), true);
      $('login-error').textContent = 'Cannot reach the manager: ' + e.message;
      show($('login-error'), true);
    }
    return;
  }
  show($('login'), false);
  show($('app'), true);
  show($('logout'), true);
  listen();
  loadWorkers();
  showSession(location.hash.slice(1));
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', signIn);
  $('logout').addEventListener('click', signOut);
  $('log-close').addEventListener('click', () => { closeLog(); if (state.session) renderJobs(state.session); });
  window.addEventListener('hashchange', () => showSession(location.hash.slice(1)));
  // Ages and running durations move without events; workers have none.
  setInterval(() => {
    if ($('app').hidden) return;
    renderSessions();
    if (state.session) renderJobs(state.session);
  }, 5000);
  setInterval(() => { if (!$('app').hidden) loadWorkers(); }, WORKERS_POLL_MS);
  start();
});
