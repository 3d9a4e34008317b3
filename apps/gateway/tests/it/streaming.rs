//! Bodies stream through the gateway both ways: server-sent events arrive one by one, and an
//! upload reaches the app before it ends.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::Notify;

use crate::support::shop;

#[tokio::test]
async fn server_sent_events_reach_the_client_event_by_event() {
    let release = Arc::new(Notify::new());
    let app = Router::new()
        .route(
            "/notifications/stream",
            get(|State(release): State<Arc<Notify>>| async move {
                let events = futures::stream::unfold(0, move |n| {
                    let release = release.clone();
                    async move {
                        match n {
                            0 => Some((Ok::<_, std::io::Error>(Bytes::from("data: first\n\n")), 1)),
                            1 => {
                                // The second event waits until the client has seen the first:
                                // a buffering gateway never delivers either.
                                release.notified().await;
                                Some((Ok(Bytes::from("data: second\n\n")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                (
                    [
                        ("content-type", "text/event-stream"),
                        ("cache-control", "no-cache"),
                    ],
                    Body::from_stream(events),
                )
            }),
        )
        .with_state(release.clone());
    let shop = shop().app("notifications", app).start().await;
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        shop.client()
            .get(shop.url("/api/notifications/stream"))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("the headers arrive before the stream ends")
    .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first event arrives while the stream is open")
        .expect("a chunk")
        .expect("bytes");
    assert_eq!(first, Bytes::from("data: first\n\n"));
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream goes on")
    {
        rest.extend_from_slice(&chunk.expect("bytes"));
    }
    assert_eq!(rest, b"data: second\n\n");
}

/// A Resiliency giving calls to `notifications` a 1 s timeout, as `components/*` give the
/// apps they call.
const ONE_SECOND_TIMEOUT: &str = "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: test
spec:
  policies:
    timeouts:
      short: 1s
  targets:
    apps:
      notifications: {timeout: short}
";

#[tokio::test]
async fn a_stream_outlives_the_invocation_timeout_and_any_total_deadline() {
    let dir = std::env::temp_dir().join(format!("gateway-sse-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("resiliency.yaml"), ONE_SECOND_TIMEOUT).expect("write");
    let app = Router::new()
        .route(
            "/notifications/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "too late"
            }),
        )
        .route(
            "/notifications/stream",
            get(|| async {
                // An event now, then one every 700 ms: the stream lasts well past the 1 s timeout,
                // which bounds the wait for the answer's headers, not the answer.
                let events = futures::stream::unfold(0u32, |n| async move {
                    if n > 0 {
                        tokio::time::sleep(Duration::from_millis(700)).await;
                    }
                    (n < 5).then(|| {
                        (
                            Ok::<_, std::io::Error>(Bytes::from(format!("data: {n}\n\n"))),
                            n + 1,
                        )
                    })
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(events),
                )
            }),
        );
    let shop = shop()
        .app("notifications", app)
        .gateway_resources(&dir)
        .start()
        .await;
    // The timeout is in force: headers later than 1 s are an error.
    let slow = shop.get("/api/notifications/slow").await;
    assert!(slow.status().is_server_error(), "{}", slow.status());
    let response = shop
        .client()
        .get(shop.url("/api/notifications/stream"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let started = std::time::Instant::now();
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream goes on")
    {
        received.extend_from_slice(&chunk.expect("the stream is not cut"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        String::from_utf8_lossy(&received),
        "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n"
    );
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the stream lasted past the timeout"
    );
}

#[tokio::test]
async fn a_streamed_upload_reaches_the_app_before_it_ends() {
    let first_seen = Arc::new(Notify::new());
    let app = Router::new()
        .route(
            "/orders/import",
            post(
                |State(first_seen): State<Arc<Notify>>, request: Request| async move {
                    let mut body = request.into_body().into_data_stream();
                    let mut received = Vec::new();
                    while let Some(chunk) = body.next().await {
                        received.extend_from_slice(&chunk.expect("chunk"));
                        first_seen.notify_one();
                    }
                    String::from_utf8_lossy(&received).into_owned()
                },
            ),
        )
        .with_state(first_seen.clone());
    let shop = shop().app("orders", app).start().await;
    let signal = first_seen.clone();
    let upload = futures::stream::unfold(0, move |n| {
        let signal = signal.clone();
        async move {
            match n {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from("part one;")), 1)),
                1 => {
                    // Only go on once the app has the first part: a buffering gateway deadlocks.
                    signal.notified().await;
                    Some((Ok(Bytes::from("part two")), 2))
                }
                _ => None,
            }
        }
    });
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        shop.client()
            .post(shop.url("/api/orders/import"))
            .body(reqwest::Body::wrap_stream(upload))
            .send(),
    )
    .await
    .expect("the upload streams instead of waiting for the whole body")
    .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "part one;part two");
}
