//! Turning text into search terms, the same way at index time and at query
//! time. PostgreSQL's parsers do not segment Chinese, so jieba does it here
//! and PostgreSQL only stores and matches the resulting lexemes (`simple`
//! configuration semantics: exact, lowercase).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::LazyLock;

use jieba_rs::Jieba;

/// Loading the dictionary takes a moment, so it happens once per process.
static JIEBA: LazyLock<Jieba> = LazyLock::new(Jieba::new);

/// Loads the dictionary now instead of on the first request that needs it.
pub fn warm_up() {
    LazyLock::force(&JIEBA);
}

/// Function words that would make an AND query miss everything while
/// saying nothing about the content.
const STOP_WORDS: &[&str] = &[
    "的", "了", "和", "与", "及", "或", "在", "是", "之", "其", "对", "中", "a", "an", "and",
    "the", "of", "in", "on", "for", "to", "with", "or", "by", "at", "is",
];

/// A lexeme longer than this is noise (and PostgreSQL caps lexemes at 2 KB).
const MAX_TERM_CHARS: usize = 60;

/// A term worth storing: something searchable, not too long, and no
/// control character (a NUL cannot be stored at all, and would fail the
/// whole reindex).
fn keep(word: &str) -> Option<String> {
    let word = word.trim();
    if word.is_empty()
        || word.chars().count() > MAX_TERM_CHARS
        || !word.chars().any(char::is_alphanumeric)
        || word.chars().any(char::is_control)
    {
        return None;
    }
    let lower = word.to_lowercase();
    (!STOP_WORDS.contains(&lower.as_str())).then_some(lower)
}

/// Index terms: jieba's search mode, which emits long words *and* the
/// dictionary words inside them ("心血管疾病" → 心血管, 血管, 疾病, …), so a
/// query for any of them matches.
pub fn index_terms(text: &str) -> Vec<String> {
    JIEBA
        .cut_for_search(text, true)
        .into_iter()
        .filter_map(|t| keep(t.word))
        .collect()
}

/// Query terms: jieba's precise mode, so a query word is matched as the
/// word it is rather than as every fragment of it. Duplicates dropped.
pub fn query_terms(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in JIEBA.cut(text, true) {
        if let Some(term) = keep(t.word) {
            if !out.contains(&term) {
                out.push(term);
            }
        }
    }
    out
}

/// A field weight of the search document, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Titles.
    A,
    /// Tags, experts, resource type, discipline.
    B,
    /// Descriptions.
    C,
}

impl Weight {
    fn letter(self) -> char {
        match self {
            Weight::A => 'A',
            Weight::B => 'B',
            Weight::C => 'C',
        }
    }
}

/// Builds a `tsvector` literal with positions and weights, so `ts_rank_cd`
/// (which needs positions) can rank by cover density and field weight.
#[derive(Default)]
pub struct Document {
    lexemes: BTreeMap<String, Vec<(u16, Weight)>>,
    next_position: u16,
}

/// PostgreSQL keeps positions up to 16383 and 256 per lexeme.
const MAX_POSITION: u16 = 16383;
const MAX_POSITIONS_PER_LEXEME: usize = 256;

impl Document {
    pub fn add(&mut self, text: &str, weight: Weight) {
        for term in index_terms(text) {
            self.push(term, weight);
        }
    }

    /// Adds `text` as one term as well as segmented, so a tag or a name
    /// typed whole is an exact hit.
    pub fn add_whole(&mut self, text: &str, weight: Weight) {
        if let Some(whole) = keep(text) {
            self.push(whole, weight);
        }
        self.add(text, weight);
    }

    fn push(&mut self, term: String, weight: Weight) {
        self.next_position = (self.next_position + 1).min(MAX_POSITION);
        let positions = self.lexemes.entry(term).or_default();
        if positions.len() < MAX_POSITIONS_PER_LEXEME
            && positions.last().map(|p| p.0) != Some(self.next_position)
        {
            positions.push((self.next_position, weight));
        }
    }

    /// Gaps between fields keep phrases of different fields apart for
    /// cover density.
    pub fn gap(&mut self) {
        self.next_position = (self.next_position + 10).min(MAX_POSITION);
    }

    /// The `tsvector` input text, e.g. `'指南':3A,9B 'heart':1A`.
    pub fn to_tsvector_literal(&self) -> String {
        let mut out = String::new();
        for (lexeme, positions) in &self.lexemes {
            if !out.is_empty() {
                out.push(' ');
            }
            quote_into(&mut out, lexeme);
            out.push(':');
            for (i, (pos, weight)) in positions.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{pos}{}", weight.letter());
            }
        }
        out
    }
}

/// A `tsquery` literal requiring every term (AND). ASCII terms also match
/// as a prefix, so "guideline" finds "guidelines" without a stemmer that
/// would not understand the Chinese side anyway. `None` when nothing
/// searchable is left (punctuation or stop words only).
pub fn tsquery_literal(query: &str) -> Option<String> {
    let terms = query_terms(query);
    if terms.is_empty() {
        return None;
    }
    let mut out = String::new();
    for term in terms {
        if !out.is_empty() {
            out.push_str(" & ");
        }
        quote_into(&mut out, &term);
        if term.is_ascii() {
            out.push_str(":*");
        }
    }
    Some(out)
}

/// Quotes a lexeme for tsvector/tsquery input: single quotes doubled,
/// backslashes escaped.
fn quote_into(out: &mut String, lexeme: &str) {
    out.push('\'');
    for c in lexeme.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_is_segmented_and_subwords_are_indexed() {
        let terms = index_terms("心血管疾病诊疗指南");
        for want in ["心血管", "疾病", "指南"] {
            assert!(terms.iter().any(|t| t == want), "{want} not in {terms:?}");
        }
        assert_eq!(query_terms("心血管"), vec!["心血管"]);
    }

    #[test]
    fn english_is_lowercased_and_stop_words_dropped() {
        assert_eq!(
            query_terms("The Management of Heart Failure"),
            vec!["management", "heart", "failure"]
        );
        assert_eq!(tsquery_literal("  ，。 the "), None);
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(
            tsquery_literal("O'Brien 指南").unwrap(),
            "'o':* & 'brien':* & '指南'"
        );
        let mut doc = Document::default();
        doc.add("Heart heart", Weight::A);
        doc.gap();
        doc.add("heart", Weight::C);
        assert_eq!(doc.to_tsvector_literal(), "'heart':1A,2A,13C");
    }
}
