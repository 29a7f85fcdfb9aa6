//! Incremental replication of one store into another (the media backup:
//! `lectern admin replicate`), over nothing but the [`Store`] trait, so any
//! pair of backends works (S3 → S3 in production, S3 ↔ fs, fs → fs).
//!
//! A run lists the source and the target under a prefix and copies every
//! source object the target lacks or holds differently; objects already
//! equal are left alone, so a run that was interrupted is simply run again
//! and continues where it stopped (object by object; one large object
//! cut mid-copy is copied again whole). A failed copy does not stop the
//! others: it is reported, and the next run retries it.
//!
//! When is a target object "the same"? Equal size and equal ETag; or, since
//! ETags are backend-specific (SHA-256 on fs, MD5 or a multipart digest on
//! S3, which depends on the part sizes an upload used), equal size and a
//! target written no earlier than the source object was: the target is then
//! the copy of the source's current version. A source object rewritten
//! later is newer than its copy and is copied again. (This trusts the two
//! services' clocks to agree within the time between a copy and a rewrite.)
//!
//! Nothing is ever deleted from the target unless the caller asks for
//! pruning: objects gone from the source are remembered in the target under
//! [`STATE_KEY`] with the time a run first saw them gone, and deleted only
//! once that is `prune_after` old — so the replica keeps deleted media for
//! the retention period, and a mistaken deletion in the source can be
//! undone from it. Keys under [`STATE_PREFIX`] are the replica's own and
//! never copied.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::{ObjectMeta, PutOptions, Result, StorageError, Store};

/// Keys the replica keeps for itself; a source key here is not copied.
pub const STATE_PREFIX: &str = "_replica/";
/// When each object missing from the source was first seen missing (JSON).
pub const STATE_KEY: &str = "_replica/missing-since.json";

