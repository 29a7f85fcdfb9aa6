//! The RTMP ingest server: a tokio TCP listener, one task per publisher,
//! `rml_rtmp` (I/O-free) for the handshake, chunk stream and commands.
//!
//! Any application name is accepted at `connect`; the stream key arrives
//! with `publish` and is checked there ([`lifecycle::authorise`]): a wrong
//! key is rejected with `NetStream.Publish.BadName` and the connection
//! closed before a single media message is read, and nothing is started
//! for it. Accepted audio and video messages are FLV tag bodies; they are
//! handed to the live encoder as tags (`appsrc ! flvdemux`). The first
//! video and audio message say their codec (the FLV codec id): anything
//! but H.264 (7) and AAC (10) is refused with a message in the event's log,
//! and the connection is closed. While the encoder has more than
//! [`MAX_QUEUED_BYTES`] waiting, the publisher is not read (TCP pushes
//! back); ten seconds of that ends the session with a message saying so.

use std::net::SocketAddr;
use std::time::Duration;

use lectern_transcoder::encode::live::{LiveEncode, LiveInput, LiveStatus};
use lectern_transcoder::{MediaError, MediaErrorCode};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{self, Connection};
use crate::LiveState;

/// FLV codec ids: video `CodecID` 7 is AVC, audio `SoundFormat` 10 is AAC.
const FLV_AVC: u8 = 7;
const FLV_AAC: u8 = 10;
/// A publisher that sends nothing for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Media the encoder may have waiting (seconds of a high-rate stream).
/// Above it the publisher is not read, so TCP pushes back on it (encoders
/// such as OBS then drop frames themselves) instead of memory filling up.
const MAX_QUEUED_BYTES: u64 = 8 * 1024 * 1024;
/// An encoder that stays that far behind for this long cannot keep up.
const MAX_BEHIND: Duration = Duration::from_secs(10);

