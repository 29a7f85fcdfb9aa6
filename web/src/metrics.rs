//! What every area needs to show its figures on `/metrics`: the registry
//! type the composition builds, and the few encoding helpers an area's
//! [`Collector`] uses to report counters it already keeps (atomics read at
//! scrape time, so the request path pays nothing for being observed).
//!
//! Labels are closed sets (an outcome, a kind, a route template, an error
//! code), never a user, an asset or a raw path: cardinality stays bounded
//! however many learners there are.

use std::fmt::Error;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::registry::Registry;

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One unlabelled counter (`<name>_total` on the wire).
pub fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), Error> {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// One counter with a sample per value of one label.
pub fn counter_by<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), Error> {
    let mut family =
        enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (value, n) in samples {
        ConstCounter::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// One counter with a sample per label set (several labels, each a closed
/// set).
pub fn counter_by_labels<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, u64)>,
) -> Result<(), Error> {
    let mut family =
        enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, n) in samples {
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One unlabelled gauge.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), Error> {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One gauge with a sample per label set.
pub fn gauge_by<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, f64)>,
) -> Result<(), Error> {
    let mut family =
        enc.encode_descriptor(name, help, None, ConstGauge::new(0.0f64).metric_type())?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The registry in the text format Prometheus scrapes (OpenMetrics).
pub fn render(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for r in registries {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, r);
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
            counter(&mut enc, "lectern_things", "Things.", 3)?;
            counter_by(
                &mut enc,
                "lectern_outcomes",
                "Outcomes.",
                "outcome",
                [("ok", 2), ("failed", 1)],
            )?;
            counter_by_labels(
                &mut enc,
                "lectern_sent",
                "Sent.",
                [(vec![("channel", "sms"), ("outcome", "sent")], 5)],
            )?;
            gauge_by(
                &mut enc,
                "lectern_depth",
                "Depth.",
                [(vec![("kind", "transcode")], 4.0)],
            )
        }
    }

    #[test]
    fn collectors_render_as_openmetrics_text() {
        let mut r = Registry::default();
        r.register_collector(Box::new(Fixed));
        let text = render(&[&r]);
        for line in [
            "# TYPE lectern_things counter",
            "lectern_things_total 3",
            "lectern_outcomes_total{outcome=\"failed\"} 1",
            "lectern_sent_total{channel=\"sms\",outcome=\"sent\"} 5",
            "lectern_depth{kind=\"transcode\"} 4.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
