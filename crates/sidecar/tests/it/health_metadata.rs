//! Health endpoints, app health checks, the metadata API, metrics, logs, and the APIs the sidecar
//! answers as not implemented.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use sidecar::Topology;
use tokio::io::AsyncBufReadExt as _;

use crate::support::{eventually, http, serve, sidecar};

#[tokio::test]
async fn healthz_waits_for_the_app_and_checks_the_app_id() {
    // Reserve a port nobody listens on yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let sidecar = sidecar("orders").app_port(port).start().await;

    let early = http()
        .get(sidecar.url("/v1.0/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(early.status(), 500);
    let body: Value = early.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_HEALTH_NOT_READY");
    let outbound = http()
        .get(sidecar.url("/v1.0/healthz/outbound"))
        .send()
        .await
        .expect("outbound");
    assert_eq!(
        outbound.status(),
        204,
        "outbound readiness does not wait for the app"
    );

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the app binds its port");
    tokio::spawn(async move { axum::serve(listener, Router::new()).await });
    let url = sidecar.url("/v1.0/healthz");
    assert!(
        eventually(5, || async {
            http()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 204)
        })
        .await
    );
    let wrong = http()
        .get(sidecar.url("/v1.0/healthz?appid=other"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(wrong.status(), 500);
    let right = http()
        .get(sidecar.url("/v1.0/healthz?appid=orders"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(right.status(), 204);
}

#[tokio::test]
async fn an_unhealthy_app_receives_no_invocations_until_it_recovers() {
    let healthy = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(healthy): State<Arc<AtomicBool>>| async move {
                if healthy.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .route("/work", get(|| async { "done" }))
        .with_state(healthy.clone());
    let topology = Topology::in_process();
    let port = serve(app).await;
    let _target = sidecar("target")
        .topology(&topology)
        .app_port(port)
        .options(|o| {
            o.app_health.enabled = true;
            o.app_health.interval = Duration::from_millis(50);
            o.app_health.timeout = Duration::from_millis(50);
            o.app_health.threshold = 1;
        })
        .start()
        .await;
    let caller = sidecar("caller").topology(&topology).start().await;
    let url = caller.url("/v1.0/invoke/target/method/work");
    let response = http().get(&url).send().await.expect("invoke");
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("app is not in a healthy state"),
        "{body}"
    );

    healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(5, || async {
            http()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
    );
    healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(5, || async {
            http()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 500)
        })
        .await
    );
}

#[tokio::test]
async fn metadata_lists_the_app_its_components_and_extended_attributes() {
    let port = serve(Router::new()).await;
    let sidecar = sidecar("orders")
        .memory_store("statestore")
        .app_port(port)
        .options(|o| {
            o.app_health.enabled = true;
            o.app_max_concurrency = Some(4);
        })
        .config("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  features:\n  - {name: SchedulerReminders, enabled: true}\n")
        .start()
        .await;
    let put = http()
        .put(sidecar.url("/v1.0/metadata/team"))
        .body("checkout")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 204);
    let metadata: Value = http()
        .get(sidecar.url("/v1.0/metadata"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["id"], "orders");
    assert_eq!(metadata["enabledFeatures"], json!(["SchedulerReminders"]));
    assert_eq!(
        metadata["components"],
        json!([{"name": "statestore", "type": "state.in-memory", "version": "v1", "capabilities": ["ETAG", "TRANSACTIONAL", "TTL", "ACTOR"]}])
    );
    assert_eq!(metadata["extended"]["team"], "checkout");
    let app = &metadata["appConnectionProperties"];
    assert_eq!(app["port"], port);
    assert_eq!(app["protocol"], "http");
    assert_eq!(app["maxConcurrency"], 4);
    assert_eq!(app["health"]["healthCheckPath"], "/healthz");
    assert_eq!(app["health"]["healthProbeInterval"], "5s");

    let mut client = sidecar.client().await;
    client
        .set_metadata("region", "local")
        .await
        .expect("set over gRPC");
    let over_grpc = client.get_metadata().await.expect("get over gRPC");
    assert_eq!(over_grpc.id, "orders");
    assert_eq!(over_grpc.registered_components[0].name, "statestore");
    assert_eq!(
        over_grpc
            .extended_metadata
            .get("region")
            .map(String::as_str),
        Some("local")
    );
}

#[tokio::test]
async fn metrics_count_api_calls_and_component_operations() {
    let sidecar = sidecar("orders").memory_store("statestore").start().await;
    http()
        .get(sidecar.url("/v1.0/state/statestore/k"))
        .send()
        .await
        .expect("get");
    let port = sidecar.sidecar.ports().metrics.expect("metrics are on");
    let text = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains(r#"dapr_http_server_request_count{app_id="orders",method="GET",path="/v1.0/state/statestore",status="204"} 1"#),
        "{text}"
    );
    assert!(text.contains("dapr_http_server_latency_bucket"), "{text}");
    assert!(
        text.contains(r#"dapr_component_state_count{app_id="orders",component="statestore",namespace="",operation="get",success="true"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn apis_the_sidecar_lacks_answer_501_and_unimplemented() {
    let sidecar = sidecar("orders").start().await;
    let response = http()
        .post(sidecar.url("/v1.0/actors/cart/1/method/add"))
        .send()
        .await
        .expect("actors");
    assert_eq!(response.status(), 501);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["message"].as_str().unwrap_or("").contains("actors"),
        "{body}"
    );
    let mut client = sidecar.client().await;
    let error = client
        .get_configuration("config", vec!["k"], None)
        .await
        .expect_err("configuration is not implemented");
    let text = format!("{error:?}");
    assert!(
        text.contains("Unimplemented") && text.contains("GetConfiguration"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_without_an_app_id_are_404_like_daprd() {
    let sidecar = sidecar("orders").start().await;
    let response = http()
        .get(sidecar.url("/v1.0/nowhere"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
}

#[tokio::test]
async fn the_shutdown_api_stops_the_sidecar() {
    let sidecar = sidecar("orders").start().await;
    let response = http()
        .post(sidecar.url("/v1.0/shutdown"))
        .send()
        .await
        .expect("shutdown");
    assert_eq!(response.status(), 204);
    tokio::time::timeout(Duration::from_secs(5), sidecar.sidecar.stopped())
        .await
        .expect("the sidecar reports it was asked to stop");
    sidecar.sidecar.shutdown().await;
}

#[tokio::test]
async fn the_binary_logs_json_lines_and_refuses_other_app_protocols() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .args(["--app-id", "orders", "--app-protocol", "grpc"])
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("app-protocol"), "{stderr}");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .args([
            "-app-id",
            "orders",
            "--log-as-json",
            "--dapr-http-port",
            "0",
            "--dapr-grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a log line")
        .expect("readable")
        .expect("a line");
    let entry: Value = serde_json::from_str(&line).expect("JSON log line");
    for field in [
        "time", "level", "msg", "scope", "type", "ver", "app_id", "instance",
    ] {
        assert!(entry.get(field).is_some(), "{field} missing in {line}");
    }
    assert_eq!(entry["app_id"], "orders");
    assert_eq!(entry["type"], "log");
    child.kill().await.expect("stop");
}

#[tokio::test]
async fn sampled_spans_are_logged_when_the_configuration_asks_for_stdout_tracing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: tracing}\nspec:\n  tracing:\n    samplingRate: \"1\"\n    stdout: true\n",
    )
    .expect("config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .args([
            "--app-id",
            "traced",
            "--log-as-json",
            "--dapr-grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(["--dapr-http-port", &port.to_string()])
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let url = format!("http://127.0.0.1:{port}/v1.0/metadata");
    assert!(eventually(10, || async { http().get(&url).send().await.is_ok() }).await);
    http()
        .get(&url)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .expect("metadata");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["msg"] == "span finished"
                && entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
            {
                return Some(entry);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the span of the call is logged");
    assert_eq!(found["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(found["span"], "GET /v1.0/metadata");
    child.kill().await.expect("stop");
}
