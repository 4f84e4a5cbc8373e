//! No burst after a reset (issue 16): when a limit group's pause ends, its
//! held jobs start at most `resume_burst` at a time, then as many again
//! every `resume_interval`, until one of them runs through without a limit
//! (`resume_ran_through`; a success also drops the group's pause record,
//! `limits`); then dispatch is normal again. Starts
//! are counted per window of `resume_interval` from the pause's end, in
//! memory only: after a restart a group may get one more burst.

use super::State;
use std::collections::{HashMap, HashSet};

/// Starts of resuming groups: (window, starts in it), by group.
#[derive(Default)]
pub(super) struct Resumes {
    started: HashMap<String, (u64, u32)>,
    /// Groups a job of which ran through since their pause ended.
    ran_through: HashSet<String>,
}

/// The window of `interval_ms` that `now` falls in, counted from `ended`.
fn window(ended: u64, now: u64, interval_ms: u64) -> u64 {
    now.saturating_sub(ended) / interval_ms.max(1)
}

/// How many more jobs of a group whose pause ended at `ended` may start at
/// `now`: `burst` per window, less those started in it (`started`: the
/// window and count last recorded).
pub(super) fn resume_room(
    ended: u64,
    now: u64,
    burst: u32,
    interval_ms: u64,
    started: Option<(u64, u32)>,
) -> u32 {
    match started {
        Some((w, n)) if w == window(ended, now, interval_ms) => burst.saturating_sub(n),
        _ => burst,
    }
}

/// When the next window after `now` opens.
fn next_window(ended: u64, now: u64, interval_ms: u64) -> u64 {
    let interval = interval_ms.max(1);
    ended + (window(ended, now, interval) + 1) * interval
}

impl State {
    /// How many more jobs of `group` may start at `now`: None while it is
    /// not resuming (no cap; a paused group is held elsewhere).
    pub(super) fn resume_room(&self, group: &str, now: u64) -> Option<u32> {
        let ended = self.pauses.ended(group, now)?;
        if self.resumes.ran_through.contains(group) {
            return None;
        }
        let c = &self.config;
        let started = self.resumes.started.get(group).copied();
        Some(resume_room(
            ended,
            now,
            c.resume_burst,
            c.resume_interval_ms,
            started,
        ))
    }

    /// The room of every resuming group at `now` (empty most of the time).
    pub(super) fn resume_rooms(&self, now: u64) -> HashMap<String, u32> {
        if !self.pauses.any() {
            return HashMap::new();
        }
        self.pauses
            .resuming(now)
            .filter_map(|(g, _)| Some((g.to_string(), self.resume_room(g, now)?)))
            .collect()
    }

    /// A job of `group` started at `now`: counted if the group is resuming.
    pub(super) fn note_resume_start(&mut self, group: &str, now: u64) {
        let Some(ended) = self.pauses.ended(group, now) else {
            return;
        };
        let w = window(ended, now, self.config.resume_interval_ms);
        let entry = self
            .resumes
            .started
            .entry(group.to_string())
            .or_insert((w, 0));
        if entry.0 != w {
            *entry = (w, 0);
        }
        entry.1 += 1;
    }

    /// A group's pause began or its record went: its count starts over.
    pub(super) fn forget_resume(&mut self, group: &str) {
        self.resumes.started.remove(group);
        self.resumes.ran_through.remove(group);
    }

    /// A job of `group` ran to its end without a limit: if the group was
    /// resuming, its dispatch is normal again.
    pub(super) fn resume_ran_through(&mut self, group: &str, now: u64) {
        if self.pauses.ended(group, now).is_some() {
            self.resumes.started.remove(group);
            self.resumes.ran_through.insert(group.to_string());
        }
    }

    /// Why a queued job of `group` waits while its group resumes and this
    /// window's starts are taken.
    pub(super) fn resume_reason(&self, group: &str, now: u64) -> Option<String> {
        if self.resume_room(group, now)? > 0 {
            return None;
        }
        let ended = self.pauses.ended(group, now)?;
        let next = next_window(ended, now, self.config.resume_interval_ms);
        Some(format!(
            "resuming after a usage limit ({group}): {} started, more at {}",
            self.config.resume_burst,
            super::limits::clock_time(next, now)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_the_burst_then_the_next_window_as_many_again() {
        let (ended, burst, interval) = (1_000, 2, 10_000);
        assert_eq!(resume_room(ended, 1_000, burst, interval, None), 2);
        assert_eq!(resume_room(ended, 5_000, burst, interval, Some((0, 1))), 1);
        assert_eq!(resume_room(ended, 10_999, burst, interval, Some((0, 2))), 0);
        // 10 s after the pause's end: a new window.
        assert_eq!(resume_room(ended, 11_000, burst, interval, Some((0, 2))), 2);
        assert_eq!(resume_room(ended, 11_000, burst, interval, Some((1, 2))), 0);
        assert_eq!(next_window(ended, 5_000, interval), 11_000);
        assert_eq!(next_window(ended, 11_000, interval), 21_000);
    }
}
