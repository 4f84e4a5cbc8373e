//! Every message exchanged between cli, manager and worker.
//!
//! A connection starts with a `Handshake` from the peer and a
//! `HandshakeReply` from the manager; after that a client speaks
//! `ClientRequest`/`ClientResponse` and a worker speaks
//! `WorkerToManager`/`ManagerToWorker`.

use crate::agent_run::{AgentFormat, AgentRun, LimitPause};
use crate::ids::{JobKey, SessionId};
use crate::model::{
    ExitInfo, JobStatus, SessionStatus, SessionSummary, SessionView, StopCause, TeardownReceipt,
    WorkerView,
};
use crate::spec::{BatchSpec, SpecErrors};
use crate::worktree::{JobChange, WorktreeOrder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// First bytes of every handshake, so a stray peer is told apart from an old aam.
pub const MAGIC: [u8; 4] = *b"AAM\x01";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Worker,
    Client,
}

/// The first frame of every connection. Its `Debug` hides the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Handshake {
    pub magic: [u8; 4],
    pub version: u32,
    pub role: Role,
    pub token: String,
}

impl Handshake {
    pub fn new(role: Role, token: impl Into<String>) -> Self {
        Handshake {
            magic: MAGIC,
            version: crate::PROTOCOL_VERSION,
            role,
            token: token.into(),
        }
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("magic", &self.magic)
            .field("version", &self.version)
            .field("role", &self.role)
            .field("token", &crate::secret::REDACTED)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HandshakeReply {
    Accepted { manager_version: String },
    Rejected { reason: String },
}

/// How much output a query should carry per job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputWanted {
    None,
    /// The last N bytes.
    Tail(u32),
    All,
}

/// A page of a session's jobs: at most `limit` of them, from the one at
/// index `offset` (in the batch's order) on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPage {
    pub offset: u32,
    pub limit: u32,
}

/// Most jobs a part's array is sized for before they are read.
const PART_PREALLOC: usize = 65_536;

/// A part's jobs in an array sized from the count the frame gives (up to
/// `PART_PREALLOC`): serde's own bound, 1 MiB of elements (1,424 jobs),
/// grew a 10,000-job part's array three times, copying it and faulting in
/// twice its size. The count is only trusted that far: a frame that holds
/// fewer jobs than it says fails to decode.
fn part_jobs<'de, D>(deserializer: D) -> Result<Vec<crate::spec::JobSpec>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Jobs;
    impl<'de> serde::de::Visitor<'de> for Jobs {
        type Value = Vec<crate::spec::JobSpec>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence of jobs")
        }

        fn visit_seq<A>(self, mut seq: A) -> Result<Self::Value, A::Error>
        where
            A: serde::de::SeqAccess<'de>,
        {
            let hint = seq.size_hint().unwrap_or(0).min(PART_PREALLOC);
            let mut jobs = Vec::with_capacity(hint);
            while let Some(job) = seq.next_element()? {
                jobs.push(job);
            }
            Ok(jobs)
        }
    }
    deserializer.deserialize_seq(Jobs)
}

