//! Sessions and jobs as `aam status` and `aam sessions` show them: the
//! session table, one session's job table, and their JSON documents.

use super::agent::{activity, any_agent, has_spend, paused_lines, spend, usd};
use super::change::change_note;
use super::{counts_line, human_duration, job_duration, rfc3339};
use aam_protocol::agent_run::LimitPause;
use aam_protocol::model::{Estimate, JobStatus, JobView, SessionSummary, SessionView};
use std::fmt::Write as _;

/// Sessions, one a line; then `more` (what the page leaves out, from
/// `more_sessions_line`), then the limit groups paused on a usage limit.
pub fn sessions_table(
    sessions: &[SessionSummary],
    more: Option<&str>,
    paused: &[LimitPause],
    now_ms: u64,
) -> String {
    let mut out = if sessions.is_empty() {
        "no sessions\n".to_string()
    } else {
        format!(
            "{:<8} {:<24} {:<10} {:>11} {:>9}  {:<24} {}\n",
            "ID", "NAME", "STATUS", "DONE/TOTAL", "COST", "CREATED", "JOBS"
        )
    };
    for s in sessions {
        let cost = if has_spend(s) {
            usd(s.cost_usd)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:<10} {:>11} {:>9}  {:<24} {}",
            s.id.to_string(),
            s.name,
            s.status.as_str(),
            format!("{}/{}", s.finished(), s.total),
            cost,
            rfc3339(s.created_at_ms),
            counts_line(s)
        );
    }
    if let Some(more) = more {
        let _ = writeln!(out, "{more}");
    }
    if !paused.is_empty() {
        out.push('\n');
        out.push_str(&paused_lines(paused, now_ms));
    }
    out
}

/// What a page of `shown` sessions after the newest `offset` leaves out of
/// `total`, and how to see it; None when it is all of them.
pub fn more_sessions_line(shown: usize, total: u32, offset: u32) -> Option<String> {
    let total = total as usize;
    let offset = offset as usize;
    if shown == total {
        return None;
    }
    let older = total.saturating_sub(offset + shown);
    let mut line = match (shown, offset) {
        (0, _) => format!("no session past the newest {offset} of {total}"),
        (_, 0) => format!("the newest {shown} of {total} sessions"),
        _ => format!("{shown} of {total} sessions, after the newest {offset}"),
    };
    if older > 0 {
        line.push_str(&format!(
            "; {older} older: --offset {} shows them, --limit 0 lists all",
            offset + shown
        ));
    }
    Some(line)
}

/// "estimate: about 2m05s with 4 slots", or why there is none.
pub fn estimate_line(e: &Estimate) -> String {
    let gates = if e.gates > 0 {
        format!(" (plus {} gate(s) awaiting a person)", e.gates)
    } else {
        String::new()
    };
    match e.ms {
        // Jobs that take less than a millisecond, measured in whole ones.
        Some(0) => format!(
            "estimate: under a millisecond with {} slots{gates}",
            e.slots
        ),
        Some(ms) => format!(
            "estimate: about {} with {} slots{gates}",
            human_duration(ms),
            e.slots
        ),
        None if e.slots == 0 => "no estimate: no worker connected".into(),
        None => format!(
            "no estimate yet: {} job(s) have no history (they have not run before)",
            e.unknown
        ),
    }
}

/// One session: its counts, spend, ETA and paused limit groups, then a
/// line per job. A session with agent jobs gets a cost column.
pub fn session_table(view: &SessionView, now_ms: u64) -> String {
    let s = &view.summary;
    let agents = any_agent(&view.jobs);
    let mut out = format!(
        "session {} ({}): {} — {}",
        s.id,
        s.name,
        s.status,
        counts_line(s)
    );
    if agents || has_spend(s) {
        let _ = write!(out, " — {}", spend(s));
    }
    out.push('\n');
    if !s.status.is_terminal() {
        let _ = writeln!(
            out,
            "{}",
            estimate_line(&view.eta).replacen("estimate", "ETA", 1)
        );
    }
    out.push_str(&paused_lines(&view.paused, now_ms));
    out.push('\n');
    let cost_header = if agents {
        format!(" {:>8}", "COST")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>3} {:>5} {:<20} {:>9}{cost_header}  NOTE",
        "JOB", "STATUS", "TRY", "EXIT", "WORKER", "DURATION"
    );
    for j in &view.jobs {
        out.push_str(&job_row(view, j, agents));
    }
    out.push_str(&page_line(view));
    out
}

/// Which jobs a page showed and how to see the others; nothing when it
/// showed them all.
fn page_line(view: &SessionView) -> String {
    let (first, shown, total) = (view.offset, view.jobs.len() as u32, view.summary.total);
    if first == 0 && shown >= total {
        return String::new();
    }
    let mut line = if shown == 0 {
        format!("\nno jobs from --offset {first}: the session has {total}")
    } else {
        format!("\njobs {}-{} of {total} shown", first + 1, first + shown)
    };
    let next = first.saturating_add(shown);
    if shown > 0 && next < total {
        line.push_str(&format!("; the next with --offset {next}"));
    }
    line.push('\n');
    line
}

