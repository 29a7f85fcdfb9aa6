//! The HTTP semantics of serving objects (RFC 9110): `Range` parsing,
//! validators and conditional requests, dates, which files are served at
//! all, and default content types and cache policies for objects stored
//! without them.
//!
//! Conditional requests go through the `headers` crate's typed
//! `If-None-Match`, `If-Modified-Since` and `If-Range` (entity-tag lists,
//! weak and strong comparison) and `httpdate`, which reads HTTP dates in
//! all three formats RFC 9110 §5.6.7 asks recipients to accept
//! (IMF-fixdate, RFC 850, asctime). `Range` is parsed here: the
//! `headers::Range` resolver needs the object's length before the read (a
//! plain GET asks storage for the range without knowing it), drops a
//! suffix longer than the object where §14.1.3 says the whole object is
//! meant, and reads `+5` as a position; the parser below keeps 206 and 416
//! exact in a few lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use chrono::{DateTime, Utc};
use headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch, IfRange};
use lectern_storage::ByteRange;

/// What a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range`: serve the whole object with 200. Malformed
    /// headers and multi-range requests land here too, which RFC 9110
    /// §14.2 allows (a server may ignore `Range`); multipart/byteranges
    /// buys players nothing.
    Whole,
    One(ByteRange),
}

pub fn range(headers: &HeaderMap) -> RangeRequest {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Whole;
    };
    let value = value.trim();
    // Range units are case-insensitive (§14.1).
    let Some(spec) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &value[6..])
    else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            // Absurdly long numbers saturate: still "past the end".
            Some(s.parse().unwrap_or(u64::MAX))
        }
    };
    match (start.trim(), end.trim()) {
        ("", n) => number(n).map_or(RangeRequest::Whole, |n| {
            RangeRequest::One(ByteRange::Suffix(n))
        }),
        (s, "") => number(s).map_or(RangeRequest::Whole, |s| {
            RangeRequest::One(ByteRange::From(s))
        }),
        (s, e) => match (number(s), number(e)) {
            // A reversed range is syntactically invalid, so ignored (§14.1.1).
            (Some(s), Some(e)) if s <= e => RangeRequest::One(ByteRange::FromTo(s, e)),
            _ => RangeRequest::Whole,
        },
    }
}

/// `t` within what an HTTP date can say (1970 to 9999): `httpdate`
/// refuses anything else with a panic, and a stored object's time is not
/// ours to trust that far.
fn system_time(t: DateTime<Utc>) -> SystemTime {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = u64::try_from(t.timestamp()).unwrap_or(0).min(LAST);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// IMF-fixdate, the one date format HTTP senders use.
pub fn http_date(t: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(system_time(t))
}

pub fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// Our tag as a client's validators are compared with it; `None` when it
/// could not be one (then no tag a client sends names it).
fn entity_tag(etag: &str) -> Option<ETag> {
    quoted(etag).parse().ok()
}

/// True when the client's copy is current (answer 304): `If-None-Match`
/// decides when present (weak comparison, §13.1.2); otherwise
/// `If-Modified-Since`, at one-second resolution as dates are sent. A
/// date that does not parse is ignored (§13.1.3).
pub fn not_modified(headers: &HeaderMap, etag: &str, last_modified: DateTime<Utc>) -> bool {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return match (headers.typed_get::<IfNoneMatch>(), entity_tag(etag)) {
            (Some(inm), Some(ours)) => !inm.precondition_passes(&ours),
            _ => false,
        };
    }
    headers
        .typed_get::<IfModifiedSince>()
        .is_some_and(|since| !since.is_modified(system_time(last_modified)))
}

/// `If-Range`: a range applies only if the client's validator still
/// names this object: a strong tag equal to ours, or exactly our
/// `Last-Modified` (§13.1.5). Anything else, unreadable values included,
/// means the whole object.
pub fn if_range_holds(headers: &HeaderMap, etag: &str, last_modified: DateTime<Utc>) -> bool {
    if !headers.contains_key(header::IF_RANGE) {
        return true;
    }
    let Some(given) = headers.typed_get::<IfRange>() else {
        return false;
    };
    entity_tag(etag).is_some_and(|ours| given == IfRange::etag(ours))
        || given == IfRange::date(system_time(last_modified))
}

/// Whether any conditional header is present (worth a HEAD first on S3,
/// so a 304 costs no body transfer).
pub fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MODIFIED_SINCE)
}

