//! Reading what a partner uploads as captions: WebVTT, or SRT converted to
//! WebVTT, into the cues the packager segments. Hand-written and strict
//! about what would break a player (timestamps, cue order, a cue's text
//! running into the next cue) and lenient about what does not (CRLF or CR
//! line endings, a byte-order mark, whitespace-only separator lines, SRT
//! files without subtitle numbers, SRT's `.` for `,`).
//!
//! Every refusal is one [`ErrorCode`] whose message names the line, so a
//! partner can fix the file: `caption_encoding` (with a hint when the file
//! is UTF-16), `caption_format` (neither WebVTT nor SRT),
//! `caption_malformed` (a timestamp, timing line or block that does not
//! parse), `caption_cue_timing` (a cue ending when or before it starts),
//! `caption_cue_order` (a cue starting before the one above it),
//! `caption_empty` (no cue at all). Overlapping cues are allowed: WebVTT
//! shows them together, which is how two speakers at once are captioned.
//!
//! SRT text keeps `<i>`, `<b>` and `<u>` (WebVTT has them too); `<font>`
//! tags and `{\an8}`-style overrides are dropped, and a `&` or `<` that is
//! not markup is escaped, since WebVTT would read it as markup.

use lectern_packager::subtitles::{Captions, Cue};
use lectern_web::{ApiError, ErrorCode};

/// The largest caption file accepted: hours of dense captions are a few
/// hundred KiB, and every byte is segmented on the request path.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;

/// What the partner uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Webvtt,
    Srt,
}

impl SourceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Webvtt => "webvtt",
            SourceFormat::Srt => "srt",
        }
    }

    pub fn from_db(s: &str) -> Self {
        if s == "srt" {
            SourceFormat::Srt
        } else {
            SourceFormat::Webvtt
        }
    }
}

#[derive(Debug)]
pub struct Parsed {
    pub format: SourceFormat,
    pub captions: Captions,
}

fn error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

fn malformed(line: usize, what: impl std::fmt::Display) -> ApiError {
    error(ErrorCode::CaptionMalformed, format!("line {line}: {what}"))
}

