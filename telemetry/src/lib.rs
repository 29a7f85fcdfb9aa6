//! Trace context across the job queue: the W3C `traceparent` of the span
//! that is current when work is queued, and a span continued from one when
//! the work is picked up, so one trace shows an upload and its transcode.
//!
//! The job row carries the text (`jobs.traceparent`), written by whoever
//! queues: `lectern_assets::create` hands it to the enqueue trigger through
//! the transaction-local setting `lectern.traceparent` ([`SETTING`]); the
//! worker reads it back with the claim and calls [`continue_trace`] on the
//! job's span before entering it.
//!
//! Without an exporter (`OTEL_EXPORTER_OTLP_ENDPOINT` unset, see the
//! binary's `telemetry.rs`) no OpenTelemetry layer is installed: spans have
//! no OpenTelemetry context, [`current_traceparent`] is `None` after one
//! failed downcast, and nothing is stored or parsed.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The PostgreSQL setting the enqueue trigger reads the `traceparent`
/// from (`current_setting('lectern.traceparent', true)`).
pub const SETTING: &str = "lectern.traceparent";

/// `00-<trace id>-<span id>-<flags>` of the current span, when it belongs
/// to an exported trace.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Makes `span` (not yet entered) a child of the span `traceparent` names,
/// or, without one (or a malformed one), the root of a trace of its own
/// rather than a child of whatever long-lived span it was created in (the
/// worker's task). Nothing happens without an exporter.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let cx = match traceparent.and_then(parse) {
        Some(parent) => Context::new().with_remote_span_context(parent),
        None => Context::new(),
    };
    // Fails only without the layer (export off) or once entered.
    let _ = span.set_parent(cx);
}

/// Version 00 of W3C Trace Context; later versions keep these four fields
/// first, so they are read the same way.
fn parse(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(trace, 32) && hex(span, 16) && hex(flags, 2)) {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_what_it_writes_and_refuses_the_rest() {
        let sc = parse(PARENT).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn nothing_is_captured_without_an_exporter() {
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
        let span = tracing::info_span!("request");
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn a_continued_span_joins_the_trace_and_hands_it_on() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let _guard = tracing::subscriber::set_default(subscriber);
        let job = tracing::info_span!("job");
        continue_trace(&job, Some(PARENT));
        let _entered = job.enter();
        let child = current_traceparent().unwrap();
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && child.ends_with("-01"),
            "{child}"
        );
        assert!(
            !child.contains("00f067aa0ba902b7"),
            "a span of its own: {child}"
        );
    }

    #[test]
    fn without_a_traceparent_a_job_starts_its_own_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let _guard = tracing::subscriber::set_default(subscriber);
        let task = tracing::info_span!("task");
        let _in_task = task.enter();
        let task_trace = current_traceparent().unwrap()[3..35].to_owned();
        let job = tracing::info_span!("job");
        continue_trace(&job, None);
        let _entered = job.enter();
        let job_trace = current_traceparent().unwrap()[3..35].to_owned();
        assert_ne!(job_trace, task_trace, "not a child of the worker's task");
    }
}
