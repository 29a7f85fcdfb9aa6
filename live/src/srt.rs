//! The SRT ingest listener: GStreamer's `srtsrc` in listener mode, one
//! caller at a time per port, MPEG-TS inside (what `ffmpeg -f mpegts
//! srt://…` and OBS send).
//!
//! The stream key is the caller's SRT stream id (`streamid=<key>`, or the
//! access-control form `#!::r=<key>`); it is checked in `caller-connecting`,
//! before SRT accepts the connection, so a wrong key never gets a byte of
//! media read. A configured passphrase makes SRT's encryption mandatory.
//! When the caller leaves, `srtsrc` ends the stream; the connection is
//! closed like an RTMP one, and a new listener takes the port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lectern_transcoder::encode::live::{LiveEncode, LiveInput, LiveStatus};
use lectern_transcoder::encode::{PartObserver, PartOptions, SegmentObserver};
use lectern_transcoder::MediaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{self, Connection};
use crate::LiveState;

/// The key in an SRT stream id: the id itself, or the `r` (resource)
/// field of the SRT access-control syntax `#!::r=<key>,m=publish`.
pub fn key_of(stream_id: &str) -> &str {
    match stream_id.strip_prefix("#!::") {
        Some(fields) => fields
            .split(',')
            .find_map(|f| f.strip_prefix("r="))
            .unwrap_or(""),
        None => stream_id,
    }
}

/// Listens on `port` until cancelled, one publisher after another.
pub async fn serve(state: LiveState, port: u16, cancel: CancellationToken) {
    while !cancel.is_cancelled() {
        if let Err(e) = one_caller(&state, port, &cancel).await {
            tracing::warn!(port, error = %e, "SRT listener failed; restarting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn one_caller(
    state: &LiveState,
    port: u16,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let slot: Arc<Mutex<Option<Connection>>> = Arc::default();
    let forward: Arc<Mutex<Option<SegmentObserver>>> = Arc::default();
    let forward_parts: Arc<Mutex<Option<PartObserver>>> = Arc::default();
    let runtime = tokio::runtime::Handle::current();
    // Segments are written before the caller is known: one scratch
    // directory per listener, handed to the connection it becomes.
    let work = state
        .settings
        .work_dir
        .join(format!("srt-{}", uuid::Uuid::new_v4()));
    let authorise = {
        let work = work.clone();
        let state = state.clone();
        let slot = slot.clone();
        let forward = forward.clone();
        let forward_parts = forward_parts.clone();
        Arc::new(move |stream_id: &str| {
            let key = key_of(stream_id).to_string();
            // GStreamer's SRT thread, outside the runtime: block on the check.
            let begun = runtime.block_on(async {
                let event = lifecycle::authorise(&state, &key).await?;
                Connection::begin(&state, event, "srt", Some(work.clone())).await
            });
            match begun {
                Ok(connection) => {
                    *forward.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(connection.observer());
                    *forward_parts.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(connection.part_options().observer);
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection);
                    true
                }
                Err(refusal) => {
                    tracing::info!(reason = refusal.message(), "SRT caller refused");
                    false
                }
            }
        })
    };
    let observer: SegmentObserver = {
        let forward = forward.clone();
        Arc::new(move |segment| {
            if let Some(observer) = forward.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                observer(segment);
            }
        })
    };
    let encode = LiveEncode::start(
        LiveInput::Srt {
            port,
            passphrase: state.settings.srt_passphrase.clone(),
            authorise,
        },
        &state.settings.profile,
        &work,
        observer,
        Some(PartOptions {
            target_s: crate::LIVE_PART_S,
            observer: Arc::new(move |part| {
                if let Some(observer) = forward_parts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                {
                    observer(part);
                }
            }),
        }),
    )
    .map_err(|e| e.to_string())?;
    let mut plan_noted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let failure = loop {
        let stop = slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.cancel.clone())
            .unwrap_or_default();
        tokio::select! {
            _ = cancel.cancelled() => break None,
            _ = stop.cancelled() => break None,
            _ = tick.tick() => {}
        }
        let event = slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.event.event_id);
        if let (Some(event), false) = (event, plan_noted) {
            plan_noted = lifecycle::note_plan(state, event, &encode).await;
        }
        match lifecycle::poll(&encode) {
            LiveStatus::Running => {}
            LiveStatus::Ended => break None,
            LiveStatus::Failed(e) => break Some(e),
        }
    };
    let connection = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    match connection {
        Some(connection) => {
            if let Some(e) = &failure {
                if e.code == MediaErrorCode::UnsupportedCodec {
                    connection.refused(e).await;
                }
            }
            connection.close(Some(encode)).await;
        }
        None => {
            encode.abort();
            let _ = std::fs::remove_dir_all(&work);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_is_the_stream_id_or_its_resource() {
        assert_eq!(super::key_of("lsk_abc"), "lsk_abc");
        assert_eq!(super::key_of("#!::r=lsk_abc,m=publish"), "lsk_abc");
        assert_eq!(super::key_of("#!::m=publish"), "");
    }
}
