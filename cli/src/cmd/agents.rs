//! `aam agents`: every agent jobs can name, with where each comes from.

use super::print_json;
use crate::args::ManagerFlags;
use crate::{endpoint, render};

pub async fn run(flags: &ManagerFlags, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let known = client.agents().await?;
    if json {
        print_json(&render::agents_json(&known.agents, &known.problems));
    } else {
        print!("{}", render::agents_table(&known.agents, &known.problems));
    }
    Ok(0)
}
