//! `lectern probe` and `lectern transcode`: the video core on local files,
//! no database or storage involved. Bad media exits with status 2 and ends
//! stderr with one JSON line `{"error":{"code","message"}}`, so scripts and
//! partners' tooling can act on the stable code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};

use lectern_pipelines::profiles::ProfileError;
use lectern_transcoder::encode::CancelFlag;
use lectern_transcoder::{LadderProfile, MediaError, MediaErrorCode};

use crate::EXIT_BAD_INPUT;

pub fn probe(file: &Path) -> ExitCode {
    match lectern_transcoder::probe::probe(file) {
        Ok(info) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&info).expect("MediaInfo serialises")
            );
            ExitCode::SUCCESS
        }
        Err(e) => media_failure(&e),
    }
}

pub async fn transcode(file: PathBuf, out: PathBuf, profile: &str) -> ExitCode {
    let profile = match load_profile(profile) {
        Ok(p) => p,
        Err(e) => {
            let error = serde_json::json!({ "error": { "code": "invalid_profile", "message": e.to_string() } });
            eprintln!("{error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let cancel = CancelFlag::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("transcode: cancelling…");
            on_signal.cancel();
        }
    });
    let job = tokio::task::spawn_blocking(move || {
        let last = AtomicI64::new(-1);
        let progress = |pct: f64| {
            // One line per whole percent: readable in a log, not a flood.
            let whole = pct.floor() as i64;
            if last.swap(whole, Ordering::Relaxed) != whole {
                eprintln!("transcode: {whole:>3}%");
            }
        };
        std::fs::create_dir_all(&out)?;
        lectern_pipelines::transcode::transcode_file(&file, &out, &profile, &progress, &cancel)
            .map(|report| (report, out))
    });
    match job.await {
        Ok(Ok((report, out))) => {
            let media_s = report.info.duration_s;
            let rungs: Vec<String> = report
                .plan
                .video
                .iter()
                .map(|r| format!("{}x{}", r.width, r.height))
                .collect();
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(
                stdout,
                "transcoded {:.1} s of media in {:.1} s ({:.2}× real time): {} video rung(s) [{}]{}",
                media_s,
                report.elapsed_s,
                media_s / report.elapsed_s.max(1e-9),
                rungs.len(),
                rungs.join(", "),
                if report.plan.audio.is_some() { " + audio" } else { "" },
            );
            if let Some(content) = &report.plan.content {
                let class = content.class.map_or("audio_only", |c| c.as_str());
                let _ = writeln!(
                    stdout,
                    "content: class={class} still_share={:.3} moving_area={:.4} single_voice={}",
                    content.still_share, content.moving_area, content.single_voice
                );
            }
            let _ = writeln!(
                stdout,
                "master playlist: {}",
                out.join("master.m3u8").display()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => media_failure(&e),
        Err(join) => media_failure(&MediaError::new(
            MediaErrorCode::Internal,
            format!("the transcode thread failed: {join}"),
        )),
    }
}

/// A built-in profile by name, or a TOML file by path.
fn load_profile(name: &str) -> Result<LadderProfile, ProfileError> {
    if name.ends_with(".toml") {
        lectern_pipelines::profiles::load(Path::new(name))
    } else {
        lectern_pipelines::profiles::builtin(name)
    }
}

fn media_failure(e: &MediaError) -> ExitCode {
    eprintln!("{}", e.to_json());
    if e.code.is_transient() {
        ExitCode::FAILURE
    } else {
        ExitCode::from(EXIT_BAD_INPUT)
    }
}
