//! Where an asset's objects live in storage, written once:
//!
//! ```text
//! assets/<id>/source                    the source as uploaded or pulled
//! assets/<id>/source-attempt<N>         a resumed pull's own copy (N ≥ 2)
//! assets/<id>/out/attempt-<N>/…         one encode attempt's ladder
//! assets/<id>/out/attempt-<N>/parts/…   a chunked encode's intermediates
//! assets/<id>/out/captions/<upload>/…    one caption upload, segmented for HLS
//! ```
//!
//! Captions live beside the attempts, not inside one: they are uploaded
//! after the ladder was published, and a new upload gets a new prefix, so
//! every object under `out/` is still written once and never changed.
//!
//! Only what is under `out/` is ever served, and the id is always written
//! in its canonical (lower-case, hyphenated) form.

use uuid::Uuid;

/// Where an asset's source object lives.
pub fn source_key(asset_id: Uuid) -> String {
    format!("assets/{asset_id}/source")
}

/// Where a pull's attempt stores the source: the first at the asset's
/// usual source key, each resumption beside it, so an earlier attempt that
/// was only slow never overwrites or deletes the newer one's object.
pub fn pull_attempt_key(asset_id: Uuid, attempt: i32) -> String {
    match attempt {
        1 => source_key(asset_id),
        n => format!("{}-attempt{n}", source_key(asset_id)),
    }
}

/// The prefix under which every attempt of an asset writes its outputs;
/// each attempt gets `attempt-N/` below it.
pub fn output_root(asset_id: Uuid) -> String {
    format!("assets/{asset_id}/out/")
}

pub fn attempt_prefix(asset_id: Uuid, attempt: i32) -> String {
    format!("{}attempt-{attempt}/", output_root(asset_id))
}

/// The directory under an attempt's prefix where a chunked encode keeps
/// its intermediates: never served.
pub const PARTS_DIR: &str = "parts/";

/// The directory under an asset's `out/` holding every caption upload;
/// collecting a superseded attempt's outputs leaves it alone.
pub const CAPTIONS_DIR: &str = "captions/";

/// Where one caption upload of an asset is stored (its subtitle playlist,
/// WebVTT segments and the whole file); `upload` is new for every upload.
pub fn captions_prefix(asset_id: Uuid, upload: Uuid) -> String {
    format!("{}{CAPTIONS_DIR}{upload}/", output_root(asset_id))
}

/// Whether `key` is a caption object of `asset_id` (what garbage
/// collection of attempts must keep).
pub fn is_captions(asset_id: Uuid, key: &str) -> bool {
    key.starts_with(&format!("{}{CAPTIONS_DIR}", output_root(asset_id)))
}

/// Where a chunked encode keeps the source chunks of an attempt.
pub fn chunk_key(attempt_prefix: &str, index: usize) -> String {
    format!("{attempt_prefix}{PARTS_DIR}chunk_{index:04}.mkv")
}

/// Whether `key` names an LL-HLS part of a live rendition
/// (`…/c2-part_00007_1.m4s`: the transcoder's `part_file_name` behind the
/// live ladder's connection number), which a player may ask for before it
/// exists (the playlist's preload hint).
pub fn is_live_part(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.ends_with(".m4s")
        && name.split_once('-').is_some_and(|(connection, rest)| {
            connection.starts_with('c') && rest.starts_with("part_")
        })
}

/// Whether `rest`, an output key below `out/` (`attempt-2/parts/…`), is a
/// chunked encode's intermediate rather than a published file.
pub fn is_intermediate(rest: &str) -> bool {
    rest.split_once('/')
        .is_some_and(|(_, below)| below.starts_with(PARTS_DIR))
}

/// An output key split into its asset and the part below `out/`:
/// `assets/<canonical uuid>/out/<rest>` with a non-empty rest. Anything
/// else (sources, scratch space, a non-canonical id) is `None`.
pub fn parse_output_key(key: &str) -> Option<(Uuid, &str)> {
    let rest = key.strip_prefix("assets/")?;
    let (id, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("out/")?;
    let asset = canonical_id(id)?;
    (!rest.is_empty()).then_some((asset, rest))
}

/// The id written as the pipeline writes it, or `None`.
pub fn canonical_id(text: &str) -> Option<Uuid> {
    let id = Uuid::parse_str(text).ok()?;
    // Compared on the stack: the media origin asks this per request.
    let mut canonical = Uuid::encode_buffer();
    (id.hyphenated().encode_lower(&mut canonical) == text).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_parts_are_told_from_segments() {
        assert!(is_live_part(
            "assets/x/out/attempt-1/v/720p/c2-part_00007_1.m4s"
        ));
        assert!(!is_live_part(
            "assets/x/out/attempt-1/v/720p/c2-seg_00007.m4s"
        ));
        assert!(!is_live_part(
            "assets/x/out/attempt-1/v/720p/part_00007_1.m4s"
        ));
        assert!(!is_live_part(
            "assets/x/out/attempt-1/v/720p/c2-part_00007_1.mp4"
        ));
    }

    #[test]
    fn captions_live_beside_the_attempts_and_are_published_files() {
        let (id, upload) = (Uuid::new_v4(), Uuid::new_v4());
        let prefix = captions_prefix(id, upload);
        assert_eq!(prefix, format!("assets/{id}/out/captions/{upload}/"));
        let segment = format!("{prefix}seg_00000.vtt");
        assert!(is_captions(id, &segment));
        assert!(!is_captions(Uuid::new_v4(), &segment));
        assert!(!is_captions(
            id,
            &format!("{}seg.m4s", attempt_prefix(id, 1))
        ));
        let (asset, rest) = parse_output_key(&segment).unwrap();
        assert_eq!(asset, id);
        assert!(!is_intermediate(rest), "served like any published file");
    }

    #[test]
    fn output_keys_round_trip_and_nothing_else_parses() {
        let id = Uuid::new_v4();
        let key = format!("{}seg_00001.m4s", attempt_prefix(id, 2));
        assert_eq!(
            parse_output_key(&key),
            Some((id, "attempt-2/seg_00001.m4s"))
        );
        assert_eq!(parse_output_key(&source_key(id)), None);
        assert_eq!(parse_output_key(&output_root(id)), None);
        let upper = format!("assets/{}/out/x.m4s", id.to_string().to_uppercase());
        assert_eq!(parse_output_key(&upper), None);
        assert_eq!(pull_attempt_key(id, 1), source_key(id));
        let attempt = attempt_prefix(id, 2);
        let chunk = chunk_key(&attempt, 3);
        let (_, rest) = parse_output_key(&chunk).unwrap();
        assert!(is_intermediate(rest), "{rest}");
        let segment = format!("{attempt}360p/seg_00001.m4s");
        let (_, rest) = parse_output_key(&segment).unwrap();
        assert!(!is_intermediate(rest), "{rest}");
        assert!(pull_attempt_key(id, 3).ends_with("/source-attempt3"));
    }
}
