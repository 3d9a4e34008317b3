//! What the kit tests share: a small app served the way every shop app is served, sidecars on
//! a fresh stack, and readers for problem documents and Prometheus text.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of the support"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use kit::dapr::Dapr;
use kit::server::{HttpMetrics, Readiness, Service, Stop};
use kit::settings::{AppSettings, DaprSettings};
use kit::testing::{Stack, Store};
use serde_json::Value;
use tokio::net::TcpListener;

/// The app name test apps report in their metrics.
pub const APP: &str = "kit-test";

/// An app made of `routes` wrapped by [`kit::server::app_router`], served by
/// [`kit::server::serve`]: what every shop app is, minus its domain.
pub struct TestApp {
    listener: TcpListener,
    router: Router,
}

impl TestApp {
    /// Binds a free port for `routes`, behind the sidecar described by `dapr`.
    pub async fn new(routes: Router, dapr: &DaprSettings) -> Self {
        let listener = kit::server::bind(&AppSettings::default())
            .await
            .expect("a free port");
        Self {
            listener,
            router: router(routes, dapr),
        }
    }
}

impl Service for TestApp {
    fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    fn run(self: Box<Self>, stop: Stop) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(kit::server::serve(
            self.listener,
            self.router,
            stop.cancelled_owned(),
            Duration::from_secs(1),
        ))
    }
}

/// `routes` with what [`kit::server::app_router`] adds, ready for `oneshot`.
pub fn router(routes: Router, dapr: &DaprSettings) -> Router {
    kit::server::app_router(
        APP,
        routes,
        HttpMetrics::new(APP),
        Readiness::sidecar(dapr),
        dapr,
    )
}

/// A stack on `store` with a sidecar for `app_id` that has no app, and a client of it.
pub async fn client(store: Store, app_id: &str) -> (Stack, Dapr) {
    let mut stack = Stack::new(store, &[]).await.expect("a stack");
    let dapr = sidecar(&mut stack, app_id).await;
    (stack, dapr)
}

/// A started sidecar for `app_id` with no app, and a client of it.
pub async fn sidecar(stack: &mut Stack, app_id: &str) -> Dapr {
    let (bound, settings) = stack.bind(app_id).await.expect("a sidecar");
    stack.start(bound).await.expect("the sidecar starts");
    let dapr = Dapr::new(&settings).expect("a client");
    dapr.wait_until_ready(Duration::from_secs(10))
        .await
        .expect("the sidecar answers");
    dapr
}

/// Runs `test` against a client of a fresh stack on every store the project ships, at once.
/// `test` names the store in its assertions.
pub async fn on_every_store<F, Fut>(test: F)
where
    F: Fn(Store, Dapr) -> Fut,
    Fut: Future<Output = ()>,
{
    let runs = Store::ALL.map(|store| {
        let test = &test;
        async move {
            let (stack, dapr) = client(store, "state-client").await;
            test(store, dapr).await;
            stack.shutdown().await.expect("clean shutdown");
        }
    });
    futures::future::join_all(runs).await;
}

/// Waits until the sidecar at `dapr` lists `count` subscriptions (deliveries start then).
pub async fn wait_until_subscribed(dapr: &DaprSettings, count: usize) {
    let url = format!("http://127.0.0.1:{}/v1.0/metadata", dapr.http_port);
    eventually(Duration::from_secs(10), || async {
        let metadata: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        (metadata["subscriptions"].as_array()?.len() >= count).then_some(())
    })
    .await
    .expect("the app subscribed");
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A unique name for topics, keys and app ids.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A `traceparent` of a new, sampled trace, and its trace and span ids.
pub fn new_traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// The status, `Content-Type` and JSON body of an axum response.
pub async fn read(response: axum::response::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, body)
}

/// A request for `oneshot`.
pub fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Request<Body> {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::from(body.to_owned()))
        .expect("a valid request")
}

/// One sample of Prometheus text: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text exposition (enough of it for the metrics kit writes).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The value of the sample `name` whose labels include every pair of `labels`, if any.
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}