/// The files a published rendition is made of, by extension, with the
/// type each is served as when stored without one. Nothing else under
/// `out/` is served: a chunked encode keeps its source chunks there too
/// (`parts/chunk_0000.mkv`), and whatever a future stage leaves beside
/// the ladder stays private until it is named here.
const RENDITION_FILES: [(&str, &str); 11] = [
    ("m3u8", "application/vnd.apple.mpegurl"),
    ("m4s", "video/iso.segment"),
    ("mp4", "video/mp4"),
    ("ts", "video/mp2t"),
    ("aac", "audio/aac"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("webp", "image/webp"),
    // Storyboards (thumbnails a player shows while seeking) and caption
    // segments (`captions/<upload>/seg_NNNNN.vtt`, beside the attempts).
    ("vtt", "text/vtt"),
    // The package's `manifest.json`.
    ("json", "application/json"),
];

/// The extension of the key's last segment (`""` without one).
fn extension(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or_default();
    name.rsplit_once('.').map_or("", |(_, ext)| ext)
}

/// The content type of a rendition file, or `None` for a key that is no
/// rendition file (never served).
pub fn rendition_type(key: &str) -> Option<&'static str> {
    let ext = extension(key);
    RENDITION_FILES
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, content_type)| *content_type)
}

/// Content type by extension, for objects stored without one (or with
/// S3's `binary/octet-stream` filler).
pub fn content_type_for(key: &str) -> &'static str {
    rendition_type(key).unwrap_or("application/octet-stream")
}

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Cache policy by extension, for objects stored without one: media and
/// images live under per-attempt prefixes and never change.
pub fn cache_control_for(key: &str) -> &'static str {
    match extension(key) {
        "m4s" | "mp4" | "ts" | "aac" | "jpg" | "jpeg" | "png" | "webp" => IMMUTABLE,
        _ => "public, max-age=300",
    }
}

