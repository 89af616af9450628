//! Logging and tracing shared by every binary.
//!
//! - Logs go to stderr: JSON lines (with `trace_id` and `span_id` when inside a traced span)
//!   when stderr is not a terminal or `PAYMESH_LOG_FORMAT=json`, readable text otherwise.
//!   Filter with `RUST_LOG` (default `info`).
//! - Traces are exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (what
//!   Jaeger and any OpenTelemetry collector ingest), named by `OTEL_SERVICE_NAME` or the
//!   program's name, sampled by `OTEL_TRACES_SAMPLER_ARG` (a ratio, default 1.0) under the
//!   parent's decision.
//! - Context crosses processes as W3C `traceparent`/`tracestate`: [`extract`] and [`inject`]
//!   work on any header-like map (HTTP headers, gRPC metadata, Kafka headers, outbox JSON).

use std::io::IsTerminal;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use opentelemetry::Context;

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
#[derive(Debug, Default)]
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
    }
}

/// Installs logging (and OTLP tracing when configured) for a process named `service`. Call
/// once, from `main`, inside a tokio runtime (the gRPC exporter needs one).
pub fn init(service: &str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json = match std::env::var("PAYMESH_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let provider = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty()).and_then(|endpoint| {
        match tracer_provider(&service, &endpoint) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("telemetry: cannot export traces to {endpoint}: {e}; continuing without");
                None
            }
        }
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("paymesh")));
    let fmt = if json {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).event_format(JsonLines { service: service.clone() }).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(true).boxed()
    };
    let installed = tracing_subscriber::registry().with(filter).with(otel).with(fmt).try_init();
    if installed.is_err() {
        // Already installed (tests start several components in one process).
        return TelemetryGuard(None);
    }
    let _ = LOG_FILTER.set(handle);
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    TelemetryGuard(provider)
}

/// The installed log filter, changeable while running.
static LOG_FILTER: std::sync::OnceLock<tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>> =
    std::sync::OnceLock::new();

/// Checks a log filter (`RUST_LOG` syntax); returns it trimmed, or what is wrong.
pub fn check_filter(directives: &str) -> Result<String, String> {
    let d = directives.trim();
    EnvFilter::builder()
        .parse(d)
        .map(|_| d.to_owned())
        .map_err(|e| format!("'{d}' is not a log filter ({e}); write e.g. \"info\" or \"info,paymesh_edge=debug\""))
}

/// Replaces the log filter of this process (no effect before [`init`] or when another
/// subscriber was installed first). Returns whether it changed.
pub fn set_log_filter(directives: &str) -> Result<bool, String> {
    let filter = EnvFilter::builder().parse(directives.trim()).map_err(|e| e.to_string())?;
    let Some(handle) = LOG_FILTER.get() else { return Ok(false) };
    let before = handle.with_current(ToString::to_string).map_err(|e| e.to_string())?;
    let after = filter.to_string();
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(before != after)
}

use tracing_subscriber::Layer as _;

fn tracer_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build().map_err(|e| e.to_string())?;
    let ratio = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().and_then(|r| r.parse::<f64>().ok()).unwrap_or(1.0).clamp(0.0, 1.0);
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(resource)
        .build())
}

/// Reads trace context from header-like pairs (`traceparent`, `tracestate`).
pub fn extract(get: &dyn Fn(&str) -> Option<String>) -> Context {
    struct Pairs(Vec<(String, String)>);
    impl Extractor for Pairs {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
    }
    let pairs = ["traceparent", "tracestate"].iter().filter_map(|k| get(k).map(|v| ((*k).to_owned(), v))).collect();
    TraceContextPropagator::new().extract(&Pairs(pairs))
}

/// Writes `cx` as `traceparent`/`tracestate` through `set`.
pub fn inject(cx: &Context, set: &mut dyn FnMut(&str, String)) {
    struct Set<'a>(&'a mut dyn FnMut(&str, String));
    impl Injector for Set<'_> {
        fn set(&mut self, key: &str, value: String) {
            (self.0)(key, value);
        }
    }
    TraceContextPropagator::new().inject_context(cx, &mut Set(set));
}

/// Makes `span` a child of the context carried by `get` (when there is one).
pub fn continue_trace(span: &tracing::Span, get: &dyn Fn(&str) -> Option<String>) {
    let cx = extract(get);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace context of `span`, as `(traceparent, tracestate)`.
pub fn headers_of(span: &tracing::Span) -> (Option<String>, Option<String>) {
    let (mut tp, mut ts) = (None, None);
    inject(&span.context(), &mut |k, v| match k {
        "traceparent" => tp = Some(v),
        "tracestate" if !v.is_empty() => ts = Some(v),
        _ => {}
    });
    (tp, ts)
}

/// The current span's trace id, if it is being traced.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// One JSON object per line: time, level, service, target, message, fields, and the trace
/// and span ids of the current span when it is traced.
struct JsonLines {
    service: String,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = serde_json::Map::new();
        event.record(&mut Visitor(&mut fields));
        let message = fields.remove("message").unwrap_or(serde_json::Value::String(String::new()));
        let mut line = serde_json::json!({
            "ts": crate::clock::rfc3339(std::time::SystemTime::now()),
            "level": event.metadata().level().as_str(),
            "service": self.service,
            "target": event.metadata().target(),
            "message": message,
        });
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            line["trace_id"] = sc.trace_id().to_string().into();
            line["span_id"] = sc.span_id().to_string().into();
        }
        if !fields.is_empty() {
            line["fields"] = serde_json::Value::Object(fields);
        }
        writeln!(w, "{line}")
    }
}

struct Visitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn trace_context_round_trips_through_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = super::extract(&|k| (k == "traceparent").then(|| tp.to_owned()));
        let mut out = Vec::new();
        super::inject(&cx, &mut |k, v| out.push((k.to_owned(), v)));
        assert!(out.iter().any(|(k, v)| k == "traceparent" && v == tp), "{out:?}");
    }
}
