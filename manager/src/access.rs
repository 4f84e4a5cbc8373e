//! Who may do what: the roles a token has, the action each request is, and
//! the one permission check the TCP handshake, client connections and the
//! HTTP API all call. Pure: no actor, no I/O.

use aam_protocol::messages::ClientRequest;
use aam_protocol::spec::BatchSpec;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path};

/// A role a token can have (`[tokens.NAME] role = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every client request.
    Admin,
    /// Submit, cancel, approve, reject, retry, continue, and read.
    Submit,
    /// Like `submit`, but its jobs may only run configured agents.
    Agent,
    /// Status, results, logs, watch, sessions, workers, agents, diffs.
    Read,
    /// Registering as a worker, nothing else.
    Worker,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Submit,
        Role::Agent,
        Role::Read,
        Role::Worker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Submit => "submit",
            Role::Agent => "agent",
            Role::Read => "read",
            Role::Worker => "worker",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// The roles of one token (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant(BTreeSet<Role>);

impl Grant {
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Grant {
        Grant(roles.into_iter().collect())
    }

    /// The main `token`, and tokens of the old `NAME = "TOKEN"` form: as
    /// they were before roles, everything.
    pub fn admin_and_worker() -> Grant {
        Grant::new([Role::Admin, Role::Worker])
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// May it do `action`?
    pub fn allows(&self, action: Action) -> bool {
        self.0.iter().any(|&role| role_allows(role, action))
    }

    /// Its jobs may only run configured agents: it may submit only as `agent`.
    pub fn agents_only(&self) -> bool {
        self.has(Role::Agent) && !self.has(Role::Submit) && !self.has(Role::Admin)
    }
}

impl fmt::Display for Grant {
    /// `admin`, or `admin+worker` for several.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join("+"))
    }
}

/// Who is asking: the token's name, roles and quotas as they were when
/// the connection (or HTTP request) authenticated, and the peer's address.
/// Never the token itself.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub grant: Grant,
    pub quotas: crate::tokens::Quotas,
    pub peer: String,
}

impl Identity {
    /// The identity of a token found in the set, seen from `peer`.
    pub fn of(entry: &crate::tokens::Entry, peer: impl ToString) -> Identity {
        Identity {
            name: entry.name.clone(),
            grant: entry.config.grant.clone(),
            quotas: entry.config.quotas,
            peer: peer.to_string(),
        }
    }
}

/// What a request does, as far as permissions (and the audit log) go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A read, by its name (`status`, `logs`, ...).
    Read(&'static str),
    Submit,
    Cancel,
    Approve,
    Reject,
    Retry,
    Continue,
    /// `aam say` to a running agent.
    Say,
    /// `aam allow` / `aam deny` of a permission request.
    AllowTool,
    DenyTool,
    Gc,
    Audit,
    /// Registering as a worker (the handshake's `Role::Worker`).
    Register,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Read(name) => name,
            Action::Submit => "submit",
            Action::Cancel => "cancel",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Retry => "retry",
            Action::Continue => "continue",
            Action::Say => "say",
            Action::AllowTool => "allow",
            Action::DenyTool => "deny",
            Action::Gc => "gc",
            Action::Audit => "audit",
            Action::Register => "register",
        }
    }

    /// Changes something, so the audit log records it even when allowed.
    pub fn mutates(self) -> bool {
        !matches!(self, Action::Read(_) | Action::Audit)
    }
}

/// The role → allowed actions table.
pub fn role_allows(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Admin => action != Register,
        Role::Submit | Role::Agent => matches!(
            action,
            Read(_)
                | Submit
                | Cancel
                | Approve
                | Reject
                | Retry
                | Continue
                | Say
                | AllowTool
                | DenyTool
        ),
        Role::Read => matches!(action, Read(_)),
        Role::Worker => action == Register,
    }
}

