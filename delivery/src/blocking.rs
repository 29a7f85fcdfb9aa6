//! LL-HLS blocking playlist reload (RFC 8216bis §6.2.5.2): a live media
//! playlist asked for with `_HLS_msn=<M>` (and `_HLS_part=<P>`) is held
//! until the stored playlist contains segment M (part P of segment M) or a
//! later one, or has `EXT-X-ENDLIST`, and is then answered as any
//! playlist. A request for more than two segments past the last one, or
//! for a part more than [`ADVANCE_PART_LIMIT`] past the last part, is 400
//! `invalid_delivery_directive` at once, as are values that are no
//! numbers and `_HLS_part` without `_HLS_msn` (the spec's "Bad Request").
//! One that is not satisfied within three target durations is 503
//! `playlist_update_pending` (the spec's bound; a player reloads).
//!
//! Waking: the live ladder announces each playlist it writes on this
//! process's [`lectern_storage::changes::Changes`], which wakes the
//! waiters of that key at once. Other nodes hear of it over PostgreSQL:
//! [`relay`] makes every announcement a `NOTIFY` on [`CHANNEL`] (the node's
//! id and the key), and [`listen`], one task per `serve`, wakes the
//! waiters here for notices of other nodes. A notice can be lost (the
//! listener reconnecting), so every waiter also re-reads the playlist
//! every [`RECHECK`].
//!
//! A hinted part (`EXT-X-PRELOAD-HINT`) is asked for before it exists: a
//! part that is not found is looked for again each time its rendition's
//! playlist changes, for up to [`PART_WAIT`] ([`wait_for_part`]), then 404
//! as before (the spec asks servers to hold hinted requests).
//!
//! Only a playlist request carrying `_HLS_msn` or `_HLS_part`, and a part
//! not found, come here: every other request takes the origin's usual path.
//!
//! Caching: the answer to a blocking reload is the same body for every
//! viewer (`playlist::shared`), sent `public`. It holds what that URL
//! asked for whenever it is read, so a CDN may keep it for several parts
//! ([`blocking_max_age_s`]) and answer everyone who blocks on the same
//! `_HLS_msn`/`_HLS_part` with one origin request (`infra/cdn/README.md`).

use std::sync::Arc;
use std::time::Duration;

use lectern_storage::changes::Changes;
use lectern_storage::ObjectMeta;
use lectern_web::{ApiError, ErrorCode};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::DeliveryState;

/// How many part targets a CDN may keep the answer to a blocking reload:
/// every viewer blocking on the same part within that time is answered
/// from one copy; later ones ask for later parts anyway.
pub const BLOCKING_CACHE_PARTS: f64 = 6.0;

/// `max-age` of the answer to a blocking reload of `text`: six part
/// targets (a target duration when it lists no part target), whole
/// seconds, at least one.
pub fn blocking_max_age_s(text: &str) -> u64 {
    let part = crate::playlist::part_target_s(text)
        .or_else(|| edge(text).map(|e| e.target_duration_s as f64))
        .unwrap_or(1.0);
    // Bounded: a playlist can say anything.
    (BLOCKING_CACHE_PARTS * part).ceil().clamp(1.0, 60.0) as u64
}

/// How often a waiting request re-reads the playlist when no notice came
/// (one was lost).
pub const RECHECK: Duration = Duration::from_secs(1);
/// How long a request for a part that does not exist yet is held: six
/// live segments (the ladder's 1 s), longer than any hint is early.
pub const PART_WAIT: Duration = Duration::from_secs(6);

/// Serves `key`, a live part, once it exists: `serve` is retried each time
/// its rendition's playlist changes (a part is uploaded before the
/// playlist naming it) or every [`RECHECK`], until [`PART_WAIT`] has passed;
/// then the last answer stands (a 404).
pub async fn wait_for_part<F, Fut>(
    state: &DeliveryState,
    key: &str,
    serve: F,
) -> Result<axum::response::Response, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<axum::response::Response, ApiError>>,
{
    let playlist = match key.rfind('/') {
        Some(i) => format!("{}index.m3u8", &key[..=i]),
        None => return serve().await,
    };
    let deadline = tokio::time::Instant::now() + PART_WAIT;
    let mut changed = state.changes.subscribe(&playlist);
    loop {
        let answer = serve().await;
        let missing = matches!(&answer, Err(e) if e.code == ErrorCode::NotFound);
        if !missing || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The PostgreSQL channel of playlist changes: `<node id> <object key>`.
pub const CHANNEL: &str = "lectern_playlist_changed";

/// A new id for this process in the notices it sends.
pub fn new_node() -> Uuid {
    Uuid::new_v4()
}

/// Sends every change announced on `changes` to the other nodes, as
/// `NOTIFY` on [`CHANNEL`] from this node (`node`). Fire and forget: a
/// lost notice costs a waiter elsewhere at most [`RECHECK`].
pub fn relay(db: PgPool, changes: &Changes, node: Uuid) {
    changes.relay_to(Box::new(move |key| {
        let (db, payload) = (db.clone(), format!("{node} {key}"));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(&db)
                .await
            {
                tracing::debug!(error = %e, "cannot relay a playlist change");
            }
        });
    }));
}

