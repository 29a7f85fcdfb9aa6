//! Property tests of what search reads from untrusted input: the query
//! text (segmentation and the `tsquery` literal built from it), the
//! documents built from catalogue text, every search parameter, and the
//! cursor. Random Unicode, control characters and very long input must
//! never panic, must produce literals PostgreSQL reads back as the same
//! terms, and must fail only with the codes `SearchParams` documents; a
//! cursor must never be accepted by another query than its own.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use uuid::Uuid;

use super::text::{index_terms, query_terms, tsquery_literal, Document, Weight};
use super::*;

/// Characters that stress the segmenter and the quoting: any Unicode
/// scalar (controls included), CJK, ASCII words, whitespace, quotes,
/// backslashes, NUL and the tsquery operators.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        3 => prop::char::range('\u{4e00}', '\u{9fa5}'),
        3 => prop::char::range('a', 'z'),
        1 => prop::char::range('A', 'Z'),
        1 => prop::char::range('0', '9'),
        1 => prop::sample::select(vec![
            ' ', '\t', '\n', '\r', '\0', '\u{7f}', '\u{200b}', '\u{feff}', '\'', '"', '\\',
            ':', '*', '&', '|', '!', '(', ')', '<', '>', '-', '%', '#', '.', '，', '。', 'İ',
            'ß', '\u{301}',
        ]),
    ]
}

fn hostile_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 0..max).prop_map(String::from_iter)
}

/// Reads a lexeme quoted by `quote_into` back, as PostgreSQL's tsvector and
/// tsquery input does: `''` is a quote, `\x` is `x`. Returns the lexeme and
/// the rest of the input.
fn unquote(input: &str) -> Option<(String, &str)> {
    let mut chars = input.strip_prefix('\'')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '\'' => {
                let rest = &input[1 + i + 1..];
                match rest.strip_prefix('\'') {
                    Some(_) => {
                        out.push('\'');
                        chars.next();
                    }
                    None => return Some((out, rest)),
                }
            }
            c => out.push(c),
        }
    }
    None
}

/// The terms of a literal built by `tsquery_literal`, and whether each is
/// a prefix match; `None` if it is not of that shape.
fn read_tsquery(literal: &str) -> Option<Vec<(String, bool)>> {
    let mut terms = Vec::new();
    let mut rest = literal;
    loop {
        let (term, after) = unquote(rest)?;
        let (prefix, after) = match after.strip_prefix(":*") {
            Some(a) => (true, a),
            None => (false, after),
        };
        terms.push((term, prefix));
        if after.is_empty() {
            return Some(terms);
        }
        rest = after.strip_prefix(" & ")?;
    }
}

/// A term PostgreSQL stores as it is: no NUL (text cannot hold one), no
/// control character, well under the 2 KB lexeme limit, and something
/// searchable in it.
fn storable(term: &str) -> bool {
    !term.is_empty()
        && term.len() < 2048
        && !term.chars().any(char::is_control)
        && term.chars().any(char::is_alphanumeric)
}

/// The codes `SearchParams` documents for a caller's mistake.
const DOCUMENTED: [ErrorCode; 7] = [
    ErrorCode::InvalidQueryText,
    ErrorCode::InvalidType,
    ErrorCode::InvalidSort,
    ErrorCode::InvalidLimit,
    ErrorCode::InvalidDuration,
    ErrorCode::InvalidDate,
    ErrorCode::InvalidCursor,
];

fn maybe<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop::option::of(s)
}

/// Any parameters at all, as a query string could carry them.
fn any_params() -> impl Strategy<Value = SearchParams> {
    let closed = |values: &'static [&'static str]| {
        prop_oneof![
            prop::sample::select(values.to_vec()).prop_map(String::from),
            hostile_text(20),
        ]
    };
    let date = prop_oneof![
        hostile_text(30),
        Just("2026-01-31".to_string()),
        Just("2026-01-31T08:00:00Z".to_string()),
        Just("+262143-12-31".to_string()),
        Just("9999-12-31T23:59:59+23:59".to_string()),
        "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}",
    ];
    let duration = prop_oneof![
        any::<f64>(),
        0.0..100_000.0f64,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
    ];
    let limit = prop_oneof![any::<i64>(), -2..120i64];
    (
        (
            maybe(hostile_text(400)),
            maybe(any::<u128>().prop_map(Uuid::from_u128)),
            maybe(closed(&[
                "video_course",
                "clinical_case",
                "guideline",
                "live_replay",
            ])),
            maybe(any::<u128>().prop_map(Uuid::from_u128)),
            maybe(duration.clone()),
            maybe(duration),
        ),
        (
            maybe(date.clone()),
            maybe(date),
            maybe(closed(&["relevance", "newest", "most_watched", "rating"])),
            maybe(prop_oneof![hostile_text(200), "[A-Za-z0-9_-]{0,120}"]),
            maybe(limit),
        ),
    )
        .prop_map(
            |(
                (q, discipline, resource_type, expert, min_duration, max_duration),
                (from, to, sort, cursor, limit),
            )| SearchParams {
                q,
                discipline,
                resource_type,
                expert,
                min_duration,
                max_duration,
                from,
                to,
                sort,
                cursor,
                limit,
            },
        )
}

