//! What an agent job did, as the CLI shows it: its cost, its activity
//! (`3 turns · Edit src/lib.rs · $0.12`), its `agent` JSON object, the
//! session's spend, and the limit groups paused on a usage limit
//! (`usage limit (claude): paused until 14:05:00`).

use super::human_duration;
use aam_protocol::agent_run::{AgentView, LimitPause};
use aam_protocol::model::{JobView, SessionSummary};
use std::time::{Duration, UNIX_EPOCH};

/// Most characters of a last tool call shown in a line (a `Bash` command
/// can be long; `status --json` has it whole).
const TOOL_CHARS: usize = 60;

/// A cost in USD: cents, or four decimals under a cent, so a cheap run
/// does not read as free.
pub fn usd(cost: f64) -> String {
    if cost > 0.0 && cost < 0.01 {
        format!("${cost:.4}")
    } else {
        format!("${cost:.2}")
    }
}

/// A token count at a glance: `850`, `12.3k`, `4.1M`.
pub fn token_count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_949 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

pub fn turns(n: u32) -> String {
    if n == 1 {
        "1 turn".into()
    } else {
        format!("{n} turns")
    }
}

/// Whether any job of these is an agent job that reports what it does
/// (tables then grow a cost column; a session of plain commands, or of
/// text agents, reads as it always did).
pub fn any_agent(jobs: &[JobView]) -> bool {
    jobs.iter()
        .any(|j| j.agent.as_ref().is_some_and(reports_activity))
}

/// Whether an agent said anything of itself (a session, a model, a turn,
/// a cost): a text agent, or one that never started, did not, and showing
/// it `0 turns, $0.00` would say nothing.
pub fn reports_activity(agent: &AgentView) -> bool {
    agent.session_id.is_some() || agent.model.is_some() || agent.turns > 0 || agent.cost_usd > 0.0
}