/// A client's request; each gets one response, except `Watch`, which gets a
/// `Progress` on every change until the session ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Submits a batch; jobs sent before it in `SubmitPart`s on the same
    /// connection come first, in the order sent.
    Submit {
        batch: BatchSpec,
        /// A key already used returns that session instead of a new one.
        idempotency_key: Option<String>,
    },
    /// Jobs of a batch too big for one frame, held by the connection until
    /// its `Submit` (answered `PartReceived`). Nothing is stored before the
    /// `Submit`; a connection that closes first drops them.
    SubmitPart {
        #[serde(deserialize_with = "part_jobs")]
        jobs: Vec<crate::spec::JobSpec>,
    },
    /// The sessions kept, newest first: `limit` of them (0: all) after
    /// the newest `offset`; the answer counts them all.
    ListSessions {
        limit: u32,
        offset: u32,
    },
    Session {
        session: SessionId,
        output: OutputWanted,
        /// Only these of its jobs (counts and totals are always whole).
        page: Option<JobPage>,
    },
    /// A job's output from byte offset `from` on (0: all of it).
    Logs {
        session: SessionId,
        job: String,
        from: u64,
    },
    Workers,
    /// Shared resources: capacity, in use and holders (issue 15).
    Resources,
    /// Accounts: paused until when, running jobs, cost (issue 16).
    Accounts,
    /// Providers of workers on demand: launching, connected, last error.
    Providers,
    Watch {
        session: SessionId,
    },
    /// Cancel a whole session, or one job of it. With `wait`, the answer
    /// comes once every running job it stopped has ended.
    Cancel {
        session: SessionId,
        job: Option<String>,
        grace_ms: Option<u64>,
        wait: bool,
    },
    /// Every agent jobs can name, with where it comes from.
    Agents,
    /// Remove finished sessions older than `older_than_ms` (default: the
    /// configured retention) with their outputs.
    Gc {
        older_than_ms: Option<u64>,
    },
    /// Run the failed, timed out, cancelled and skipped jobs of a session
    /// again, keeping what succeeded.
    Retry {
        session: SessionId,
    },
    /// Approve (or reject) a gate that awaits a decision.
    Decide {
        session: SessionId,
        job: String,
        approve: bool,
        comment: Option<String>,
    },
    /// Say `text` to the running agent `job` of `session`, or to every
    /// running agent of the session that takes input (answered `Said`).
    Say {
        session: SessionId,
        job: Option<String>,
        text: String,
    },
    /// Answer a permission request of the running agent `job` (`request`:
    /// its id; none: the only open one), answered `PermissionDecided`.
    /// `always`: allow the same tool for the rest of the job.
    DecidePermission {
        session: SessionId,
        job: String,
        request: Option<u32>,
        allow: bool,
        always: bool,
        message: Option<String>,
    },
    /// A new session of one job that resumes the conversation of an agent
    /// job's last attempt with `prompt` (answered `Submitted`).
    Continue {
        session: SessionId,
        job: String,
        prompt: String,
    },
    /// A worktree job's patch (answered `Patch`).
    Patch {
        session: SessionId,
        job: String,
    },
    /// The audit log from `since_ms` on (answered `Audit`); admin only.
    Audit {
        since_ms: Option<u64>,
    },
}

/// What kind of failure an `Error` response reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request was malformed or names something invalid.
    BadRequest,
    NotFound,
    /// The request does not apply to the session or job as it is now (not
    /// a gate awaiting a decision, nothing to retry); HTTP's 409.
    Conflict,
    /// The manager could not do it (store failure, shutting down).
    Internal,
    /// The token's role does not allow it (HTTP's 403).
    PermissionDenied,
    /// A quota of the token (or of the peer) is reached (HTTP's 429).
    QuotaExceeded,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    Submitted {
        session: SessionId,
        jobs: u32,
        /// The idempotency key was used before: this is that session.
        existing: bool,
        /// How long the session should take, from earlier runs.
        estimate: crate::model::Estimate,
    },
    Invalid(SpecErrors),
    /// A `SubmitPart` is held: `jobs` jobs so far on this connection.
    PartReceived {
        jobs: u32,
    },
    Sessions {
        /// The page asked for, oldest first.
        sessions: Vec<SessionSummary>,
        /// How many sessions the manager keeps, the page's among them.
        total: u32,
        /// Limit groups whose jobs are held until a usage limit resets.
        paused: Vec<LimitPause>,
        /// Running jobs that wait for someone, needing input first.
        waiting: Vec<crate::model::WaitingJob>,
    },
    Session(SessionView),
    Logs {
        status: JobStatus,
        /// The attempt the output belongs to (the current one).
        attempt: u32,
        #[serde(with = "serde_bytes")]
        output: Vec<u8>,
        output_bytes: u64,
        /// How to read the output as a transcript (an agent job's format).
        format: Option<AgentFormat>,
    },
    Workers(Vec<WorkerView>),
    Resources(Vec<crate::resource::ResourceView>),
    Accounts(Vec<crate::account::AccountView>),
    Providers(Vec<crate::model::ProviderView>),
    Progress(SessionSummary),
    Decided {
        status: JobStatus,
    },
    Retried {
        jobs: Vec<String>,
    },
    Collected {
        sessions: Vec<SessionId>,
        jobs: u64,
        output_bytes: u64,
    },
    Agents {
        agents: Vec<AgentInfo>,
        /// Definition files that could not be loaded: (path, why).
        problems: Vec<(String, String)>,
    },
    Cancelled {
        /// Jobs that had not started: cancelled at once.
        cancelled: Vec<String>,
        /// Running jobs that were stopped (or are being, without `wait`).
        stopped: Vec<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// A worktree job's change: its patch (`git format-patch` of its
    /// commit; cut past the manager's limit, with a marker).
    Patch {
        change: JobChange,
        #[serde(with = "serde_bytes")]
        patch: Vec<u8>,
    },
    /// The jobs a message was said to (stored, on its way to their agents).
    Said {
        jobs: Vec<String>,
    },
    /// A permission request was answered (stored, on its way to the agent).
    PermissionDecided {
        request: u32,
        summary: String,
    },
    /// The audit log, oldest first; `truncated`: older records were left out.
    Audit {
        records: Vec<crate::audit::AuditRecord>,
        truncated: bool,
    },
}

