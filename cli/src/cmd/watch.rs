//! `aam watch SESSION`: a live view of a session's jobs until it ends;
//! exits like `aam wait`. It polls the manager (cheap, and it rides over a
//! manager restart by reconnecting and asking again).

use super::session_arg;
use crate::args::ManagerFlags;
use crate::client::Client;
use crate::endpoint;
use crate::exit::verdict;
use crate::render::{
    activity_with_cost, any_agent, change_note, counts_line, estimate_line, has_spend,
    human_duration, paused_lines, spend,
};
use aam_protocol::agent_run::LimitPause;
use aam_protocol::messages::OutputWanted;
use aam_protocol::model::{JobStatus, JobView, SessionSummary, SessionView};
use aam_protocol::{now_ms, SessionId};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

pub async fn run(flags: &ManagerFlags, session: &str) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?.reconnect_when_lost();
    let summary = watch(&mut client, session_arg(session)?).await?;
    Ok(verdict(&summary))
}

/// One line of `aam watch` for a job of `view`.
fn job_line(view: &SessionView, j: &JobView, now: u64) -> String {
    let elapsed = match (j.started_at_ms, j.finished_at_ms) {
        (Some(s), Some(f)) if j.status.is_terminal() => human_duration(f.saturating_sub(s)),
        (Some(s), _) if j.status == JobStatus::Running => human_duration(now.saturating_sub(s)),
        _ => "-".into(),
    };
    let progress = match (j.status, j.progress) {
        (JobStatus::Running, Some(p)) => format!("{p:>3}%"),
        _ => "    ".into(),
    };
    format!(
        "{:<24} {:<10} {:>3} {:<16} {:>8} {} {}",
        j.name,
        j.status.as_str(),
        j.attempts,
        j.worker.as_deref().unwrap_or("-"),
        elapsed,
        progress,
        last_column(view, j)
    )
}

/// A running job's `::progress::` message; else what it changed (an
/// ended worktree job's branch and diffstat, which variant won) and for an
/// agent job what it did (`3 turns · Edit src/lib.rs · $0.12`: its raw
/// output is events, not lines to read); else the last line of output.
fn last_column(view: &SessionView, j: &JobView) -> String {
    if let Some(message) = j
        .progress_message
        .as_deref()
        .filter(|_| j.status == JobStatus::Running)
    {
        return message.to_string();
    }
    let change = change_note(view, j);
    let activity = j.agent.as_ref().and_then(activity_with_cost);
    if change.is_some() || activity.is_some() {
        return [change, activity]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · ");
    }
    let text = String::from_utf8_lossy(&j.output);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.chars().take(60).collect()
}

/// What makes a job's line worth printing again when not on a terminal
/// (elapsed time changes every poll and does not).
fn change_key(j: &JobView) -> String {
    let agent = j
        .agent
        .as_ref()
        .map(|a| (a.turns, a.tool_calls, a.retrying));
    format!(
        "{:?}{}{:?}{:?}{agent:?}",
        j.status, j.attempts, j.progress, j.progress_message
    )
}

/// The session's line: counts, spend (with agent jobs) and ETA.
fn header(view: &SessionView) -> String {
    let s = &view.summary;
    let mut header = format!("{} ({}): {} — {}", s.id, s.name, s.status, counts_line(s));
    if any_agent(&view.jobs) || has_spend(s) {
        header.push_str(&format!(" — {}", spend(s)));
    }
    if !s.status.is_terminal() {
        header.push_str(&format!(
            " — {}",
            estimate_line(&view.eta).replacen("estimate", "ETA", 1)
        ));
    }
    header
}

/// The paused limit groups when not on a terminal: a line when a group is
/// paused (or its pause moves), one when it resumes.
#[derive(Default)]
struct PausedShown(Vec<(String, u64)>);

impl PausedShown {
    fn changes(&mut self, paused: &[LimitPause], now: u64) -> String {
        let current: Vec<(String, u64)> = paused
            .iter()
            .map(|p| (p.group.clone(), p.until_ms))
            .collect();
        let mut out = String::new();
        for (group, _) in &self.0 {
            if !current.iter().any(|(g, _)| g == group) {
                out.push_str(&format!("usage limit ({group}): resumed\n"));
            }
        }
        let new: Vec<LimitPause> = paused
            .iter()
            .filter(|p| !self.0.contains(&(p.group.clone(), p.until_ms)))
            .cloned()
            .collect();
        out.push_str(&paused_lines(&new, now));
        self.0 = current;
        out
    }
}

