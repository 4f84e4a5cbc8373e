//! Jobs isolated in a git worktree (`isolation = "worktree"`): what their
//! assignment orders the worker to set up (`WorktreeOrder`: the branch
//! `aam/SESSION/JOB`, the commit it starts from, the worktree's path key,
//! `verify`, the commit message, the patch cap), the worker a job must run
//! on because the branch it starts from lives there (`pin_of`), what comes
//! back at the end (the change, whose failed verify fails the job, and the
//! patch, kept with the job's output), a worktree that could not be set
//! up, `aam diff`'s patch, and the branches `aam gc` deletes.

use super::attempts::AttemptEnd;
use super::session::SessionEntry;
use super::{Fenced, State, StateError, WorkerId};
use aam_protocol::messages::AttemptRef;
use aam_protocol::model::{ExitInfo, JobRecord};
use aam_protocol::worktree::{branch_name, JobChange, WorktreeOrder};
use aam_protocol::{JobKey, SessionId};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// `base = "job:NAME"`: the branch of dependency NAME.
pub(super) const JOB_BASE: &str = "job:";

/// Why a pinned job waits for its worker, as `aam status` says it.
const CONVERSATION_THERE: &str = "the conversation it continues lives there";
const BRANCH_THERE: &str = "the branch it starts from lives there";

/// What a new branch starts from when the job names nothing.
const DEFAULT_BASE: &str = "HEAD";

/// Most branches in one `DeleteBranches` order (each is a short name; this
/// keeps an order far below a frame).
pub const BRANCHES_PER_ORDER: usize = 1000;

/// Reads a worktree job's stored patch.
pub type PatchReader = dyn Fn(JobKey) -> Option<Vec<u8>>;

/// Where a queued job may run.
#[derive(Debug, PartialEq)]
pub(super) enum Pin<'a> {
    Anywhere,
    /// Only on the worker of this name, for this reason.
    On(&'a str, &'static str),
    /// Nowhere: it cannot start, for this reason.
    Never(String),
}

/// Branches a worker is to delete from one of its repositories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchDeletion {
    pub worker: String,
    pub repo: String,
    pub branches: Vec<String>,
}

/// The job whose change stands for `job`'s: the winner, for a parent of
/// variants; the job itself otherwise.
pub(super) fn change_source<'a>(entry: &'a SessionEntry, job: &'a JobRecord) -> &'a JobRecord {
    job.pick
        .as_ref()
        .and_then(|p| p.winner.as_deref())
        .and_then(|w| entry.index_of(w))
        .and_then(|i| entry.jobs().get(i as usize))
        .unwrap_or(job)
}

/// For a worktree job with `base = "job:NAME"`: the job whose change it
/// starts from (NAME's, or its winner's), or why there is none.
fn base_job<'a>(
    entry: &'a SessionEntry,
    job: &'a JobRecord,
) -> Option<Result<&'a JobRecord, String>> {
    if !job.isolation.has_worktree() {
        return None;
    }
    let name = job.base.as_deref()?.strip_prefix(JOB_BASE)?;
    let dependency = entry
        .index_of(name)
        .and_then(|i| entry.jobs().get(i as usize));
    let Some(dependency) = dependency else {
        return Some(Err(format!("base job:{name}: there is no job '{name}'")));
    };
    let source = change_source(entry, dependency);
    Some(match (&source.change, &source.worker) {
        (Some(_), Some(_)) => Ok(source),
        _ => Err(format!(
            "base job:{name}: '{name}' left no branch to start from (it ended {}{})",
            dependency.status,
            dependency
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )),
    })
}

/// The commit a change's branch is at: its own commit, else (it changed
/// nothing) the one it started from.
fn tip(change: &JobChange) -> String {
    change.commit.clone().unwrap_or_else(|| change.base.clone())
}

