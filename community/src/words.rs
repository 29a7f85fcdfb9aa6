//! The sensitive-word matcher: an organisation's list compiled into one
//! Aho-Corasick automaton, run over a *folded* copy of each post.
//!
//! Folding ([`fold`]) undoes the usual ways around a word list: NFKC
//! (full-width ｆｏｏ → foo, ① → 1, compatibility ideographs), lower case,
//! and dropping every character that is not a letter or a digit, so
//! spacing, punctuation and symbols put between the characters ("敏 感 词",
//! "f.o.o", "f-o_o", zero-width spaces) disappear. Listed words are folded
//! the same way when they are stored. The automaton finds every listed
//! word inside the folded text in one pass, whatever the list's size.
//!
//! What this does not do, on purpose: words are matched anywhere, also
//! inside longer words and across word boundaries, because Chinese has no
//! spaces to tell them apart and removed spacing is exactly the trick
//! being undone. A match therefore never rejects anything: it holds the
//! post for a moderator, who decides. Traditional and simplified Chinese
//! are not unified (list both forms if both matter), and look-alike
//! letters of other scripts (Cyrillic а for Latin a) are not folded.
//!
//! Each API node caches one compiled matcher per organisation
//! ([`WordCache`]), tagged with the list's `words_version`; a post reads
//! that version with the organisation's moderation settings and rebuilds
//! the matcher only when the list changed, on any node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aho_corasick::AhoCorasick;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// `text` as the matcher compares it: NFKC, lower case, letters and
/// digits only.
pub fn fold(text: &str) -> String {
    // Repeated until nothing changes: dropping punctuation can bring two
    // combining marks together out of canonical order (and lower-casing
    // can make a compatibility character), which the next NFKC changes
    // again; a folded word must fold to itself.
    let mut folded = fold_once(text);
    for _ in 0..8 {
        let again = fold_once(&folded);
        if again == folded {
            break;
        }
        folded = again;
    }
    folded
}

fn fold_once(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// One organisation's compiled list.
pub struct Matcher {
    automaton: Option<AhoCorasick>,
    /// The listed words as stored (folded), by pattern id.
    words: Vec<String>,
}

impl Matcher {
    /// A matcher for `folded` words (each already [`fold`]ed, non-empty).
    pub fn new(folded: Vec<String>) -> Self {
        let automaton = if folded.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(&folded)
                    .expect("a list of at most a few thousand short words compiles"),
            )
        };
        Self {
            automaton,
            words: folded,
        }
    }

    pub fn empty() -> Self {
        Self::new(Vec::new())
    }

    /// The listed words found in `text`, each once, in list order.
    pub fn find(&self, text: &str) -> Vec<String> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let folded = fold(text);
        let mut hit = vec![false; self.words.len()];
        for m in automaton.find_overlapping_iter(&folded) {
            hit[m.pattern().as_usize()] = true;
        }
        hit.iter()
            .zip(&self.words)
            .filter(|(h, _)| **h)
            .map(|(_, w)| w.clone())
            .collect()
    }
}

/// Compiled matchers by organisation, each with the list version it was
/// built from.
#[derive(Default)]
pub struct WordCache {
    by_org: Mutex<HashMap<Uuid, (i64, Arc<Matcher>)>>,
}

impl WordCache {
    /// The cached matcher of `org` if it was built from `version`.
    pub fn get(&self, org: Uuid, version: i64) -> Option<Arc<Matcher>> {
        let map = self.by_org.lock().expect("word cache lock");
        map.get(&org)
            .filter(|(v, _)| *v == version)
            .map(|(_, m)| m.clone())
    }

    pub fn put(&self, org: Uuid, version: i64, matcher: Arc<Matcher>) {
        let mut map = self.by_org.lock().expect("word cache lock");
        map.insert(org, (version, matcher));
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn marks_brought_together_by_dropping_punctuation_fold_to_a_fixed_point() {
        // Found by the property test below: Telugu length mark, a colon,
        // Syriac superscript alaph.
        let once = fold("\u{c55}:\u{711}");
        assert_eq!(fold(&once), once);
    }
    use super::*;
    use proptest::prelude::*;

    fn list(words: &[&str]) -> Matcher {
        Matcher::new(words.iter().map(|w| fold(w)).collect())
    }

    #[test]
    fn folding_undoes_width_case_and_spacing_tricks() {
        let table = [
            ("敏感词", "敏感词"),
            ("敏 感 词", "敏感词"),
            ("敏\u{3000}感\u{3000}词", "敏感词"), // ideographic spaces
            ("敏.感-词!", "敏感词"),
            ("敏\u{200b}感\u{200b}词", "敏感词"), // zero-width spaces
            ("ｆｏｏ", "foo"),
            ("ＦＯＯ", "foo"),
            ("F.o.O", "foo"),
            ("f o o", "foo"),
            ("f_o-o", "foo"),
            ("ⓕⓞⓞ", "foo"),
            ("①②③", "123"),
            ("Ｃａｆé", "café"),
            ("", ""),
            ("。，！？", ""),
        ];
        for (input, want) in table {
            assert_eq!(fold(input), want, "fold({input:?})");
        }
    }

    #[test]
    fn listed_words_are_found_however_they_are_written() {
        let m = list(&["敏感词", "foo", "Bad Word"]);
        for post in [
            "这里有敏感词",
            "这里有敏 感 词哦",
            "这里有敏　感　词",
            "ｆｏｏ bar",
            "say f.o.o now",
            "F O O",
            "a badword here",
            "ＢＡＤ－ＷＯＲＤ",
        ] {
            assert!(!m.find(post).is_empty(), "{post:?} should match");
        }
        assert!(m.find("这里没有问题").is_empty());
        assert!(m.find("f and o and o").is_empty());
        assert_eq!(
            m.find("foo 敏感词 foo"),
            vec!["敏感词".to_string(), "foo".to_string()]
        );
        assert!(Matcher::empty().find("敏感词").is_empty());
    }

    proptest! {
        #[test]
        fn folding_is_idempotent(s in "\\PC{0,40}") {
            let once = fold(&s);
            prop_assert_eq!(fold(&once), once.clone());
        }

        #[test]
        fn a_listed_word_is_found_with_any_separators_and_widths(
            word in "[a-z]{2,6}|[\u{4e00}-\u{4e20}]{2,4}",
            seps in proptest::collection::vec(prop_oneof![
                Just(""), Just(" "), Just("."), Just("\u{3000}"), Just("-"), Just("*"), Just("\u{200b}")
            ], 6),
            wide in any::<bool>(),
            upper in any::<bool>(),
            prefix in "[\u{4e00}-\u{9fa5}a-z ]{0,10}",
            suffix in "[\u{4e00}-\u{9fa5}a-z ]{0,10}",
        ) {
            let m = Matcher::new(vec![fold(&word)]);
            let mut disguised = String::new();
            for (i, c) in word.chars().enumerate() {
                let c = if upper { c.to_ascii_uppercase() } else { c };
                // Full-width forms of ASCII letters are U+FF21.. / U+FF41..
                let c = if wide && c.is_ascii_alphabetic() {
                    char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap()
                } else {
                    c
                };
                disguised.push(c);
                disguised.push_str(seps[i % seps.len()]);
            }
            let post = format!("{prefix}{disguised}{suffix}");
            prop_assert!(!m.find(&post).is_empty(), "{:?} in {:?}", word, post);
        }

        #[test]
        fn text_without_the_word_is_not_matched(s in "[0-9 ]{0,40}") {
            let m = Matcher::new(vec![fold("敏感词"), fold("abc")]);
            prop_assert!(m.find(&s).is_empty());
        }
    }
}
