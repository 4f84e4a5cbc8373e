//! `aam workers`: the workers connected to the manager.

use super::print_json;
use crate::args::ManagerFlags;
use crate::{endpoint, render};
use aam_protocol::now_ms;

pub async fn run(flags: &ManagerFlags, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let list = client.workers().await?;
    if json {
        print_json(&render::workers_json(&list));
    } else {
        print!("{}", render::workers_table(&list, now_ms()));
    }
    Ok(0)
}