/// Where a queued job may run: anywhere, on the worker that holds the
/// conversation it continues (a follow-up) or the branch it starts from
/// (`base = "job:NAME"`), or nowhere (that dependency left no branch).
pub(super) fn pin_of<'a>(entry: &'a SessionEntry, job: &'a JobRecord) -> Pin<'a> {
    if let Some(worker) = &job.pinned_worker {
        return Pin::On(worker, CONVERSATION_THERE);
    }
    match base_job(entry, job) {
        None => Pin::Anywhere,
        Some(Err(why)) => Pin::Never(why),
        Some(Ok(source)) => match &source.worker {
            Some(worker) => Pin::On(worker, BRANCH_THERE),
            None => Pin::Anywhere,
        },
    }
}

/// A job's commit message, as the manager makes it: one line naming the
/// job, its session and its agent. The worker appends the first line of
/// the agent's answer, when there is one (see `WorktreeOrder::message`).
pub(super) fn commit_message(session: SessionId, session_name: &str, job: &JobRecord) -> String {
    let mut about = vec![format!("session {session_name}")];
    about.push(match &job.agent {
        Some(agent) => format!("agent {agent}"),
        None => "command".into(),
    });
    if let Some(k) = job.variant {
        about.push(format!("variant {k}"));
    }
    format!("aam {session}/{} ({})", job.name, about.join(", "))
}

/// Why a job whose command succeeded has failed after all: its verify did
/// not pass.
pub(super) fn verify_failure(change: Option<&JobChange>) -> Option<String> {
    let verify = change?.verify.as_ref()?;
    (!verify.passed).then(|| match verify.exit_code {
        Some(code) => format!("verify failed: exit {code}"),
        None => "verify failed: no exit code (killed)".into(),
    })
}

/// The patch as the manager keeps it: at most `cap` bytes. A worker that
/// sent more than the order's cap is cut here, and its change says so.
fn capped(change: &mut JobChange, mut patch: Vec<u8>, cap: u64) -> Vec<u8> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    if patch.len() > cap {
        patch.truncate(cap);
        change.patch_cut = true;
    }
    change.patch_bytes = change.patch_bytes.max(patch.len() as u64);
    patch
}

/// Why `job` has no patch to show, naming it.
fn no_change(label: &str, job: &JobRecord) -> String {
    if !job.isolation.has_worktree() {
        return format!("{label} has no change: it did not run in a worktree");
    }
    if !job.status.is_terminal() {
        let what = match job.variant_jobs.is_empty() {
            true => format!("it is {}", job.status),
            false => "its variants have not all ended".into(),
        };
        return format!("{label} has no change yet: {what}");
    }
    if job.pick.as_ref().is_some_and(|p| p.winner.is_none()) {
        return format!("{label} has no change: none of its variants passed");
    }
    let reason = job.reason.as_deref().map(|r| format!(": {r}"));
    format!(
        "{label} has no change: it ended {} without one{}",
        job.status,
        reason.unwrap_or_default()
    )
}

impl State {
    /// The worktree an attempt of `key` is to run in: none for a job that
    /// runs in place; an error (why) for one that cannot start.
    pub(super) fn worktree_order(&self, key: JobKey) -> Result<Option<WorktreeOrder>, String> {
        let Some(entry) = self.sessions.get(key.session) else {
            return Ok(None);
        };
        let Some(job) = entry.jobs().get(key.index as usize) else {
            return Ok(None);
        };
        if !job.isolation.has_worktree() {
            return Ok(None);
        }
        let session = key.session.to_string();
        let (branch, path_key, reuse_branch) = match job.continues_branch.as_deref() {
            Some((branch, path_key)) => (branch.clone(), path_key.clone(), true),
            None => (
                branch_name(&session, &job.name),
                format!("{session}/{}", job.name),
                false,
            ),
        };
        let base = match base_job(entry, job) {
            Some(Ok(source)) => source.change.as_deref().map(tip),
            Some(Err(why)) => return Err(why),
            None => job.base().map(str::to_owned),
        };
        Ok(Some(WorktreeOrder {
            branch,
            base: base.unwrap_or_else(|| DEFAULT_BASE.into()),
            reuse_branch,
            path_key,
            verify: job.verify().map(<[String]>::to_vec),
            message: commit_message(key.session, &entry.record().name, job),
            patch_cap: self.config.patch_cap,
            workspace: job.workspace.clone(),
        }))
    }

