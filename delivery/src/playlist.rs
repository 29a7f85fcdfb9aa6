//! On-the-fly playlist rewriting: every URI a player will follow from a
//! playlist (segment and variant lines, `URI="…"` attributes of EXT-X-MAP,
//! EXT-X-MEDIA, EXT-X-KEY, EXT-X-I-FRAME-STREAM-INF…) gets the learner's
//! token appended, so segments are fetched with the same credential the
//! playlist was. Text-level rather than through a full parser: the output
//! must stay byte-for-byte what the packager wrote apart from the added
//! query, and unknown tags must pass through untouched.
//!
//! A media playlist answering an LL-HLS blocking reload is instead made
//! the same for every viewer ([`shared`]): each relative URI carries
//! `token={$token}`, and `#EXT-X-DEFINE:QUERYPARAM="token"` tells the
//! player to fill the variable in from the query of the URL it fetched the
//! playlist by (RFC 8216bis §4.3.2.3, variable substitution, protocol
//! version 11), so a CDN can cache one copy per blocking reload and hand
//! it to every viewer while each keeps fetching with their own token.
//!
//! One line is dropped: an encrypted asset's master loses its
//! `#EXT-X-I-FRAME-STREAM-INF` lines. I-frame playlists are byte ranges
//! inside segments, and the origin encrypts a segment whole (AES-128-CBC
//! from its first byte), so a range from its middle cannot be decrypted
//! with the playlist's IV; trick play is offered for clear assets only.

use super::encryption::AssetKey;

/// What kind of playlist this is, for its caching policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Lists variants (`#EXT-X-STREAM-INF`).
    Master,
    /// A media playlist with `#EXT-X-ENDLIST`: will not change.
    Vod,
    /// A media playlist still growing (an EVENT playlist during encoding,
    /// or a live one).
    Growing,
}

pub fn kind(text: &str) -> Kind {
    let tag = |t: &str| text.lines().any(|l| l.trim_start().starts_with(t));
    if tag("#EXT-X-STREAM-INF") {
        Kind::Master
    } else if tag("#EXT-X-ENDLIST") {
        Kind::Vod
    } else {
        Kind::Growing
    }
}

/// The query parameter a shared playlist's variable is defined from: the
/// one playback URLs carry the token in.
pub const TOKEN_PARAM: &str = "token";
/// What every relative URI of a shared playlist carries in place of a token.
pub const TOKEN_REFERENCE: &str = "{$token}";
/// `EXT-X-VERSION` a playlist with `EXT-X-DEFINE:QUERYPARAM` must declare
/// at least (RFC 8216bis §7).
pub const QUERYPARAM_VERSION: u64 = 11;

/// `text` made the same for every viewer: `#EXT-X-DEFINE:QUERYPARAM="token"`
/// right after the `#EXTM3U` header (and `EXT-X-VERSION` raised to 11, or
/// added there), and every relative URI carrying `token={$token}` where
/// [`rewrite_encrypted`] would put a token (key URIs of an encrypted asset
/// included), so the player substitutes the token of the URL it loaded
/// the playlist by. `None` when the first line is not
/// the header alone, or `text` already uses variables (`EXT-X-DEFINE`,
/// `{$`): the packager writes neither, and such a playlist is rewritten
/// per viewer as before rather than guessed at.
pub fn shared(text: &str, encrypt: Option<&Encrypt<'_>>) -> Option<String> {
    let first = text.split('\n').next().unwrap_or_default();
    if first.trim() != "#EXTM3U" || text.contains("{$") {
        return None;
    }
    let tag = |t: &str| text.lines().any(|l| l.trim_start().starts_with(t));
    if tag("#EXT-X-DEFINE") {
        return None;
    }
    let rewritten = rewrite_encrypted(text, TOKEN_REFERENCE, encrypt);
    let mut out = String::with_capacity(rewritten.len() + 64);
    let mut lines = rewritten.split_inclusive('\n');
    let header = lines.next().unwrap_or_default();
    let ending = match split_ending(header).1 {
        "" => "\n",
        e => e,
    };
    out.push_str(header.trim_end_matches(['\r', '\n']));
    out.push_str(ending);
    if !tag("#EXT-X-VERSION:") {
        out.push_str(&format!("#EXT-X-VERSION:{QUERYPARAM_VERSION}{ending}"));
    }
    out.push_str(&format!(
        "#EXT-X-DEFINE:QUERYPARAM=\"{TOKEN_PARAM}\"{ending}"
    ));
    for line in lines {
        let (body, end) = split_ending(line);
        match body.trim().strip_prefix("#EXT-X-VERSION:") {
            Some(v) => {
                let version = v.trim().parse::<u64>().unwrap_or(0).max(QUERYPARAM_VERSION);
                out.push_str(&format!("#EXT-X-VERSION:{version}{end}"));
            }
            None => out.push_str(line),
        }
    }
    Some(out)
}

