//! Service invocation between sidecars: forwarded headers, streaming both ways, resiliency,
//! access control, API tokens, and name resolution in-process and across processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use sidecar::Topology;
use tokio::sync::Notify;

use crate::support::{TestSidecar, http, serve, sidecar, unique};

/// An app that answers every request with what it received.
fn echo_app() -> Router {
    Router::new().fallback(any(|request: Request| async move {
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(v.to_str().unwrap_or("").to_owned()),
                )
            })
            .collect();
        let body = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        (
            [("x-app-header", "from-app")],
            axum::Json(json!({
                "method": method,
                "uri": uri,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })),
        )
    }))
}

/// Two sidecars in one topology: `caller` without an app, `target` in front of `app`.
async fn pair(app: Router) -> (TestSidecar, TestSidecar) {
    let topology = Topology::in_process();
    let port = serve(app).await;
    let target = sidecar("target")
        .topology(&topology)
        .app_port(port)
        .start()
        .await;
    let caller = sidecar("caller").topology(&topology).start().await;
    (caller, target)
}

#[tokio::test]
async fn the_target_app_gets_the_request_with_daprs_headers() {
    let (caller, _target) = pair(echo_app()).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = http()
        .put(caller.url("/v1.0/invoke/target/method/orders/42?expand=lines"))
        .header("x-custom", "kept")
        .header("connection", "x-private")
        .header("x-private", "dropped")
        .header("traceparent", traceparent)
        .body("payload")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-app-header"], "from-app");
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["uri"], "/orders/42?expand=lines");
    assert_eq!(seen["body"], "payload");
    let headers = &seen["headers"];
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["dapr-caller-app-id"], "caller");
    assert_eq!(headers["dapr-callee-app-id"], "target");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(
        headers.get("x-private").is_none(),
        "hop-by-hop headers are dropped"
    );
    let forwarded = headers["traceparent"]
        .as_str()
        .expect("traceparent reaches the app");
    assert!(
        forwarded.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "same trace: {forwarded}"
    );
    assert_ne!(
        forwarded, traceparent,
        "the app's parent is the sidecar's span"
    );
}

#[tokio::test]
async fn escaped_methods_are_decoded_cleaned_and_escaped_again() {
    let (caller, _target) = pair(echo_app()).await;
    let response = http()
        .get(caller.url("/v1.0/invoke/target/method/products/a%20b/./c%25d?q=a%20b"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["uri"], "/products/a%20b/c%25d?q=a%20b");
}

#[tokio::test]
async fn the_dapr_app_id_header_makes_the_whole_path_the_method() {
    let (caller, _target) = pair(echo_app()).await;
    let response = http()
        .get(caller.url("/api/products/a%20b?page=2"))
        .header("dapr-app-id", "target")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["uri"], "/api/products/a%20b?page=2");
    assert!(seen["headers"].get("dapr-app-id").is_none());
}

#[tokio::test]
async fn an_app_invoking_itself_reaches_its_own_app_without_caller_headers() {
    let port = serve(echo_app()).await;
    let only = sidecar("solo").app_port(port).start().await;
    let seen: Value = http()
        .get(only.url("/v1.0/invoke/solo/method/ping"))
        .send()
        .await
        .expect("invoke")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["uri"], "/ping");
    assert!(seen["headers"].get("dapr-caller-app-id").is_none());
}

