//! `aam resources`: the shared resources the manager declares, each with
//! its capacity, how much is in use and which jobs hold it.

use super::print_json;
use crate::args::ManagerFlags;
use crate::endpoint;
use aam_protocol::json::resources_json;
use aam_protocol::resource::ResourceView;
use std::fmt::Write as _;

pub async fn run(flags: &ManagerFlags, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let list = client.resources().await?;
    if json {
        print_json(&resources_json(&list));
    } else {
        print!("{}", table(&list));
    }
    Ok(0)
}

/// One line per resource, then one indented line per holder.
fn table(resources: &[ResourceView]) -> String {
    if resources.is_empty() {
        return "no resources: declare them in the manager's config ([resources] db = 1)\n".into();
    }
    let mut out = format!(
        "{:<24} {:>8} {:>8}  HELD BY\n",
        "NAME", "CAPACITY", "IN USE"
    );
    for r in resources {
        let held: Vec<String> = r
            .holders
            .iter()
            .map(|h| {
                let worker = h.worker.as_deref().unwrap_or("worker away");
                format!("{} ({} on {worker})", h.job, h.count)
            })
            .collect();
        let held = if held.is_empty() {
            "-".into()
        } else {
            held.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8}  {held}",
            r.name, r.capacity, r.in_use
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::resource::ResourceHolder;

    #[test]
    fn a_table_names_each_holder_and_its_worker() {
        let view = ResourceView {
            name: "db".into(),
            capacity: 1,
            in_use: 1,
            holders: vec![ResourceHolder {
                job: "s7/tests".into(),
                count: 1,
                worker: Some("w1".into()),
            }],
        };
        let text = table(&[view]);
        assert!(text.contains("s7/tests (1 on w1)"), "{text}");
        assert!(table(&[]).starts_with("no resources"));
    }
}