/// An agent as `aam agents` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    /// "config", or the definition file it was loaded from.
    pub source: String,
    pub description: Option<String>,
    pub model: Option<String>,
    pub tools: Option<String>,
    pub command: Vec<String>,
}

/// A job as a worker receives it: everything needed to run it. Its
/// `Debug` hides secrets (`secret::debug_redacted`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub job: JobKey,
    pub attempt: u32,
    pub session_name: String,
    pub job_name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Variables (names only) the worker sets from its own environment:
    /// its agent's `secret_env`, and `NAME=SOURCE` for its account's (the
    /// job's NAME from the worker's SOURCE). One the worker lacks fails
    /// the job.
    pub secret_env: Vec<String>,
    pub workdir: Option<String>,
    pub timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub grace_ms: u64,
    /// For an agent job: how the worker reads its output.
    pub format: Option<AgentFormat>,
    /// For a worktree job: the worktree and branch to set up, and how to
    /// end it.
    pub worktree: Option<Box<WorktreeOrder>>,
    /// Its dependencies as they ended, for `AAM_INPUTS` / `AAM_INPUTS_MD`.
    pub inputs: Vec<InputRecord>,
    /// TCP ports the worker reserves for the attempt (`AAM_PORT`, `AAM_PORTS`).
    #[serde(default)]
    pub ports: u8,
    /// For an agent that takes input: its prompt (the first line on its
    /// stdin), its linger, and the messages said to it not yet delivered.
    pub input: Option<Box<crate::say::AgentInput>>,
    /// Its agent relays its permission prompts to the manager
    /// (`permissions = "relay"`).
    pub permission_relay: bool,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::secret::debug_redacted("Assignment", self, f)
    }
}

impl Assignment {
    /// The attempt this assignment starts: what every report about it names.
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef {
            job: self.job,
            attempt: self.attempt,
        }
    }
}

/// One dependency of a job, as the job gets to read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    pub name: String,
    pub when: crate::spec::When,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The tail of its output (capped).
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    /// Bytes it printed in all.
    pub output_bytes: u64,
    /// An agent job's final answer, shown instead of its raw output.
    pub answer: Option<String>,
    /// The error its agent reported, if any.
    pub agent_error: Option<String>,
    /// A worktree dependency's change (branch, commit, diffstat).
    pub change: Option<JobChange>,
}

/// How and why aam stopped an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    pub cause: StopCause,
    pub receipt: TeardownReceipt,
}

/// One attempt of a job: every report about a running job names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    pub job: JobKey,
    pub attempt: u32,
}

