//! What became of notification deliveries on this node, for `/metrics`:
//! `lectern_notification_deliveries_total{channel, outcome}`.
//!
//! E-mail and SMS are counted by the dispatcher, once per attempt, with the
//! outcome its delivery log records: `sent`, `deferred` (over the
//! recipient's hourly limit, not an attempt), `retried` (a transient
//! failure, another attempt is due), `given_up` (a transient failure on the
//! last attempt) or `failed` (a permanent failure). An inbox item is
//! `sent` when `enqueue` writes it, inside the caller's transaction (a
//! rollback after that, rare, still counts).
//!
//! The counters are process-wide because `enqueue` is a free function other
//! crates call with only their connection; they are per node, like every
//! counter on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use lectern_web::metrics::{self, Collector, DescriptorEncoder};

use crate::Channel;

/// The closed set of `outcome` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    Deferred,
    Retried,
    GivenUp,
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Sent,
        Outcome::Deferred,
        Outcome::Retried,
        Outcome::GivenUp,
        Outcome::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Retried => "retried",
            Outcome::GivenUp => "given_up",
            Outcome::Failed => "failed",
        }
    }
}

const CHANNELS: [Channel; 3] = [Channel::Inbox, Channel::Email, Channel::Sms];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
/// By channel (as [`CHANNELS`]), then outcome (as [`Outcome::ALL`]).
static COUNTS: [AtomicU64; 15] = [ZERO; 15];

fn slot(channel: Channel, outcome: Outcome) -> usize {
    let c = CHANNELS.iter().position(|c| *c == channel).unwrap_or(0);
    let o = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
    c * Outcome::ALL.len() + o
}

pub(crate) fn count(channel: Channel, outcome: Outcome) {
    COUNTS[slot(channel, outcome)].fetch_add(1, Ordering::Relaxed);
}

/// What `/metrics` shows of these counters, read at each scrape.
pub fn collector() -> Box<dyn Collector> {
    Box::new(DeliveryCollector)
}

#[derive(Debug)]
struct DeliveryCollector;

impl Collector for DeliveryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The inbox has no dispatcher: only `sent` can happen to it.
        let series = CHANNELS.iter().flat_map(|&channel| {
            Outcome::ALL
                .iter()
                .filter(move |&&o| channel != Channel::Inbox || o == Outcome::Sent)
                .map(move |&o| {
                    (
                        vec![("channel", channel.as_str()), ("outcome", o.as_str())],
                        COUNTS[slot(channel, o)].load(Ordering::Relaxed),
                    )
                })
        });
        metrics::counter_by_labels(
            &mut enc,
            "lectern_notification_deliveries",
            "Notification deliveries by channel and outcome on this node: e-mail and SMS per dispatch attempt (sent, deferred, retried, given_up, failed), inbox items when written.",
            series,
        )
    }
}
