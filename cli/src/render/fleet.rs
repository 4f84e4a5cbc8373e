//! The agents jobs can name (`aam agents`) and the connected workers
//! (`aam workers`): tables and JSON.

use super::human_duration;
use aam_protocol::messages::AgentInfo;
use aam_protocol::model::WorkerView;
use std::fmt::Write as _;

pub fn agents_table(agents: &[AgentInfo], problems: &[(String, String)]) -> String {
    let mut out = String::new();
    if agents.is_empty() {
        out.push_str("no agents: define [agents.NAME] in the manager's config, or add definitions to its agents_dirs\n");
    } else {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<40} DESCRIPTION",
            "NAME", "MODEL", "SOURCE"
        );
        for a in agents {
            let _ = writeln!(
                out,
                "{:<24} {:<10} {:<40} {}",
                a.name,
                a.model.as_deref().unwrap_or("-"),
                a.source,
                a.description.as_deref().unwrap_or("")
            );
        }
    }
    for (path, why) in problems {
        let _ = writeln!(out, "skipped {path}: {why}");
    }
    out
}

pub fn workers_table(workers: &[WorkerView], now_ms: u64) -> String {
    if workers.is_empty() {
        return "no workers connected\n".into();
    }
    let mut out = format!(
        "{:<24} {:<22} {:>5} {:>7}  {:<10} {}\n",
        "NAME", "ADDRESS", "SLOTS", "RUNNING", "HEARTBEAT", "LABELS"
    );
    for w in workers {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "{:<24} {:<22} {:>5} {:>7}  {:<10} {}",
            w.name,
            w.address,
            w.slots,
            w.running.len(),
            format!(
                "{} ago",
                human_duration(now_ms.saturating_sub(w.last_heartbeat_ms))
            ),
            labels.join(",")
        );
    }
    out
}
