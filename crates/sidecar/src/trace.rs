//! W3C trace context (`traceparent`/`tracestate`), sampling, and the sidecar's spans.
//!
//! As daprd with a tracer provider: every API call gets a span that is a child of the caller's
//! `traceparent` (or the root of a new trace); the span's own id is what the app receives, so the
//! chain caller → sidecar → app is linked. Sampling is parent-based with `samplingRate` for roots.
//! Finished spans are logged (`tracing.stdout`) and/or exported to an OTLP collector.

use std::fmt;
use std::time::SystemTime;

use http::HeaderMap;
use rand::Rng as _;

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// A span's identity as W3C trace context carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// Whether the trace is recorded.
    pub sampled: bool,
}

impl SpanContext {
    /// Parses a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`), rejecting what Dapr rejects.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let parts: Vec<&str> = traceparent.trim().split('-').collect();
        let [version, trace, span, flags, rest @ ..] = parts.as_slice() else {
            return None;
        };
        if version.len() != 2 || *version == "ff" || (*version == "00" && !rest.is_empty()) {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let flags: [u8; 1] = hex_bytes(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// A new root span, sampled with probability `rate` (by trace id, as OpenTelemetry's
    /// `TraceIDRatioBased`).
    pub fn root(rate: f64) -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        let sampled = sampled_by_ratio(&trace_id, rate);
        Self {
            trace_id,
            span_id: new_span_id(),
            sampled,
        }
    }

    /// A child span in the same trace, inheriting the sampling decision.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

impl fmt::Display for SpanContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            u8::from(self.sampled)
        )
    }
}

fn new_span_id() -> [u8; 8] {
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rng.fill_bytes(&mut id);
    }
    id
}

fn sampled_by_ratio(trace_id: &[u8; 16], rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let bound = (rate * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// The trace context of one request through the sidecar.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    /// The caller's span, if it sent one.
    pub parent: Option<SpanContext>,
    /// The sidecar's span for this request.
    pub span: SpanContext,
    /// `tracestate`, passed on untouched.
    pub tracestate: Option<String>,
    /// When the span started.
    pub start: SystemTime,
}

impl RequestTrace {
    /// Starts the sidecar's span for a request carrying `headers`.
    pub fn from_headers(headers: &HeaderMap, sampling_rate: f64) -> Self {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(SpanContext::parse);
        let span = match &parent {
            Some(parent) => parent.child(),
            None => SpanContext::root(sampling_rate),
        };
        let tracestate = parent
            .as_ref()
            .and(headers.get(TRACESTATE))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Self {
            parent,
            span,
            tracestate,
            start: SystemTime::now(),
        }
    }

    /// Reports the finished span when it is sampled and `tracing.stdout` asks for it, in the
    /// spirit of daprd's stdout exporter.
    pub fn finish(&self, name: impl FnOnce() -> String, stdout: bool) {
        if !(stdout && self.span.sampled) {
            return;
        }
        let name = name();
        let elapsed = self.start.elapsed().unwrap_or_default();
        tracing::info!(
            target: "dapr.runtime.trace",
            span = %name,
            trace_id = %self.span.trace_id_hex(),
            span_id = %self.span.span_id_hex(),
            parent_span_id = %self.parent.map(|p| p.span_id_hex()).unwrap_or_default(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "span finished"
        );
    }

    /// Writes this span as `traceparent` (and `tracestate`) into outgoing headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Ok(value) = http::HeaderValue::from_str(&self.span.to_string()) {
            headers.insert(TRACEPARENT, value);
        }
        match self
            .tracestate
            .as_deref()
            .and_then(|s| http::HeaderValue::from_str(s).ok())
        {
            Some(value) => {
                headers.insert(TRACESTATE, value);
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_traceparent_round_trips() {
        let context = SpanContext::parse(SAMPLE).expect("valid");
        assert!(context.sampled);
        assert_eq!(context.to_string(), SAMPLE);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert!(
                SpanContext::parse(bad).is_none(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let parent = SpanContext::parse(SAMPLE).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert!(child.sampled);
    }

    #[test]
    fn root_sampling_follows_the_rate() {
        assert!(SpanContext::root(1.0).sampled);
        assert!(!SpanContext::root(0.0).sampled);
        let sampled = (0..2000).filter(|_| SpanContext::root(0.5).sampled).count();
        assert!(
            (700..1300).contains(&sampled),
            "about half should be sampled, got {sampled}"
        );
    }
}
