//! The HTTP semantics of serving objects (RFC 9110): `Range` parsing,
//! validators and conditional requests, dates, and default content types
//! and cache policies for objects stored without them.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
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
    let Some(value) = headers
        .get(axum::http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return RangeRequest::Whole;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
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

/// IMF-fixdate, the one date format HTTP senders use.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// True when the client's copy is current (answer 304): `If-None-Match`
/// decides when present (weak comparison, §13.1.2); otherwise
/// `If-Modified-Since`, at one-second resolution as dates are sent.
pub fn not_modified(headers: &HeaderMap, etag: &str, last_modified: DateTime<Utc>) -> bool {
    if let Some(inm) = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let ours = quoted(etag);
        return inm
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours.as_str());
    }
    if let Some(since) = headers
        .get(axum::http::header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
    {
        return last_modified.timestamp() <= since.timestamp();
    }
    false
}

/// `If-Range`: a range applies only if the client's validator still
/// names this object (strong comparison for tags, exact date otherwise).
pub fn if_range_holds(headers: &HeaderMap, etag: &str, last_modified: DateTime<Utc>) -> bool {
    match headers
        .get(axum::http::header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(v) if v.trim_start().starts_with('"') => v.trim() == quoted(etag),
        Some(v) if v.trim_start().starts_with("W/") => false,
        Some(v) => parse_http_date(v).is_some_and(|t| t.timestamp() == last_modified.timestamp()),
    }
}

/// Whether any conditional header is present (worth a HEAD first on S3,
/// so a 304 costs no body transfer).
pub fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(axum::http::header::IF_NONE_MATCH)
        || headers.contains_key(axum::http::header::IF_MODIFIED_SINCE)
}

/// Content type by extension, for objects stored without one (or with
/// S3's `binary/octet-stream` filler).
pub fn content_type_for(key: &str) -> &'static str {
    match key.rsplit('.').next().unwrap_or_default() {
        "m3u8" => "application/vnd.apple.mpegurl",
        "m4s" => "video/iso.segment",
        "mp4" => "video/mp4",
        "ts" => "video/mp2t",
        "aac" => "audio/aac",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "vtt" => "text/vtt",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Cache policy by extension, for objects stored without one: media and
/// images live under per-attempt prefixes and never change.
pub fn cache_control_for(key: &str) -> &'static str {
    match key.rsplit('.').next().unwrap_or_default() {
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
        assert!(if_range_holds(&with("if-range", &http_date(t)), "abc", t));
    }
}
