//! What happens to an event as publishers come and go: a publisher's key
//! is checked ([`authorise`]) before any media is read; a connection
//! ([`Connection`]) runs one live encode and publishes its segments; when
//! it ends the event waits for the publisher for the reconnect window
//! (`disconnected_at`), and [`sweep`] ends every event whose window has
//! passed. [`end_event`] (the organiser's route or the sweep) stops the
//! publisher if one is still there and publishes the replay. A publisher
//! holds only as long as its key: each node's sweep also cuts off the
//! publishers connected to it whose key was rotated or whose event was
//! ended, wherever that happened ([`cut_stale_publishers`]), and publishes
//! the replay of an event ended elsewhere whose ladder it holds
//! ([`publish_replays_ended_elsewhere`]).
//!
//! Every transition is one conditional `UPDATE` on `live_events`, so two
//! nodes (or a route racing the sweep) cannot both end an event, and each
//! is written to the event's log and to the audit log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lectern_identity::audit::{self, AuditEvent};
use lectern_transcoder::encode::live::{LiveEncode, LiveStatus};
use lectern_transcoder::encode::{PartOptions, PartReady, SegmentObserver, SegmentReady};
use lectern_transcoder::MediaError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{key, LiveState};

/// An event a publisher may stream to, found by its key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Authorised {
    pub event_id: Uuid,
    pub organisation_id: Uuid,
    pub asset_id: Uuid,
    pub state: String,
    pub stream_key_sha256: Vec<u8>,
    /// The event's own DVR window, if it set one.
    pub dvr_window_s: Option<i32>,
}

impl Authorised {
    /// Seconds of the live playlist's window.
    pub fn dvr_window_s(&self, state: &LiveState) -> f64 {
        self.dvr_window_s
            .map_or(state.settings.dvr_window.as_secs_f64(), f64::from)
    }
}

/// Why a publisher was turned away, in words the publisher's tool shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownKey,
    Over,
    AlreadyPublishing,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown stream key",
            Refusal::Over => "this live event has ended",
            Refusal::AlreadyPublishing => "another publisher is streaming to this event",
        }
    }
}

/// Publishers connected to this node, by event: how to stop each, and
/// the digest of the key each was let in with.
#[derive(Default)]
pub struct Active(Mutex<HashMap<Uuid, Publisher>>);

struct Publisher {
    cancel: CancellationToken,
    key_sha256: Vec<u8>,
}

impl Active {
    fn claim(&self, event: Uuid, key_sha256: &[u8]) -> Option<CancellationToken> {
        let mut active = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if active.contains_key(&event) {
            return None;
        }
        let token = CancellationToken::new();
        active.insert(
            event,
            Publisher {
                cancel: token.clone(),
                key_sha256: key_sha256.to_vec(),
            },
        );
        Some(token)
    }

    fn release(&self, event: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&event);
    }

    /// Cuts the event's publisher off if it is connected here.
    pub fn stop(&self, event: Uuid) -> bool {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&event) {
            Some(publisher) => {
                publisher.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Each connected publisher's event and the key digest it came in with.
    fn keys(&self) -> (Vec<Uuid>, Vec<Vec<u8>>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, p)| !p.cancel.is_cancelled())
            .map(|(event, p)| (*event, p.key_sha256.clone()))
            .unzip()
    }

    pub fn is_active(&self, event: Uuid) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&event)
    }
}

/// Looks the presented key up; nothing about the event is revealed to a
/// caller whose key does not match.
pub async fn authorise(state: &LiveState, presented: &str) -> Result<Authorised, Refusal> {
    if !key::plausible(presented) {
        return Err(Refusal::UnknownKey);
    }
    let found: Option<Authorised> = sqlx::query_as(
        "SELECT id AS event_id, organisation_id, asset_id, state, stream_key_sha256, dvr_window_s
         FROM live_events WHERE stream_key_sha256 = $1",
    )
    .bind(key::digest(presented))
    .fetch_optional(&state.db)
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "cannot look a stream key up");
        Refusal::UnknownKey
    })?;
    let event = found.ok_or(Refusal::UnknownKey)?;
    if !key::matches(presented, &event.stream_key_sha256) {
        return Err(Refusal::UnknownKey);
    }
    if !matches!(event.state.as_str(), "scheduled" | "live") {
        return Err(Refusal::Over);
    }
    if state.active.is_active(event.event_id) {
        return Err(Refusal::AlreadyPublishing);
    }
    Ok(event)
}

