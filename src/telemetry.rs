//! Logs, and traces when asked for: the one `tracing` subscriber every
//! command installs.
//!
//! Logs go to stderr (text or JSON, filtered by `LECTERN_LOG`). With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! set, an OpenTelemetry layer also turns spans into OTLP spans: a batch
//! processor on the tokio runtime posts them as protobuf over HTTP with the
//! workspace's reqwest client, and [`Tracing::shutdown`] flushes what is
//! left when the command ends. Only spans are exported, never log events:
//! the spans Lectern opens (`request`: method, route template, status,
//! request id; `job`: job, asset, kind, attempt; `task`: its name) carry no
//! personal data, credential or raw path, while an event's message might.
//! Unset, no OpenTelemetry layer exists and spans cost what they did.
//!
//! Sampling is decided once per trace, where it starts (a request, or a job
//! nothing queued), with `OTEL_TRACES_SAMPLER_ARG` as the share kept;
//! a job queued by a request follows that request's decision
//! (`lectern_telemetry` carries it in the `traceparent`).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, Settings};

/// What must happen before the process exits: the last batch of spans.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Installs the subscriber. Must run inside the tokio runtime when
    /// traces are exported (the batch processor is a task on it).
    pub fn init(settings: &Settings) -> Tracing {
        // Checked when the configuration was read (LECTERN_LOG).
        let filter = EnvFilter::try_new(&settings.log.0).unwrap_or_else(|_| EnvFilter::new("info"));
        let exporter = traces_url(settings).map(|url| (provider(settings, &url), url));
        let (provider, url) = match exporter {
            Some((Ok(provider), url)) => (provider, url),
            Some((Err(e), _)) => {
                eprintln!("lectern: traces are not exported: {e}");
                tracing_subscriber::registry()
                    .with(filter)
                    .with(log(settings.log_format))
                    .init();
                return Tracing { provider: None };
            }
            // One global filter, exactly as before traces existed.
            None => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(log(settings.log_format))
                    .init();
                return Tracing { provider: None };
            }
        };
        // The log filter is the log's own: quiet logs (`LECTERN_LOG=warn`)
        // must not switch off the `info` spans traces are made of.
        let spans = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("lectern"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(filter_fn(|meta| {
                meta.is_span() && *meta.level() <= tracing::Level::INFO
            }));
        tracing_subscriber::registry()
            .with(log(settings.log_format).with_filter(filter))
            .with(spans)
            .init();
        tracing::info!(
            %url,
            service = %settings.otel_service_name,
            sampled = settings.otel_traces_sampler_arg.0,
            "exporting traces (OTLP/HTTP)"
        );
        Tracing {
            provider: Some(provider),
        }
    }

    /// Exports the spans still queued (bounded by the export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("lectern: the last traces were not exported: {e}");
            }
        }
    }
}

/// Log lines on stderr, as text or JSON.
fn log<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
}

/// Where spans are posted, when export is on.
fn traces_url(settings: &Settings) -> Option<String> {
    match (
        &settings.otel_exporter_otlp_traces_endpoint,
        &settings.otel_exporter_otlp_endpoint,
    ) {
        (Some(traces), _) => Some(traces.0.clone()),
        (None, Some(base)) => Some(format!("{}/v1/traces", base.0)),
        (None, None) => None,
    }
}

fn provider(settings: &Settings, url: &str) -> anyhow::Result<SdkTracerProvider> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("Lectern/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient(client))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let ratio = settings.otel_traces_sampler_arg.0;
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.otel_service_name.clone())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}

/// The workspace's reqwest (0.12) as the exporter's HTTP client;
/// opentelemetry-http's own adapter is for reqwest 0.13.
#[derive(Debug)]
struct OtlpClient(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut response = self.0.execute(reqwest::Request::try_from(request)?).await?;
        let mut out = Response::builder().status(response.status().as_u16());
        if let Some(headers) = out.headers_mut() {
            *headers = response.headers().clone();
        }
        // The receiver's answer is a small status message: read no more
        // than 64 KiB of it.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() >= 64 * 1024 {
                body.truncate(64 * 1024);
                break;
            }
        }
        Ok(out.body(Bytes::from(body))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn url(pairs: &[(&str, &str)]) -> Option<String> {
        let env = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        traces_url(&Config::from_sources(None, &env).unwrap().settings)
    }

    #[test]
    fn the_traces_endpoint_wins_over_the_base_endpoint() {
        assert_eq!(url(&[]), None);
        assert_eq!(
            url(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            url(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://apm.example.org/otlp/traces"
                ),
            ])
            .as_deref(),
            Some("https://apm.example.org/otlp/traces")
        );
    }
}