/// The action a client request is.
pub fn action_of(request: &ClientRequest) -> Action {
    match request {
        ClientRequest::Submit { .. } | ClientRequest::SubmitPart { .. } => Action::Submit,
        ClientRequest::ListSessions { .. } => Action::Read("sessions"),
        ClientRequest::Session { .. } => Action::Read("status"),
        ClientRequest::Logs { .. } => Action::Read("logs"),
        ClientRequest::Workers => Action::Read("workers"),
        ClientRequest::Resources => Action::Read("resources"),
        ClientRequest::Accounts => Action::Read("accounts"),
        ClientRequest::Providers => Action::Read("providers"),
        ClientRequest::Watch { .. } => Action::Read("watch"),
        ClientRequest::Agents => Action::Read("agents"),
        ClientRequest::Patch { .. } => Action::Read("diff"),
        ClientRequest::Cancel { .. } => Action::Cancel,
        ClientRequest::Gc { .. } => Action::Gc,
        ClientRequest::Retry { .. } => Action::Retry,
        ClientRequest::Decide { approve: true, .. } => Action::Approve,
        ClientRequest::Decide { approve: false, .. } => Action::Reject,
        ClientRequest::Continue { .. } => Action::Continue,
        ClientRequest::Say { .. } => Action::Say,
        ClientRequest::DecidePermission { allow: true, .. } => Action::AllowTool,
        ClientRequest::DecidePermission { allow: false, .. } => Action::DenyTool,
        ClientRequest::Audit { .. } => Action::Audit,
    }
}

/// What a request acted on, for the audit log: `s42`, `s42/build`, or empty.
pub fn target_of(request: &ClientRequest) -> String {
    match request {
        ClientRequest::Session { session, .. }
        | ClientRequest::Watch { session }
        | ClientRequest::Retry { session }
        | ClientRequest::Say {
            session, job: None, ..
        }
        | ClientRequest::Cancel {
            session, job: None, ..
        } => session.to_string(),
        ClientRequest::Logs { session, job, .. }
        | ClientRequest::Patch { session, job }
        | ClientRequest::Continue { session, job, .. }
        | ClientRequest::Decide { session, job, .. }
        | ClientRequest::DecidePermission { session, job, .. }
        | ClientRequest::Say {
            session,
            job: Some(job),
            ..
        }
        | ClientRequest::Cancel {
            session,
            job: Some(job),
            ..
        } => format!("{session}/{job}"),
        ClientRequest::Submit { batch, .. } => batch.name.clone(),
        _ => String::new(),
    }
}

/// The refusal of a request beyond a token's role; its text is what every
/// client (CLI, HTTP, MCP) shows.
pub fn denied(name: &str, grant: &Grant) -> String {
    format!("permission denied: token {name} has role {grant}")
}

/// Checks `request` against the token `name` with `grant`: its role, and
/// for an agent-only token what its batch runs. The error is the message.
pub fn check(name: &str, grant: &Grant, request: &ClientRequest) -> Result<(), String> {
    if !grant.allows(action_of(request)) {
        return Err(denied(name, grant));
    }
    if let ClientRequest::Submit { batch, .. } = request {
        if grant.agents_only() {
            agents_only(batch).map_err(|why| format!("{}: {why}", denied(name, grant)))?;
        }
    }
    Ok(())
}

/// An agent token's batch may only run configured agents (and gates): no
/// `command`, no `env`, no `verify` command, and no `workdir` outside the
/// worker's own directory (absolute or with `..`). The first problem found.
pub fn agents_only(batch: &BatchSpec) -> Result<(), String> {
    for job in &batch.jobs {
        let name = &job.name;
        if job.command.is_some() {
            return Err(format!(
                "job {name} sets `command`; this token may only run configured agents"
            ));
        }
        if job.agent.is_none() && !job.gate {
            return Err(format!(
                "job {name} names no `agent`; this token may only run configured agents"
            ));
        }
        if !job.env.is_empty() {
            return Err(format!("job {name} sets `env`; this token may not"));
        }
        if job.verify.is_some() {
            return Err(format!(
                "job {name} sets `verify` (a command); this token may not"
            ));
        }
        if let Some(dir) = &job.workdir {
            if escapes(dir) {
                return Err(format!(
                    "job {name}: workdir {dir:?} is absolute or climbs out with `..`; this token may \
                     only use a relative workdir inside the worker's directory"
                ));
            }
        }
    }
    Ok(())
}

/// Absolute, home-relative, or with a `..` anywhere.
fn escapes(dir: &str) -> bool {
    let path = Path::new(dir);
    dir.starts_with('~')
        || path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
}

#[cfg(test)]
mod tests;
