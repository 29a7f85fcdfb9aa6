//! Caption languages: BCP-47 tags (RFC 5646) as HLS `LANGUAGE` and
//! players expect them — a language (2–3 letters), then optionally a
//! script (4 letters), a region (2 letters or 3 digits) and variants —
//! written in their canonical case (`zh-Hans-CN`, `en-US`, `es-419`), so
//! `zh-cn` and `zh-CN` are one track. Extensions and private use are not
//! accepted: no player offers them in a menu. Also the label a learner
//! sees when the partner gives none.

use lectern_web::{ApiError, ErrorCode};

/// The tag in canonical case, or `invalid_language`.
pub fn canonical(tag: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidLanguage,
            format!("{tag:?} is not a BCP-47 language tag such as zh-CN, zh-Hans, en or en-US"),
        )
    };
    if tag.is_empty()
        || tag.len() > 35
        || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid());
    }
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid());
    }
    let mut out = language.to_ascii_lowercase();
    // 0: script may follow, 1: region may follow, 2: only variants.
    let mut stage = 0;
    for part in parts {
        let alpha = part.bytes().all(|b| b.is_ascii_alphabetic());
        let digit = part.bytes().all(|b| b.is_ascii_digit());
        out.push('-');
        if stage == 0 && part.len() == 4 && alpha {
            out.push_str(&part[..1].to_ascii_uppercase());
            out.push_str(&part[1..].to_ascii_lowercase());
            stage = 1;
        } else if stage <= 1 && ((part.len() == 2 && alpha) || (part.len() == 3 && digit)) {
            out.push_str(&part.to_ascii_uppercase());
            stage = 2;
        } else if (5..=8).contains(&part.len())
            || (part.len() == 4 && part.as_bytes()[0].is_ascii_digit())
        {
            out.push_str(&part.to_ascii_lowercase());
            stage = 2;
        } else {
            return Err(invalid());
        }
    }
    Ok(out)
}

/// What a learner's caption menu calls the language when the partner
/// named it nothing: the language's own name for the common ones, else
/// the tag itself.
pub fn default_label(tag: &str) -> String {
    let known = |t: &str| {
        Some(match t {
            "zh-CN" | "zh-Hans" | "zh-Hans-CN" => "中文（简体）",
            "zh-TW" | "zh-HK" | "zh-Hant" | "zh-Hant-TW" | "zh-Hant-HK" => "中文（繁體）",
            "zh" => "中文",
            "yue" => "粵語",
            "en" => "English",
            "en-US" => "English (US)",
            "en-GB" => "English (UK)",
            "ja" => "日本語",
            "ko" => "한국어",
            "fr" => "Français",
            "de" => "Deutsch",
            "es" => "Español",
            "pt" => "Português",
            "ru" => "Русский",
            "ar" => "العربية",
            "vi" => "Tiếng Việt",
            "th" => "ไทย",
            _ => return None,
        })
    };
    known(tag)
        .or_else(|| known(tag.split('-').next().unwrap_or_default()))
        .map_or_else(|| tag.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_written_in_canonical_case() {
        for (given, canonical_form) in [
            ("zh-CN", "zh-CN"),
            ("zh-cn", "zh-CN"),
            ("ZH-hans-cn", "zh-Hans-CN"),
            ("en", "en"),
            ("EN-us", "en-US"),
            ("es-419", "es-419"),
            ("yue", "yue"),
            ("sl-rozaj", "sl-rozaj"),
            ("de-CH-1901", "de-CH-1901"),
        ] {
            assert_eq!(canonical(given).unwrap(), canonical_form, "{given}");
        }
        for bad in [
            "",
            "e",
            "english",
            "zh_CN",
            "zh-",
            "-zh",
            "zh--CN",
            "zh-CN-x-private",
            "zh-C",
            "en-US-u-ca-gregory",
            "中文",
            "zh CN",
            "en-12",
        ] {
            assert_eq!(
                canonical(bad).unwrap_err().code,
                ErrorCode::InvalidLanguage,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn labels_default_to_the_languages_own_name() {
        assert_eq!(default_label("zh-CN"), "中文（简体）");
        assert_eq!(default_label("zh-SG"), "中文");
        assert_eq!(default_label("en"), "English");
        assert_eq!(default_label("en-AU"), "English");
        assert_eq!(default_label("mi"), "mi");
    }
}
