//! Leaving when idle (`--once-idle`, issue 17): a worker launched on
//! demand goes once it has had nothing to run for its idle timeout. It
//! does not simply exit: it asks the manager (`RetireIfIdle`), which
//! grants it only while nothing is assigned to it and then assigns it
//! nothing more, in one step, so no job is ever sent to a worker on its
//! way out. Refused (a job came meanwhile), it counts idle time again.

use super::WorkerAgent;
use aam_protocol::messages::WorkerToManager;
use actix::prelude::*;
use std::time::{Duration, Instant};

/// How often idleness is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The worker's idle exit, if it has one.
#[derive(Debug)]
pub struct IdleExit {
    pub timeout: Duration,
    /// Since when it has had nothing to run (None: it has something).
    since: Option<Instant>,
    /// Asked the manager, no answer yet.
    asked: bool,
}

impl IdleExit {
    pub fn new(timeout: Duration) -> IdleExit {
        IdleExit {
            timeout,
            since: Some(Instant::now()),
            asked: false,
        }
    }
}

impl WorkerAgent {
    /// Asks to retire once idle for the timeout (and registered: only the
    /// manager may let it go).
    pub(super) fn check_idle(&mut self) {
        let busy = !self.assigned.is_empty() || !self.unacked.is_empty() || self.draining;
        let Some(idle) = self.idle.as_mut() else {
            return;
        };
        if busy {
            idle.since = None;
            return;
        }
        let since = *idle.since.get_or_insert_with(Instant::now);
        if idle.asked || since.elapsed() < idle.timeout {
            return;
        }
        if self
            .link
            .send_if_registered(WorkerToManager::RetireIfIdle)
            .is_none()
        {
            tracing::info!(idle = ?idle.timeout, "idle: asking the manager to retire");
            idle.asked = true;
        }
    }

    /// The manager's answer: go (nothing runs here), or stay.
    pub(super) fn retire(&mut self, granted: bool, ctx: &mut Context<Self>) {
        if let Some(idle) = self.idle.as_mut() {
            idle.asked = false;
            idle.since = None;
        }
        if granted && self.assigned.is_empty() {
            tracing::info!("retired by the manager after its idle timeout: exiting");
            self.draining = true;
            self.exit_refused(0, ctx);
        } else {
            tracing::info!("not retired: a job was assigned meanwhile");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_exit_starts_idle() {
        let idle = IdleExit::new(Duration::from_secs(300));
        assert!(idle.since.is_some() && !idle.asked);
    }
}
