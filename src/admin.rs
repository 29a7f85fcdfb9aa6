//! `lectern admin …`: operator commands (being written with identity).

use std::process::ExitCode;

use crate::config::Config;

pub async fn run(_config: Config, _args: Vec<String>) -> anyhow::Result<ExitCode> {
    Ok(crate::not_yet("admin", "identity and ingest"))
}