/// `max-age` of a stored Cache-Control value, if it has one.
pub fn max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|d| {
        d.trim()
            .strip_prefix("max-age=")
            .and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn parses_single_byte_ranges_and_ignores_the_rest() {
        use ByteRange::*;
        use RangeRequest::*;
        let r = |v: &str| range(&with("range", v));
        assert_eq!(r("bytes=0-99"), One(FromTo(0, 99)));
        assert_eq!(r("bytes=100-"), One(From(100)));
        assert_eq!(r("bytes=-500"), One(Suffix(500)));
        assert_eq!(r("bytes=-0"), One(Suffix(0)));
        assert_eq!(r("bytes=0-1,5-6"), Whole);
        assert_eq!(r("bytes=9-3"), Whole);
        assert_eq!(r("bytes=x-3"), Whole);
        assert_eq!(r("items=0-3"), Whole);
        assert_eq!(r("bytes=-"), Whole);
        assert_eq!(r("bytes=99999999999999999999999-"), One(From(u64::MAX)));
        assert_eq!(r("Bytes=5-"), One(From(5)));
        assert_eq!(r("bytes=+5-9"), Whole);
        assert_eq!(r("bytes=5"), Whole);
        assert_eq!(range(&HeaderMap::new()), Whole);
    }

    #[test]
    fn conditional_requests() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(http_date(t), "Fri, 02 Jan 2026 03:04:05 GMT");
        assert!(not_modified(&with("if-none-match", "\"abc\""), "abc", t));
        assert!(not_modified(
            &with("if-none-match", "\"x\", W/\"abc\""),
            "abc",
            t
        ));
        assert!(not_modified(&with("if-none-match", "*"), "abc", t));
        assert!(!not_modified(&with("if-none-match", "\"abd\""), "abc", t));
        assert!(not_modified(
            &with("if-modified-since", &http_date(t)),
            "abc",
            t
        ));
        assert!(!not_modified(
            &with("if-modified-since", "Thu, 01 Jan 2026 00:00:00 GMT"),
            "abc",
            t
        ));
        assert!(!not_modified(
            &with("if-modified-since", "yesterday"),
            "abc",
            t
        ));
        assert!(if_range_holds(&with("if-range", "\"abc\""), "abc", t));
        assert!(!if_range_holds(&with("if-range", "\"old\""), "abc", t));
        assert!(!if_range_holds(&with("if-range", "W/\"abc\""), "abc", t));
        assert!(if_range_holds(&with("if-range", &http_date(t)), "abc", t));
        assert!(!if_range_holds(&with("if-range", "yesterday"), "abc", t));
        let later = t + chrono::Duration::seconds(1);
        assert!(!if_range_holds(
            &with("if-range", &http_date(later)),
            "abc",
            t
        ));
        // A tag may hold a comma; a list is split around quoted tags.
        assert!(not_modified(
            &with("if-none-match", "\"a,b\", \"x\""),
            "a,b",
            t
        ));
        assert!(!not_modified(&with("if-none-match", "\"a,b\""), "a", t));
    }

    /// RFC 9110 §5.6.7: IMF-fixdate, the obsolete RFC 850 form and
    /// asctime all name the same instant.
    #[test]
    fn accepts_all_three_http_date_formats() {
        let t = DateTime::parse_from_rfc3339("1994-11-06T08:49:37Z")
            .unwrap()
            .with_timezone(&Utc);
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert!(
                not_modified(&with("if-modified-since", date), "e", t),
                "{date}"
            );
            let later = t + chrono::Duration::seconds(1);
            assert!(
                !not_modified(&with("if-modified-since", date), "e", later),
                "{date}"
            );
            assert!(if_range_holds(&with("if-range", date), "e", t), "{date}");
            assert!(
                !if_range_holds(&with("if-range", date), "e", later),
                "{date}"
            );
        }
    }

    #[test]
    fn only_rendition_files_have_a_type() {
        assert_eq!(
            rendition_type("a/360p/seg_00001.m4s"),
            Some("video/iso.segment")
        );
        assert_eq!(
            rendition_type("a/master.m3u8"),
            Some("application/vnd.apple.mpegurl")
        );
        for key in [
            "a/parts/chunk_0000.mkv",
            "a/source",
            "a.m4s/x",
            "a/m4s",
            "a/.m4s.bak",
        ] {
            assert_eq!(rendition_type(key), None, "{key}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Header values as a client may send them: any visible ASCII,
        /// spaces and tabs, and bytes beyond ASCII.
        fn header_value() -> impl Strategy<Value = HeaderValue> {
            prop_oneof![
                proptest::collection::vec(
                    prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
                    0..80
                ),
                "(bytes|Bytes|items)=[-0-9, +]{0,40}".prop_map(String::into_bytes),
                "(W/)?\"[!#-~]{0,12}\"(, *(W/)?\"[!#-~]{0,12}\"){0,3}".prop_map(String::into_bytes),
            ]
            .prop_map(|bytes| HeaderValue::from_bytes(&bytes).expect("no control bytes"))
        }

        /// Any instant chrono can hold, far past and far future included.
        fn instant() -> impl Strategy<Value = DateTime<Utc>> {
            prop_oneof![
                (-62_000_000_000i64..300_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0)),
                (0i64..4_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0)),
            ]
            .prop_map(|t| t.expect("within chrono's range"))
        }

        proptest! {
            /// No header value makes the range and conditional logic
            /// panic, and what is accepted as a range is one.
            #[test]
            fn untrusted_headers_never_panic(
                value in header_value(),
                etag in "[!#-~]{0,16}",
                modified in instant(),
                size in 0u64..10_000,
            ) {
                for name in [header::RANGE, header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_RANGE] {
                    let mut headers = HeaderMap::new();
                    headers.insert(name, value.clone());
                    let _ = not_modified(&headers, &etag, modified);
                    let _ = if_range_holds(&headers, &etag, modified);
                    if let RangeRequest::One(r) = range(&headers) {
                        if let ByteRange::FromTo(s, e) = r {
                            prop_assert!(s <= e);
                        }
                        if let Ok(span) = r.resolve(size) {
                            prop_assert!(span.start < span.end && span.end <= size);
                        }
                    }
                }
                let _ = http_date(modified);
            }

            /// Ranges as players write them are read as written.
            #[test]
            fn well_formed_ranges_round_trip(a in any::<u64>(), b in any::<u64>()) {
                let (s, e) = (a.min(b), a.max(b));
                let r = |v: String| range(&with("range", &v));
                prop_assert_eq!(r(format!("bytes={s}-{e}")), RangeRequest::One(ByteRange::FromTo(s, e)));
                prop_assert_eq!(r(format!("bytes={s}-")), RangeRequest::One(ByteRange::From(s)));
                prop_assert_eq!(r(format!("bytes=-{e}")), RangeRequest::One(ByteRange::Suffix(e)));
                if s < e {
                    prop_assert_eq!(r(format!("bytes={e}-{s}")), RangeRequest::Whole);
                }
            }

            /// A date in any of the three formats is the instant it names,
            /// to the second, for If-Modified-Since and If-Range alike.
            #[test]
            fn dates_in_every_format_name_their_instant(
                secs in 0i64..253_402_300_799,
                format in 0usize..3,
            ) {
                let t = DateTime::from_timestamp(secs, 0).unwrap();
                let date = match format {
                    0 => http_date(t),
                    // RFC 850 has two-digit years: 1970–2069.
                    1 if (1970..2070).contains(&chrono::Datelike::year(&t)) => {
                        t.format("%A, %d-%b-%y %H:%M:%S GMT").to_string()
                    }
                    _ => t.format("%a %b %e %H:%M:%S %Y").to_string(),
                };
                let later = t + chrono::Duration::seconds(1);
                prop_assert!(not_modified(&with("if-modified-since", &date), "e", t), "{}", date);
                prop_assert!(!not_modified(&with("if-modified-since", &date), "e", later), "{}", date);
                prop_assert!(if_range_holds(&with("if-range", &date), "e", t), "{}", date);
                prop_assert!(!if_range_holds(&with("if-range", &date), "e", later), "{}", date);
            }
        }
    }
}