/// What a run does.
#[derive(Debug, Clone)]
pub struct ReplicateOptions {
    /// Only keys starting with this (a plain string prefix; empty: all).
    pub prefix: String,
    /// Objects copied at once.
    pub concurrency: usize,
    /// Delete target objects that have been missing from the source this
    /// long; `None` never deletes.
    pub prune_after: Option<Duration>,
    /// The run's notion of now (pruning ages are measured from it).
    pub now: DateTime<Utc>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct ReplicateReport {
    /// Source objects considered.
    pub source_objects: u64,
    pub source_bytes: u64,
    /// Objects the target already held equal.
    pub up_to_date: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    /// Target objects no longer in the source, kept (within retention or
    /// without pruning).
    pub kept_missing_from_source: u64,
    pub pruned: u64,
    /// Source keys under [`STATE_PREFIX`], not copied.
    pub skipped_reserved: u64,
    /// Copies (or deletions) that failed, with why; the next run retries.
    pub failed: Vec<(String, StorageError)>,
}

/// Should `source` be copied over `target`? See the module doc.
pub fn needs_copy(source: &ObjectMeta, target: Option<&ObjectMeta>) -> bool {
    let Some(target) = target else {
        return true;
    };
    if source.size != target.size {
        return true;
    }
    if source.etag == target.etag {
        return false;
    }
    target.last_modified < source.last_modified
}

/// Copies what `target` lacks of `source` under `options.prefix`.
pub async fn replicate(
    source: &dyn Store,
    target: &dyn Store,
    options: &ReplicateOptions,
) -> Result<ReplicateReport> {
    let mut report = ReplicateReport::default();
    let source_list = source.list(&options.prefix).await?;
    let target_list: HashMap<String, ObjectMeta> = target
        .list(&options.prefix)
        .await?
        .into_iter()
        .filter(|m| !m.key.starts_with(STATE_PREFIX))
        .map(|m| (m.key.clone(), m))
        .collect();

    let mut to_copy = Vec::new();
    for meta in &source_list {
        if meta.key.starts_with(STATE_PREFIX) {
            report.skipped_reserved += 1;
            continue;
        }
        report.source_objects += 1;
        report.source_bytes += meta.size;
        if needs_copy(meta, target_list.get(&meta.key)) {
            to_copy.push(meta.clone());
        } else {
            report.up_to_date += 1;
        }
    }

    let results: Vec<(ObjectMeta, Result<()>)> = futures::stream::iter(to_copy)
        .map(|meta| async move {
            let result = copy_one(source, target, &meta.key).await;
            (meta, result)
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    for (meta, result) in results {
        match result {
            Ok(()) => {
                report.copied += 1;
                report.copied_bytes += meta.size;
            }
            Err(e) => {
                tracing::warn!(key = %meta.key, error = %e, "replicate: copy failed");
                report.failed.push((meta.key, e));
            }
        }
    }

    track_missing(source_list, target_list, target, options, &mut report).await?;
    Ok(report)
}

/// One object, streamed, with the metadata it is served with.
async fn copy_one(source: &dyn Store, target: &dyn Store, key: &str) -> Result<()> {
    let object = source.get(key, None).await?;
    let opts = PutOptions {
        content_type: object.meta.content_type.clone(),
        cache_control: object.meta.cache_control.clone(),
    };
    let written = target.put(key, object.body, opts).await?;
    if written.size != object.meta.size {
        // The source changed under the read; the next run copies it again.
        return Err(StorageError::Io(std::io::Error::other(format!(
            "`{key}` changed while being copied ({} bytes read, {} expected)",
            written.size, object.meta.size
        ))));
    }
    Ok(())
}

/// Remembers when target objects were first seen missing from the source,
/// and prunes those missing for longer than `prune_after`.
async fn track_missing(
    source_list: Vec<ObjectMeta>,
    target_list: HashMap<String, ObjectMeta>,
    target: &dyn Store,
    options: &ReplicateOptions,
    report: &mut ReplicateReport,
) -> Result<()> {
    let in_source: std::collections::HashSet<String> =
        source_list.into_iter().map(|m| m.key).collect();
    let mut state = read_state(target).await?;
    let before = state.clone();
    // Entries of this prefix whose object came back or is gone from the target.
    state.retain(|key, _| {
        !key.starts_with(&options.prefix)
            || (!in_source.contains(key) && target_list.contains_key(key))
    });
    let mut missing: Vec<&String> = target_list
        .keys()
        .filter(|k| !in_source.contains(*k))
        .collect();
    missing.sort();
    for key in missing {
        let since = *state.entry(key.clone()).or_insert(options.now);
        let due = options.prune_after.is_some_and(|after| {
            chrono::Duration::from_std(after).is_ok_and(|after| options.now - since >= after)
        });
        if !due {
            report.kept_missing_from_source += 1;
            continue;
        }
        match target.delete(key).await {
            Ok(()) => {
                report.pruned += 1;
                state.remove(key);
            }
            Err(e) => report.failed.push((key.clone(), e)),
        }
    }
    if state != before {
        let json = serde_json::to_vec_pretty(&state)
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
        target
            .put_bytes(
                STATE_KEY,
                Bytes::from(json),
                PutOptions {
                    content_type: Some("application/json".into()),
                    cache_control: None,
                },
            )
            .await?;
    }
    Ok(())
}

async fn read_state(target: &dyn Store) -> Result<BTreeMap<String, DateTime<Utc>>> {
    match target.get(STATE_KEY, None).await {
        Ok(object) => {
            let bytes = object.bytes().await?;
            serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Io(std::io::Error::other(format!(
                    "{STATE_KEY} in the replica is damaged ({e}); remove it to start tracking anew"
                )))
            })
        }
        Err(StorageError::NotFound { .. }) => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, etag: &str, at: i64) -> ObjectMeta {
        ObjectMeta {
            key: "k".into(),
            size,
            etag: etag.into(),
            content_type: None,
            cache_control: None,
            last_modified: DateTime::from_timestamp(at, 0).unwrap(),
        }
    }

    #[test]
    fn copies_what_is_missing_resized_or_rewritten_after_the_copy() {
        let source = meta(10, "a", 100);
        assert!(needs_copy(&source, None));
        assert!(needs_copy(&source, Some(&meta(11, "a", 200))), "size");
        assert!(!needs_copy(&source, Some(&meta(10, "a", 50))), "same etag");
        assert!(
            !needs_copy(&source, Some(&meta(10, "b", 150))),
            "other backend's etag, copied after the source was written"
        );
        assert!(
            needs_copy(&source, Some(&meta(10, "b", 50))),
            "source rewritten after the copy"
        );
    }
}