#[tokio::test]
async fn an_unknown_app_is_a_direct_invoke_error() {
    let (caller, _target) = pair(echo_app()).await;
    let response = http()
        .get(caller.url("/v1.0/invoke/nobody/method/x"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(
        body["message"].as_str().unwrap_or("").contains("nobody"),
        "{body}"
    );
}

#[tokio::test]
async fn app_errors_and_redirects_come_back_unchanged() {
    let app = Router::new()
        .route(
            "/teapot",
            get(|| async {
                (
                    StatusCode::IM_A_TEAPOT,
                    [("x-reason", "tea")],
                    "short and stout",
                )
            }),
        )
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [("location", "/elsewhere")]) }),
        );
    let (caller, _target) = pair(app).await;
    let response = http()
        .get(caller.url("/v1.0/invoke/target/method/teapot"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 418);
    assert_eq!(response.headers()["x-reason"], "tea");
    assert_eq!(response.text().await.expect("body"), "short and stout");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = no_redirects
        .get(caller.url("/v1.0/invoke/target/method/moved"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/elsewhere");
}

#[tokio::test]
async fn server_sent_events_reach_the_caller_one_by_one() {
    let release = Arc::new(Notify::new());
    let app = Router::new()
        .route(
            "/events",
            get(|State(release): State<Arc<Notify>>| async move {
                let stream = futures::stream::unfold(0, move |n| {
                    let release = release.clone();
                    async move {
                        match n {
                            0 => Some((Ok::<_, std::io::Error>(Bytes::from("data: first\n\n")), 1)),
                            1 => {
                                // The second event is only sent once the caller saw the first.
                                release.notified().await;
                                Some((Ok(Bytes::from("data: second\n\n")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(stream),
                )
            }),
        )
        .with_state(release.clone());
    let (caller, _target) = pair(app).await;
    let response = http()
        .get(caller.url("/v1.0/invoke/target/method/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first event arrives before the stream ends")
        .expect("a chunk")
        .expect("bytes");
    assert_eq!(first, Bytes::from("data: first\n\n"));
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.expect("bytes"));
    }
    assert_eq!(rest, b"data: second\n\n");
}

#[tokio::test]
async fn a_streamed_request_body_reaches_the_app_before_it_ends() {
    let first_seen = Arc::new(Notify::new());
    let app = Router::new()
        .route(
            "/upload",
            axum::routing::post(
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
    let (caller, _target) = pair(app).await;
    let signal = first_seen.clone();
    let body = futures::stream::unfold(0, move |n| {
        let signal = signal.clone();
        async move {
            match n {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from("part one;")), 1)),
                1 => {
                    // Only continue once the app has the first part: a buffering proxy deadlocks.
                    signal.notified().await;
                    Some((Ok(Bytes::from("part two")), 2))
                }
                _ => None,
            }
        }
    });
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        http()
            .post(caller.url("/v1.0/invoke/target/method/upload"))
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    )
    .await
    .expect("the upload streams instead of waiting for the whole body")
    .expect("invoke");
    assert_eq!(response.text().await.expect("body"), "part one;part two");
}

/// An app whose `/flaky` fails with `status` until it has been called `failures` times.
fn flaky_app(failures: usize, status: StatusCode, calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/flaky",
            any(move |State(calls): State<Arc<AtomicUsize>>| async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < failures {
                    (status, "not yet").into_response()
                } else {
                    (StatusCode::OK, "done").into_response()
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .with_state(calls)
}

const RESILIENCY: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: invocation}
spec:
  policies:
    timeouts:
      quick: 200ms
    retries:
      three:
        policy: constant
        duration: 10ms
        maxRetries: 3
        matching:
          httpStatusCodes: "503"
    circuitBreakers:
      fragile:
        maxRequests: 1
        timeout: 500ms
        trip: consecutiveFailures >= 2
  targets:
    apps:
      target:
        timeout: quick
        retry: three
      brittle:
        circuitBreaker: fragile
"#;

async fn resilient_pair(app: Router, target: &str) -> (TestSidecar, TestSidecar) {
    let topology = Topology::in_process();
    let port = serve(app).await;
    let target = sidecar(target)
        .topology(&topology)
        .app_port(port)
        .start()
        .await;
    let caller = sidecar("caller")
        .topology(&topology)
        .resource("resiliency.yaml", RESILIENCY)
        .start()
        .await;
    (caller, target)
}

#[tokio::test]
async fn matching_failures_are_retried_until_the_app_recovers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (caller, _target) = resilient_pair(
        flaky_app(2, StatusCode::SERVICE_UNAVAILABLE, calls.clone()),
        "target",
    )
    .await;
    let response = http()
        .post(caller.url("/v1.0/invoke/target/method/flaky"))
        .body("same body every time")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn failures_outside_the_matching_codes_are_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (caller, _target) = resilient_pair(
        flaky_app(5, StatusCode::INTERNAL_SERVER_ERROR, calls.clone()),
        "target",
    )
    .await;
    let response = http()
        .get(caller.url("/v1.0/invoke/target/method/flaky"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.text().await.expect("body"),
        "not yet",
        "the app's own answer comes back"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_give_up_after_max_retries_with_the_last_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (caller, _target) = resilient_pair(
        flaky_app(10, StatusCode::SERVICE_UNAVAILABLE, calls.clone()),
        "target",
    )
    .await;
    let response = http()
        .get(caller.url("/v1.0/invoke/target/method/flaky"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 503);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "one attempt and three retries"
    );
}

#[tokio::test]
async fn a_timeout_policy_cuts_a_slow_call_short() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (caller, _target) = resilient_pair(flaky_app(0, StatusCode::OK, calls), "target").await;
    let started = std::time::Instant::now();
    let response = http()
        .get(caller.url("/v1.0/invoke/target/method/slow"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(
        body["message"].as_str().unwrap_or("").contains("deadline"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_circuit_breaker_opens_after_failures_and_closes_after_its_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (caller, _target) = resilient_pair(
        flaky_app(2, StatusCode::INTERNAL_SERVER_ERROR, calls.clone()),
        "brittle",
    )
    .await;
    let url = caller.url("/v1.0/invoke/brittle/method/flaky");
    for _ in 0..2 {
        assert_eq!(http().get(&url).send().await.expect("invoke").status(), 500);
    }
    let rejected = http().get(&url).send().await.expect("invoke");
    let body: Value = rejected.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("circuit breaker is open"),
        "{body}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "an open breaker does not reach the app"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(http().get(&url).send().await.expect("invoke").status(), 200);
}

const ACL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: acl}
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: caller
      defaultAction: deny
      trustDomain: public
      namespace: default
      operations:
      - name: /allowed/*
        httpVerb: [GET]
        action: allow
"#;

#[tokio::test]
async fn access_control_lets_through_only_what_the_policy_allows() {
    let topology = Topology::in_process();
    let port = serve(echo_app()).await;
    let _target = sidecar("target")
        .topology(&topology)
        .app_port(port)
        .config(ACL)
        .start()
        .await;
    let caller = sidecar("caller").topology(&topology).start().await;
    let stranger = sidecar("stranger").topology(&topology).start().await;

    let allowed = http()
        .get(caller.url("/v1.0/invoke/target/method/allowed/1"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(allowed.status(), 200);
    for (sidecar, method, path) in [
        (
            &caller,
            reqwest::Method::POST,
            "/v1.0/invoke/target/method/allowed/1",
        ),
        (
            &caller,
            reqwest::Method::GET,
            "/v1.0/invoke/target/method/secret",
        ),
        (
            &stranger,
            reqwest::Method::GET,
            "/v1.0/invoke/target/method/allowed/1",
        ),
    ] {
        let denied = http()
            .request(method, sidecar.url(path))
            .send()
            .await
            .expect("invoke");
        assert_eq!(denied.status(), 403, "{path}");
        let body: Value = denied.json().await.expect("json");
        assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("access control policy has denied access")
        );
    }
}

#[tokio::test]
async fn api_tokens_guard_the_api_and_are_sent_to_the_app() {
    let topology = Topology::in_process();
    let port = serve(echo_app()).await;
    let _target = sidecar("target")
        .topology(&topology)
        .app_port(port)
        .options(|o| o.app_api_token = Some("app-secret".to_owned().into()))
        .start()
        .await;
    let caller = sidecar("caller")
        .topology(&topology)
        .options(|o| o.api_token = Some("api-secret".to_owned().into()))
        .start()
        .await;
    let url = caller.url("/v1.0/invoke/target/method/x");
    let refused = http().get(&url).send().await.expect("invoke");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.text().await.expect("body"), "invalid api token\n");
    let wrong = http()
        .get(&url)
        .header("dapr-api-token", "guess")
        .send()
        .await
        .expect("invoke");
    assert_eq!(wrong.status(), 401);
    let seen: Value = http()
        .get(&url)
        .header("dapr-api-token", "api-secret")
        .send()
        .await
        .expect("invoke")
        .json()
        .await
        .expect("json");
    assert_eq!(
        seen["headers"]["dapr-api-token"], "app-secret",
        "the app gets APP_API_TOKEN, never the caller's token"
    );
    let health = http()
        .get(caller.url("/v1.0/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 204, "health checks need no token");
    let metadata = http()
        .get(caller.url("/v1.0/metadata"))
        .send()
        .await
        .expect("metadata");
    assert_eq!(metadata.status(), 401);
}

#[tokio::test]
async fn the_concurrency_limit_holds_calls_back() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/work",
        get({
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            move || async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let topology = Topology::in_process();
    let port = serve(app).await;
    let _target = sidecar("target")
        .topology(&topology)
        .app_port(port)
        .options(|o| o.app_max_concurrency = Some(1))
        .start()
        .await;
    let caller = sidecar("caller").topology(&topology).start().await;
    let calls = (0..5).map(|_| {
        http()
            .get(caller.url("/v1.0/invoke/target/method/work"))
            .send()
    });
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.expect("invoke").status(), 200);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_dapr_crate_invokes_over_grpc() {
    let (caller, _target) = pair(echo_app()).await;
    let mut client = caller.client().await;
    let response = client
        .invoke_service(
            "target",
            "orders/7",
            Some(prost_types::Any {
                type_url: String::new(),
                value: b"hello".to_vec(),
            }),
        )
        .await
        .expect("invoke");
    let seen: Value = serde_json::from_slice(&response.data.expect("data").value).expect("json");
    assert_eq!(seen["uri"], "/orders/7");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], "hello");
}

fn name_resolution_config(db: &std::path::Path) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {{name: nr}}\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: \"{}\"\n",
        db.display()
    )
}

#[tokio::test]
async fn sidecars_in_other_processes_are_found_through_sqlite_name_resolution() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("names.db");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, name_resolution_config(&db)).expect("config");
    let app_port = serve(echo_app()).await;
    let app_id = unique("remote");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .args(["--app-id", &app_id, "--app-port", &app_port.to_string()])
        .args([
            "--dapr-http-port",
            "0",
            "--dapr-grpc-port",
            "0",
            "--enable-metrics",
            "false",
        ])
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .expect("the sidecar binary starts");

    let caller = sidecar("caller")
        .topology(&Topology::shared())
        .config(name_resolution_config(&db))
        .start()
        .await;
    let url = caller.url(&format!("/v1.0/invoke/{app_id}/method/hello"));
    let reached = crate::support::eventually(20, || async {
        matches!(http().get(&url).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(reached, "the other process's sidecar is found and invoked");
    let seen: Value = http()
        .get(&url)
        .send()
        .await
        .expect("invoke")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "caller");
    child.kill().await.expect("stop the child");
}

#[tokio::test]
async fn a_bad_body_on_the_caller_side_never_reaches_the_app() {
    let (caller, _target) = pair(echo_app()).await;
    let response = http()
        .get(caller.url("/v1.0/invoke/target/method/a%00b"))
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid method"),
        "{body}"
    );
}
