//! `kit::telemetry`: trace context taken from requests and CloudEvents, passed on to the
//! sidecar, and the JSON log lines that carry the trace id. The subscriber is process-wide, so
//! these tests have a binary of their own, sharing one subscriber that writes into memory.

#[path = "behaviour/support.rs"]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use kit::settings::TelemetrySettings;
use kit::telemetry::{
    TelemetryGuard, continue_trace, continue_traceparent, current_traceparent, inject_current,
};
use kit::testing::{PUBSUB, STATE_STORE, Stack, Store};
use reqwest::Method;
use serde_json::Value;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use support::{TestApp, new_traceparent, request};

/// Log lines, as written.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Every line so far, parsed; a line that is not JSON fails the test.
    fn lines(&self) -> Vec<Value> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// The lines whose top-level `trace_id` is `trace_id`.
    fn of_trace(&self, trace_id: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| line["trace_id"] == trace_id)
            .collect()
    }
}

/// The process's telemetry, set up once: JSON lines into memory.
fn logs() -> &'static Logs {
    static TELEMETRY: OnceLock<(Logs, TelemetryGuard)> = OnceLock::new();
    let (logs, _) = TELEMETRY.get_or_init(|| {
        let logs = Logs::default();
        let settings = TelemetrySettings {
            json: true,
            level: "info".into(),
            otlp_endpoint: None,
        };
        let writer = logs.clone();
        let guard = kit::telemetry::init_with_writer("kit-test", &settings, move || writer.clone())
            .expect("telemetry starts");
        (logs, guard)
    });
    logs
}

fn headers(traceparent: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent.parse().expect("a header value"));
    headers
}

/// The trace id and span id of a `traceparent`.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[test]
fn continue_trace_adopts_the_callers_trace_id() {
    let logs = logs();
    let (traceparent, trace_id, caller_span) = new_traceparent();
    let span = tracing::info_span!("work", trace_id = tracing::field::Empty);

    continue_trace(&span, &headers(&traceparent));
    let passed_on = span.in_scope(|| {
        tracing::info!("working");
        current_traceparent()
    });

    let passed_on = passed_on.expect("a traceparent inside the span");
    let (passed_trace, passed_span) = ids(&passed_on);
    assert_eq!(passed_trace, trace_id);
    assert_ne!(
        passed_span, caller_span,
        "our own span, a child of the caller's"
    );
    assert!(passed_on.ends_with("-01"), "sampled: {passed_on}");
    let lines = logs.of_trace(&trace_id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["message"], "working");
    assert_eq!(lines[0]["span_id"], passed_span);
    assert_eq!(
        lines[0]["span"]["trace_id"], trace_id,
        "the span's own field"
    );
}

#[test]
fn continue_traceparent_adopts_a_cloudevents_trace_and_state() {
    logs();
    let (traceparent, trace_id, _) = new_traceparent();
    let span = tracing::info_span!("event", trace_id = tracing::field::Empty);

    continue_traceparent(&span, Some(&traceparent), Some("shop=1"));
    let mut outgoing = HeaderMap::new();
    span.in_scope(|| inject_current(&mut outgoing));

    let passed_on = outgoing["traceparent"].to_str().expect("text");
    assert_eq!(ids(passed_on).0, trace_id);
    assert_eq!(outgoing["tracestate"], "shop=1");
}

#[test]
fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
    logs();
    for traceparent in [None, Some("00-not-a-trace-01")] {
        let span = tracing::info_span!("event", trace_id = tracing::field::Empty);

        continue_traceparent(&span, traceparent, None);
        let passed_on = span.in_scope(current_traceparent);

        let passed_on = passed_on.expect("a traceparent of a new trace");
        let (trace_id, _) = ids(&passed_on);
        assert_ne!(trace_id, "0".repeat(32), "{traceparent:?}");
    }
}

#[test]
fn outside_any_span_there_is_no_trace_to_pass_on() {
    logs();

    let mut outgoing = HeaderMap::new();
    inject_current(&mut outgoing);

    assert_eq!(current_traceparent(), None);
    assert!(outgoing.is_empty());
}

