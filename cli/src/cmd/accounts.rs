//! `aam accounts`: the accounts agents' jobs run under, each with when its
//! usage-limit pause ends, its running jobs and what ran on it cost.

use super::print_json;
use crate::args::ManagerFlags;
use crate::endpoint;
use crate::render::until_text;
use aam_protocol::account::AccountView;
use aam_protocol::json::accounts_json;
use std::fmt::Write as _;

pub async fn run(flags: &ManagerFlags, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let list = client.accounts().await?;
    if json {
        print_json(&accounts_json(&list));
    } else {
        print!("{}", table(&list, aam_protocol::now_ms()));
    }
    Ok(0)
}

/// One line per account: its state, running jobs, cost, and the jobs.
fn table(accounts: &[AccountView], now_ms: u64) -> String {
    if accounts.is_empty() {
        return "no accounts: declare them in the manager's config ([accounts.NAME] env = { ... })\n"
            .into();
    }
    let mut out = format!(
        "{:<20} {:<42} {:>7} {:>10}  JOBS\n",
        "NAME", "STATE", "RUNNING", "COST"
    );
    for a in accounts {
        let state = match a.paused_until_ms {
            Some(until) => format!("paused until {}", until_text(until, now_ms)),
            None if a.resuming => "resuming (a few jobs at a time)".into(),
            None => "ready".into(),
        };
        let jobs = if a.running.is_empty() {
            "-".into()
        } else {
            a.running.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<20} {:<42} {:>7} {:>10}  {jobs}",
            a.name,
            state,
            a.running.len(),
            format!("${:.4}", a.cost_usd)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, paused_until_ms: Option<u64>, running: &[&str]) -> AccountView {
        AccountView {
            name: name.into(),
            paused_until_ms,
            pause_message: None,
            resuming: false,
            running: running.iter().map(|s| s.to_string()).collect(),
            cost_usd: 0.5,
        }
    }

    #[test]
    fn a_table_shows_each_account_its_pause_and_its_jobs() {
        let now = 1_000_000;
        let shown = table(
            &[
                account("work", Some(now + 300_000), &[]),
                account("personal", None, &["s1/a", "s1/b"]),
            ],
            now,
        );
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[1].starts_with("work") && lines[1].contains("paused until"));
        assert!(lines[1].contains("(5m00s from now)"), "{shown}");
        assert!(
            lines[2].contains("ready") && lines[2].contains("s1/a, s1/b"),
            "{shown}"
        );
        assert!(lines[2].contains("$0.5000"), "{shown}");
        assert!(table(&[], now).starts_with("no accounts"));
    }
}