/// Writes one line of the event's log.
pub async fn log(state: &LiveState, event: Uuid, kind: &str, detail: serde_json::Value) {
    if let Err(e) =
        sqlx::query("INSERT INTO live_event_log (event_id, kind, detail) VALUES ($1, $2, $3)")
            .bind(event)
            .bind(kind)
            .bind(detail)
            .execute(&state.db)
            .await
    {
        tracing::warn!(%event, kind, error = %e, "cannot write the live event log");
    }
}

async fn audit_ingest(
    state: &LiveState,
    org: Uuid,
    event: Uuid,
    action: &str,
    outcome: &'static str,
    detail: serde_json::Value,
) {
    audit::record_or_log(
        &state.identity,
        &AuditEvent {
            actor: Some("system:live-ingest".into()),
            org_id: Some(org),
            action: action.into(),
            target: Some(format!("live_event:{event}")),
            outcome,
            detail: Some(detail.to_string()),
            ..AuditEvent::default()
        },
    )
    .await;
}

/// Where an ingest protocol's bytes go: FLV tags for RTMP; SRT's encoder
/// reads its own socket.
pub struct Connection {
    pub event: Authorised,
    pub number: i32,
    pub cancel: CancellationToken,
    state: LiveState,
    local_root: PathBuf,
    sender: Arc<Mutex<Option<mpsc::UnboundedSender<Closed>>>>,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl Connection {
    /// The event goes (or stays) live with a new connection number.
    /// `local_root` is where the encoder writes, when the caller chose it.
    pub async fn begin(
        state: &LiveState,
        event: Authorised,
        protocol: &str,
        local_root: Option<PathBuf>,
    ) -> Result<Self, Refusal> {
        let cancel = state
            .active
            .claim(event.event_id, &event.stream_key_sha256)
            .ok_or(Refusal::AlreadyPublishing)?;
        let number: Option<i32> = sqlx::query_scalar(
            "UPDATE live_events
             SET state = 'live', connections = connections + 1, disconnected_at = NULL,
                 started_at = coalesce(started_at, now()), updated_at = now()
             WHERE id = $1 AND state IN ('scheduled', 'live')
             RETURNING connections",
        )
        .bind(event.event_id)
        .fetch_optional(&state.db)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot start a live connection");
            None
        });
        let Some(number) = number else {
            state.active.release(event.event_id);
            return Err(Refusal::Over);
        };
        let detail = serde_json::json!({ "connection": number, "protocol": protocol });
        log(state, event.event_id, "connected", detail.clone()).await;
        audit_ingest(
            state,
            event.organisation_id,
            event.event_id,
            "live.connected",
            "ok",
            detail,
        )
        .await;
        let local_root = local_root.unwrap_or_else(|| {
            state
                .settings
                .work_dir
                .join(event.event_id.to_string())
                .join(format!("c{number}"))
        });
        let prefix = lectern_assets::keys::attempt_prefix(event.asset_id, 1);
        let ladder = state.ladders.of(event.event_id, &prefix);
        ladder.lock().await.begin_connection(number);
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = tokio::spawn(publish_segments(
            state.clone(),
            event.clone(),
            local_root.clone(),
            rx,
        ));
        Ok(Self {
            event,
            number,
            cancel,
            state: state.clone(),
            local_root,
            sender: Arc::new(Mutex::new(Some(tx))),
            publisher: Some(publisher),
        })
    }

    pub fn local_root(&self) -> &std::path::Path {
        &self.local_root
    }

    /// Hands each closed segment to the publisher task.
    pub fn observer(&self) -> SegmentObserver {
        let sender = self.sender.clone();
        Arc::new(move |segment| {
            if let Some(tx) = sender.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = tx.send(Closed::Segment(segment));
            }
        })
    }

    /// Asks the encoder for LL-HLS parts, handed to the publisher task on
    /// the same channel as segments, so a segment is published after its
    /// parts.
    pub fn part_options(&self) -> PartOptions {
        let sender = self.sender.clone();
        PartOptions {
            target_s: crate::LIVE_PART_S,
            observer: Arc::new(move |part| {
                if let Some(tx) = sender.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = tx.send(Closed::Part(part));
                }
            }),
        }
    }

    /// The stream was refused for what it carries (a codec): the event
    /// hears why, and the connection ends like any other.
    pub async fn refused(&self, error: &MediaError) {
        let detail = serde_json::json!({
            "connection": self.number,
            "code": error.code.as_str(),
            "message": error.message,
        });
        log(
            &self.state,
            self.event.event_id,
            "stream_refused",
            detail.clone(),
        )
        .await;
        audit_ingest(
            &self.state,
            self.event.organisation_id,
            self.event.event_id,
            "live.stream_refused",
            "failed",
            detail,
        )
        .await;
    }

    /// Drains the encoder, publishes what is left, and starts the
    /// reconnect window (or ends the event when it is zero or the
    /// organiser ended it meanwhile).
    pub async fn close(mut self, encode: Option<LiveEncode>) {
        let event = self.event.event_id;
        if let Some(encode) = encode {
            let finished =
                tokio::task::spawn_blocking(move || encode.finish(Duration::from_secs(60)))
                    .await
                    .unwrap_or_else(|e| {
                        Err(MediaError::new(
                            lectern_transcoder::MediaErrorCode::Internal,
                            e.to_string(),
                        ))
                    });
            self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(publisher) = self.publisher.take() {
                let _ = publisher.await;
            }
            match finished {
                Ok(encoded) => {
                    if let Some(ladder) = self.state.ladders.get(event) {
                        let mut ladder = ladder.lock().await;
                        if let Err(e) = ladder
                            .publish_rest(
                                self.state.store.as_ref(),
                                &self.state.changes,
                                &self.local_root,
                                &encoded,
                                self.event.dvr_window_s(&self.state),
                            )
                            .await
                        {
                            tracing::warn!(%event, error = %e, "cannot publish the last live segments");
                        }
                    }
                }
                Err(e) => tracing::info!(%event, error = %e, "live encode ended with an error"),
            }
        }
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.await;
        }
        let _ = tokio::fs::remove_dir_all(&self.local_root).await;
        self.state.active.release(event);
        let away = sqlx::query(
            "UPDATE live_events SET disconnected_at = now(), updated_at = now()
             WHERE id = $1 AND state = 'live'",
        )
        .bind(event)
        .execute(&self.state.db)
        .await
        .map(|r| r.rows_affected() == 1)
        .unwrap_or(false);
        log(
            &self.state,
            event,
            "disconnected",
            serde_json::json!({ "connection": self.number }),
        )
        .await;
        let ended_meanwhile = !away;
        if ended_meanwhile {
            // The organiser ended the event while we drained: the replay
            // waits for this connection's last segments, published above.
            publish_replay(&self.state, event).await;
        } else {
            sweep(&self.state).await;
        }
    }
}