#[tracing::instrument]
async fn look_up_stock() {
    tracing::info!("looking up stock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_trace_id_even_in_nested_spans() {
    let logs = logs();
    let routes = Router::new().route(
        "/stock",
        get(|| async {
            look_up_stock().await;
            "12"
        }),
    );
    let app = support::router(routes, &kit::settings::DaprSettings::default());
    let (traceparent, trace_id, _) = new_traceparent();

    app.oneshot(request(
        "GET",
        "/stock",
        &[("traceparent", &traceparent)],
        "",
    ))
    .await
    .expect("a response");

    let lines = logs.of_trace(&trace_id);
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(messages, ["looking up stock", "handled"], "{lines:?}");
    assert_eq!(lines[0]["span"]["name"], "look_up_stock");
    assert_eq!(lines[1]["span"]["route"], "/stock");
    assert_eq!(lines[1]["status"], 200);
}

/// `/traceparent` answers with the `traceparent` the app received.
fn callee() -> Router {
    Router::new().route(
        "/traceparent",
        get(|headers: HeaderMap| async move {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_receives_the_trace_on_state_calls_publishes_and_invocations() {
    let logs = logs();
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let events = stack
        .observe(&[contracts::USERS])
        .await
        .expect("an observer");
    let (bound, settings) = stack.bind("callee").await.expect("a sidecar");
    stack
        .run(bound, Box::new(TestApp::new(callee(), &settings).await))
        .await
        .expect("the app runs");
    // The sidecar logs its spans (every one sampled), so its side can be read here.
    let configuration = stack.dir().join("tracing.yaml");
    std::fs::write(
        &configuration,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tracing\nspec:\n  tracing:\n    samplingRate: \"1\"\n    stdout: true\n",
    )
    .expect("written");
    let (bound, client) = stack
        .bind_with("caller", |options| options.config = Some(configuration))
        .await
        .expect("a sidecar");
    stack.start(bound).await.expect("the sidecar starts");
    let dapr = kit::dapr::Dapr::new(&client).expect("a client");
    dapr.wait_until_ready(Duration::from_secs(10))
        .await
        .expect("the sidecar answers");
    let (traceparent, trace_id, _) = new_traceparent();
    let span = tracing::info_span!("checkout", trace_id = tracing::field::Empty);
    continue_trace(&span, &headers(&traceparent));
    let our_span = span
        .in_scope(current_traceparent)
        .map(|t| ids(&t).1)
        .expect("a span");

    let user = contracts::UserRegistered {
        user_id: uuid::Uuid::new_v4(),
        email: "ada@shop.test".into(),
        name: "Ada".into(),
        registered_at: chrono::Utc::now(),
    };
    let received = async {
        dapr.save_state(STATE_STORE, "basket", &1, kit::dapr::Write::always())
            .await
            .expect("saved");
        dapr.publish(PUBSUB, &user).await.expect("published");
        dapr.invoke(Method::GET, "callee", "/traceparent")
            .send()
            .await
            .expect("a response")
            .text()
            .await
            .expect("a body")
    }
    .instrument(span)
    .await;

    let sidecar_spans: Vec<Value> = logs
        .of_trace(&trace_id)
        .into_iter()
        .filter(|line| line["target"] == "dapr.runtime.trace")
        .collect();
    assert!(
        sidecar_spans
            .iter()
            .any(|s| s["parent_span_id"] == our_span.as_str()),
        "the sidecar's span of the state call is a child of ours: {sidecar_spans:?}"
    );
    let event = events
        .wait_for("shop.user.registered.v1", Duration::from_secs(5), |_| true)
        .await
        .expect("delivered");
    assert!(
        event["traceparent"]
            .as_str()
            .is_some_and(|t| t.contains(&trace_id)),
        "{event}"
    );
    assert_eq!(
        ids(&received).0,
        trace_id,
        "the invoked app is in the trace"
    );
    assert!(
        logs.of_trace(&trace_id)
            .iter()
            .any(|line| line["message"] == "handled" && line["span"]["app"] == support::APP),
        "the invoked app logs in the same trace"
    );
    stack.shutdown().await.expect("clean shutdown");
}
