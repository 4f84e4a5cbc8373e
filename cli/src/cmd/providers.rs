//! `aam providers`: the manager's providers of workers on demand, each
//! with its kind, workers connected and launching against its maximum,
//! and what went wrong last.

use super::print_json;
use crate::args::ManagerFlags;
use crate::endpoint;
use aam_protocol::model::ProviderView;
use serde_json::{json, Value};
use std::fmt::Write as _;

pub async fn run(flags: &ManagerFlags, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let list = client.providers().await?;
    if json {
        print_json(&providers_json(&list));
    } else {
        print!("{}", table(&list));
    }
    Ok(0)
}

pub fn providers_json(list: &[ProviderView]) -> Value {
    list.iter()
        .map(|p| {
            json!({
                "name": p.name,
                "kind": p.kind,
                "labels": p.labels,
                "max_workers": p.max_workers,
                "connected": p.connected,
                "launching": p.launching,
                "last_error": p.last_error,
            })
        })
        .collect()
}

fn table(list: &[ProviderView]) -> String {
    if list.is_empty() {
        return "no providers: declare them in the manager's config ([[providers]])\n".into();
    }
    let mut out = format!(
        "{:<20} {:<10} {:>9} {:>9} {:>4}  LAST ERROR\n",
        "NAME", "KIND", "CONNECTED", "LAUNCHING", "MAX"
    );
    for p in list {
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>9} {:>9} {:>4}  {}",
            p.name,
            p.kind,
            p.connected,
            p.launching,
            p.max_workers,
            p.last_error.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_shows_each_provider_and_its_last_error() {
        let p = ProviderView {
            name: "pods".into(),
            kind: "podman".into(),
            max_workers: 4,
            connected: 1,
            launching: 2,
            last_error: Some("podman run: image not known".into()),
            ..ProviderView::default()
        };
        let text = table(&[p]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("pods"), "{text}");
        assert!(
            line.contains("podman") && line.ends_with("podman run: image not known"),
            "{text}"
        );
        assert!(table(&[]).starts_with("no providers"));
    }
}