/// The `PART-TARGET` of an LL-HLS media playlist, in seconds.
pub fn part_target_s(text: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("#EXT-X-PART-INF:")?
            .split(',')
            .find_map(|a| a.trim().strip_prefix("PART-TARGET="))?
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t > 0.0)
    })
}

/// Appends `token=<token>` to every relative URI in `text`. Absolute URIs
/// (with a scheme, or protocol-relative) point elsewhere and are left
/// alone: the token must never leak to another host. `token` is URL-safe
/// by construction, so it needs no escaping. (The origin always goes
/// through [`rewrite_encrypted`]; this is its clear case, for the tests.)
#[cfg(test)]
pub fn rewrite(text: &str, token: &str) -> String {
    rewrite_encrypted(text, token, None)
}

/// How the playlist of an encrypted asset is rewritten (see
/// `origin::encryption`).
pub struct Encrypt<'a> {
    pub key: &'a AssetKey,
    /// The key's URI without the token (the token is added like elsewhere).
    pub key_uri: &'a str,
    /// Object key of the directory holding this playlist, ending in `/`:
    /// segment URIs resolve against it to the object keys the IVs derive from.
    pub dir: &'a str,
    /// Set when the playlist was requested on the plain path: relative URIs
    /// are prefixed with this root-relative, key-marked directory so the
    /// player fetches everything below it from the encrypted path.
    pub base: Option<&'a str>,
}

/// [`rewrite`], and for an encrypted asset one `#EXT-X-KEY` per media
/// segment, placed before the segment's `#EXTINF` and so after any
/// `#EXT-X-MAP` (init segments stay clear: a key tag before a map tag
/// would declare the init segment encrypted, RFC 8216 §4.3.2.5). A map
/// that follows an encrypted segment gets `METHOD=NONE` before it, as do
/// segments the origin does not encrypt.
pub fn rewrite_encrypted(text: &str, token: &str, encrypt: Option<&Encrypt<'_>>) -> String {
    let base = encrypt.and_then(|e| e.base);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len() + 64 * token.len().min(256));
    let mut key_active = false;
    for (i, line) in lines.iter().enumerate() {
        let (body, ending) = split_ending(line);
        let trimmed = body.trim();
        if trimmed.is_empty() {
            out.push_str(line);
        } else if trimmed.starts_with('#') {
            if encrypt.is_some() && trimmed.starts_with("#EXT-X-I-FRAME-STREAM-INF") {
                continue;
            }
            if let Some(e) = encrypt {
                if trimmed.starts_with("#EXT-X-MAP") && key_active {
                    out.push_str("#EXT-X-KEY:METHOD=NONE");
                    out.push_str(ending);
                    key_active = false;
                } else if trimmed.starts_with("#EXTINF") {
                    let segment = lines[i + 1..]
                        .iter()
                        .map(|l| l.trim())
                        .find(|l| !l.is_empty() && !l.starts_with('#'))
                        .and_then(|uri| resolve(e.dir, uri))
                        .filter(|key| crate::encryption::is_encrypted_media(key));
                    match segment {
                        Some(object_key) => {
                            out.push_str("#EXT-X-KEY:METHOD=AES-128,URI=\"");
                            out.push_str(&with_token(e.key_uri, token, None));
                            out.push_str("\",IV=0x");
                            out.push_str(&hex::encode(e.key.iv(&object_key)));
                            out.push_str(ending);
                            key_active = true;
                        }
                        None if key_active => {
                            out.push_str("#EXT-X-KEY:METHOD=NONE");
                            out.push_str(ending);
                            key_active = false;
                        }
                        None => {}
                    }
                }
            }
            rewrite_attributes(body, token, base, &mut out);
            out.push_str(ending);
        } else {
            out.push_str(&with_token(body, token, base));
            out.push_str(ending);
        }
    }
    out
}