/// A live view of every job until the session ends: redrawn in place on a
/// terminal, one line per change otherwise.
async fn watch(client: &mut Client, session: SessionId) -> anyhow::Result<SessionSummary> {
    let terminal = std::io::stdout().is_terminal();
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut paused_shown = PausedShown::default();
    let mut stdout = std::io::stdout();
    loop {
        let view = client.session(session, OutputWanted::Tail(256)).await?;
        let now = now_ms();
        let header = header(&view);
        if terminal {
            let mut screen = format!("\x1b[H\x1b[2J{header}\n");
            screen.push_str(&paused_lines(&view.paused, now));
            screen.push_str(&format!(
                "\n{:<24} {:<10} {:>3} {:<16} {:>8} {:>4} LAST OUTPUT\n",
                "JOB", "STATUS", "TRY", "WORKER", "ELAPSED", "PROG"
            ));
            for j in &view.jobs {
                screen.push_str(&job_line(&view, j, now));
                screen.push('\n');
            }
            stdout.write_all(screen.as_bytes())?;
        } else {
            stdout.write_all(paused_shown.changes(&view.paused, now).as_bytes())?;
            for j in &view.jobs {
                let key = change_key(j);
                if shown.get(&j.name) != Some(&key) {
                    shown.insert(j.name.clone(), key);
                    writeln!(stdout, "{}", job_line(&view, j, now))?;
                }
            }
        }
        stdout.flush()?;
        if view.summary.status.is_terminal() {
            writeln!(stdout, "{header}")?;
            return Ok(view.summary);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_views::{agent_job, agent_view, job, session, worktree_job};
    use aam_protocol::model::SessionStatus;

    #[test]
    fn an_agent_job_shows_what_it_did_not_its_raw_events() {
        let review = agent_job(
            "review",
            JobStatus::Running,
            agent_view(3, Some("Edit src/lib.rs"), 0.1234),
        );
        let view = session(SessionStatus::Running, vec![review.clone()]);
        assert_eq!(
            job_line(&view, &review, 4_000),
            "review                   running      1 w1                   3.0s      3 turns · Edit src/lib.rs · $0.12"
        );
        let mut reporting = review.clone();
        reporting.progress = Some(40);
        reporting.progress_message = Some("reviewing".into());
        assert!(job_line(&view, &reporting, 4_000).ends_with("  40% reviewing"));
    }

    #[test]
    fn a_command_job_shows_its_last_line_as_before() {
        let tests = job("tests", JobStatus::Failed, "running\nbroken\n\n");
        let view = session(SessionStatus::Failed, vec![tests.clone()]);
        assert_eq!(
            job_line(&view, &tests, 4_000),
            "tests                    failed       1 w1                   1.5s      broken"
        );
    }

    #[test]
    fn an_ended_worktree_job_shows_its_branch_and_diffstat() {
        let mut fix = worktree_job("fix", JobStatus::Succeeded, 2, 12, 3);
        fix.output = b"done\n".to_vec();
        fix.agent = Some(agent_view(3, None, 0.5));
        let view = session(SessionStatus::Succeeded, vec![fix.clone()]);
        assert!(
            job_line(&view, &fix, 4_000)
                .ends_with("      aam/s7/fix +12 -3 (2 files) · 3 turns · $0.50"),
            "{}",
            job_line(&view, &fix, 4_000)
        );
    }

    #[test]
    fn a_new_turn_is_a_change_worth_a_line() {
        let mut review = agent_job("review", JobStatus::Running, agent_view(3, None, 0.1));
        let before = change_key(&review);
        review.agent.as_mut().unwrap().cost_usd = 0.2;
        assert_eq!(change_key(&review), before, "cost alone moves with turns");
        review.agent.as_mut().unwrap().turns = 4;
        assert_ne!(change_key(&review), before);
    }

    #[test]
    fn the_header_carries_the_spend_of_a_session_with_agents() {
        let review = agent_job("review", JobStatus::Succeeded, agent_view(3, None, 0.5));
        assert_eq!(
            header(&session(SessionStatus::Succeeded, vec![review])),
            "s7 (review): succeeded — 1 succeeded — $0.50 (1.2k input, 340 output tokens)"
        );
        let tests = job("tests", JobStatus::Succeeded, "ok\n");
        assert_eq!(
            header(&session(SessionStatus::Succeeded, vec![tests])),
            "s7 (review): succeeded — 1 succeeded"
        );
    }

    #[test]
    fn paused_groups_print_when_they_pause_and_when_they_resume() {
        let pause = LimitPause {
            group: "claude".into(),
            until_ms: 245_000,
            backoff_ms: 60_000,
            message: "429".into(),
        };
        let mut shown = PausedShown::default();
        let first = shown.changes(std::slice::from_ref(&pause), 0);
        assert!(
            first.starts_with("usage limit (claude): paused until "),
            "{first}"
        );
        assert_eq!(shown.changes(std::slice::from_ref(&pause), 1_000), "");
        assert_eq!(
            shown.changes(&[], 250_000),
            "usage limit (claude): resumed\n"
        );
    }
}
