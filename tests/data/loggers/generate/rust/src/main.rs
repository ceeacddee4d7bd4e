//! Writes `rust-tracing-subscriber.jsonl` by running tracing-subscriber's JSON formatter
//! (`fmt::layer().json()` defaults), with spans exported to a real OpenTelemetry SDK
//! through tracing-opentelemetry, and `rust-tracing-subscriber.expected.jsonl` from what
//! each log call was given.

mod expected;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use expected::{LineKeys, Recorder, SpanIds};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{debug, error, field, info, info_span, trace, warn, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{filter::LevelFilter, fmt, Layer};

const LIBRARY: &str = "rust-tracing-subscriber";

/// Keys of a line outside any span: tracing-subscriber's JSON defaults.
const PLAIN_KEYS: LineKeys = LineKeys {
    message: "fields.message",
    level: "level",
    time: "timestamp",
    trace_id: None,
    span_id: None,
};

/// Keys of a line inside a span whose `trace_id`/`span_id` fields were recorded: the
/// formatter writes the current span's fields under `span` (and every open span under `spans`).
const SPAN_KEYS: LineKeys = LineKeys {
    trace_id: Some("span.trace_id"),
    span_id: Some("span.span_id"),
    ..PLAIN_KEYS
};

/// tracing-opentelemetry keeps the OTel ids out of the formatted JSON, so, as users do,
/// the span declares empty `trace_id`/`span_id` fields and records the OTel span's ids.
fn record_otel_ids(span: &Span) -> SpanIds {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    let ids = SpanIds {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
    };
    span.record("trace_id", ids.trace_id.as_str());
    span.record("span_id", ids.span_id.as_str());
    ids
}

#[derive(Debug)]
struct CardDeclined;

impl std::fmt::Display for CardDeclined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined: insufficient funds")
    }
}

impl std::error::Error for CardDeclined {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: rust-tracing-subscriber OUTPUT_DIR")?
        .into();
    let lines_path = out_dir.join(format!("{LIBRARY}.jsonl"));
    let lines = File::create(&lines_path)?;

    let provider = SdkTracerProvider::builder().build(); // default sampler: sampled
    let tracer = provider.tracer("tether-logger-corpus");
    let subscriber = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .json()
                .with_writer(Mutex::new(lines))
                .with_filter(LevelFilter::TRACE),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer));

    let mut rec = Recorder::default();
    tracing::subscriber::with_default(subscriber, || {
        rec.log("trace", "cache lookup", PLAIN_KEYS, None, || {
            trace!(key = "cart:42", "cache lookup")
        });
        rec.log("debug", "cache warmed", PLAIN_KEYS, None, || {
            debug!("cache warmed")
        });
        rec.log("info", "user 42 logged in", PLAIN_KEYS, None, || {
            info!(
                user_id = 42,
                plan = "pro",
                admin = true,
                "user {} logged in",
                42
            )
        });
        rec.log("warn", "disk usage at 91%", PLAIN_KEYS, None, || {
            warn!(disk_used_ratio = 0.91, "disk usage at 91%")
        });
        rec.log("error", "payment failed", PLAIN_KEYS, None, || {
            error!(
                error = &CardDeclined as &dyn std::error::Error,
                "payment failed"
            )
        });

        let request = info_span!(
            "checkout",
            http.method = "POST",
            trace_id = field::Empty,
            span_id = field::Empty
        );
        let request_ids = record_otel_ids(&request);
        request.in_scope(|| {
            rec.log(
                "info",
                "charging card",
                SPAN_KEYS,
                Some(&request_ids),
                || info!(amount_cents = 1999, "charging card"),
            );
            let charge = info_span!("charge", trace_id = field::Empty, span_id = field::Empty);
            let charge_ids = record_otel_ids(&charge);
            charge.in_scope(|| {
                rec.log(
                    "warn",
                    "card issuer slow",
                    SPAN_KEYS,
                    Some(&charge_ids),
                    || warn!(latency_ms = 870, "card issuer slow"),
                );
            });
        });
        drop(request);

        rec.log("info", "request finished", PLAIN_KEYS, None, || {
            info!(status = 200, "request finished")
        });
        rec.log(
            "info",
            "café \"Zürich\" & naïve ✓ 日本",
            PLAIN_KEYS,
            None,
            || info!("café \"Zürich\" & naïve ✓ 日本"),
        );
    });
    provider.shutdown()?;

    rec.check_one_line_per_call(&lines_path)?;
    rec.write(&out_dir.join(format!("{LIBRARY}.expected.jsonl")))?;
    Ok(())
}