/// What the encoder closed: a part, or a segment (after its parts).
pub enum Closed {
    Part(PartReady),
    Segment(SegmentReady),
}

async fn publish_segments(
    state: LiveState,
    event: Authorised,
    local_root: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Closed>,
) {
    let Some(ladder) = state.ladders.get(event.event_id) else {
        return;
    };
    let window = event.dvr_window_s(&state);
    while let Some(closed) = rx.recv().await {
        let mut ladder = ladder.lock().await;
        let segment = match closed {
            Closed::Part(part) => {
                if let Err(e) = ladder
                    .publish_part(state.store.as_ref(), &state.changes, part, window)
                    .await
                {
                    tracing::warn!(event = %event.event_id, error = %e, "cannot publish a live part");
                }
                continue;
            }
            Closed::Segment(segment) => segment,
        };
        match ladder
            .publish(
                state.store.as_ref(),
                &state.changes,
                &local_root,
                &segment,
                window,
            )
            .await
        {
            Ok(true) => {
                let prefix = ladder.prefix.clone();
                drop(ladder);
                // From now on learners' playback sessions point here.
                if let Err(e) = sqlx::query(
                    "UPDATE assets SET playable_prefix = $2, first_playable_at = coalesce(first_playable_at, now()),
                            updated_at = now()
                     WHERE id = $1",
                )
                .bind(event.asset_id)
                .bind(&prefix)
                .execute(&state.db)
                .await
                {
                    tracing::warn!(event = %event.event_id, error = %e, "cannot point the asset at the live ladder");
                }
                log(&state, event.event_id, "playable", serde_json::json!({})).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(event = %event.event_id, error = %e, "cannot publish a live segment")
            }
        }
    }
}