/// Accepts publishers until cancelled.
pub async fn serve(state: LiveState, listener: TcpListener, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                let state = state.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    if let Err(e) = publisher(state, socket, peer, cancel).await {
                        tracing::info!(%peer, error = %e, "RTMP publisher left");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn read_some(socket: &mut TcpStream, buf: &mut [u8]) -> Result<usize, BoxError> {
    match tokio::time::timeout(IDLE_TIMEOUT, socket.read(buf)).await {
        Ok(read) => Ok(read?),
        Err(_) => Err("the publisher sent nothing for 20 s".into()),
    }
}

async fn send(
    socket: &mut TcpStream,
    results: Vec<ServerSessionResult>,
    events: &mut Vec<ServerSessionEvent>,
) -> Result<(), BoxError> {
    for result in results {
        match result {
            ServerSessionResult::OutboundResponse(packet) => {
                socket.write_all(&packet.bytes).await?
            }
            ServerSessionResult::RaisedEvent(event) => events.push(event),
            ServerSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    Ok(())
}

/// The state of one publishing connection once its key was accepted.
struct Publishing {
    connection: Connection,
    encode: Option<LiveEncode>,
    plan_noted: bool,
    checked_video: bool,
    checked_audio: bool,
}

async fn publisher(
    state: LiveState,
    mut socket: TcpStream,
    peer: SocketAddr,
    server_cancel: CancellationToken,
) -> Result<(), BoxError> {
    socket.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut handshake = Handshake::new(PeerType::Server);
    let leftover = loop {
        let n = read_some(&mut socket, &mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        match handshake.process_bytes(&buf[..n])? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())?;
    let mut events = Vec::new();
    send(&mut socket, initial, &mut events).await?;
    let mut publishing: Option<Publishing> = None;
    let mut input = leftover;
    let outcome: Result<(), BoxError> = 'connection: loop {
        if !input.is_empty() {
            let results = match session.handle_input(&input) {
                Ok(results) => results,
                Err(e) => break 'connection Err(e.into()),
            };
            input.clear();
            if let Err(e) = send(&mut socket, results, &mut events).await {
                break 'connection Err(e);
            }
        }
        for event in std::mem::take(&mut events) {
            match handle(&state, &mut session, &mut socket, &mut publishing, event).await {
                Ok(true) => {}
                Ok(false) => break 'connection Ok(()),
                Err(e) => break 'connection Err(e),
            }
        }
        if let Some(p) = &mut publishing {
            if let Some(encode) = &p.encode {
                if !p.plan_noted {
                    p.plan_noted =
                        lifecycle::note_plan(&state, p.connection.event.event_id, encode).await;
                }
                if let LiveStatus::Failed(e) = lifecycle::poll(encode) {
                    if e.code == MediaErrorCode::UnsupportedCodec {
                        p.connection.refused(&e).await;
                    }
                    break 'connection Err(e.to_string().into());
                }
            }
        }
        let cancel = publishing
            .as_ref()
            .map(|p| p.connection.cancel.clone())
            .unwrap_or_default();
        let n = tokio::select! {
            _ = server_cancel.cancelled() => break 'connection Ok(()),
            _ = cancel.cancelled() => break 'connection Ok(()),
            n = read_some(&mut socket, &mut buf) => match n {
                Ok(0) => break 'connection Ok(()),
                Ok(n) => n,
                Err(e) => break 'connection Err(e),
            },
        };
        input.extend_from_slice(&buf[..n]);
    };
    if let Some(p) = publishing {
        tracing::info!(%peer, event = %p.connection.event.event_id, "RTMP publisher finished");
        p.connection.close(p.encode).await;
    }
    outcome
}

/// Reacts to one session event; `Ok(false)` closes the connection.
async fn handle(
    state: &LiveState,
    session: &mut ServerSession,
    socket: &mut TcpStream,
    publishing: &mut Option<Publishing>,
    event: ServerSessionEvent,
) -> Result<bool, BoxError> {
    let mut raised = Vec::new();
    match event {
        ServerSessionEvent::ConnectionRequested { request_id, .. } => {
            let results = session.accept_request(request_id)?;
            send(socket, results, &mut raised).await?;
        }
        ServerSessionEvent::PublishStreamRequested {
            request_id,
            stream_key,
            ..
        } => {
            if publishing.is_some() {
                let results = session.reject_request(
                    request_id,
                    "NetStream.Publish.BadName",
                    "one stream per connection",
                )?;
                send(socket, results, &mut raised).await?;
                return Ok(false);
            }
            let accepted = match lifecycle::authorise(state, &stream_key).await {
                Ok(event) => Connection::begin(state, event, "rtmp", None).await,
                Err(refusal) => Err(refusal),
            };
            let connection = match accepted {
                Ok(connection) => connection,
                Err(refusal) => {
                    tracing::info!(reason = refusal.message(), "RTMP publish refused");
                    let results = session.reject_request(
                        request_id,
                        "NetStream.Publish.BadName",
                        refusal.message(),
                    )?;
                    send(socket, results, &mut raised).await?;
                    socket.flush().await?;
                    return Ok(false);
                }
            };
            let encode = LiveEncode::start(
                LiveInput::Flv,
                &state.settings.profile,
                connection.local_root(),
                connection.observer(),
                Some(connection.part_options()),
            );
            let encode = match encode {
                Ok(encode) => encode,
                Err(e) => {
                    connection.close(None).await;
                    return Err(e.to_string().into());
                }
            };
            let results = session.accept_request(request_id)?;
            *publishing = Some(Publishing {
                connection,
                encode: Some(encode),
                plan_noted: false,
                checked_video: false,
                checked_audio: false,
            });
            send(socket, results, &mut raised).await?;
        }
        ServerSessionEvent::PublishStreamFinished { .. } => return Ok(false),
        ServerSessionEvent::VideoDataReceived {
            data, timestamp, ..
        } => return media(publishing, 9, timestamp.value, &data).await,
        ServerSessionEvent::AudioDataReceived {
            data, timestamp, ..
        } => return media(publishing, 8, timestamp.value, &data).await,
        _ => {}
    }
    Ok(true)
}

async fn media(
    publishing: &mut Option<Publishing>,
    tag_type: u8,
    timestamp_ms: u32,
    data: &[u8],
) -> Result<bool, BoxError> {
    // Media before an accepted publish is never read.
    let Some(p) = publishing else {
        return Ok(true);
    };
    let Some(&first) = data.first() else {
        return Ok(true);
    };
    let refused = if tag_type == 9 && !p.checked_video {
        p.checked_video = true;
        let codec = first & 0x0f;
        (codec != FLV_AVC).then(|| format!("the video codec is FLV codec id {codec}, not H.264 (7): publish H.264 video with AAC audio"))
    } else if tag_type == 8 && !p.checked_audio {
        p.checked_audio = true;
        let format = first >> 4;
        (format != FLV_AAC).then(|| format!("the audio codec is FLV sound format {format}, not AAC (10): publish H.264 video with AAC audio"))
    } else {
        None
    };
    if let Some(message) = refused {
        let error = MediaError::new(MediaErrorCode::UnsupportedCodec, message);
        p.connection.refused(&error).await;
        return Err(error.to_string().into());
    }
    if let Some(encode) = &mut p.encode {
        let behind_since = tokio::time::Instant::now();
        while encode.queued_bytes() > MAX_QUEUED_BYTES {
            if behind_since.elapsed() > MAX_BEHIND {
                let error = MediaError::new(
                    MediaErrorCode::Internal,
                    "the live encoder could not keep up with this stream for 10 s: publish at a \
                     lower bitrate or resolution",
                );
                p.connection.refused(&error).await;
                return Err(error.to_string().into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        encode.push_flv_tag(tag_type, timestamp_ms, data)?;
    }
    Ok(true)
}