/// The `GROUP-ID` of the subtitle renditions the origin adds to a lesson's
/// master playlist.
pub const SUBTITLE_GROUP: &str = "subs";

/// A caption track as the master playlist lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubtitleTrack {
    /// BCP-47, canonical case.
    pub language: String,
    pub label: String,
    pub is_default: bool,
    /// The track's object prefix (`assets/<id>/out/captions/<upload>/`).
    pub prefix: String,
}

/// `master` (stored in directory `dir`) with one `#EXT-X-MEDIA` line of
/// `TYPE=SUBTITLES` per track, before the first variant, and every
/// `#EXT-X-STREAM-INF` naming the group. URIs are relative to the master,
/// so they get the token (and an encrypted asset's base) like the rest.
/// Unchanged when there is no track. Labels were checked on upload
/// (no `"`, no control character); a track that slipped past is left out
/// rather than allowed to break the playlist.
pub fn with_subtitles(master: &str, dir: &str, tracks: &[SubtitleTrack]) -> String {
    let quotable = |v: &str| !v.is_empty() && !v.chars().any(|c| c == '"' || c.is_control());
    let media: String = tracks
        .iter()
        .filter(|t| quotable(&t.label) && quotable(&t.language))
        .map(|t| {
            format!(
                "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"{SUBTITLE_GROUP}\",NAME=\"{}\",\
                 LANGUAGE=\"{}\",DEFAULT={},AUTOSELECT=YES,URI=\"{}\"\n",
                t.label,
                t.language,
                if t.is_default { "YES" } else { "NO" },
                relative(dir, &format!("{}index.m3u8", t.prefix)),
            )
        })
        .collect();
    if media.is_empty() {
        return master.to_string();
    }
    let mut out = String::with_capacity(master.len() + media.len() + 64);
    let mut listed = false;
    for line in master.split_inclusive('\n') {
        let (body, ending) = split_ending(line);
        if body.trim_start().starts_with("#EXT-X-STREAM-INF:") {
            if !listed {
                out.push_str(&media);
                listed = true;
            }
            out.push_str(body.trim_end());
            if !body.contains("SUBTITLES=") {
                out.push_str(&format!(",SUBTITLES=\"{SUBTITLE_GROUP}\""));
            }
            out.push_str(if ending.is_empty() { "\n" } else { ending });
        } else {
            out.push_str(line);
        }
    }
    out
}

/// `to` (an object key) relative to the directory `dir` (ending in `/`).
fn relative(dir: &str, to: &str) -> String {
    let from: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    let to: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut uri = "../".repeat(from.len() - common);
    uri.push_str(&to[common..].join("/"));
    uri
}

