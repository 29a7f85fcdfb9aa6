//! `Upload-Metadata`: comma-separated `key base64value` pairs. The keys
//! Lectern uses are validated and kept; other keys (clients such as Uppy add
//! their own) are checked for shape only and dropped.

use lectern_web::ErrorCode;
use std::collections::BTreeMap;

use base64::Engine;

use super::error::TusError;

/// Longest header accepted: generous for a filename, title and references.
const MAX_HEADER_LEN: usize = 8 * 1024;
const MAX_PAIRS: usize = 32;

/// The metadata keys Lectern understands, with their longest value in characters.
const KNOWN: [(&str, usize); 5] = [
    ("filename", 255),
    ("filetype", 255),
    ("title", 200),
    ("course", 200),
    ("lesson", 200),
];

/// Validated metadata of one upload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadMetadata {
    pub values: BTreeMap<String, String>,
}

impl UploadMetadata {
    /// What the asset is called: the partner's title, else the file name.
    pub fn asset_title(&self) -> Option<String> {
        self.values
            .get("title")
            .or_else(|| self.values.get("filename"))
            .cloned()
    }
}

pub fn parse(header: Option<&str>) -> Result<UploadMetadata, TusError> {
    let invalid = |message: String| TusError::bad_request(ErrorCode::InvalidMetadata, message);
    let mut metadata = UploadMetadata::default();
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(metadata);
    };
    if header.len() > MAX_HEADER_LEN {
        return Err(invalid(format!(
            "Upload-Metadata is {} bytes; at most {MAX_HEADER_LEN} are accepted",
            header.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, pair) in header.split(',').enumerate() {
        if i >= MAX_PAIRS {
            return Err(invalid(format!(
                "Upload-Metadata has more than {MAX_PAIRS} pairs"
            )));
        }
        let mut parts = pair.trim().splitn(2, ' ');
        let key = parts.next().unwrap_or_default();
        let encoded = parts.next().unwrap_or_default().trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "Upload-Metadata keys must be non-empty ASCII without spaces or commas".into(),
            ));
        }
        if !seen.insert(key.to_owned()) {
            return Err(invalid(format!("Upload-Metadata repeats the key `{key}`")));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| invalid(format!("Upload-Metadata value of `{key}` is not base64")))?;
        let Some(&(_, max_chars)) = KNOWN.iter().find(|(known, _)| *known == key) else {
            continue;
        };
        let value = String::from_utf8(decoded)
            .map_err(|_| invalid(format!("Upload-Metadata `{key}` is not UTF-8 text")))?;
        if value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "Upload-Metadata `{key}` contains control characters"
            )));
        }
        // Surrounding blanks are a client's accident, not part of a title.
        let value = value.trim();
        if value.is_empty() {
            return Err(invalid(format!("Upload-Metadata `{key}` is empty")));
        }
        let chars = value.chars().count();
        if chars > max_chars {
            return Err(invalid(format!(
                "Upload-Metadata `{key}` is {chars} characters; at most {max_chars} are accepted"
            )));
        }
        metadata.values.insert(key.to_owned(), value.to_owned());
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn keeps_known_keys_and_drops_others() {
        let header = format!(
            "filename {},title {},relativePath {},is_confidential",
            b64("Lecture 1 – Cardiology.mp4".as_bytes()),
            b64("Herzinsuffizienz 心".as_bytes()),
            b64(&[0xFF, 0x00])
        );
        let metadata = parse(Some(&header)).unwrap();
        assert_eq!(
            metadata.values.keys().collect::<Vec<_>>(),
            ["filename", "title"]
        );
        assert_eq!(metadata.asset_title().unwrap(), "Herzinsuffizienz 心");
    }

    #[test]
    fn refuses_bad_values() {
        let long = "x".repeat(256);
        for header in [
            format!("filename {}", b64(b"a\nb")),
            format!("title {}", b64(&[0xC3, 0x28])),
            format!("filename {}", b64(long.as_bytes())),
            format!("title {}", b64(b"   ")),
            "title %%%".to_owned(),
            format!("title {},title {}", b64(b"a"), b64(b"b")),
        ] {
            let err = parse(Some(&header)).unwrap_err();
            assert!(
                matches!(
                    err,
                    TusError::BadRequest {
                        code: ErrorCode::InvalidMetadata,
                        ..
                    }
                ),
                "{header}: {err}"
            );
        }
    }
}

#[cfg(test)]
mod properties {
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a client sends, parsing answers (never panics), and a
        /// refusal is `invalid_metadata`.
        #[test]
        fn any_header_is_parsed_or_refused_with_its_code(header in "\\PC{0,600}") {
            match parse(Some(&header)) {
                Ok(m) => prop_assert!(m.values.keys().all(|k| KNOWN.iter().any(|(n, _)| n == k))),
                Err(e) => prop_assert_eq!(e.code(), ErrorCode::InvalidMetadata),
            }
        }

        /// A title of any text round-trips through base64 unless it is
        /// too long or has control characters.
        #[test]
        fn titles_round_trip(title in "\\PC{1,250}") {
            let header = format!("title {}", STANDARD.encode(title.as_bytes()));
            match parse(Some(&header)) {
                Ok(m) => prop_assert_eq!(m.values.get("title").map(String::as_str), Some(title.trim())),
                Err(e) => {
                    prop_assert_eq!(e.code(), ErrorCode::InvalidMetadata);
                    prop_assert!(title.chars().count() > 200 || title.chars().any(char::is_control) || title.trim().is_empty());
                }
            }
        }
    }
}