/// How many assignments beyond its slots a worker queues (`--prefetch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prefetch {
    /// As many as its slots while its recent jobs are short (the manager
    /// decides, from the durations the worker reports), none otherwise:
    /// short jobs start without a round trip, long ones never wait behind
    /// another on a busy worker.
    #[default]
    Auto,
    /// Always this many.
    Fixed(u32),
}

impl std::fmt::Display for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefetch::Auto => f.write_str("auto"),
            Prefetch::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Prefetch {
    type Err = String;

    /// `auto`, or a number of assignments.
    fn from_str(s: &str) -> Result<Prefetch, String> {
        match s {
            "auto" => Ok(Prefetch::Auto),
            n => n
                .parse()
                .map(Prefetch::Fixed)
                .map_err(|_| format!("'{n}' is neither 'auto' nor a number of assignments")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerToManager {
    /// First message after the handshake; `assigned` lists the attempts it
    /// still holds across a reconnect (running, waiting for a slot, or ended
    /// and not yet acknowledged).
    Register {
        name: String,
        /// Random, drawn once per worker process: a registration under a
        /// name already connected with the same instance is that process
        /// back on a new connection (its old one is dead), and replaces it.
        instance: u64,
        slots: u32,
        /// Assignments it accepts beyond its slots, queued locally so the
        /// next job starts without a round trip to the manager.
        prefetch: Prefetch,
        labels: BTreeMap<String, String>,
        assigned: Vec<AttemptRef>,
    },
    Heartbeat,
    /// The worker is shutting down: assign it nothing more.
    Draining,
    /// The worker has had nothing to run for its idle timeout and would
    /// leave (`--once-idle`, issue 17): the manager grants it only if it
    /// has assigned it nothing, and then assigns it nothing more, in the
    /// same step (`ManagerToWorker::Retire`).
    RetireIfIdle,
    Output {
        attempt: AttemptRef,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Sent until the manager answers `Ack` (again after a reconnect).
    Finished {
        attempt: AttemptRef,
        exit: ExitInfo,
        /// Set when the worker stopped it (cancel, timeout, shutdown).
        stopped: Option<Stopped>,
        /// For an agent job: what its agent did, read to the end.
        agent: Option<AgentRun>,
        /// For a worktree job: what it changed, committed on its branch.
        change: Option<Box<JobChange>>,
        /// That change's patch (cut at the order's `patch_cap`).
        #[serde(with = "serde_bytes")]
        patch: Vec<u8>,
        /// For a worktree job: its workspace's setup and teardown.
        workspace: Option<crate::worktree::WorkspaceSteps>,
    },
    /// An agent that takes input: the messages given to it so far (the
    /// highest `seq`), and whether it answered and waits for more.
    InputState {
        attempt: AttemptRef,
        delivered: u32,
        waiting: bool,
    },
    /// The attempt's agent asks to run a tool (`ask`: this worker's number
    /// for it; asked again after a reconnect, the same number).
    PermissionAsked {
        attempt: AttemptRef,
        ask: u64,
        tool: String,
        /// The tool's input, JSON text.
        input: String,
    },
    /// A worktree job could not be set up (its workdir is not in a git
    /// repository, its base does not exist): it fails with this reason.
    WorktreeFailed {
        attempt: AttemptRef,
        reason: String,
    },
    /// What an agent job's agent did so far (sent as it changes, at most
    /// a few times a second).
    AgentUpdate {
        attempt: AttemptRef,
        run: AgentRun,
    },
    /// Everything an attempt printed so far (as kept: head and tail), sent
    /// after a reconnect so a restarted manager loses none of it.
    OutputSync {
        attempt: AttemptRef,
        capture: crate::output::OutputCapture,
    },
    /// A `::progress:: N message` line of the job's output.
    Progress {
        attempt: AttemptRef,
        percent: u8,
        message: Option<String>,
    },
    /// The job could not be started at all (no such program, bad workdir).
    SpawnFailed {
        attempt: AttemptRef,
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ManagerToWorker {
    /// The worker may start; it should drop the connection when it hears
    /// nothing (not even a `Pong`) for `lease_ms`.
    Registered {
        heartbeat_ms: u64,
        lease_ms: u64,
        /// Output bytes to keep per job (head and tail).
        output_cap: u64,
    },
    /// Answer to a heartbeat, so the worker can tell a silent manager.
    Pong,
    /// The end of this attempt is durable: the worker may forget it.
    Ack(AttemptRef),
    Assign(Assignment),
    /// Stop this attempt: SIGTERM to all its processes, SIGKILL after
    /// `grace_ms`; then report `Finished` with a receipt.
    Stop {
        attempt: AttemptRef,
        cause: StopCause,
        grace_ms: u64,
    },
    /// The registration was refused; the worker should not retry as is.
    Refused {
        reason: String,
    },
    /// The registration cannot be taken now (its name is connected from
    /// elsewhere): the worker dials again after a backoff, its jobs running on.
    RetryLater {
        reason: String,
    },
    /// Give this message to the attempt's agent (on its stdin, after those
    /// before it; one already given is ignored).
    Say {
        attempt: AttemptRef,
        message: crate::say::SaidMessage,
    },
    /// The answer to the attempt's permission ask `ask`.
    PermissionDecided {
        attempt: AttemptRef,
        ask: u64,
        allow: bool,
        message: String,
    },
    /// The answer to `RetireIfIdle`: `granted`, the worker may exit (it
    /// gets no job more); else a job was assigned to it meanwhile.
    Retire {
        granted: bool,
    },
    /// Delete these branches of this repository (`aam gc` with
    /// `gc_branches`); a branch checked out somewhere is left.
    DeleteBranches {
        repo: String,
        branches: Vec<String>,
    },
}

/// A session's progress, for `Watch` subscribers.
pub fn is_final(status: SessionStatus) -> bool {
    status.is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn messages_round_trip_through_the_codec() {
        let h = Handshake::new(Role::Worker, "secret");
        assert_eq!(decode::<Handshake>(&encode(&h).unwrap()).unwrap(), h);
        let out = WorkerToManager::Output {
            attempt: AttemptRef {
                job: JobKey {
                    session: SessionId(3),
                    index: 4,
                },
                attempt: 1,
            },
            data: vec![0, 1, 2, 255],
        };
        assert_eq!(
            decode::<WorkerToManager>(&encode(&out).unwrap()).unwrap(),
            out
        );
    }

    #[test]
    fn a_part_s_jobs_round_trip_and_a_count_that_lies_is_refused() {
        let job = |i: usize| crate::spec::JobSpec {
            name: format!("j{i}"),
            command: Some(vec!["true".into()]),
            ..Default::default()
        };
        let part = ClientRequest::SubmitPart {
            jobs: (0..3_000).map(job).collect(),
        };
        let bytes = encode(&part).unwrap();
        assert_eq!(decode::<ClientRequest>(&bytes).unwrap(), part);
        // Two jobs whose count says 2^40: an error, not an array that size.
        let two = encode(&ClientRequest::SubmitPart {
            jobs: vec![job(0), job(1)],
        })
        .unwrap();
        let with_count = |count: [u8; 8]| {
            let mut bytes = two[..1].to_vec();
            bytes.push(253); // a varint u64 follows
            bytes.extend(count);
            bytes.extend(&two[2..]);
            decode::<ClientRequest>(&bytes)
        };
        assert!(with_count(2u64.to_le_bytes()).is_ok());
        assert!(with_count((1u64 << 40).to_le_bytes()).is_err());
    }

    #[test]
    fn bytes_are_encoded_compactly() {
        let out = WorkerToManager::Output {
            attempt: AttemptRef {
                job: JobKey {
                    session: SessionId(3),
                    index: 4,
                },
                attempt: 1,
            },
            data: vec![200; 10_000],
        };
        assert!(encode(&out).unwrap().len() < 10_020);
    }
}