    /// What an ended attempt of a worktree job changed goes into its
    /// record, and its patch to the next commit (an empty first one needs
    /// no record; a later attempt's replaces an earlier one's).
    pub(super) fn keep_change(
        &mut self,
        attempt: AttemptRef,
        change: Option<JobChange>,
        patch: Vec<u8>,
    ) {
        let key = attempt.job;
        if self.job(key).is_none_or(|j| !j.isolation.has_worktree()) {
            return;
        }
        let mut change = change;
        let patch = match &mut change {
            Some(change) => capped(change, patch, self.config.patch_cap),
            None => Vec::new(),
        };
        if let Some(job) = self.job_mut(key) {
            job.change = change.map(Box::new);
        }
        if patch.is_empty() && attempt.attempt <= 1 {
            return;
        }
        self.unsaved_patches.push((key, patch.clone()));
        self.committing_patches
            .insert(key, (attempt.attempt, patch));
    }

    /// The worker could not set up the attempt's worktree (not a git
    /// repository, no such base): the job fails with exactly that reason,
    /// and is not retried (a retry would meet the same).
    pub fn worktree_failed(
        &mut self,
        from: WorkerId,
        attempt: AttemptRef,
        reason: String,
        now: u64,
    ) -> Result<(), Fenced> {
        self.is_current(attempt, from)?;
        let exit = Some(ExitInfo::not_started());
        let end = AttemptEnd::Unrunnable;
        self.end_attempt(attempt.job, end, Some(reason), exit, None, now);
        Ok(())
    }

    /// A worktree job's change and patch (`aam diff`): the winner's for a
    /// parent of variants; from memory while its commit is in flight, else
    /// from the store.
    pub fn patch(
        &self,
        session: SessionId,
        name: &str,
        stored: &PatchReader,
    ) -> Result<(JobChange, Vec<u8>), StateError> {
        let index = self.job_index(session, name)?;
        let entry = self
            .sessions
            .get(session)
            .ok_or(StateError::NoSession(session))?;
        let job = entry.job(index);
        let label = format!("{session}/{name}");
        let source = change_source(entry, job);
        let Some(change) = &source.change else {
            return Err(StateError::Refused(no_change(&label, job)));
        };
        if change.commit.is_none() {
            return Err(StateError::Refused(format!(
                "{label} has no change: it changed nothing"
            )));
        }
        let patch = match self.committing_patches.get(&source.key) {
            Some((_, patch)) => patch.clone(),
            None => stored(source.key).unwrap_or_default(),
        };
        Ok(((**change).clone(), patch))
    }

    /// The branches of the worktree jobs of sessions being removed, by the
    /// worker and repository that hold them, less those a session that
    /// stays still uses (a follow-up continues an earlier job's branch).
    pub(super) fn branches_to_delete(&self, removed: &[SessionEntry]) -> Vec<BranchDeletion> {
        let mut by_place: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        let jobs = removed.iter().flat_map(|e| e.jobs());
        // A parent's change is its winner's, listed with the winner.
        for job in jobs.filter(|j| j.variant_jobs.is_empty()) {
            if let (Some(change), Some(worker)) = (&job.change, &job.worker) {
                let place = (worker.clone(), change.repo.clone());
                by_place
                    .entry(place)
                    .or_default()
                    .insert(change.branch.clone());
            }
        }
        if by_place.is_empty() {
            return Vec::new();
        }
        let kept: HashSet<&str> = self
            .sessions
            .values()
            .flat_map(|e| e.jobs())
            .flat_map(|j| {
                let continued = j.continues_branch.as_deref().map(|(b, _)| b.as_str());
                let own = j.change.as_ref().map(|c| c.branch.as_str());
                continued.into_iter().chain(own)
            })
            .collect();
        let mut out = Vec::new();
        for ((worker, repo), branches) in by_place {
            let branches: Vec<String> = branches
                .into_iter()
                .filter(|b| !kept.contains(b.as_str()))
                .collect();
            for chunk in branches.chunks(BRANCHES_PER_ORDER) {
                out.push(BranchDeletion {
                    worker: worker.clone(),
                    repo: repo.clone(),
                    branches: chunk.to_vec(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod workspace_tests;