/// Records the plan the encoder chose once it is known (rung sizes for the master).
pub async fn note_plan(state: &LiveState, event: Uuid, encode: &LiveEncode) -> bool {
    let Some(plan) = encode.plan() else {
        return false;
    };
    if let Some(ladder) = state.ladders.get(event) {
        ladder.lock().await.set_plan(plan);
    }
    true
}

/// Polls an encode without blocking the runtime for long.
pub fn poll(encode: &LiveEncode) -> LiveStatus {
    encode.poll(Duration::ZERO)
}

/// Ends the event (once): stops its publisher if connected here, and
/// publishes the replay when the publisher is gone. Returns whether this
/// call ended it.
pub async fn end_event(
    state: &LiveState,
    event: Uuid,
    actor: Option<String>,
) -> Result<bool, sqlx::Error> {
    let org: Option<Uuid> = sqlx::query_scalar(
        "UPDATE live_events SET state = 'ended', ended_at = now(), updated_at = now()
         WHERE id = $1 AND state IN ('scheduled', 'live')
         RETURNING organisation_id",
    )
    .bind(event)
    .fetch_optional(&state.db)
    .await?;
    let Some(org) = org else {
        return Ok(false);
    };
    let detail =
        serde_json::json!({ "by": actor.clone().unwrap_or_else(|| "reconnect window".into()) });
    log(state, event, "ended", detail.clone()).await;
    if actor.is_none() {
        audit_ingest(state, org, event, "live.ended", "ok", detail).await;
    }
    // A connected publisher is stopped; its connection publishes the
    // replay once its last segments are up (see `Connection::close`).
    if !state.active.stop(event) {
        if state.ladders.get(event).is_some() {
            let state = state.clone();
            tokio::spawn(async move { publish_replay(&state, event).await });
        } else if never_streamed(state, event).await {
            log(
                state,
                event,
                "replay_unavailable",
                serde_json::json!({ "reason": "nothing was streamed" }),
            )
            .await;
        }
        // Otherwise the node that received the stream holds its ladder and
        // publishes the replay in its sweep ([`publish_replays_ended_elsewhere`]).
    }
    Ok(true)
}

async fn never_streamed(state: &LiveState, event: Uuid) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT connections FROM live_events WHERE id = $1")
        .bind(event)
        .fetch_optional(&state.db)
        .await
        .ok()
        .flatten()
        .is_some_and(|n| n == 0)
}

/// Publishes the replay of every event that was ended on another node
/// (its route or its sweep) while this node holds the event's ladder and
/// no publisher is connected here.
pub async fn publish_replays_ended_elsewhere(state: &LiveState) {
    let held = state.ladders.events();
    if held.is_empty() {
        return;
    }
    let ended: Vec<Uuid> = match sqlx::query_scalar(
        "SELECT id FROM live_events WHERE id = ANY($1) AND state = 'ended'",
    )
    .bind(&held)
    .fetch_all(&state.db)
    .await
    {
        Ok(ended) => ended,
        Err(e) => {
            tracing::debug!(error = %e, "cannot look for events ended elsewhere");
            return;
        }
    };
    for event in ended {
        if !state.active.is_active(event) {
            publish_replay(state, event).await;
        }
    }
}

