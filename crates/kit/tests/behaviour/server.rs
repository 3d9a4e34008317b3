//! `kit::server`: health, readiness, metrics, the app API token, and graceful shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use kit::Problem;
use kit::settings::{AppSettings, DaprSettings};
use kit::testing::{Stack, Store};
use reqwest::Method;
use secrecy::SecretString;
use tokio::sync::{Notify, mpsc, oneshot};
use tower::ServiceExt as _;

use crate::support::{self, TestApp, read, request, sample, samples};

/// `/items/{id}`: 200 for numbers, 404 otherwise; `/slow` takes 30 ms.
fn items() -> Router {
    Router::new()
        .route(
            "/items/{id}",
            get(|Path(id): Path<String>| async move {
                match id.parse::<u32>() {
                    Ok(id) => Ok(format!("item {id}")),
                    Err(_) => Err(Problem::not_found(format!("no item {id}"))),
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "done"
            }),
        )
}

/// Settings for a sidecar that is not there: nothing listens on the port.
async fn absent_sidecar() -> DaprSettings {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    DaprSettings {
        http_port: port,
        grpc_port: port,
        ..DaprSettings::default()
    }
}

fn with_token(token: &str) -> DaprSettings {
    DaprSettings {
        app_api_token: Some(SecretString::from(token.to_owned())),
        ..DaprSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_204() {
    let app = support::router(items(), &absent_sidecar().await);

    let response = app
        .oneshot(request("GET", "/healthz", &[], ""))
        .await
        .expect("a response");

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_204_when_the_sidecar_answers() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let (bound, dapr) = stack.bind("ready-app").await.expect("a sidecar");
    stack.start(bound).await.expect("the sidecar starts");
    let app = support::router(items(), &dapr);

    let response = app
        .oneshot(request("GET", "/readyz", &[], ""))
        .await
        .expect("a response");

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_a_503_problem_when_the_sidecar_does_not_answer() {
    let app = support::router(items(), &absent_sidecar().await);

    let (status, content_type, body) = read(
        app.oneshot(request("GET", "/readyz", &[], ""))
            .await
            .expect("a response"),
    )
    .await;

    assert_eq!(status, 503);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 503);
    assert_eq!(body["type"], "https://shop.example/problems/unavailable");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("sidecar")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_matched_route_and_status() {
    let app = support::router(items(), &absent_sidecar().await);
    for path in [
        "/items/1",
        "/items/2",
        "/items/pencil",
        "/no/such/page",
        "/slow",
    ] {
        app.clone()
            .oneshot(request("GET", path, &[], ""))
            .await
            .expect("a response");
    }

    let response = app
        .oneshot(request("GET", "/metrics", &[], ""))
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/plain")),
    );
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body")
            .to_vec(),
    )
    .expect("text");
    let samples = samples(&text);

    let requests = |route: &str, status: &str| {
        sample(
            &samples,
            "shop_http_requests_total",
            &[
                ("app", support::APP),
                ("method", "GET"),
                ("route", route),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("/items/{id}", "200"), Some(2.0), "{text}");
    assert_eq!(requests("/items/{id}", "404"), Some(1.0), "{text}");
    assert_eq!(requests("unmatched", "404"), Some(1.0), "{text}");
    assert!(
        !text.contains("/items/1") && !text.contains("/no/such/page"),
        "raw paths must not become labels:\n{text}"
    );

    let latency = |suffix: &str, route: &str, status: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("route", route), ("status", status), ("method", "GET")];
        labels.extend_from_slice(extra);
        sample(
            &samples,
            &format!("shop_http_request_duration_seconds{suffix}"),
            &labels,
        )
    };
    assert_eq!(
        latency("_count", "/items/{id}", "200", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        latency("_count", "/items/{id}", "404", &[]),
        Some(1.0),
        "{text}"
    );
    // `/slow` takes at least 30 ms: not in the 25 ms bucket, in the 50 ms one... unless the
    // machine is very slow, so only the lower bound is certain.
    assert_eq!(
        latency("_bucket", "/slow", "200", &[("le", "0.025")]),
        Some(0.0),
        "{text}"
    );
    assert!(
        latency("_sum", "/slow", "200", &[]).is_some_and(|sum| sum >= 0.03),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_app_api_token_only_callers_that_send_it_get_through() {
    let app = support::router(items(), &with_token("s3cret"));
    let call = |path: &str, token: Option<&str>| {
        let headers: Vec<(&str, &str)> = token.map(|t| ("dapr-api-token", t)).into_iter().collect();
        app.clone().oneshot(request("GET", path, &headers, ""))
    };

    let (status, content_type, body) =
        read(call("/items/1", None).await.expect("a response")).await;
    assert_eq!(status, 401);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["type"], "https://shop.example/problems/unauthorized");
    let wrong = call("/items/1", Some("guess")).await.expect("a response");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = call("/items/1", Some("s3cret")).await.expect("a response");
    assert_eq!(right.status(), StatusCode::OK);

    // Probes and scrapers do not come through the sidecar.
    let health = call("/healthz", None).await.expect("a response");
    assert_eq!(health.status(), StatusCode::NO_CONTENT);
    let metrics = call("/metrics", None).await.expect("a response");
    assert_eq!(metrics.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_app_api_token_no_header_is_needed() {
    let app = support::router(items(), &DaprSettings::default());

    let response = app
        .oneshot(request("GET", "/items/1", &[], ""))
        .await
        .expect("a response");

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_gets_through_with_the_app_api_token_and_direct_callers_do_not() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let (bound, dapr) = stack.bind("items").await.expect("a sidecar");
    let direct = stack
        .run(bound, Box::new(TestApp::new(items(), &dapr).await))
        .await
        .expect("the app runs");
    let caller = stack.caller("shop-caller").await.expect("a caller");

    let through_dapr = caller
        .invoke(Method::GET, "items", "/items/7")
        .send()
        .await
        .expect("a response");
    let bypassing_dapr = reqwest::get(format!("{direct}/items/7"))
        .await
        .expect("a response");

    assert_eq!(through_dapr.status(), 200);
    assert_eq!(through_dapr.text().await.expect("a body"), "item 7");
    assert_eq!(bypassing_dapr.status(), 401);
    stack.shutdown().await.expect("clean shutdown");
}

/// `/hold` tells the test it started, then waits until the test releases it.
fn holding(started: mpsc::Sender<()>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/hold",
        get(move || {
            let (started, release) = (started.clone(), release.clone());
            async move {
                let _ = started.send(()).await;
                release.notified().await;
                "finished"
            }
        }),
    )
}

/// Serves `router` with `drain`; returns its address, the stop trigger and the server task.
async fn serve(
    router: Router,
    drain: Duration,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = kit::server::bind(&AppSettings::default())
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(kit::server::serve(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        drain,
    ));
    (address, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_finishes_in_flight_requests_and_refuses_new_connections_after_stop() {
    let (started_tx, mut started) = mpsc::channel(1);
    let release = Arc::new(Notify::new());
    let (address, stop, server) =
        serve(holding(started_tx, release.clone()), Duration::from_secs(5)).await;
    let in_flight = tokio::spawn(reqwest::get(format!("http://{address}/hold")));
    started.recv().await.expect("the request started");

    stop.send(()).expect("the server is running");
    let refused = support::eventually(Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(address).await.err()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waited_for_the_request = !server.is_finished();
    release.notify_one();
    let response = in_flight
        .await
        .expect("the client task")
        .expect("the in-flight request is answered");

    assert!(refused.is_some(), "new connections are refused after stop");
    assert!(
        waited_for_the_request,
        "serve returned with a request in flight"
    );
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("a body"), "finished");
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the server stops once drained")
        .expect("the server task")
        .expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_at_the_drain_deadline_when_requests_are_still_running() {
    let (started_tx, mut started) = mpsc::channel(1);
    let never = Arc::new(Notify::new());
    let drain = Duration::from_millis(300);
    let (address, stop, server) = serve(holding(started_tx, never), drain).await;
    let _stuck = tokio::spawn(reqwest::get(format!("http://{address}/hold")));
    started.recv().await.expect("the request started");

    let stopping = Instant::now();
    stop.send(()).expect("the server is running");
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after the drain deadline")
        .expect("the server task");

    assert!(result.is_ok(), "{result:?}");
    let waited = stopping.elapsed();
    assert!(
        waited >= drain && waited < Duration::from_secs(2),
        "waited {waited:?} with a drain of {drain:?}"
    );
}