/// Wakes this node's waiters for changes other nodes announce, until
/// cancelled (`node`: this node's id, whose own notices are skipped).
pub async fn listen(db: PgPool, changes: Arc<Changes>, node: Uuid, cancel: CancellationToken) {
    let node = node.to_string();
    while !cancel.is_cancelled() {
        let mut listener = match PgListener::connect_with(&db).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "cannot listen for playlist changes");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %e, "cannot listen for playlist changes");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        loop {
            let notice = tokio::select! {
                _ = cancel.cancelled() => return,
                notice = listener.recv() => notice,
            };
            match notice {
                Ok(notice) => {
                    if let Some((from, key)) = notice.payload().split_once(' ') {
                        if from != node {
                            changes.wake(key);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "playlist change listener lost its connection");
                    break;
                }
            }
        }
    }
}
/// Parts past the last one a client may ask for (the spec's Advance Part Limit).
pub const ADVANCE_PART_LIMIT: u64 = 3;

/// `_HLS_msn` and `_HLS_part` of a playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive {
    pub msn: u64,
    pub part: Option<u64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidDeliveryDirective, message)
}

impl Directive {
    /// `None` when the query has neither parameter (the usual request).
    pub fn parse(query: Option<&str>) -> Result<Option<Self>, ApiError> {
        let Some(query) = query.filter(|q| q.contains("_HLS_")) else {
            return Ok(None);
        };
        let mut msn = None;
        let mut part = None;
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "_HLS_msn" => &mut msn,
                "_HLS_part" => &mut part,
                _ => continue,
            };
            let number = value.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "{name} must be a non-negative integer, not {value:?}"
                ))
            })?;
            *slot = Some(number);
        }
        match (msn, part) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(invalid("_HLS_part needs _HLS_msn")),
            (Some(msn), part) => Ok(Some(Self { msn, part })),
        }
    }
}

/// Where a live media playlist stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    /// The media sequence number the next complete segment will have.
    pub next_msn: u64,
    /// Parts of that segment listed so far (`EXT-X-PART` after the last segment).
    pub open_parts: u64,
    pub ended: bool,
    pub target_duration_s: u64,
}

/// `None` for anything without `EXT-X-TARGETDURATION` (a master playlist):
/// directives do not apply to it.
pub fn edge(text: &str) -> Option<Edge> {
    let mut target = None;
    let mut sequence = 0;
    let mut segments = 0;
    let mut open_parts = 0;
    let mut ended = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = v.trim().parse::<u64>().unwrap_or(0);
        } else if line.starts_with("#EXT-X-PART:") {
            open_parts += 1;
        } else if line.starts_with("#EXT-X-ENDLIST") {
            ended = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            segments += 1;
            open_parts = 0;
        }
    }
    Some(Edge {
        next_msn: sequence + segments,
        open_parts,
        ended,
        target_duration_s: target?,
    })
}

impl Edge {
    fn satisfies(&self, d: Directive) -> bool {
        self.ended
            || self.next_msn > d.msn
            || (self.next_msn == d.msn && d.part.is_some_and(|p| self.open_parts > p))
    }

    /// The spec's "Bad Request" cases: too far past the live edge.
    fn refuses(&self, d: Directive) -> Option<ApiError> {
        // The last segment is `next_msn - 1`: more than two past it.
        if d.msn > self.next_msn + 1 {
            return Some(invalid(format!(
                "_HLS_msn={} is more than two segments past the last one ({})",
                d.msn,
                self.next_msn.saturating_sub(1)
            )));
        }
        match d.part {
            Some(p) if d.msn == self.next_msn && p > self.open_parts + ADVANCE_PART_LIMIT => {
                Some(invalid(format!(
                    "_HLS_part={p} is more than {ADVANCE_PART_LIMIT} parts past the last one"
                )))
            }
            _ => None,
        }
    }
}

