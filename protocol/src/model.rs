//! Sessions and jobs as the manager keeps them and the store persists them,
//! and the views clients receive.

use crate::ids::{JobKey, SessionId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting on dependencies (or, later, a gate).
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// An upstream job did not succeed.
    Skipped,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::TimedOut,
        JobStatus::Skipped,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            JobStatus::Pending | JobStatus::Queued | JobStatus::Running
        )
    }

    /// The name users see (`timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl SessionStatus {
    pub fn is_terminal(self) -> bool {
        self != SessionStatus::Running
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Running => "running",
            SessionStatus::Succeeded => "succeeded",
            SessionStatus::Failed => "failed",
            SessionStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub name: String,
    pub status: SessionStatus,
    pub job_count: u32,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}

/// A job as stored: what to run and where it is in its life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub key: JobKey,
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub agent: Option<String>,
    /// Indices (in the same session) of the jobs this one waits for.
    pub depends_on: Vec<u32>,
    pub status: JobStatus,
    /// Number of dispatches so far; the current attempt is this number.
    pub attempts: u32,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub exit: Option<ExitInfo>,
    /// Why the job ended as it did, when the status alone does not say.
    pub reason: Option<String>,
}

/// One session's summary line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: SessionId,
    pub name: String,
    pub status: SessionStatus,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Job count per status, in `JobStatus::ALL` order.
    pub counts: [u32; 8],
    pub total: u32,
}

impl SessionSummary {
    pub fn count(&self, status: JobStatus) -> u32 {
        self.counts[JobStatus::ALL
            .iter()
            .position(|s| *s == status)
            .unwrap_or(0)]
    }

    pub fn finished(&self) -> u32 {
        JobStatus::ALL
            .iter()
            .zip(self.counts)
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }
}

/// One job as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    pub status: JobStatus,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub reason: Option<String>,
    pub depends_on: Vec<String>,
    /// Captured output (whole or tail, as asked), when asked for.
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    /// Bytes the job printed in all (more than `output` when it was cut).
    pub output_bytes: u64,
}

/// A session with its jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub summary: SessionSummary,
    pub jobs: Vec<JobView>,
}

/// A connected worker as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub name: String,
    pub address: String,
    pub slots: u32,
    pub running: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub connected_at_ms: u64,
    pub last_heartbeat_ms: u64,
}
