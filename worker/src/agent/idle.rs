//! Leaving when idle (`--once-idle`, issue 17): a worker launched on
//! demand goes once it has had nothing to run for its idle timeout. It
//! does not simply exit: it asks the manager (`RetireIfIdle`), which
//! grants it only while nothing is assigned to it and then assigns it
//! nothing more, in one step, so no job is ever sent to a worker on its
//! way out. Refused (a job came meanwhile), it counts idle time again.
//! With no manager to ask (gone, or not back after a restart) and nothing
//! to run for as long, it leaves on its own: nothing is lost, and the
//! provider launches another when work comes.

use super::WorkerAgent;
use aam_protocol::messages::WorkerToManager;
use actix::prelude::*;
use std::time::{Duration, Instant};

/// How often idleness is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Least time without a manager before an idle worker leaves on its own
/// (a manager restart takes less).
pub const ALONE_AT_LEAST: Duration = Duration::from_secs(60);

/// The worker's idle exit, if it has one.
#[derive(Debug)]
pub struct IdleExit {
    pub timeout: Duration,
    /// Since when it has had nothing to run (None: it has something).
    since: Option<Instant>,
    /// Asked the manager, no answer yet.
    asked: bool,
    /// Since when it has had no manager (None: registered).
    alone_since: Option<Instant>,
}

impl IdleExit {
    pub fn new(timeout: Duration) -> IdleExit {
        IdleExit {
            timeout,
            since: Some(Instant::now()),
            asked: false,
            alone_since: Some(Instant::now()),
        }
    }
}

impl WorkerAgent {
    /// Asks to retire once idle for the timeout (and registered: only the
    /// manager may let it go).
    pub(super) fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let busy = !self.assigned.is_empty() || !self.unacked.is_empty() || self.draining;
        let registered = self.link.is_registered();
        let Some(idle) = self.idle.as_mut() else {
            return;
        };
        if registered {
            idle.alone_since = None;
        } else {
            idle.alone_since.get_or_insert_with(Instant::now);
            // An ask lost with the connection is asked again once back.
            idle.asked = false;
        }
        if busy {
            idle.since = None;
            return;
        }
        let since = *idle.since.get_or_insert_with(Instant::now);
        if idle.asked || since.elapsed() < idle.timeout {
            return;
        }
        let timeout = idle.timeout;
        let alone = idle.alone_since.map(|t| t.elapsed());
        match self.link.send_if_registered(WorkerToManager::RetireIfIdle) {
            None => {
                tracing::info!(idle = ?timeout, "idle: asking the manager to retire");
                idle.asked = true;
            }
            Some(_) if alone.is_some_and(|a| a >= timeout.max(ALONE_AT_LEAST)) => {
                tracing::info!(idle = ?timeout, "idle with no manager to ask: exiting");
                self.draining = true;
                self.exit_refused(0, ctx);
            }
            Some(_) => {}
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