/// Reads an uploaded caption file (WebVTT or SRT) into cues, or says
/// precisely what is wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ApiError> {
    if bytes.len() > MAX_BYTES {
        return Err(too_large());
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(error(
            ErrorCode::CaptionEncoding,
            "the file is UTF-16 text; save it as UTF-8 and upload it again",
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        error(
            ErrorCode::CaptionEncoding,
            format!(
                "the file is not UTF-8 text (line {line}, byte {at}); save it as UTF-8 \
                 (GBK and other encodings are not read)"
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    if let Some(i) = lines.iter().position(|l| l.contains('\0')) {
        return Err(malformed(i + 1, "the line contains a NUL character"));
    }
    let first = lines.first().copied().unwrap_or_default();
    let parsed = if first
        .strip_prefix("WEBVTT")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    {
        Parsed {
            format: SourceFormat::Webvtt,
            captions: webvtt(&lines)?,
        }
    } else if looks_like_srt(&lines) {
        Parsed {
            format: SourceFormat::Srt,
            captions: srt(&lines)?,
        }
    } else {
        return Err(error(
            ErrorCode::CaptionFormat,
            "the file is neither WebVTT (it would start with a WEBVTT line) nor SRT \
             (numbered subtitles with `00:00:01,000 --> 00:00:04,000` timings)",
        ));
    };
    check_cues(&parsed.captions.cues)?;
    Ok(parsed)
}

pub fn too_large() -> ApiError {
    error(
        ErrorCode::CaptionTooLarge,
        format!(
            "caption files are at most {} MiB",
            MAX_BYTES / (1024 * 1024)
        ),
    )
}

fn blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Blocks of consecutive non-blank lines, each with the 1-based number of
/// its first line.
fn blocks<'a>(lines: &[&'a str], from: usize) -> Vec<(usize, Vec<&'a str>)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    for (i, line) in lines.iter().enumerate().skip(from) {
        if blank(line) {
            if let Some(block) = current.take() {
                out.push(block);
            }
        } else {
            current
                .get_or_insert_with(|| (i + 1, Vec::new()))
                .1
                .push(*line);
        }
    }
    out.extend(current);
    out
}

fn looks_like_srt(lines: &[&str]) -> bool {
    let mut content = lines.iter().filter(|l| !blank(l));
    match (content.next(), content.next()) {
        (Some(a), _) if a.contains("-->") => true,
        (Some(a), Some(b)) => {
            let a = a.trim();
            !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.contains("-->")
        }
        _ => false,
    }
}

/// Whether a block's first line starts with `keyword` as a word.
fn starts_block(line: &str, keyword: &str) -> bool {
    line.strip_prefix(keyword)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

fn webvtt(lines: &[&str]) -> Result<Captions, ApiError> {
    // The header runs from the WEBVTT line to the first blank line.
    let mut at = 1;
    while at < lines.len() && !blank(lines[at]) {
        if lines[at].contains("-->") {
            return Err(malformed(
                at + 1,
                "a blank line must separate the WEBVTT line (and its header) from the first cue",
            ));
        }
        at += 1;
    }
    let mut captions = Captions::default();
    for (number, block) in blocks(lines, at) {
        let head = block[0];
        if starts_block(head, "NOTE") {
            continue;
        }
        if (starts_block(head, "STYLE") || starts_block(head, "REGION"))
            && !block.iter().any(|l| l.contains("-->"))
        {
            if !captions.cues.is_empty() {
                return Err(malformed(
                    number,
                    "STYLE and REGION blocks must come before the first cue",
                ));
            }
            captions.blocks.push(block.join("\n"));
            continue;
        }
        let (id, timing_at) = if head.contains("-->") {
            (None, 0)
        } else {
            (Some(head.trim().to_string()), 1)
        };
        let line = number + timing_at;
        let Some(timing) = block.get(timing_at).filter(|t| t.contains("-->")) else {
            return Err(malformed(
                number,
                format!(
                    "{head:?} is neither a cue timing (00:00:01.000 --> 00:00:04.000) nor \
                     followed by one"
                ),
            ));
        };
        let (start_ms, end_ms, settings) = timing_line(timing, line, vtt_timestamp)?;
        let text = payload(&block[timing_at + 1..], line + 1)?;
        captions.cues.push(Cue {
            id,
            start_ms,
            end_ms,
            settings,
            text: text.join("\n"),
        });
    }
    Ok(captions)
}

fn srt(lines: &[&str]) -> Result<Captions, ApiError> {
    let mut captions = Captions::default();
    for (number, block) in blocks(lines, 0) {
        let head = block[0].trim();
        let numbered = head.bytes().all(|c| c.is_ascii_digit());
        let (id, timing_at) = if head.contains("-->") {
            (None, 0)
        } else if numbered {
            (Some(head.to_string()), 1)
        } else {
            return Err(malformed(
                number,
                "expected a subtitle number and a timing line; is there a blank line inside \
                 the text of the subtitle above?",
            ));
        };
        let line = number + timing_at;
        let timing = block
            .get(timing_at)
            .filter(|t| t.contains("-->"))
            .ok_or_else(|| {
                malformed(
                    line,
                    "expected a timing line such as 00:00:01,000 --> 00:00:04,000",
                )
            })?;
        // SRT's optional coordinates (`X1:… Y2:…`) have no WebVTT meaning.
        let (start_ms, end_ms, _) = timing_line(timing, line, srt_timestamp)?;
        let text = payload(&block[timing_at + 1..], line + 1)?;
        let text: Vec<String> = text
            .iter()
            .map(|l| srt_text(l))
            .filter(|l| !l.trim().is_empty())
            .collect();
        captions.cues.push(Cue {
            id,
            start_ms,
            end_ms,
            settings: String::new(),
            text: text.join("\n"),
        });
    }
    Ok(captions)
}

/// A cue's text lines: none may hold `-->` (a reader would take it for the
/// next cue's timing, so the file is missing a blank line).
fn payload<'a>(lines: &[&'a str], first_line: usize) -> Result<Vec<&'a str>, ApiError> {
    if let Some(i) = lines.iter().position(|l| l.contains("-->")) {
        return Err(malformed(
            first_line + i,
            "a timing line inside a cue's text: separate cues with a blank line",
        ));
    }
    Ok(lines.iter().map(|l| l.trim_end()).collect())
}

