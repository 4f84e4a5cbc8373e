//! Everything the CLI prints, one file per concern: sessions and jobs
//! (`status`: tables and JSON), the Markdown results summary (`results`),
//! what an agent job did and the limit groups paused (`agent`), what
//! worktree jobs changed and which variant won (`change`), and the agents
//! and workers lists (`fleet`). What several of them share is here.

mod agent;
mod change;
mod fleet;
mod results;
mod status;
#[cfg(test)]
pub mod test_views;
mod waiting;

pub use agent::{activity_with_cost, any_agent, has_spend, paused_lines, spend, until_text};
pub use change::{change_note, diffstat};
pub use fleet::{agents_table, workers_table};
pub use results::results_markdown;
pub use status::{estimate_line, more_sessions_line, session_table, sessions_table};
pub use waiting::waiting_lines;

pub use aam_protocol::json::{
    agents_json, estimate_json, job_duration, rfc3339, session_json, summary_json, workers_json,
};
use aam_protocol::model::{JobStatus, SessionSummary};

/// A short human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn human_duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

pub fn mark(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "✅",
        JobStatus::Failed | JobStatus::TimedOut | JobStatus::Cancelled => "❌",
        JobStatus::Skipped => "⏭",
        JobStatus::Pending | JobStatus::Queued | JobStatus::Running => "⏳",
    }
}

/// "3 succeeded, 1 failed, 2 running" (non-zero counts only).
pub fn counts_line(s: &SessionSummary) -> String {
    let parts: Vec<String> = JobStatus::ALL
        .iter()
        .filter(|st| s.count(**st) > 0)
        .map(|st| format!("{} {}", s.count(*st), st))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(12_340), "12.3s");
        assert_eq!(human_duration(245_000), "4m05s");
        assert_eq!(human_duration(7_380_000), "2h03m");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