/// Parameters `parse` accepts, without a cursor.
fn valid_params() -> impl Strategy<Value = SearchParams> {
    let name =
        |values: &'static [&'static str]| prop::sample::select(values).prop_map(String::from);
    let date = prop_oneof![
        "20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
        "20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T[01][0-9]:[0-5][0-9]:[0-5][0-9](Z|[+-]0[0-9]:[0-5][0-9])",
    ];
    let uuid = any::<u128>().prop_map(Uuid::from_u128);
    (
        (
            maybe(hostile_text(MAX_QUERY_CHARS)),
            maybe(uuid.clone()),
            maybe(name(&[
                "video_course",
                "clinical_case",
                "guideline",
                "live_replay",
            ])),
            maybe(uuid),
            maybe(0.0..100_000.0f64),
            maybe(0.0..100_000.0f64),
        ),
        (
            maybe(date.clone()),
            maybe(date),
            maybe(name(&["relevance", "newest", "most_watched", "rating"])),
            maybe(1..=SEARCH_PAGE.max),
        ),
    )
        .prop_map(
            |((q, discipline, resource_type, expert, min, max), (from, to, sort, limit))| {
                let (min_duration, max_duration) = match (min, max) {
                    (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
                    other => other,
                };
                SearchParams {
                    q,
                    discipline,
                    resource_type,
                    expert,
                    min_duration,
                    max_duration,
                    from,
                    to,
                    sort,
                    cursor: None,
                    limit,
                }
            },
        )
}