/// `start --> end [rest]`: both times and what follows the end.
fn timing_line(
    line: &str,
    number: usize,
    timestamp: fn(&str) -> Option<u64>,
) -> Result<(u64, u64, String), ApiError> {
    let (left, right) = line.split_once("-->").expect("checked by the caller");
    let right = right.trim_start();
    let (end, rest) = right
        .split_once([' ', '\t'])
        .map_or((right, ""), |(e, r)| (e, r));
    let bad = |what: &str, value: &str| {
        malformed(
            number,
            format!("{value:?} is not a {what} timestamp (hh:mm:ss.ttt, or mm:ss.ttt in WebVTT)"),
        )
    };
    let start = timestamp(left.trim()).ok_or_else(|| bad("start", left.trim()))?;
    let end = timestamp(end.trim()).ok_or_else(|| bad("end", end.trim()))?;
    let settings = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((start, end, settings))
}

fn digits(s: &str, min: usize, max: usize) -> Option<u64> {
    (s.len() >= min && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// WebVTT: `[hh:]mm:ss.ttt`, hours of two or more digits, minutes and
/// seconds below 60, exactly three decimals.
fn vtt_timestamp(s: &str) -> Option<u64> {
    let (clock, millis) = s.split_once('.')?;
    let millis = digits(millis, 3, 3)?;
    let parts: Vec<&str> = clock.split(':').collect();
    let (h, m, sec) = match parts.as_slice() {
        [m, s] => (0, digits(m, 2, 2)?, digits(s, 2, 2)?),
        [h, m, s] => (digits(h, 2, 9)?, digits(m, 2, 2)?, digits(s, 2, 2)?),
        _ => return None,
    };
    (m < 60 && sec < 60).then_some(((h * 60 + m) * 60 + sec) * 1000 + millis)
}

/// SRT: `h:mm:ss,ttt` (one or more hour digits, `.` accepted for `,`,
/// one to three decimals read as a fraction).
fn srt_timestamp(s: &str) -> Option<u64> {
    let (clock, fraction) = s.split_once([',', '.'])?;
    let value = digits(fraction, 1, 3)?;
    let millis = value * 10u64.pow(3 - fraction.len() as u32);
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return None;
    };
    let (h, m, sec) = (digits(h, 1, 9)?, digits(m, 2, 2)?, digits(sec, 2, 2)?);
    (m < 60 && sec < 60).then_some(((h * 60 + m) * 60 + sec) * 1000 + millis)
}

/// One SRT text line as WebVTT text (see the module docs).
fn srt_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if c == '{' && rest.starts_with("{\\") {
            if let Some(end) = rest.find('}') {
                rest = &rest[end + 1..];
                continue;
            }
        }
        if c == '<' {
            if let Some(end) = rest.find('>') {
                let tag = rest[1..end].to_ascii_lowercase();
                let (closing, body) = match tag.strip_prefix('/') {
                    Some(body) => (true, body),
                    None => (false, tag.as_str()),
                };
                let name = if body.starts_with(char::is_whitespace) {
                    ""
                } else {
                    body.split_whitespace().next().unwrap_or_default()
                };
                match name {
                    "i" | "b" | "u" => {
                        out.push_str(if closing { "</" } else { "<" });
                        out.push_str(name);
                        out.push('>');
                        rest = &rest[end + 1..];
                        continue;
                    }
                    "font" => {
                        rest = &rest[end + 1..];
                        continue;
                    }
                    _ => {}
                }
            }
            out.push_str("&lt;");
        } else if c == '&' {
            let entity = rest[1..]
                .find(';')
                .map(|end| &rest[1..1 + end])
                .is_some_and(|name| {
                    !name.is_empty()
                        && name.len() <= 8
                        && (name.bytes().all(|b| b.is_ascii_alphabetic())
                            || name.strip_prefix('#').is_some_and(|n| {
                                !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric())
                            }))
                });
            out.push_str(if entity { "&" } else { "&amp;" });
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What holds for every file, whatever its format.
fn check_cues(cues: &[Cue]) -> Result<(), ApiError> {
    if cues.is_empty() {
        return Err(error(
            ErrorCode::CaptionEmpty,
            "the file has no cues (no `start --> end` timings)",
        ));
    }
    let mut previous: Option<u64> = None;
    for (i, cue) in cues.iter().enumerate() {
        let n = i + 1;
        if cue.end_ms <= cue.start_ms {
            return Err(error(
                ErrorCode::CaptionCueTiming,
                format!(
                    "cue {n} ({} --> {}) ends before it starts",
                    lectern_packager::subtitles::timestamp(cue.start_ms),
                    lectern_packager::subtitles::timestamp(cue.end_ms)
                ),
            ));
        }
        if previous.is_some_and(|p| cue.start_ms < p) {
            return Err(error(
                ErrorCode::CaptionCueOrder,
                format!(
                    "cue {n} starts at {}, before the cue above it; list cues in the order \
                     they start",
                    lectern_packager::subtitles::timestamp(cue.start_ms)
                ),
            ));
        }
        previous = Some(cue.start_ms);
    }
    Ok(())
}

/// Refuses a file whose cues start after the video ends (with a second of
/// slack for rounding): it was timed for another video. A cue that starts
/// within the video but ends after it is kept; it simply shows to the end.
pub fn check_duration(captions: &Captions, duration_s: f64) -> Result<(), ApiError> {
    let limit_ms = ((duration_s + 1.0) * 1000.0).round() as u64;
    if let Some((i, cue)) = captions
        .cues
        .iter()
        .enumerate()
        .find(|(_, c)| c.start_ms > limit_ms)
    {
        return Err(error(
            ErrorCode::CaptionBeyondDuration,
            format!(
                "cue {} starts at {}, after the lesson's video ends ({}); is this the file \
                 for another video?",
                i + 1,
                lectern_packager::subtitles::timestamp(cue.start_ms),
                lectern_packager::subtitles::timestamp((duration_s * 1000.0).round() as u64)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(input: &str) -> ErrorCode {
        parse(input.as_bytes()).unwrap_err().code
    }

    #[test]
    fn reads_webvtt_with_ids_settings_styles_and_notes() {
        let input = "\u{feff}WEBVTT - lecture 3\r\nKind: captions\r\n\r\nNOTE written by hand\r\n\r\n\
            STYLE\r\n::cue { color: yellow }\r\n\r\n\
            intro\r\n00:01.000 --> 00:04.500 line:0 align:start\r\n心脏的结构\r\nHeart anatomy\r\n\r\n\
            01:00:00.000 --> 01:00:02.250\r\n<i>end</i>\r\n";
        let parsed = parse(input.as_bytes()).unwrap();
        assert_eq!(parsed.format, SourceFormat::Webvtt);
        let c = &parsed.captions;
        assert_eq!(c.blocks, ["STYLE\n::cue { color: yellow }"]);
        assert_eq!(c.cues.len(), 2);
        assert_eq!(c.cues[0].id.as_deref(), Some("intro"));
        assert_eq!((c.cues[0].start_ms, c.cues[0].end_ms), (1000, 4500));
        assert_eq!(c.cues[0].settings, "line:0 align:start");
        assert_eq!(c.cues[0].text, "心脏的结构\nHeart anatomy");
        assert_eq!(
            (c.cues[1].start_ms, c.cues[1].end_ms),
            (3_600_000, 3_602_250)
        );
        assert_eq!(c.cues[1].text, "<i>end</i>");
    }

    #[test]
    fn converts_srt_to_webvtt_cues() {
        let input = "1\r\n00:00:01,000 --> 00:00:03,500\r\n{\\an8}<font color=\"#ff0\">Hello</font> & <b>welcome</b>\r\n\r\n\
            2\r\n00:00:04.2 --> 00:00:06,000 X1:10 X2:20 Y1:5 Y2:9\r\n1 < 2 &amp; 3\r\n\r\n\
            00:00:07,000 --> 00:00:08,000\r\nno number\r\n";
        let parsed = parse(input.as_bytes()).unwrap();
        assert_eq!(parsed.format, SourceFormat::Srt);
        let cues = &parsed.captions.cues;
        assert_eq!(cues.len(), 3);
        assert_eq!(cues[0].id.as_deref(), Some("1"));
        assert_eq!((cues[0].start_ms, cues[0].end_ms), (1000, 3500));
        assert_eq!(cues[0].text, "Hello &amp; <b>welcome</b>");
        assert_eq!((cues[1].start_ms, cues[1].end_ms), (4200, 6000));
        assert_eq!(cues[1].settings, "");
        assert_eq!(cues[1].text, "1 &lt; 2 &amp; 3");
        assert_eq!(cues[2].id, None);
        let vtt = lectern_packager::subtitles::webvtt(&parsed.captions);
        assert!(
            vtt.starts_with("WEBVTT\n\n1\n00:00:01.000 --> 00:00:03.500\n"),
            "{vtt}"
        );
        // What we write reads back as the same cues.
        assert_eq!(parse(vtt.as_bytes()).unwrap().captions.cues, *cues);
    }

    #[test]
    fn refuses_what_is_not_utf8_with_a_hint() {
        let err = parse(&[0xFF, 0xFE, b'W', 0]).unwrap_err();
        assert_eq!(err.code, ErrorCode::CaptionEncoding);
        assert!(err.message.contains("UTF-16"));
        // "字幕" in GBK.
        let err = parse(b"WEBVTT\n\n00:01.000 --> 00:02.000\n\xd7\xd6\xc4\xbb\n").unwrap_err();
        assert_eq!(err.code, ErrorCode::CaptionEncoding);
        assert!(err.message.contains("line 4"), "{}", err.message);
    }

    #[test]
    fn refuses_what_is_neither_format() {
        for input in [
            "",
            "hello world",
            "<?xml version=\"1.0\"?><tt/>",
            "[Script Info]\nTitle: ass",
            "WEBVTTX\n\n00:01.000 --> 00:02.000\nx\n",
            "1\nnot a timing\n",
        ] {
            assert_eq!(code(input), ErrorCode::CaptionFormat, "{input:?}");
        }
    }

    #[test]
    fn malformed_timestamps_and_blocks_name_their_line() {
        for (input, line) in [
            ("WEBVTT\n\n00:01.000 --> 00:02\nx\n", 3),
            ("WEBVTT\n\n00:01,000 --> 00:02.000\nx\n", 3),
            ("WEBVTT\n\n0:01.000 --> 00:02.000\nx\n", 3),
            ("WEBVTT\n\n00:61.000 --> 01:02.000\nx\n", 3),
            ("WEBVTT\n\n00:01.000 -> 00:02.000\nx\n", 3),
            ("WEBVTT\n\nid\n\n00:01.000 --> 00:02.000\nx\n", 3),
            ("WEBVTT\n00:01.000 --> 00:02.000\nx\n", 2),
            (
                "WEBVTT\n\n00:01.000 --> 00:02.000\nx\n00:03.000 --> 00:04.000\ny\n",
                5,
            ),
            (
                "WEBVTT\n\n00:01.000 --> 00:02.000\nx\n\nSTYLE\n::cue {}\n",
                6,
            ),
            ("WEBVTT\n\n00:01.000 --> 00:02.000\nx\0\n", 4),
            (
                "1\n00:00:01,000 --> 00:00:02,000\nfirst\n\nsecond paragraph\n",
                5,
            ),
            ("1\n00:00:01,000 --> 00:00:2,000\nx\n", 2),
            ("1\n00:00:01,0000 --> 00:00:02,000\nx\n", 2),
        ] {
            let err = parse(input.as_bytes()).unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::CaptionMalformed,
                "{input:?}: {}",
                err.message
            );
            assert!(
                err.message.starts_with(&format!("line {line}:")),
                "{input:?}: {}",
                err.message
            );
        }
    }

    #[test]
    fn cue_timing_and_order() {
        assert_eq!(
            code("WEBVTT\n\n00:02.000 --> 00:01.000\nbackwards\n"),
            ErrorCode::CaptionCueTiming
        );
        assert_eq!(
            code("WEBVTT\n\n00:02.000 --> 00:02.000\nempty\n"),
            ErrorCode::CaptionCueTiming
        );
        assert_eq!(
            code("1\n00:00:05,000 --> 00:00:06,000\nb\n\n2\n00:00:01,000 --> 00:00:02,000\na\n"),
            ErrorCode::CaptionCueOrder
        );
        // Overlaps are two people speaking at once: allowed.
        assert!(
            parse(b"WEBVTT\n\n00:01.000 --> 00:05.000\n- A\n\n00:02.000 --> 00:03.000\n- B\n")
                .is_ok()
        );
        assert_eq!(
            code("WEBVTT\n\nNOTE nothing else\n"),
            ErrorCode::CaptionEmpty
        );
        assert_eq!(code("WEBVTT\n"), ErrorCode::CaptionEmpty);
    }

    #[test]
    fn size_cap_and_duration() {
        let big = vec![b'a'; MAX_BYTES + 1];
        assert_eq!(parse(&big).unwrap_err().code, ErrorCode::CaptionTooLarge);
        let parsed =
            parse(b"WEBVTT\n\n00:01.000 --> 00:02.000\na\n\n01:00.500 --> 01:02.000\nb\n").unwrap();
        assert!(check_duration(&parsed.captions, 60.0).is_ok());
        let err = check_duration(&parsed.captions, 30.0).unwrap_err();
        assert_eq!(err.code, ErrorCode::CaptionBeyondDuration);
        assert!(err.message.contains("cue 2"), "{}", err.message);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// No input makes the parser panic, and what it accepts has
            /// cues in order that each end after they start.
            #[test]
            fn any_bytes_parse_or_are_refused(
                bytes in prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..300),
                    "(WEBVTT\n\n)?([0-9:.,]{5,12} --> [0-9:.,]{5,12}( [a-z:0-9]{0,8})?\n[^\n]{0,12}\n\n){0,4}"
                        .prop_map(String::into_bytes),
                    "([0-9]{1,2}\n[0-9:,]{8,12} --> [0-9:,]{8,12}\n[<>&a-z{}\\\\ ]{0,16}\n\n){0,4}"
                        .prop_map(String::into_bytes),
                ]
            ) {
                if let Ok(parsed) = parse(&bytes) {
                    let cues = &parsed.captions.cues;
                    prop_assert!(!cues.is_empty());
                    for pair in cues.windows(2) {
                        prop_assert!(pair[0].start_ms <= pair[1].start_ms);
                    }
                    for cue in cues {
                        prop_assert!(cue.start_ms < cue.end_ms);
                        prop_assert!(!cue.text.contains("-->"));
                        prop_assert!(!cue.text.split('\n').any(|l| l.trim().is_empty()) || cue.text.is_empty());
                    }
                    // What is written reads back as the same cues.
                    let vtt = lectern_packager::subtitles::webvtt(&parsed.captions);
                    let again = parse(vtt.as_bytes()).unwrap();
                    prop_assert_eq!(&again.captions.cues, cues);
                }
            }
        }
    }
}