/// Reads `key` until it satisfies `directive`; its metadata and bytes.
pub async fn wait(
    state: &DeliveryState,
    key: &str,
    directive: Directive,
) -> Result<(ObjectMeta, bytes::Bytes), ApiError> {
    // Subscribed before the first read: a write in between is not missed.
    let mut changed = state.changes.subscribe(key);
    let started = tokio::time::Instant::now();
    let mut deadline = None;
    loop {
        let (meta, bytes) = super::read_playlist(state, key).await?;
        let Some(edge) = std::str::from_utf8(&bytes).ok().and_then(edge) else {
            return Ok((meta, bytes));
        };
        let deadline = *deadline.get_or_insert_with(|| {
            started + Duration::from_secs(3 * edge.target_duration_s.max(1))
        });
        if edge.satisfies(directive) {
            return Ok((meta, bytes));
        }
        if let Some(refused) = edge.refuses(directive) {
            return Err(refused);
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(ApiError::new(
                    ErrorCode::PlaylistUpdatePending,
                    format!(
                        "the live playlist did not reach segment {}{} within three target \
                         durations; reload it",
                        directive.msn,
                        directive.part.map(|p| format!(" part {p}")).unwrap_or_default()
                    ),
                )
                .with_retry_after(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrations = false)]
    async fn a_change_on_another_node_wakes_the_waiters_here(db: PgPool) {
        let (here, there) = (Arc::new(Changes::default()), Changes::default());
        let (node_here, node_there) = (Uuid::new_v4(), Uuid::new_v4());
        relay(db.clone(), &here, node_here);
        relay(db.clone(), &there, node_there);
        let cancel = CancellationToken::new();
        tokio::spawn(listen(db.clone(), here.clone(), node_here, cancel.clone()));
        let mut waiting = here.subscribe("assets/a/out/attempt-1/v/720p/index.m3u8");
        let other = here.subscribe("assets/a/out/attempt-1/v/360p/index.m3u8");
        // The listener may not listen yet when the first notice goes out.
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                there.changed("assets/a/out/attempt-1/v/720p/index.m3u8");
                let heard =
                    tokio::time::timeout(Duration::from_millis(200), waiting.changed()).await;
                if heard.is_ok() {
                    break;
                }
            }
        })
        .await
        .expect("the other node's change is heard here");
        assert!(!other.has_changed().unwrap(), "only that key's waiters");
        cancel.cancel();
    }

    #[test]
    fn directives_parse_and_bad_ones_are_refused() {
        assert_eq!(Directive::parse(Some("token=abc")).unwrap(), None);
        assert_eq!(Directive::parse(None).unwrap(), None);
        assert_eq!(
            Directive::parse(Some("token=a&_HLS_msn=12&_HLS_part=3")).unwrap(),
            Some(Directive {
                msn: 12,
                part: Some(3)
            })
        );
        assert_eq!(
            Directive::parse(Some("_HLS_msn=7&token=a")).unwrap(),
            Some(Directive { msn: 7, part: None })
        );
        for bad in [
            "_HLS_msn=x",
            "_HLS_msn=-1",
            "_HLS_part=2",
            "_HLS_msn=1&_HLS_part=",
            "_HLS_msn",
        ] {
            let e = Directive::parse(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidDeliveryDirective, "{bad}");
        }
    }

    #[test]
    fn the_edge_is_the_next_segment_and_its_parts() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"p5_0.m4s\"\n#EXTINF:2.0,\nseg5.m4s\n\
                    #EXTINF:2.0,\nseg6.m4s\n#EXT-X-PART:DURATION=0.5,URI=\"p7_0.m4s\"\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"p7_1.m4s\"\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p7_2.m4s\"\n";
        let e = edge(text).unwrap();
        assert_eq!(
            e,
            Edge {
                next_msn: 7,
                open_parts: 2,
                ended: false,
                target_duration_s: 2
            }
        );
        let d = |msn, part| Directive { msn, part };
        assert!(e.satisfies(d(6, None)));
        assert!(!e.satisfies(d(7, None)));
        assert!(e.satisfies(d(7, Some(1))));
        assert!(!e.satisfies(d(7, Some(2))));
        assert!(e.refuses(d(8, None)).is_none());
        assert!(e.refuses(d(9, None)).is_some());
        assert!(e.refuses(d(7, Some(5))).is_none());
        assert!(e.refuses(d(7, Some(6))).is_some());
        assert!(edge("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n").is_none());
    }
}
