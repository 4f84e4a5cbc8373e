//! The running jobs that wait for someone (issue 16): an agent asking a
//! permission nobody has decided, or one that answered and lingers for a
//! message. Listed across sessions for `aam status`, MCP's `status` and
//! the dashboard, those needing a decision first (an agent blocked on a
//! prompt holds its slot and its work until someone answers).

use super::State;
use aam_protocol::model::WaitingJob;

impl State {
    /// Every running job that waits for someone: those needing a
    /// permission decision first (oldest request first), then lingering
    /// agents (longest waiting first).
    pub fn waiting(&self) -> Vec<WaitingJob> {
        let mut found: Vec<(u64, WaitingJob)> = Vec::new();
        for entry in self.sessions.values() {
            for (job, asks, lingers) in entry.waiting() {
                let requests: Vec<_> = job
                    .permissions
                    .iter()
                    .flat_map(|p| p.open())
                    .cloned()
                    .collect();
                let since = match (asks, lingers) {
                    (true, _) => requests.first().map_or(0, |r| r.asked_at_ms),
                    // Lingering sorts after every request (its time's top
                    // bit set), oldest first.
                    _ => job
                        .input
                        .as_ref()
                        .and_then(|i| i.waiting_since_ms)
                        .map_or(u64::MAX, |t| t | (1 << 63)),
                };
                let run = self.current_run(entry, job);
                let last_answer = run.and_then(|r| r.result.clone().or(r.last_text.clone()));
                found.push((
                    since,
                    WaitingJob {
                        session: job.key.session,
                        job: job.name.clone(),
                        requests,
                        waiting_for_input: lingers,
                        last_answer,
                    },
                ));
            }
        }
        found.sort_by_key(|(since, w)| (*since, w.session, w.job.clone()));
        found.into_iter().map(|(_, w)| w).collect()
    }
}

#[cfg(test)]
mod tests;
