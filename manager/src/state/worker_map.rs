//! The connected workers, with the set of those that have room for
//! another assignment kept beside them: every change to a worker goes
//! through `get_mut` (a guard that re-files the worker when dropped),
//! `insert` or `remove`, so dispatch reads the workers with room without
//! walking every worker.

use super::workers::WorkerEntry;
use super::WorkerId;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};

#[derive(Default)]
pub(super) struct Workers {
    map: BTreeMap<WorkerId, WorkerEntry>,
    /// Workers that may take another assignment now (`room_for_dispatch`).
    with_room: BTreeSet<WorkerId>,
}

impl WorkerEntry {
    /// Assignments it may take now: its slots and prefetch beyond what it
    /// holds; none while it drains.
    pub fn room_for_dispatch(&self) -> u32 {
        if self.draining {
            return 0;
        }
        (self.slots + self.prefetch_now()).saturating_sub(self.assigned.len() as u32)
    }
}

impl Workers {
    pub fn insert(&mut self, id: WorkerId, worker: WorkerEntry) {
        self.map.insert(id, worker);
        self.refile(id);
    }

    pub fn remove(&mut self, id: &WorkerId) -> Option<WorkerEntry> {
        self.with_room.remove(id);
        self.map.remove(id)
    }

    /// A worker to change; it is re-filed when the guard drops.
    pub fn get_mut(&mut self, id: &WorkerId) -> Option<WorkerMut<'_>> {
        let entry = self.map.get_mut(id)?;
        Some(WorkerMut {
            id: *id,
            entry,
            with_room: &mut self.with_room,
        })
    }

    /// The workers with room for another assignment, by id.
    pub fn with_room(&self) -> impl Iterator<Item = (WorkerId, &WorkerEntry)> {
        self.with_room.iter().map(|id| (*id, &self.map[id]))
    }

    /// The index against every worker (unit tests call it at every dispatch).
    #[cfg(test)]
    pub fn check_index(&self) {
        let derived: BTreeSet<WorkerId> = self
            .map
            .iter()
            .filter(|(_, w)| w.room_for_dispatch() > 0)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(self.with_room, derived, "workers with room");
    }

    fn refile(&mut self, id: WorkerId) {
        if let Some(w) = self.map.get(&id) {
            file(&mut self.with_room, id, w);
        }
    }
}

fn file(with_room: &mut BTreeSet<WorkerId>, id: WorkerId, w: &WorkerEntry) {
    if w.room_for_dispatch() > 0 {
        with_room.insert(id);
    } else {
        with_room.remove(&id);
    }
}

impl Deref for Workers {
    type Target = BTreeMap<WorkerId, WorkerEntry>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// A worker borrowed to change.
pub(super) struct WorkerMut<'a> {
    id: WorkerId,
    entry: &'a mut WorkerEntry,
    with_room: &'a mut BTreeSet<WorkerId>,
}

impl Deref for WorkerMut<'_> {
    type Target = WorkerEntry;

    fn deref(&self) -> &WorkerEntry {
        self.entry
    }
}

impl DerefMut for WorkerMut<'_> {
    fn deref_mut(&mut self) -> &mut WorkerEntry {
        self.entry
    }
}

impl Drop for WorkerMut<'_> {
    fn drop(&mut self) {
        file(self.with_room, self.id, self.entry);
    }
}