/// The live segments under VOD playlists become the lesson's asset.
pub async fn publish_replay(state: &LiveState, event: Uuid) {
    // Callers hold the event's ladder; none left means another call
    // (the organiser's end racing the sweep) published the replay already.
    let Some(ladder) = state.ladders.get(event) else {
        return;
    };
    let ladder = ladder.lock().await;
    if !ladder.has_media() {
        drop(ladder);
        state.ladders.forget(event);
        log(
            state,
            event,
            "replay_unavailable",
            serde_json::json!({ "reason": "nothing was streamed" }),
        )
        .await;
        return;
    }
    if let Err(e) = ladder
        .publish_replay(state.store.as_ref(), &state.changes)
        .await
    {
        tracing::warn!(%event, error = %e, "cannot publish the replay");
        log(
            state,
            event,
            "replay_failed",
            serde_json::json!({ "message": e }),
        )
        .await;
        return;
    }
    let duration = ladder.duration_s();
    let prefix = ladder.prefix.clone();
    drop(ladder);
    let result = async {
        let mut tx = state.db.begin().await?;
        let row: Option<(Uuid, Uuid)> = sqlx::query_as(
            "UPDATE live_events SET state = 'replay_ready', replay_ready_at = now(),
                    duration_s = $2, updated_at = now()
             WHERE id = $1 AND state = 'ended'
             RETURNING asset_id, organisation_id",
        )
        .bind(event)
        .bind(duration)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((asset, org)) = row else {
            return Ok::<_, sqlx::Error>(None);
        };
        sqlx::query(
            "UPDATE assets SET status = 'ready', output_prefix = $2, playable_prefix = $2,
                    duration_s = $3, progress = 100, ready_at = now(), updated_at = now()
             WHERE id = $1",
        )
        .bind(asset)
        .bind(&prefix)
        .bind(duration)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO asset_events (asset_id, from_status, to_status, worker, detail)
             VALUES ($1, 'transcoding', 'ready', 'live', $2)",
        )
        .bind(asset)
        .bind(serde_json::json!({ "replay_of": event }))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(org))
    }
    .await;
    match result {
        Ok(Some(org)) => {
            let detail = serde_json::json!({ "duration_s": duration });
            log(state, event, "replay_ready", detail.clone()).await;
            audit_ingest(state, org, event, "live.replay_ready", "ok", detail).await;
            state.ladders.forget(event);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(%event, error = %e, "cannot mark the replay ready"),
    }
}

/// Cuts off every publisher connected here whose key is no longer its
/// event's (rotated, on whichever node) or whose event is over (ended on
/// another node): one query for all of them, each sweep.
pub async fn cut_stale_publishers(state: &LiveState) {
    let (events, keys) = state.active.keys();
    if events.is_empty() {
        return;
    }
    let stale: Vec<Uuid> = match sqlx::query_scalar(
        "SELECT a.id FROM unnest($1::uuid[], $2::bytea[]) AS a (id, key_sha256)
         WHERE NOT EXISTS (
             SELECT 1 FROM live_events e
             WHERE e.id = a.id AND e.stream_key_sha256 = a.key_sha256
               AND e.state IN ('scheduled', 'live'))",
    )
    .bind(&events)
    .bind(&keys)
    .fetch_all(&state.db)
    .await
    {
        Ok(stale) => stale,
        Err(e) => {
            tracing::debug!(error = %e, "cannot check connected publishers' keys");
            return;
        }
    };
    for event in stale {
        if state.active.stop(event) {
            tracing::info!(%event, "publisher cut off: its key was rotated or its event ended");
        }
    }
}

/// Ends every event whose publisher has been away longer than its window.
pub async fn sweep(state: &LiveState) {
    let due: Vec<Uuid> = match sqlx::query_scalar(
        "SELECT id FROM live_events
         WHERE state = 'live' AND disconnected_at IS NOT NULL
           AND disconnected_at + make_interval(secs => coalesce(reconnect_window_s, $1)) <= now()",
    )
    .bind(state.settings.reconnect_window.as_secs_f64())
    .fetch_all(&state.db)
    .await
    {
        Ok(due) => due,
        Err(e) => {
            tracing::debug!(error = %e, "cannot sweep live events");
            return;
        }
    };
    for event in due {
        if state.active.is_active(event) {
            continue;
        }
        if let Err(e) = end_event(state, event, None).await {
            tracing::warn!(%event, error = %e, "cannot end a live event");
        }
    }
}

/// Runs [`sweep`] until cancelled.
pub async fn run_sweeper(state: LiveState, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(state.settings.sweep_every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                cut_stale_publishers(&state).await;
                sweep(&state).await;
                publish_replays_ended_elsewhere(&state).await;
            }
        }
    }
}
