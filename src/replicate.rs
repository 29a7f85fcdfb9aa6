//! `lectern admin replicate`: the media backup. Copies the configured
//! object store (renditions, playlists, sources, audit checkpoints) into a
//! replica — another bucket, usually in another region or account, or a
//! directory — with `lectern_storage::replicate`: only what the replica
//! lacks or holds differently is copied, an interrupted run continues when
//! run again, and nothing is deleted from the replica unless
//! `--prune-after-days` says after how long objects deleted from the
//! source may go. Needs no database.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use lectern_storage::replicate::{replicate, ReplicateOptions};
use lectern_storage::{FsStore, S3Config, S3Store, Store};

use crate::config::{Config, StorageConfig};

#[derive(Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_bucket", "to_dir"])))]
pub struct ReplicateArgs {
    /// The replica bucket, on the same S3 service as LECTERN_S3_* unless
    /// --to-endpoint says otherwise; credentials from
    /// LECTERN_REPLICA_S3_ACCESS_KEY_ID/…_SECRET_ACCESS_KEY, else LECTERN_S3_*.
    #[arg(long)]
    to_bucket: Option<String>,
    /// A directory to replicate into (objects stored as the fs backend does).
    #[arg(long)]
    to_dir: Option<PathBuf>,
    /// The replica's S3 endpoint (default: LECTERN_S3_ENDPOINT).
    #[arg(long, requires = "to_bucket")]
    to_endpoint: Option<String>,
    /// The replica's S3 region (default: LECTERN_S3_REGION).
    #[arg(long, requires = "to_bucket")]
    to_region: Option<String>,
    /// Path-style addressing for the replica (default: LECTERN_S3_PATH_STYLE).
    #[arg(long, requires = "to_bucket")]
    to_path_style: Option<bool>,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Objects copied at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Delete from the replica objects deleted from the source this many
    /// days ago (as first noticed by a run); without it nothing is deleted.
    #[arg(long)]
    prune_after_days: Option<u32>,
}

pub async fn run(config: &Config, args: ReplicateArgs) -> Result<ExitCode> {
    let source = crate::process::open_store(&config.storage).await?;
    let (target, shown) = open_target(config, &args).await?;
    let options = ReplicateOptions {
        prefix: args.prefix.clone(),
        concurrency: args.concurrency.max(1),
        prune_after: args
            .prune_after_days
            .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
        now: chrono::Utc::now(),
    };
    eprintln!(
        "replicating {} storage{} into {shown}",
        source.backend_name(),
        if args.prefix.is_empty() {
            String::new()
        } else {
            format!(" (keys under `{}`)", args.prefix)
        }
    );
    let report = replicate(source.as_ref(), target.as_ref(), &options)
        .await
        .context("listing the source or the replica")?;
    println!(
        "{} objects ({} bytes) in the source: {} copied ({} bytes), {} already in the replica; \
         {} gone from the source kept, {} pruned; {} failed",
        report.source_objects,
        report.source_bytes,
        report.copied,
        report.copied_bytes,
        report.up_to_date,
        report.kept_missing_from_source,
        report.pruned,
        report.failed.len()
    );
    if report.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (key, error) in report.failed.iter().take(20) {
        eprintln!("  {key}: {error}");
    }
    eprintln!("lectern admin replicate: some objects were not copied; run it again to retry them");
    Ok(ExitCode::FAILURE)
}

async fn open_target(config: &Config, args: &ReplicateArgs) -> Result<(Box<dyn Store>, String)> {
    if let Some(dir) = &args.to_dir {
        let store = FsStore::open(dir.clone())
            .await
            .with_context(|| format!("cannot use {} as the replica", dir.display()))?;
        return Ok((Box::new(store), dir.display().to_string()));
    }
    let bucket = args.to_bucket.clone().context("--to-bucket or --to-dir")?;
    let s = &config.settings;
    let source_s3 = match &config.storage {
        StorageConfig::S3(c) => Some(c),
        StorageConfig::Fs { .. } => None,
    };
    if source_s3.is_some_and(|c| c.bucket == bucket && args.to_endpoint.is_none()) {
        anyhow::bail!("--to-bucket {bucket} is the source bucket itself");
    }
    let access_key_id = s
        .replica_s3_access_key_id
        .clone()
        .or_else(|| source_s3.map(|c| c.access_key_id.clone()))
        .context("LECTERN_REPLICA_S3_ACCESS_KEY_ID (or LECTERN_S3_ACCESS_KEY_ID) is required with --to-bucket")?;
    let secret_access_key = s
        .replica_s3_secret_access_key
        .as_ref()
        .map(|k| k.expose().to_owned())
        .or_else(|| source_s3.map(|c| c.secret_access_key.clone()))
        .context("LECTERN_REPLICA_S3_SECRET_ACCESS_KEY (or LECTERN_S3_SECRET_ACCESS_KEY) is required with --to-bucket")?;
    let endpoint = args.to_endpoint.clone().or_else(|| s.s3_endpoint.clone());
    let shown = format!(
        "bucket {bucket} at {}",
        endpoint.as_deref().unwrap_or("AWS")
    );
    let store = S3Store::new(S3Config {
        endpoint,
        region: args
            .to_region
            .clone()
            .unwrap_or_else(|| s.s3_region.clone()),
        bucket,
        access_key_id,
        secret_access_key,
        path_style: args.to_path_style.unwrap_or(s.s3_path_style),
    })
    .context("invalid replica S3 configuration")?;
    Ok((Box::new(store), shown))
}
