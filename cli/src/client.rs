//! A connection to the manager as a client, and one typed method per
//! request: each sends one `ClientRequest` and returns what the expected
//! answer carries. An `Error` answer, a lost connection and an answer of
//! the wrong kind all become errors here, with their exit codes. A batch
//! goes in `submit`.

use crate::exit::{bad_input, is_lost, manager_failed, unreachable, Lost};
use aam_protocol::agent_run::{AgentFormat, LimitPause};
use aam_protocol::codec::MAX_FRAME_CEILING;
use aam_protocol::dial::{connect_pipelined, read_reply, ConnectError, DialCodec, Incoming};
use aam_protocol::messages::{
    AgentInfo, ClientRequest, ClientResponse, ErrorKind, JobPage, OutputWanted, Role,
};
use aam_protocol::model::{Estimate, JobStatus, SessionSummary, SessionView, WorkerView};
use aam_protocol::tls::{ClientStream, ClientTls};
use aam_protocol::worktree::JobChange;
use aam_protocol::SessionId;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_util::codec::Framed;

/// How long to keep trying to reach a manager that went away (a restart
/// takes seconds; a manager that stays away is an error, exit 3).
pub const RECONNECT_FOR: Duration = Duration::from_secs(120);

type Connection = Framed<ClientStream, DialCodec<ClientResponse, ClientRequest>>;

/// One authenticated connection to the manager.
pub struct Client {
    addr: String,
    token: String,
    tls: ClientTls,
    framed: Connection,
    /// Requests ride over a lost connection (a manager restart) by
    /// reconnecting and asking again; see `reconnect_when_lost`.
    reconnects: bool,
}

/// Connects and sends the handshake; its reply is read before the first
/// answer (`Client::next_frame`), so the first request goes out without
/// waiting for it. Answers may be as large as the manager's configured
/// frame limit.
async fn dial(addr: &str, token: &str, tls: &ClientTls) -> Result<Connection, ConnectError> {
    connect_pipelined(addr, Role::Client, token, MAX_FRAME_CEILING, tls).await
}

fn connect_error(e: ConnectError) -> anyhow::Error {
    match e {
        ConnectError::Rejected { addr, reason } => {
            unreachable(format!("manager at {addr} refused us: {reason}"))
        }
        other => unreachable(other.to_string()),
    }
}

impl Client {
    pub async fn connect(addr: &str, token: &str, tls: ClientTls) -> anyhow::Result<Client> {
        let framed = dial(addr, token, &tls).await.map_err(connect_error)?;
        Ok(Client {
            addr: addr.to_string(),
            token: token.to_string(),
            tls,
            framed,
            reconnects: false,
        })
    }

    /// Makes every request (but `watch`, whose caller reconnects itself)
    /// reconnect and ask again when the connection is lost: for commands
    /// that follow a session, which should outlive a manager restart.
    pub fn reconnect_when_lost(mut self) -> Client {
        self.reconnects = true;
        self
    }

