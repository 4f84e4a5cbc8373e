//! Usage limits pause, they do not fail: when an agent run ends on its
//! provider's rate or usage limit, its attempt ends `limited`, the job goes
//! back to the queue without using a retry (`attempts`), and its limit
//! group is paused here: until the reset time the agent named, or for a
//! backoff that starts at `limit_backoff` and doubles while limits continue
//! (up to `LIMIT_BACKOFF_CAP_MS`; back to the start once a job of the group
//! succeeds). Queued jobs of a paused group are not dispatched; running
//! ones go on; when the pause ends, the scheduler's tick dispatches them.
//! Pauses are stored (with their backoff), so they survive a restart.

use super::State;
use aam_protocol::agent_run::{LimitPause, UsageLimit};
use aam_protocol::JobKey;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

/// The longest pause of a limit group whose limits name no reset time.
pub const LIMIT_BACKOFF_CAP_MS: u64 = 3600 * 1000;

/// The furthest reset time believed: past it, the agent's word is taken
/// for this long (a weekly limit is the longest a provider names).
const LONGEST_STATED_PAUSE_MS: u64 = 8 * 24 * 3600 * 1000;

/// Longest text of the agent's kept with a pause.
const MAX_MESSAGE_BYTES: usize = 512;

/// The limit groups' pauses, and which changed since they were stored.
#[derive(Default)]
pub(super) struct Pauses {
    by_group: BTreeMap<String, LimitPause>,
    unsaved: BTreeSet<String>,
}

impl Pauses {
    /// Pauses read back from the store.
    pub fn restored(pauses: Vec<LimitPause>) -> Pauses {
        Pauses {
            by_group: pauses.into_iter().map(|p| (p.group.clone(), p)).collect(),
            unsaved: BTreeSet::new(),
        }
    }

    /// Whether `group`'s jobs are held at `now`.
    pub fn holds(&self, group: &str, now: u64) -> bool {
        self.by_group.get(group).is_some_and(|p| p.until_ms > now)
    }

    /// Whether any group is held at `now` (most of the time, none is).
    pub fn any_held(&self, now: u64) -> bool {
        self.by_group.values().any(|p| p.until_ms > now)
    }

    /// The pauses in force at `now`.
    pub fn active(&self, now: u64) -> impl Iterator<Item = &LimitPause> {
        self.by_group.values().filter(move |p| p.until_ms > now)
    }

    /// When `group`'s pause ended, if it has and no job of it has run
    /// through since (its jobs resume a few at a time, `resume`).
    pub fn ended(&self, group: &str, now: u64) -> Option<u64> {
        self.by_group
            .get(group)
            .map(|p| p.until_ms)
            .filter(|&until| until <= now)
    }

    /// Whether any group is paused or resuming (most of the time, none).
    pub fn any(&self) -> bool {
        !self.by_group.is_empty()
    }

    /// The groups resuming at `now`, with when their pause ended.
    pub fn resuming(&self, now: u64) -> impl Iterator<Item = (&str, u64)> {
        self.by_group
            .values()
            .filter(move |p| p.until_ms <= now)
            .map(|p| (p.group.as_str(), p.until_ms))
    }

    /// The pause of `group` in force at `now`.
    pub fn get_active(&self, group: &str, now: u64) -> Option<&LimitPause> {
        self.by_group.get(group).filter(|p| p.until_ms > now)
    }

    /// Records to store: (pauses written, groups whose record went).
    pub fn take_unsaved(&mut self) -> (Vec<LimitPause>, Vec<String>) {
        let mut written = Vec::new();
        let mut ended = Vec::new();
        for group in std::mem::take(&mut self.unsaved) {
            match self.by_group.get(&group) {
                Some(pause) => written.push(pause.clone()),
                None => ended.push(group),
            }
        }
        (written, ended)
    }
}