/// The object key a relative URI in a playlist stored under `dir` names;
/// `None` for absolute or root-relative URIs and paths leaving the root.
fn resolve(dir: &str, uri: &str) -> Option<String> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() || path.starts_with('/') || is_absolute(path) {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for segment in path.split('/') {
        match segment {
            "." => {}
            ".." => {
                parts.pop()?;
            }
            "" => return None,
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

fn split_ending(line: &str) -> (&str, &str) {
    let body = line.trim_end_matches(['\r', '\n']);
    (body, &line[body.len()..])
}

/// Rewrites every `URI="…"` attribute in a tag line.
fn rewrite_attributes(line: &str, token: &str, base: Option<&str>, out: &mut String) {
    let mut rest = line;
    while let Some(at) = find_uri_attribute(rest) {
        let value_start = at + "URI=\"".len();
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        out.push_str(&rest[..value_start]);
        out.push_str(&with_token(
            &rest[value_start..value_start + len],
            token,
            base,
        ));
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
}

/// The offset of the next `URI="` that starts an attribute (after `:` or
/// `,`), so attributes merely ending in URI are not mistaken for it.
fn find_uri_attribute(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("URI=\"") {
        let at = from + i;
        if at > 0 && matches!(s.as_bytes()[at - 1], b':' | b',') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// `uri` with the token; relative URIs (not root-relative ones) get
/// `base` in front when one is given. Whitespace around it stays where it
/// was, like every other byte the packager wrote.
fn with_token(text: &str, token: &str, base: Option<&str>) -> String {
    let uri = text.trim();
    if is_absolute(uri) || uri.is_empty() {
        return text.to_string();
    }
    let lead = &text[..text.len() - text.trim_start().len()];
    let trail = &text[text.trim_end().len()..];
    let based;
    let uri = match base {
        Some(base) if !uri.starts_with('/') => {
            based = format!("{base}{uri}");
            based.as_str()
        }
        _ => uri,
    };
    let (path, fragment) = match uri.find('#') {
        Some(i) => (&uri[..i], &uri[i..]),
        None => (uri, ""),
    };
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{lead}{path}{separator}token={token}{fragment}{trail}")
}

fn is_absolute(uri: &str) -> bool {
    if uri.starts_with("//") {
        return true;
    }
    // A scheme is letters, digits, `+`, `-`, `.` before the first `:`,
    // which must come before any `/` or `?`.
    match uri.find(':') {
        Some(colon) => {
            let scheme = &uri[..colon];
            !scheme.is_empty()
                && scheme.as_bytes()[0].is_ascii_alphabetic()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"audio\",DEFAULT=YES,URI=\"audio/index.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aac\"\n\
        720p/index.m3u8\n\
        #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"720p/iframes.m3u8\"\n";

    const MEDIA: &str = "#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n#EXT-X-MAP:URI=\"init.mp4\"\r\n\
        #EXT-X-KEY:METHOD=AES-128,URI=\"key?v=2\",IV=0x1\r\n\
        #EXTINF:4.0,\r\nseg_00000.m4s\r\n#EXTINF:4.0,\r\nhttps://elsewhere.example/seg.m4s\r\n\
        #EXT-X-ENDLIST\r\n";

    #[test]
    fn every_relative_uri_carries_the_token() {
        let out = rewrite(MASTER, "T");
        assert!(out.contains("URI=\"audio/index.m3u8?token=T\""), "{out}");
        assert!(out.contains("\n720p/index.m3u8?token=T\n"), "{out}");
        assert!(out.contains("URI=\"720p/iframes.m3u8?token=T\""), "{out}");
        assert!(out.contains("GROUP-ID=\"aac\""), "{out}");
        assert_eq!(kind(MASTER), Kind::Master);

        let out = rewrite(MEDIA, "T");
        assert!(
            out.contains("#EXT-X-MAP:URI=\"init.mp4?token=T\"\r\n"),
            "{out}"
        );
        assert!(out.contains("URI=\"key?v=2&token=T\",IV=0x1"), "{out}");
        assert!(out.contains("\r\nseg_00000.m4s?token=T\r\n"), "{out}");
        assert!(
            out.contains("\r\nhttps://elsewhere.example/seg.m4s\r\n"),
            "the token must not leak to another host: {out}"
        );
        assert_eq!(kind(MEDIA), Kind::Vod);
        assert_eq!(kind("#EXTM3U\n#EXTINF:4,\na.m4s\n"), Kind::Growing);
    }

    const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
        #EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-MEDIA-SEQUENCE:4\n\
        #EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXT-X-PART:DURATION=0.50000,URI=\"c1-part_4_0.m4s\",INDEPENDENT=YES\n\
        #EXTINF:2.0,\nc1-seg_00004.m4s\n\
        #EXT-X-PART:DURATION=0.50000,URI=\"c1-part_5_0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"c1-part_5_1.m4s\"\n\
        #EXT-X-RENDITION-REPORT:URI=\"../../a/audio/index.m3u8\",LAST-MSN=5,LAST-PART=0\n";

    #[test]
    fn a_live_playlist_is_shared_with_the_token_as_a_variable() {
        assert_eq!(kind(LIVE), Kind::Growing);
        let out = shared(LIVE, None).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            &lines[..3],
            &[
                "#EXTM3U",
                "#EXT-X-DEFINE:QUERYPARAM=\"token\"",
                "#EXT-X-VERSION:11"
            ],
            "{out}"
        );
        for uri in [
            "URI=\"init.mp4?token={$token}\"",
            "\nc1-seg_00004.m4s?token={$token}\n",
            "URI=\"c1-part_5_0.m4s?token={$token}\"",
            "PRELOAD-HINT:TYPE=PART,URI=\"c1-part_5_1.m4s?token={$token}\"",
            "URI=\"../../a/audio/index.m3u8?token={$token}\",LAST-MSN=5",
        ] {
            assert!(out.contains(uri), "{uri} in\n{out}");
        }
        // What a player makes of it is what a per-viewer rewrite says.
        let substituted = out
            .replace("{$token}", "T")
            .replace("#EXT-X-DEFINE:QUERYPARAM=\"token\"\n", "")
            .replace("#EXT-X-VERSION:11", "#EXT-X-VERSION:7");
        assert_eq!(substituted, rewrite(LIVE, "T"));
        assert_eq!(part_target_s(LIVE), Some(0.5));

        // An encrypted asset's: the key URI takes the variable too.
        let key = AssetKey::generate();
        let e = Encrypt {
            key: &key,
            key_uri: "/media-key/a/b",
            dir: "assets/a/out/live/v/720p/",
            base: Some("/media/assets/a/aes-b/out/live/v/720p/"),
        };
        let out = shared(LIVE, Some(&e)).unwrap();
        assert!(
            out.contains("URI=\"/media-key/a/b?token={$token}\",IV=0x"),
            "{out}"
        );
        let substituted = out
            .replace("{$token}", "T")
            .replace("#EXT-X-DEFINE:QUERYPARAM=\"token\"\n", "")
            .replace("#EXT-X-VERSION:11", "#EXT-X-VERSION:7");
        assert_eq!(substituted, rewrite_encrypted(LIVE, "T", Some(&e)));

        // No version: one is added; a higher one stays.
        let out = shared("#EXTM3U\r\n#EXTINF:2,\r\na.m4s\r\n", None).unwrap();
        assert_eq!(
            out,
            "#EXTM3U\r\n#EXT-X-VERSION:11\r\n#EXT-X-DEFINE:QUERYPARAM=\"token\"\r\n\
             #EXTINF:2,\r\na.m4s?token={$token}\r\n"
        );
        assert!(shared(&LIVE.replace(":7", ":12"), None)
            .unwrap()
            .contains("#EXT-X-VERSION:12\n"));
        // Anything already using variables, or without a header, is not guessed at.
        assert_eq!(
            shared("#EXTM3U\n#EXT-X-DEFINE:NAME=\"a\",VALUE=\"b\"\n", None),
            None
        );
        assert_eq!(shared("#EXTM3U\n#EXTINF:2,\n{$a}.m4s\n", None), None);
        assert_eq!(shared("#EXTINF:2,\na.m4s\n", None), None);
        assert_eq!(shared("#EXTM3U\r#EXTINF:2,\ra.m4s\r", None), None);
    }

    #[test]
    fn an_encrypted_master_offers_no_trick_play() {
        let key = AssetKey::generate();
        let e = Encrypt {
            key: &key,
            key_uri: "/media-key/a/b",
            dir: "assets/a/out/attempt-1/",
            base: None,
        };
        let out = rewrite_encrypted(MASTER, "T", Some(&e));
        assert!(!out.contains("I-FRAME"), "{out}");
        assert!(out.contains("\n720p/index.m3u8?token=T\n"), "{out}");
        // A clear asset keeps it.
        assert!(rewrite(MASTER, "T").contains("#EXT-X-I-FRAME-STREAM-INF"));
    }

    #[test]
    fn tags_and_blank_lines_pass_through() {
        let text = "#EXTM3U\n\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-SESSION-DATA:DATA-ID=\"x\",XURI=\"no\"\n";
        assert_eq!(rewrite(text, "T"), text);
        assert_eq!(rewrite(" a.m4s \r\n", "T"), " a.m4s?token=T \r\n");
    }

    #[test]
    fn subtitles_join_every_variant() {
        let tracks = [
            SubtitleTrack {
                language: "zh-CN".into(),
                label: "中文".into(),
                is_default: true,
                prefix: "assets/a/out/captions/u1/".into(),
            },
            SubtitleTrack {
                language: "en".into(),
                label: "English".into(),
                is_default: false,
                prefix: "assets/a/out/captions/u2/".into(),
            },
        ];
        let out = with_subtitles(MASTER, "assets/a/out/attempt-1/", &tracks);
        assert!(
            out.contains(
                "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"中文\",LANGUAGE=\"zh-CN\",\
             DEFAULT=YES,AUTOSELECT=YES,URI=\"../captions/u1/index.m3u8\"\n\
             #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",\
             DEFAULT=NO,AUTOSELECT=YES,URI=\"../captions/u2/index.m3u8\"\n\
             #EXT-X-STREAM-INF:"
            ),
            "{out}"
        );
        assert!(
            out.contains("AUDIO=\"aac\",SUBTITLES=\"subs\"\n720p/index.m3u8\n"),
            "{out}"
        );
        // The I-frame playlist is no variant of the group.
        assert!(
            out.contains("#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI="),
            "{out}"
        );
        assert!(!out.contains("iframes.m3u8\",SUBTITLES"), "{out}");
        // Only additions: removing them gives the master back.
        let stripped: String = out
            .lines()
            .filter(|l| !l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES"))
            .map(|l| l.replace(",SUBTITLES=\"subs\"", "") + "\n")
            .collect();
        assert_eq!(stripped, MASTER);
        let rewritten = rewrite(&out, "T");
        assert!(
            rewritten.contains("URI=\"../captions/u1/index.m3u8?token=T\""),
            "{rewritten}"
        );
        assert_eq!(
            with_subtitles(MASTER, "assets/a/out/attempt-1/", &[]),
            MASTER
        );
        let bad = SubtitleTrack {
            label: "a\"b".into(),
            ..tracks[1].clone()
        };
        assert_eq!(with_subtitles(MASTER, "d/", &[bad]), MASTER);
        assert_eq!(relative("a/b/c/", "a/b/x/y.m3u8"), "../x/y.m3u8");
        assert_eq!(relative("a/", "a/y.m3u8"), "y.m3u8");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A token whose letters the generated playlists never contain, so
        /// what the rewrite added can be told from what was there.
        const TOKEN: &str = "k1.ZZ.9.XX";

        /// Playlist-like text: tags with and without URI attributes, URI
        /// lines relative, root-relative and absolute, odd spacing and line
        /// endings, and stray bytes.
        fn playlist() -> impl Strategy<Value = String> {
            let line = prop_oneof![
                Just("#EXTM3U".to_string()),
                "#EXTINF:[0-9.]{1,5},[a-w ]{0,6}",
                "#EXT-X-(MAP|MEDIA|KEY|I-FRAME-STREAM-INF|SESSION-DATA):([A-W-]{1,6}=[a-w0-9\"]{0,5},){0,2}(X?URI=\"[a-w0-9/._?&#:-]{0,16}\")?(,[A-W]{1,4}=[a-w0-9]{1,3}){0,2}",
                "[ \t]{0,2}[a-w0-9/._-]{1,16}(\\?[a-w]=[a-w0-9]{1,3})?(#[a-w]{1,3})?[ \t]{0,2}",
                "(https?|ftp|data|s3|a[a-w0-9+.-]{0,5})://[a-w.]{1,10}/[a-w0-9/._?&=-]{0,12}",
                "(https?):[a-w0-9/._-]{1,12}",
                "//[a-w.]{1,10}/[a-w0-9._-]{1,8}",
                "/[a-w0-9/._-]{1,16}",
                "[^\r\nXZ]{0,24}",
            ];
            let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("")];
            proptest::collection::vec((line, ending), 0..24)
                .prop_map(|lines| lines.into_iter().map(|(l, e)| l + e).collect())
        }

        /// `out` with every token query the rewrite adds taken out.
        fn without_tokens(out: &str) -> String {
            out.replace(&format!("?token={TOKEN}"), "")
                .replace(&format!("&token={TOKEN}"), "")
        }

        proptest! {
            /// The rewrite adds the token query and nothing else: every
            /// other byte, spacing and line endings included, is what the
            /// packager wrote.
            #[test]
            fn only_the_token_is_added(text in playlist()) {
                let out = rewrite(&text, TOKEN);
                prop_assert_eq!(without_tokens(&out), text);
            }

            /// A shared playlist with the viewer's token substituted, as
            /// a player does, is the per-viewer rewrite plus the variable's
            /// definition and version: the same URIs, and no token in it.
            #[test]
            fn a_shared_playlist_substituted_is_the_rewrite(text in playlist()) {
                let text = format!("#EXTM3U\n{}", text.replace("{$", ""));
                prop_assume!(!text.contains("#EXT-X-DEFINE"));
                let out = shared(&text, None).unwrap();
                prop_assert!(!out.contains(TOKEN));
                let define = "#EXT-X-DEFINE:QUERYPARAM=\"token\"";
                let lines: Vec<&str> = out.split_inclusive('\n').collect();
                prop_assert!(lines.iter().take(3).any(|l| l.trim_end() == define));
                let viewer: String = lines
                    .iter()
                    .filter(|l| l.trim_end() != define)
                    .map(|l| l.replace("{$token}", TOKEN))
                    .collect();
                let rewritten = rewrite(&text, TOKEN);
                // Only the version line may differ (raised, or added).
                let strip = |s: &str| -> Vec<String> {
                    s.split_inclusive('\n')
                        .filter(|l| !l.trim_start().starts_with("#EXT-X-VERSION:"))
                        .map(str::to_string)
                        .collect()
                };
                prop_assert_eq!(strip(&viewer), strip(&rewritten));
            }

            /// Absolute URIs point at other hosts: they never get the token.
            #[test]
            fn the_token_never_goes_to_another_host(text in playlist()) {
                let out = rewrite(&text, TOKEN);
                for line in out.lines() {
                    let line = line.trim();
                    if !line.starts_with('#') && is_absolute(line) {
                        prop_assert!(!line.contains(TOKEN), "{}", line);
                    }
                    if line.starts_with('#') {
                        let mut rest = line;
                        while let Some(at) = find_uri_attribute(rest) {
                            let value = &rest[at + 5..];
                            let end = value.find('"').unwrap_or(value.len());
                            if is_absolute(value[..end].trim()) {
                                prop_assert!(!value[..end].contains(TOKEN), "{}", line);
                            }
                            rest = &value[end..];
                        }
                    }
                }
            }

            /// Any text at all, encrypted or not, under any directory:
            /// rewritten without a panic.
            #[test]
            fn arbitrary_text_never_panics(
                text in "(?s).{0,400}",
                dir in "[a-z0-9/.]{0,20}",
                base in proptest::option::of("/[a-z0-9/]{0,20}"),
            ) {
                let _ = kind(&text);
                let _ = rewrite(&text, TOKEN);
                let key = AssetKey::generate();
                let e = Encrypt { key: &key, key_uri: "/media-key/a/b", dir: &dir, base: base.as_deref() };
                let _ = rewrite_encrypted(&text, TOKEN, Some(&e));
            }
        }
    }
}