/// `p` with one parameter other than the cursor changed.
fn another_query() -> impl Strategy<Value = (SearchParams, SearchParams)> {
    (valid_params(), any_params(), 0..11usize).prop_filter_map(
        "the change left the query as it was",
        |(a, other, field)| {
            let mut b = a.clone();
            match field {
                0 => b.q = other.q,
                1 => b.discipline = other.discipline,
                2 => b.resource_type = other.resource_type,
                3 => b.expert = other.expert,
                4 => b.min_duration = other.min_duration,
                5 => b.max_duration = other.max_duration,
                6 => b.from = other.from,
                7 => b.to = other.to,
                8 => b.sort = other.sort,
                9 => b.limit = other.limit,
                _ => b.q = Some(format!("{} ", a.q.clone().unwrap_or_default())),
            }
            let same = format!("{a:?}") == format!("{b:?}")
                // The default sort and limit, named or not, are one query.
                || (a.sort.is_none() && b.sort.as_deref() == Some("relevance"))
                || (b.sort.is_none() && a.sort.as_deref() == Some("relevance"))
                || (a.limit.is_none() && b.limit == Some(SEARCH_PAGE.default))
                || (b.limit.is_none() && a.limit == Some(SEARCH_PAGE.default));
            (!same).then_some((a, b))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn query_text_becomes_a_literal_postgresql_reads_back_as_its_terms(q in hostile_text(300)) {
        let terms = query_terms(&q);
        for t in &terms {
            prop_assert!(storable(t), "{t:?} from {q:?}");
        }
        let mut unique = terms.clone();
        unique.dedup();
        prop_assert_eq!(unique.len(), terms.len());
        match tsquery_literal(&q) {
            None => prop_assert!(terms.is_empty()),
            Some(literal) => {
                let read = read_tsquery(&literal);
                prop_assert!(read.is_some(), "malformed {literal:?} from {q:?}");
                let want: Vec<(String, bool)> =
                    terms.iter().map(|t| (t.clone(), t.is_ascii())).collect();
                prop_assert_eq!(read.unwrap(), want);
            }
        }
    }

    #[test]
    fn every_parameter_is_accepted_or_refused_with_a_documented_code(p in any_params()) {
        match p.parse() {
            Ok(s) => {
                prop_assert!((1..=SEARCH_PAGE.max).contains(&s.limit));
                if let Some(tsq) = &s.tsquery {
                    prop_assert!(read_tsquery(tsq).is_some());
                }
            }
            Err(e) => prop_assert!(DOCUMENTED.contains(&e.code), "{:?}: {}", e.code, e.message),
        }
    }

    #[test]
    fn each_check_decides_alone(q in hostile_text(400), kind in hostile_text(20),
                                sort in hostile_text(20), limit in any::<i64>(),
                                min in any::<f64>(), max in any::<f64>()) {
        let only = |p: SearchParams| p.parse().err().map(|e| e.code);
        let trimmed = q.trim().chars().count();
        prop_assert_eq!(
            only(SearchParams { q: Some(q.clone()), ..Default::default() }),
            (trimmed > MAX_QUERY_CHARS).then_some(ErrorCode::InvalidQueryText)
        );
        prop_assert_eq!(
            only(SearchParams { resource_type: Some(kind.clone()), ..Default::default() }),
            ResourceType::parse(&kind).is_none().then_some(ErrorCode::InvalidType)
        );
        prop_assert_eq!(
            only(SearchParams { sort: Some(sort.clone()), ..Default::default() }),
            SearchSort::parse(&sort).is_none().then_some(ErrorCode::InvalidSort)
        );
        prop_assert_eq!(
            only(SearchParams { limit: Some(limit), ..Default::default() }),
            (!(1..=100).contains(&limit)).then_some(ErrorCode::InvalidLimit)
        );
        let fine = |v: f64| v.is_finite() && v >= 0.0;
        prop_assert_eq!(
            only(SearchParams { min_duration: Some(min), max_duration: Some(max), ..Default::default() }),
            (!(fine(min) && fine(max) && min <= max)).then_some(ErrorCode::InvalidDuration)
        );
    }

    #[test]
    fn a_cursor_is_accepted_by_its_own_query_only(
        (a, b) in another_query(),
        key in prop_oneof![any::<f64>().prop_filter("finite", |k| k.is_finite()), 0.0..1.0e10f64],
        id in any::<u128>().prop_map(Uuid::from_u128),
    ) {
        let checked = a.parse().unwrap();
        let cursor = checked.cursor_after(key, id);
        let mut again = a.clone();
        again.cursor = Some(cursor.clone());
        let after = again.parse().unwrap().after.unwrap();
        prop_assert_eq!((after.k, after.i), (key, id));

        let mut other = b.clone();
        other.cursor = Some(cursor);
        if let Err(e) = b.parse() {
            // Refused for its own reasons before the cursor is read.
            prop_assert_ne!(e.code, ErrorCode::InvalidCursor);
        } else {
            prop_assert_eq!(other.parse().unwrap_err().code, ErrorCode::InvalidCursor);
        }
    }

    #[test]
    fn a_cursor_this_server_did_not_issue_is_refused(
        p in valid_params(),
        junk in prop_oneof![hostile_text(300), "[A-Za-z0-9_-]{0,400}"],
    ) {
        let mut p = p;
        p.cursor = Some(junk);
        prop_assert_eq!(p.parse().unwrap_err().code, ErrorCode::InvalidCursor);
    }

    #[test]
    fn a_tampered_cursor_never_panics(
        p in valid_params(),
        key in 0.0..1.0e10f64,
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ ".chars().collect::<Vec<_>>(),
        ),
    ) {
        let cursor = p.parse().unwrap().cursor_after(key, Uuid::nil());
        let mut chars: Vec<char> = cursor.chars().collect();
        let i = at.index(chars.len());
        chars[i] = with;
        let mut p = p;
        p.cursor = Some(chars.into_iter().collect());
        if let Err(e) = p.parse() {
            prop_assert_eq!(e.code, ErrorCode::InvalidCursor);
        }
    }
}

proptest! {
    // Descriptions run to 20,000 characters; fewer cases keep this quick.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn long_text_becomes_a_well_formed_document(text in hostile_text(20_000), title in hostile_text(300)) {
        for t in index_terms(&text) {
            prop_assert!(storable(&t), "{t:?}");
        }
        let mut doc = Document::default();
        doc.add(&title, Weight::A);
        doc.gap();
        doc.add_whole(&title, Weight::B);
        doc.gap();
        doc.add(&text, Weight::C);
        let literal = doc.to_tsvector_literal();
        let mut rest = literal.as_str();
        while !rest.is_empty() {
            let (lexeme, after) = unquote(rest).expect("a quoted lexeme");
            prop_assert!(storable(&lexeme), "{lexeme:?}");
            let after = after.strip_prefix(':').expect("positions");
            let end = after.find(' ').unwrap_or(after.len());
            let positions: Vec<&str> = after[..end].split(',').collect();
            prop_assert!(positions.len() <= 256);
            for p in positions {
                let (n, w) = p.split_at(p.len() - 1);
                let n: u16 = n.parse().unwrap();
                prop_assert!((1..=16383).contains(&n), "{p}");
                prop_assert!(matches!(w, "A" | "B" | "C"), "{p}");
            }
            rest = after[end..].strip_prefix(' ').unwrap_or(&after[end..]);
        }
    }
}

/// PostgreSQL reads the documents we store and the query literals we send
/// as exactly our terms, whatever the text (a real server: `make test`
/// starts it and sets `DATABASE_URL`).
#[tokio::test]
async fn postgresql_reads_documents_and_literals_as_our_terms() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (run `make test`)");
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let mut runner = prop::test_runner::TestRunner::default();
    let texts = hostile_text(260);
    for _ in 0..48 {
        let text = texts.new_tree(&mut runner).unwrap().current();
        let mut doc = Document::default();
        doc.add(&text, Weight::A);
        let want: std::collections::BTreeSet<String> = index_terms(&text).into_iter().collect();
        let read: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(array_agg(lexeme ORDER BY lexeme COLLATE \"C\"), '{}') \
             FROM unnest($1::tsvector)",
        )
        .bind(doc.to_tsvector_literal())
        .fetch_one(&db)
        .await
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(read, want.into_iter().collect::<Vec<_>>(), "{text:?}");
        if let Some(literal) = tsquery_literal(&text) {
            let read: String = sqlx::query_scalar("SELECT $1::tsquery::text")
                .bind(&literal)
                .fetch_one(&db)
                .await
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(read, literal, "{text:?}");
        }
    }
    db.close().await;
}