/// A group's pause after a limit at `now`, from its pause so far (if any).
/// A stated reset time is the end (the later one, when already paused);
/// without one, a group already paused stays as it is (another of its jobs
/// met the same limit), else it is paused for its backoff, which doubles.
pub(super) fn next_pause(
    group: &str,
    previous: Option<&LimitPause>,
    limit: &UsageLimit,
    first_backoff_ms: u64,
    now: u64,
) -> LimitPause {
    let backoff = previous.map_or(first_backoff_ms, |p| p.backoff_ms);
    let paused = previous.filter(|p| p.until_ms > now).map(|p| p.until_ms);
    let stated = limit
        .resets_at_ms
        .filter(|&at| at > now)
        .map(|at| at.min(now.saturating_add(LONGEST_STATED_PAUSE_MS)));
    let (until_ms, backoff_ms) = match (stated, paused) {
        (Some(at), _) => (at.max(paused.unwrap_or(0)), backoff),
        (None, Some(until)) => (until, backoff),
        (None, None) => (
            now.saturating_add(backoff),
            backoff.saturating_mul(2).min(LIMIT_BACKOFF_CAP_MS),
        ),
    };
    LimitPause {
        group: group.to_string(),
        until_ms,
        backoff_ms,
        message: cut(&limit.message, MAX_MESSAGE_BYTES),
    }
}

/// A time as a queued job's reason shows it: `HH:MM:SS UTC`, with the date
/// when it is a day or more away. UTC, because the model has no clock nor
/// time zone of its own; the CLI shows the instant itself as it likes.
pub(super) fn clock_time(at_ms: u64, now: u64) -> String {
    let stamp =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at_ms)).to_string();
    // 2026-12-02T14:03:07Z
    let (date, time) = (&stamp[..10], &stamp[11..19]);
    if at_ms.saturating_sub(now) >= 24 * 3600 * 1000 {
        format!("{date} {time} UTC")
    } else {
        format!("{time} UTC")
    }
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl State {
    /// An attempt of `group` (job `by`'s) ended on a usage limit: the
    /// group is paused (a pause that was in force already is no news).
    pub(super) fn pause_group(&mut self, by: JobKey, group: &str, limit: &UsageLimit, now: u64) {
        let previous = self.pauses.by_group.get(group);
        let pause = next_pause(group, previous, limit, self.config.limit_backoff_ms, now);
        if !self.pauses.holds(group, now) {
            self.note_paused(by, pause.clone());
        }
        tracing::info!(group, until_ms = pause.until_ms, backoff_ms = pause.backoff_ms,
            message = %pause.message, "usage limit: pausing the group");
        self.pauses.unsaved.insert(group.to_string());
        self.pauses.by_group.insert(group.to_string(), pause);
        self.forget_resume(group);
        self.config.metrics.limit_paused(group);
    }

    /// A job of `group` succeeded: its backoff starts again from the
    /// beginning (a pause still in force stays).
    pub(super) fn limit_group_succeeded(&mut self, group: &str, now: u64) {
        let first = self.config.limit_backoff_ms;
        let Some(pause) = self.pauses.by_group.get_mut(group) else {
            return;
        };
        if pause.until_ms > now {
            if pause.backoff_ms == first {
                return;
            }
            pause.backoff_ms = first;
        } else {
            self.pauses.by_group.remove(group);
            self.forget_resume(group);
        }
        self.pauses.unsaved.insert(group.to_string());
    }

    /// Why a queued job of `group` waits, while its group is paused.
    pub(super) fn pause_reason(&self, group: &str, now: u64) -> Option<String> {
        let pause = self
            .pauses
            .by_group
            .get(group)
            .filter(|p| p.until_ms > now)?;
        Some(format!(
            "usage limit ({group}): paused until {}",
            clock_time(pause.until_ms, now)
        ))
    }

    /// The pauses in force (`aam sessions`).
    pub fn paused_groups(&self, now: u64) -> Vec<LimitPause> {
        self.pauses.active(now).cloned().collect()
    }
}

#[cfg(test)]
mod tests;
