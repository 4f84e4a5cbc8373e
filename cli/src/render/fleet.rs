//! The agents jobs can name (`aam agents`) and the connected workers
//! (`aam workers`): tables and JSON.

use super::{human_duration, rfc3339};
use aam_protocol::messages::AgentInfo;
use aam_protocol::model::WorkerView;
use serde_json::{json, Value};
use std::fmt::Write as _;

pub fn agents_json(agents: &[AgentInfo], problems: &[(String, String)]) -> Value {
    json!({
        "agents": agents.iter().map(|a| json!({
            "name": a.name,
            "source": a.source,
            "description": a.description,
            "model": a.model,
            "tools": a.tools,
            "command": a.command,
        })).collect::<Vec<_>>(),
        "problems": problems.iter().map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>(),
    })
}

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

pub fn workers_json(workers: &[WorkerView]) -> Value {
    workers
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "address": w.address,
                "slots": w.slots,
                "running": w.running,
                "labels": w.labels,
                "connected_at": rfc3339(w.connected_at_ms),
                "last_heartbeat": rfc3339(w.last_heartbeat_ms),
            })
        })
        .collect()
}