    /// Dials again after a lost connection (a manager restart), with
    /// backoff, until it works or `deadline` passes. A refusal (bad token)
    /// is not retried.
    pub async fn reconnect(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(50);
        loop {
            // Here the reply is waited for, so that a connection lost
            // before it is one more attempt, after the backoff.
            let dialed = match dial(&self.addr, &self.token, &self.tls).await {
                Ok(mut framed) => read_reply(&mut framed, &self.addr).await.map(|()| framed),
                Err(e) => Err(e),
            };
            match dialed {
                Ok(framed) => {
                    self.framed = framed;
                    return Ok(());
                }
                Err(e @ (ConnectError::Rejected { .. } | ConnectError::Untrusted { .. })) => {
                    return Err(connect_error(e))
                }
                Err(e) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() + backoff > d) {
                        return Err(connect_error(e));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn send(&mut self, request: ClientRequest) -> anyhow::Result<()> {
        let Err(e) = self.framed.send(request).await else {
            return Ok(());
        };
        let lost = Lost(format!("sending to the manager at {}: {e}", self.addr)).into();
        if self.framed.codec().replied() {
            return Err(lost);
        }
        // A manager that refused the handshake closes the connection: its
        // reason, already on the way, says more than the failed send.
        match tokio::time::timeout(Duration::from_secs(1), self.next_frame()).await {
            Ok(Err(refused)) if !is_lost(&refused) => Err(refused),
            _ => Err(lost),
        }
    }

    /// The next answer; errors the manager reports become exit codes.
    async fn next(&mut self) -> anyhow::Result<ClientResponse> {
        match self.next_frame().await? {
            ClientResponse::Error { kind, message } => Err(match kind {
                ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::Conflict => {
                    bad_input(message)
                }
                // e.g. "the manager could not store this: DISK FULL (...)"
                ErrorKind::Internal => manager_failed(message),
                // Beyond the token's role, or a quota: like a token the
                // manager refused, exit 3 with the manager's words.
                ErrorKind::PermissionDenied | ErrorKind::QuotaExceeded => unreachable(message),
            }),
            response => Ok(response),
        }
    }

    /// The next frame from the manager, the handshake's reply read first
    /// while it has not been: a refusal, or a connection lost before the
    /// reply, is exit 3 as a failed connect is (never `Lost`: a client
    /// that reconnects would dial again at once, and forever).
    async fn next_frame(&mut self) -> anyhow::Result<ClientResponse> {
        if !self.framed.codec().replied() {
            read_reply(&mut self.framed, &self.addr)
                .await
                .map_err(connect_error)?;
        }
        match self.framed.next().await {
            Some(Ok(Incoming::Frame(answer))) => Ok(answer),
            Some(Ok(Incoming::Reply(_))) => Err(anyhow::anyhow!(
                "a second handshake reply from the manager at {}",
                self.addr
            )),
            Some(Err(e)) => {
                Err(Lost(format!("reading from the manager at {}: {e}", self.addr)).into())
            }
            None => Err(Lost(format!(
                "the manager at {} closed the connection",
                self.addr
            ))
            .into()),
        }
    }

    /// One request, one answer.
    async fn exchange(&mut self, request: ClientRequest) -> anyhow::Result<ClientResponse> {
        self.send(request).await?;
        self.next().await
    }

    /// Sends a request and reads its answer, reconnecting (each time for
    /// up to `RECONNECT_FOR`) while the connection is lost if asked to.
    async fn call(&mut self, request: ClientRequest) -> anyhow::Result<ClientResponse> {
        if !self.reconnects {
            return self.exchange(request).await;
        }
        loop {
            match self.exchange(request.clone()).await {
                Err(e) if is_lost(&e) => {
                    stderr_line!("aam: {e}; reconnecting");
                    let budget = tokio::time::Instant::now() + RECONNECT_FOR;
                    self.reconnect(Some(budget)).await?;
                }
                other => return other,
            }
        }
    }
}

/// Matches an answer against the kinds of answer a request expects, each
/// giving the method's result; any other kind is a protocol bug, not a user
/// error (exit 1). (A macro, so each method names only what it expects.)
macro_rules! expect {
    ($answer:expr, $($kind:pat => $result:expr),+ $(,)?) => {
        match $answer {
            $($kind => $result,)+
            other => Err(anyhow::anyhow!("unexpected answer from the manager: {other:?}")),
        }
    };
}

// After `expect!`, which it uses.
mod submit;

pub use submit::PART_BYTES;

/// A submission the manager stored.
#[derive(Debug)]
pub struct Submitted {
    pub session: SessionId,
    pub jobs: u32,
    /// The idempotency key was used before: this is that session.
    pub existing: bool,
    /// How long the session should take, from earlier runs.
    pub estimate: Estimate,
}

/// A page of the newest sessions, how many there are, and the limit
/// groups paused on a usage limit.
pub struct SessionList {
    /// A page of them, oldest first.
    pub sessions: Vec<SessionSummary>,
    /// How many the manager keeps.
    pub total: u32,
    pub paused: Vec<LimitPause>,
    /// Running jobs waiting for someone, needing a decision first.
    pub waiting: Vec<aam_protocol::model::WaitingJob>,
}

impl Submitted {
    /// A `Submitted` answer (to a submission or a follow-up), or the
    /// answer that is not one. (That answer is matched at once by the
    /// caller, never carried up: its size does not matter.)
    #[allow(clippy::result_large_err)]
    fn from_answer(answer: ClientResponse) -> Result<Submitted, ClientResponse> {
        match answer {
            ClientResponse::Submitted {
                session,
                jobs,
                existing,
                estimate,
            } => Ok(Submitted {
                session,
                jobs,
                existing,
                estimate,
            }),
            other => Err(other),
        }
    }
}

/// A job's output from the offset asked for.
pub struct LogChunk {
    pub status: JobStatus,
    /// The attempt the output belongs to (the current one).
    pub attempt: u32,
    pub output: Vec<u8>,
    /// How many bytes of output there are up to the end of this chunk.
    pub output_bytes: u64,
    /// An agent job's output format (how to render it as a transcript).
    pub format: Option<AgentFormat>,
}

/// What a cancel ended.
pub struct Cancelled {
    /// Jobs that had not started: cancelled at once.
    pub cancelled: Vec<String>,
    /// Running jobs that were stopped (or are being, without waiting).
    pub stopped: Vec<String>,
}

/// What a garbage collection removed.
pub struct Collected {
    pub sessions: Vec<SessionId>,
    pub jobs: u64,
    pub output_bytes: u64,
}

/// A worktree job's change and its patch, as the manager keeps them.
pub struct Patch {
    pub change: JobChange,
    /// `git format-patch` of the job's commit; cut when `change.patch_cut`.
    pub patch: Vec<u8>,
}

/// Every agent jobs can name.
pub struct Agents {
    pub agents: Vec<AgentInfo>,
    /// Definition files that could not be loaded: (path, why).
    pub problems: Vec<(String, String)>,
}

impl Client {
    /// The newest `limit` sessions (0: all) after the newest `offset`.
    pub async fn sessions(&mut self, limit: u32, offset: u32) -> anyhow::Result<SessionList> {
        expect!(self.call(ClientRequest::ListSessions { limit, offset }).await?,
            ClientResponse::Sessions { sessions, total, paused, waiting } => Ok(SessionList { sessions, total, paused, waiting }))
    }

    /// One session and its jobs, with as much of their output as `output` asks.
    pub async fn session(
        &mut self,
        session: SessionId,
        output: OutputWanted,
    ) -> anyhow::Result<SessionView> {
        self.session_page(session, output, None).await
    }

    /// A session with only the jobs of `page` (its counts are whole).
    pub async fn session_page(
        &mut self,
        session: SessionId,
        output: OutputWanted,
        page: Option<JobPage>,
    ) -> anyhow::Result<SessionView> {
        let request = ClientRequest::Session {
            session,
            output,
            page,
        };
        expect!(self.call(request).await?,
            ClientResponse::Session(view) => Ok(view))
    }

    /// A job's output from byte offset `from` on.
    pub async fn logs(
        &mut self,
        session: SessionId,
        job: &str,
        from: u64,
    ) -> anyhow::Result<LogChunk> {
        let request = ClientRequest::Logs {
            session,
            job: job.to_string(),
            from,
        };
        let answer = self.call(request).await?;
        expect!(answer, ClientResponse::Logs { status, attempt, output, output_bytes, format } => {
            Ok(LogChunk { status, attempt, output, output_bytes, format })
        })
    }

    /// Asks for the session's progress on every change; read each with
    /// `progress`. Never reconnects by itself: the caller watches again.
    pub async fn watch(&mut self, session: SessionId) -> anyhow::Result<()> {
        self.send(ClientRequest::Watch { session }).await
    }

    /// The next progress of the session `watch` asked for.
    pub async fn progress(&mut self) -> anyhow::Result<SessionSummary> {
        expect!(self.next().await?, ClientResponse::Progress(summary) => Ok(summary))
    }

    /// Cancels a session, or one job of it; with `wait`, answers once the
    /// running jobs it stopped have ended.
    pub async fn cancel(
        &mut self,
        session: SessionId,
        job: Option<String>,
        grace_ms: Option<u64>,
        wait: bool,
    ) -> anyhow::Result<Cancelled> {
        let request = ClientRequest::Cancel {
            session,
            job,
            grace_ms,
            wait,
        };
        expect!(self.call(request).await?,
            ClientResponse::Cancelled { cancelled, stopped } => Ok(Cancelled { cancelled, stopped }))
    }

    /// Runs a session's unsuccessful jobs again; the names of those jobs.
    pub async fn retry(&mut self, session: SessionId) -> anyhow::Result<Vec<String>> {
        expect!(self.call(ClientRequest::Retry { session }).await?,
            ClientResponse::Retried { jobs } => Ok(jobs))
    }

    /// Approves (or rejects) a gate; the gate's status after it.
    pub async fn decide(
        &mut self,
        session: SessionId,
        job: &str,
        approve: bool,
        comment: Option<String>,
    ) -> anyhow::Result<JobStatus> {
        let request = ClientRequest::Decide {
            session,
            job: job.to_string(),
            approve,
            comment,
        };
        expect!(self.call(request).await?, ClientResponse::Decided { status } => Ok(status))
    }

    /// Removes finished sessions older than `older_than_ms` (default: the
    /// manager's retention).
    pub async fn gc(&mut self, older_than_ms: Option<u64>) -> anyhow::Result<Collected> {
        let answer = self.call(ClientRequest::Gc { older_than_ms }).await?;
        expect!(answer, ClientResponse::Collected { sessions, jobs, output_bytes } => {
            Ok(Collected { sessions, jobs, output_bytes })
        })
    }

    /// The audit log from `since_ms` on (admin tokens only): the records,
    /// and whether older ones in range were left out.
    pub async fn audit(
        &mut self,
        since_ms: Option<u64>,
    ) -> anyhow::Result<(Vec<aam_protocol::audit::AuditRecord>, bool)> {
        let answer = self.call(ClientRequest::Audit { since_ms }).await?;
        expect!(answer, ClientResponse::Audit { records, truncated } => Ok((records, truncated)))
    }

    pub async fn agents(&mut self) -> anyhow::Result<Agents> {
        expect!(self.call(ClientRequest::Agents).await?,
            ClientResponse::Agents { agents, problems } => Ok(Agents { agents, problems }))
    }

    /// Submits a follow-up: a new session of one job that resumes the
    /// conversation of `job`'s agent with `prompt`. A job without an agent
    /// session to resume is refused by the manager (exit 2, its message).
    pub async fn continue_job(
        &mut self,
        session: SessionId,
        job: &str,
        prompt: String,
    ) -> anyhow::Result<Submitted> {
        let request = ClientRequest::Continue {
            session,
            job: job.to_string(),
            prompt,
        };
        expect!(Submitted::from_answer(self.call(request).await?),
            Ok(submitted) => Ok(submitted))
    }

    /// Says `text` to the running agent `job` of `session`, or to every
    /// running agent of it that takes input: the jobs it was said to.
    pub async fn say(
        &mut self,
        session: SessionId,
        job: Option<String>,
        text: String,
    ) -> anyhow::Result<Vec<String>> {
        let request = ClientRequest::Say { session, job, text };
        expect!(self.call(request).await?, ClientResponse::Said { jobs } => Ok(jobs))
    }

    /// Answers a permission request of a running agent: its id and
    /// short form.
    pub async fn decide_permission(
        &mut self,
        request: ClientRequest,
    ) -> anyhow::Result<(u32, String)> {
        expect!(self.call(request).await?,
            ClientResponse::PermissionDecided { request, summary } => Ok((request, summary)))
    }

    pub async fn workers(&mut self) -> anyhow::Result<Vec<WorkerView>> {
        expect!(self.call(ClientRequest::Workers).await?,
            ClientResponse::Workers(list) => Ok(list))
    }

    /// The shared resources, their capacity and holders.
    pub async fn accounts(&mut self) -> anyhow::Result<Vec<aam_protocol::account::AccountView>> {
        expect!(self.call(ClientRequest::Accounts).await?,
            ClientResponse::Accounts(list) => Ok(list))
    }

    pub async fn providers(&mut self) -> anyhow::Result<Vec<aam_protocol::model::ProviderView>> {
        expect!(self.call(ClientRequest::Providers).await?,
            ClientResponse::Providers(list) => Ok(list))
    }

    pub async fn resources(&mut self) -> anyhow::Result<Vec<aam_protocol::resource::ResourceView>> {
        expect!(self.call(ClientRequest::Resources).await?,
            ClientResponse::Resources(list) => Ok(list))
    }

    /// A worktree job's change and patch (for a job of variants, its
    /// winner's). A job without one is refused by the manager (exit 2, its
    /// message).
    pub async fn patch(&mut self, session: SessionId, job: &str) -> anyhow::Result<Patch> {
        let request = ClientRequest::Patch {
            session,
            job: job.to_string(),
        };
        expect!(self.call(request).await?,
            ClientResponse::Patch { change, patch } => Ok(Patch { change, patch }))
    }
}
