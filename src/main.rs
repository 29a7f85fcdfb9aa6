//! `lectern`: the one binary. Each subcommand wires the crates together;
//! no business logic lives here.

mod admin;
mod config;
mod database;
mod demo;
mod embedded_pg;
mod http_server;
mod media;
mod process;
mod replicate;
mod serve;
mod tasks;
mod telemetry;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "lectern",
    version,
    about = "Lectern: a video learning platform core"
)]
struct Cli {
    /// TOML configuration file (else the one LECTERN_CONFIG names);
    /// environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (and, in embedded mode, an in-process worker).
    Serve,
    /// Run a pipeline worker that transcodes queued assets.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Seed a demo organisation, learner and published sample lesson, then
    /// serve it and print the demo page's URL and credentials.
    Demo(demo::DemoArgs),
    /// Transcode a file into an HLS ladder in a directory.
    Transcode {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "default")]
        profile: String,
    },
    /// Print what a media file contains, as JSON.
    Probe { file: PathBuf },
    /// Operator commands: organisations, keys, users, audit, media replica.
    Admin {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Exit status for bad input: configuration, usage, or media.
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The video core on local files needs no configuration, database or storage.
    match cli.command {
        Command::Probe { file } => return media::probe(&file),
        Command::Transcode { file, out, profile } => {
            return runtime().map_or(ExitCode::FAILURE, |rt| {
                rt.block_on(media::transcode(file, out, &profile))
            })
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lectern: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    // Inside the runtime: the trace exporter's batches are a task on it.
    let tracing = {
        let _rt = runtime.enter();
        telemetry::Tracing::init(&config.settings)
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve::serve(config).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate => serve::migrate(config).await.map(|()| ExitCode::SUCCESS),
            Command::Demo(args) => demo::run(config, args).await.map(|()| ExitCode::SUCCESS),
            Command::Worker => worker::run(config).await.map(|()| ExitCode::SUCCESS),
            Command::Probe { .. } | Command::Transcode { .. } => unreachable!("handled above"),
            Command::Admin { args } => admin::run(config, args).await,
        }
    });
    tracing.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lectern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("lectern: cannot start the async runtime: {e}");
            None
        }
    }
}
