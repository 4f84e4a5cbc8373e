//! `aam sessions` (and `aam status` without a session): every session.

use super::print_json;
use crate::args::ManagerFlags;
use crate::{endpoint, render};

pub async fn run(flags: &ManagerFlags, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let list = client.sessions().await?;
    if json {
        print_json(&list.iter().map(render::summary_json).collect());
    } else {
        print!("{}", render::sessions_table(&list));
    }
    Ok(0)
}