/// `s` cut to `max` characters, with `…` where it was cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// What the agent has done so far: `3 turns · Edit src/lib.rs`, and
/// `retrying after limit` while it waits to retry. `None` before its first
/// turn.
pub fn activity(agent: &AgentView) -> Option<String> {
    let mut parts = Vec::new();
    if agent.turns > 0 || agent.tool_calls > 0 {
        parts.push(turns(agent.turns));
    }
    if let Some(tool) = &agent.last_tool {
        // One line, whatever the tool's argument held.
        let tool = tool.split_whitespace().collect::<Vec<_>>().join(" ");
        parts.push(clip(&tool, TOOL_CHARS));
    }
    if agent.retrying {
        parts.push("retrying after limit".into());
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// The activity with the cost after it: `3 turns · Edit src/lib.rs · $0.12`
/// (where there is no cost column). `None` before anything happened.
pub fn activity_with_cost(agent: &AgentView) -> Option<String> {
    let cost = (agent.cost_usd > 0.0).then(|| usd(agent.cost_usd));
    match (activity(agent), cost) {
        (Some(a), Some(c)) => Some(format!("{a} · {c}")),
        (a, c) => a.or(c),
    }
}

/// What a session's agents spent: `$0.46 (12.3k input, 2.1k output
/// tokens)`.
pub fn spend(s: &SessionSummary) -> String {
    format!(
        "{} ({} input, {} output tokens)",
        usd(s.cost_usd),
        token_count(s.input_tokens),
        token_count(s.output_tokens)
    )
}

/// Whether a session has spent anything (a session of plain commands has
/// not, and its views stay as they were).
pub fn has_spend(s: &SessionSummary) -> bool {
    s.cost_usd > 0.0 || s.input_tokens > 0 || s.output_tokens > 0
}

/// One line per paused limit group, in local time:
/// `usage limit (claude): paused until 14:05:00 (4m05s from now)`.
pub fn paused_lines(paused: &[LimitPause], now_ms: u64) -> String {
    paused
        .iter()
        .map(|p| paused_line(p, now_ms, utc_offset_secs(p.until_ms)) + "\n")
        .collect()
}

/// When a pause ends, in local time: `14:05:00 (4m from now)`.
pub fn until_text(until_ms: u64, now_ms: u64) -> String {
    let left = match until_ms.checked_sub(now_ms) {
        Some(ms) if ms > 0 => format!("{} from now", human_duration(ms)),
        _ => "now".into(),
    };
    let at = clock_time(until_ms, now_ms, utc_offset_secs(until_ms));
    format!("{at} ({left})")
}

fn paused_line(p: &LimitPause, now_ms: u64, utc_offset_secs: i64) -> String {
    let left = match p.until_ms.checked_sub(now_ms) {
        Some(ms) if ms > 0 => format!("{} from now", human_duration(ms)),
        _ => "resuming".into(),
    };
    format!(
        "usage limit ({}): paused until {} ({left})",
        p.group,
        clock_time(p.until_ms, now_ms, utc_offset_secs)
    )
}

/// `HH:MM:SS` at `utc_offset_secs` from UTC; with the date before it when
/// it is not within the next 20 hours (a weekly limit), where a bare time
/// would be ambiguous.
fn clock_time(ms: u64, now_ms: u64, utc_offset_secs: i64) -> String {
    let local_ms = (ms as i64 + utc_offset_secs * 1000).max(0) as u64;
    // "2025-06-03T14:05:00Z": humantime writes UTC; shifted by the offset,
    // its fields are the local ones.
    let stamp =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(local_ms)).to_string();
    let near = ms.abs_diff(now_ms) < 20 * 3_600_000;
    if near {
        stamp[11..19].to_string()
    } else {
        format!("{} {}", &stamp[..10], &stamp[11..19])
    }
}

/// This machine's offset from UTC at `ms` (its time zone, daylight saving
/// included); 0 when it cannot tell.
fn utc_offset_secs(ms: u64) -> i64 {
    let Ok(secs) = libc::time_t::try_from(ms / 1000) else {
        return 0;
    };
    // SAFETY: localtime_r reads `secs` and writes only into `tm`, which
    // outlives the call; a zeroed `tm` is a valid value of that C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let converted = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if converted {
        tm.tm_gmtoff as i64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_views::agent_view;
    use aam_protocol::json::*;
    use serde_json::json;

    #[test]
    fn costs_read_as_cents_and_a_cheap_run_is_not_free() {
        assert_eq!(usd(0.1234), "$0.12");
        assert_eq!(usd(12.0), "$12.00");
        assert_eq!(usd(0.0042), "$0.0042");
        assert_eq!(usd(0.0), "$0.00");
    }

    #[test]
    fn token_counts_are_short() {
        assert_eq!(token_count(850), "850");
        assert_eq!(token_count(12_345), "12.3k");
        assert_eq!(token_count(4_100_000), "4.1M");
    }

    #[test]
    fn activity_is_turns_last_tool_and_cost() {
        let agent = agent_view(3, Some("Edit src/lib.rs"), 0.1234);
        assert_eq!(activity(&agent).unwrap(), "3 turns · Edit src/lib.rs");
        assert_eq!(
            activity_with_cost(&agent).unwrap(),
            "3 turns · Edit src/lib.rs · $0.12"
        );
        let first = agent_view(1, None, 0.0);
        assert_eq!(activity_with_cost(&first).unwrap(), "1 turn");
        assert_eq!(activity(&agent_view(0, None, 0.0)), None);
    }

    #[test]
    fn a_retry_after_a_limit_shows_and_a_long_command_is_cut() {
        let mut agent = agent_view(2, Some("Bash cargo test\n  --workspace"), 0.0);
        agent.retrying = true;
        assert_eq!(
            activity(&agent).unwrap(),
            "2 turns · Bash cargo test --workspace · retrying after limit"
        );
        agent.last_tool = Some(format!("Bash {}", "x".repeat(100)));
        let shown = activity(&agent).unwrap();
        let tool = shown.split(" · ").nth(1).unwrap();
        assert_eq!(tool.chars().count(), TOOL_CHARS);
        assert!(tool.ends_with('…'));
    }

    fn pause(until_ms: u64) -> LimitPause {
        LimitPause {
            group: "claude".into(),
            until_ms,
            backoff_ms: 60_000,
            message: "429 rate_limit_error".into(),
        }
    }

    #[test]
    fn a_paused_group_says_until_when_in_local_time() {
        // 2023-11-14T22:13:20Z; 14:05:00 UTC the next day is within 20 h.
        let now = 1_700_000_000_000;
        let until = 1_700_056_800_000 + 5 * 60_000;
        assert_eq!(
            paused_line(&pause(until), now, 0),
            "usage limit (claude): paused until 14:05:00 (15h51m from now)"
        );
        assert_eq!(
            paused_line(&pause(now + 245_000), now, 3600),
            "usage limit (claude): paused until 23:17:25 (4m05s from now)"
        );
        assert_eq!(
            paused_line(&pause(now - 1), now, 0),
            "usage limit (claude): paused until 22:13:19 (resuming)"
        );
    }

    #[test]
    fn a_pause_days_away_carries_its_date() {
        let now = 1_700_000_000_000;
        let until = now + 3 * 86_400_000;
        assert_eq!(
            paused_line(&pause(until), now, 0),
            "usage limit (claude): paused until 2023-11-17 22:13:20 (72h00m from now)"
        );
    }

    #[test]
    fn paused_groups_in_json_have_an_rfc3339_time() {
        assert_eq!(
            paused_json(&[pause(1_700_000_000_000)]),
            json!([{
                "group": "claude",
                "until": "2023-11-14T22:13:20.000Z",
                "message": "429 rate_limit_error",
            }])
        );
    }
}
