//! CME credit: hours of **unique** watched seconds (never wall time, never
//! speed tricks, never a lesson counted twice) turned into credits by the
//! organisation's rule, rounded *down* to its step (0.25 like AMA PRA
//! quarter hours, or 0.5, 1 …), capped by the course's designation (the
//! project's maximum), and granted only once the course is complete.
//!
//! Arithmetic is done in ten-thousandths of a credit (integers), so a rule
//! of 0.25 never lands at 0.7499999 through floating point.

use serde::{Deserialize, Serialize};

/// The organisation's rule (one per organisation; defaults below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreditRule {
    /// Credits per hour actually watched (1 = one credit per 60 minutes).
    pub credits_per_hour: f64,
    /// Credits are rounded down to a multiple of this (e.g. 0.25).
    pub rounding_step: f64,
    /// How class I credits are labelled on certificates (e.g. "I类学分").
    pub class_i_label: String,
    /// How class II credits are labelled (e.g. "II类学分").
    pub class_ii_label: String,
}

impl Default for CreditRule {
    fn default() -> Self {
        Self {
            credits_per_hour: 1.0,
            rounding_step: 0.25,
            class_i_label: "I类学分 Class I".into(),
            class_ii_label: "II类学分 Class II".into(),
        }
    }
}

const SCALE: f64 = 10_000.0;

fn units(x: f64) -> i64 {
    (x * SCALE).round() as i64
}

/// Credits earned: `unique_s` seconds actually watched, on a course that is
/// `completed`, under `rule`, at most `cap` (the course's designation).
pub fn earned(unique_s: f64, completed: bool, rule: &CreditRule, cap: f64) -> f64 {
    if !completed || unique_s <= 0.0 {
        return 0.0;
    }
    let step = units(rule.rounding_step).max(1);
    // Whole seconds × credits per hour ÷ 3600, in units, rounded down: a
    // learner is never granted a fraction of a second they did not watch.
    let raw = ((unique_s.floor() as i128 * units(rule.credits_per_hour) as i128) / 3600) as i64;
    let stepped = raw / step * step;
    stepped.min(units(cap).max(0)) as f64 / SCALE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(per_hour: f64, step: f64) -> CreditRule {
        CreditRule {
            credits_per_hour: per_hour,
            rounding_step: step,
            ..CreditRule::default()
        }
    }

    #[test]
    fn quarter_hours_round_down() {
        let r = rule(1.0, 0.25);
        assert_eq!(earned(3600.0, true, &r, 10.0), 1.0);
        // 1 h 14 min 59 s: still 1.0; 1 h 15 min: 1.25.
        assert_eq!(earned(4499.0, true, &r, 10.0), 1.0);
        assert_eq!(earned(4500.0, true, &r, 10.0), 1.25);
        assert_eq!(earned(5399.0, true, &r, 10.0), 1.25);
        assert_eq!(earned(5400.0, true, &r, 10.0), 1.5);
        // 14 min 59 s earns nothing.
        assert_eq!(earned(899.0, true, &r, 10.0), 0.0);
    }

    #[test]
    fn other_rates_steps_and_caps() {
        // Two credits per hour, half-credit steps: 50 min = 1.666… → 1.5.
        assert_eq!(earned(3000.0, true, &rule(2.0, 0.5), 10.0), 1.5);
        // The designation caps: 5 h watched of a 3-credit project.
        assert_eq!(earned(18_000.0, true, &rule(1.0, 0.25), 3.0), 3.0);
    }

    #[test]
    fn nothing_before_completion() {
        assert_eq!(earned(36_000.0, false, &rule(1.0, 0.25), 10.0), 0.0);
    }
}
