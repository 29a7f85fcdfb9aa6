//! How a course's reviews become one number: the mean of the published
//! reviews' stars, and the Bayesian average that is shown and ranked by.
//!
//! The Bayesian average pulls a course with few reviews towards a prior:
//! `(PRIOR_WEIGHT × PRIOR_MEAN + Σ stars) / (PRIOR_WEIGHT + n)`. With the
//! constants below a course needs about [`PRIOR_WEIGHT`] reviews before
//! its own mean weighs as much as the prior, so one 5-star review
//! (→ 3.75) does not outrank forty reviews averaging 4.6 (→ 4.47), and a
//! course nobody has reviewed sits at the prior (3.5) instead of at 0 or
//! 5. The constants are documented rather than configured: changing them
//! reorders every organisation's search results at once, which is a
//! decision for a release, not a setting.
//!
//! Only `published` reviews count: a review waiting for moderation, hidden
//! or rejected moves no average.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::view::RatingSummary;

/// The prior's mean: the middle of the upper half of the 1–5 scale, about
/// where satisfaction ratings of professional courses settle.
pub const PRIOR_MEAN: f64 = 3.5;
/// How many reviews the prior counts as.
pub const PRIOR_WEIGHT: f64 = 5.0;

/// The columns `average`, `count` and `bayesian_average` for the course
/// whose id is the SQL expression `course` (a scalar subquery each, so
/// the caller needs no GROUP BY).
pub fn summary_columns(course: &str) -> String {
    format!(
        "(SELECT avg(r.rating)::float8 FROM course_ratings r
           WHERE r.course_id = {course} AND r.state = 'published') AS average,
         (SELECT count(*) FROM course_ratings r
           WHERE r.course_id = {course} AND r.state = 'published') AS count,
         {} AS bayesian_average",
        bayesian(course)
    )
}

/// The Bayesian average of the course whose id is the SQL expression
/// `course`, as a float8 SQL expression.
pub fn bayesian(course: &str) -> String {
    format!(
        "(SELECT ({PRIOR_WEIGHT}::float8 * {PRIOR_MEAN}::float8 + coalesce(sum(r.rating), 0)::float8)
                 / ({PRIOR_WEIGHT}::float8 + count(*)::float8)
           FROM course_ratings r WHERE r.course_id = {course} AND r.state = 'published')"
    )
}

/// The ratings of `course_id` as a course shows them.
pub async fn rating_of(
    conn: &mut PgConnection,
    course_id: Uuid,
) -> Result<RatingSummary, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {}", summary_columns("$1")))
        .bind(course_id)
        .fetch_one(conn)
        .await
}

/// The Bayesian average of `sum` stars over `count` reviews (what the SQL
/// above computes), for tests and clients that recompute it.
pub fn bayesian_average(sum: f64, count: f64) -> f64 {
    (PRIOR_WEIGHT * PRIOR_MEAN + sum) / (PRIOR_WEIGHT + count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_reviews_are_pulled_towards_the_prior() {
        assert_eq!(bayesian_average(0.0, 0.0), PRIOR_MEAN);
        let one_five = bayesian_average(5.0, 1.0);
        let many_good = bayesian_average(4.6 * 40.0, 40.0);
        assert!(one_five < many_good, "{one_five} vs {many_good}");
        assert!((one_five - 3.75).abs() < 1e-9);
    }
}