/// A job's line in `session_table`, with its cost when `cost_column`.
fn job_row(view: &SessionView, j: &JobView, cost_column: bool) -> String {
    let exit = match (j.exit_code, j.signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(sig)) => format!("sig{sig}"),
        _ => "-".into(),
    };
    let cost = match (&j.agent, cost_column) {
        (Some(agent), true) => format!(" {:>8}", usd(agent.cost_usd)),
        (None, true) => format!(" {:>8}", "-"),
        (_, false) => String::new(),
    };
    format!(
        "{:<24} {:<10} {:>3} {:>5} {:<20} {:>9}{cost}  {}\n",
        j.name,
        j.status.as_str(),
        j.attempts,
        exit,
        j.worker.as_deref().unwrap_or("-"),
        job_duration(j)
            .map(human_duration)
            .unwrap_or_else(|| "-".into()),
        note(view, j)
    )
}

/// Progress while a job runs: its `::progress::`, else for an agent job
/// its turns and last tool. Else why it is as it is, what it changed (its
/// branch and diffstat, which variant won), and for an agent job what it
/// did.
fn note(view: &SessionView, j: &JobView) -> String {
    let left = j
        .expected_remaining_ms
        .map(|ms| format!(" (~{} left)", human_duration(ms)))
        .unwrap_or_default();
    let activity = j.agent.as_ref().and_then(activity);
    // An agent waiting on a permission request: that first (its ids).
    let asking = j.permissions.iter().any(|r| r.decision.is_none());
    if let (JobStatus::Running, true, Some(reason)) = (j.status, asking, &j.reason) {
        return reason.clone();
    }
    match (j.status, j.progress) {
        (JobStatus::Running, Some(p)) => {
            format!("{p}% {}", j.progress_message.as_deref().unwrap_or(""))
                .trim_end()
                .to_string()
                + &left
        }
        (JobStatus::Running, None) => match activity {
            Some(activity) => activity + &left,
            None => left.trim_start().to_string(),
        },
        _ => [j.reason.clone(), change_note(view, j), activity]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_views::{agent_job, agent_view, job, session};
    use aam_protocol::json::*;
    use aam_protocol::model::SessionStatus;
    use serde_json::{json, Value};

    #[test]
    fn an_estimate_under_a_millisecond_says_so() {
        let e = |ms| Estimate {
            ms: Some(ms),
            unknown: 0,
            gates: 0,
            slots: 2,
        };
        assert_eq!(
            estimate_line(&e(0)),
            "estimate: under a millisecond with 2 slots"
        );
        assert_eq!(estimate_line(&e(3)), "estimate: about 3ms with 2 slots");
    }

    #[test]
    fn a_page_says_which_jobs_it_shows_and_where_the_next_starts() {
        let page = |offset: u32, shown: usize, total: u32| {
            let jobs = (0..shown)
                .map(|i| job(&format!("t{i}"), JobStatus::Queued, ""))
                .collect();
            let mut view = session(SessionStatus::Running, jobs);
            (view.offset, view.summary.total) = (offset, total);
            page_line(&view)
        };
        assert_eq!(page(0, 3, 3), "", "a whole session needs no footer");
        assert_eq!(
            page(0, 2, 5),
            "\njobs 1-2 of 5 shown; the next with --offset 2\n"
        );
        assert_eq!(
            page(3, 2, 5),
            "\njobs 4-5 of 5 shown\n",
            "the last page has no next"
        );
        assert_eq!(
            page(9, 0, 5),
            "\nno jobs from --offset 9: the session has 5\n"
        );
    }

    /// A review that is running, its tests, and a fix stopped past its budget.
    fn mixed() -> SessionView {
        let mut review = agent_job(
            "review",
            JobStatus::Running,
            agent_view(3, Some("Edit src/lib.rs"), 0.1234),
        );
        review.expected_remaining_ms = Some(8_000);
        let mut fix = agent_job(
            "fix",
            JobStatus::Failed,
            agent_view(5, Some("Bash cargo test"), 0.52),
        );
        fix.reason = Some("budget".into());
        let tests = job("tests", JobStatus::Succeeded, "12 passed\n");
        session(SessionStatus::Running, vec![review, tests, fix])
    }

    #[test]
    fn the_job_table_shows_cost_turns_and_last_tool_of_agent_jobs() {
        let table = session_table(&mixed(), 0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "session s7 (review): running — 1 running, 1 succeeded, 1 failed — $0.64 (2.4k input, 680 output tokens)"
        );
        assert_eq!(
            lines[3],
            "JOB                      STATUS     TRY  EXIT WORKER                DURATION     COST  NOTE"
        );
        assert_eq!(
            lines[4],
            "review                   running      1     - w1                           -    $0.12  3 turns · Edit src/lib.rs (~8.0s left)"
        );
        assert_eq!(
            lines[5],
            "tests                    succeeded    1     0 w1                        1.5s        -  "
        );
        assert_eq!(
            lines[6],
            "fix                      failed       1     1 w1                        1.5s    $0.52  budget · 5 turns · Bash cargo test"
        );
    }

    #[test]
    fn progress_lines_win_over_turns_while_an_agent_job_runs() {
        let mut view = mixed();
        view.jobs[0].progress = Some(40);
        view.jobs[0].progress_message = Some("reviewing".into());
        let table = session_table(&view, 0);
        assert!(
            table
                .lines()
                .nth(4)
                .unwrap()
                .ends_with("  40% reviewing (~8.0s left)"),
            "{table}"
        );
    }

    #[test]
    fn a_session_of_commands_reads_as_it_always_did() {
        let view = session(
            SessionStatus::Succeeded,
            vec![job("tests", JobStatus::Succeeded, "ok\n")],
        );
        assert_eq!(
            session_table(&view, 0),
            "session s7 (review): succeeded — 1 succeeded\n\n\
             JOB                      STATUS     TRY  EXIT WORKER                DURATION  NOTE\n\
             tests                    succeeded    1     0 w1                        1.5s  \n"
        );
        let json = session_json(&view, false);
        assert_eq!(json["jobs"][0]["agent"], Value::Null);
        assert_eq!(json["paused"], json!([]));
    }

    #[test]
    fn paused_groups_show_under_the_session_line() {
        let mut view = mixed();
        view.paused.push(LimitPause {
            group: "claude".into(),
            until_ms: 245_000,
            backoff_ms: 60_000,
            message: "429".into(),
        });
        let table = session_table(&view, 0);
        let line = table.lines().nth(2).unwrap();
        assert!(
            line.starts_with("usage limit (claude): paused until ")
                && line.ends_with(" (4m05s from now)"),
            "{table}"
        );
    }

    #[test]
    fn status_json_has_the_agent_object_and_the_session_sums() {
        let json = session_json(&mixed(), false);
        assert_eq!(json["cost_usd"], json!(0.6434));
        assert_eq!(json["input_tokens"], 2_400);
        assert_eq!(json["output_tokens"], 680);
        let review = &json["jobs"][0]["agent"];
        assert_eq!(
            *review,
            json!({
                "session_id": "0b7e-conversation",
                "model": "claude-sonnet-4-5",
                "turns": 3,
                "tool_calls": 1,
                "last_tool": "Edit src/lib.rs",
                "last_text": null,
                "input_tokens": 1_200,
                "output_tokens": 340,
                "cache_read_tokens": 5_000,
                "cost_usd": 0.1234,
                "result": null,
                "error": null,
                "retrying": false,
            })
        );
        assert_eq!(json["jobs"][1]["agent"], Value::Null);
        assert!(
            json["jobs"][0].get("result").is_none(),
            "status has no output"
        );
    }

    #[test]
    fn results_json_has_the_answer_beside_the_raw_output() {
        let mut view = mixed();
        view.jobs[2].agent.as_mut().unwrap().result = Some("Fixed.".into());
        let json = session_json(&view, true);
        let fix = &json["jobs"][2];
        assert_eq!(fix["result"], "Fixed.");
        assert_eq!(fix["agent"]["result"], "Fixed.");
        assert_eq!(
            fix["output"],
            "{\"type\":\"result\",\"subtype\":\"success\"}\n"
        );
        assert_eq!(json["jobs"][1]["result"], Value::Null);
        assert_eq!(json["jobs"][1]["output"], "12 passed\n");
    }

    #[test]
    fn the_session_table_has_a_cost_column_and_paused_groups_below() {
        let view = mixed();
        let mut plain = session(SessionStatus::Succeeded, vec![]).summary;
        plain.id = "s8".parse().unwrap();
        let table = sessions_table(&[view.summary, plain], None, &[], 0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ID       NAME                     STATUS      DONE/TOTAL      COST  CREATED                  JOBS"
        );
        assert_eq!(
            lines[1],
            "s7       review                   running            2/3     $0.64  1970-01-01T00:00:00.000Z 1 running, 1 succeeded, 1 failed"
        );
        assert_eq!(
            lines[2],
            "s8       review                   succeeded          0/0         -  1970-01-01T00:00:00.000Z "
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn a_page_that_is_not_all_sessions_says_how_to_see_the_rest() {
        assert_eq!(more_sessions_line(3, 3, 0), None);
        // (shown, total, offset), the line.
        let cases = [
            ((2, 5, 0), "the newest 2 of 5 sessions; 3 older: --offset 2 shows them, --limit 0 lists all"),
            ((2, 5, 2), "2 of 5 sessions, after the newest 2; 1 older: --offset 4 shows them, --limit 0 lists all"),
            ((1, 5, 4), "1 of 5 sessions, after the newest 4"),
            ((0, 5, 9), "no session past the newest 9 of 5"),
        ];
        for ((shown, total, offset), line) in cases {
            assert_eq!(
                more_sessions_line(shown, total, offset).as_deref(),
                Some(line),
                "{shown} of {total} after {offset}"
            );
        }
    }
}
