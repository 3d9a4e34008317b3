//! Per-client rate limit, body size limit and CORS.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::support::{echo_app, problem, shop};

#[tokio::test]
async fn a_client_over_its_rate_is_refused_with_429_and_retry_after() {
    let shop = shop()
        .app("orders", echo_app("orders"))
        .settings(|s| {
            s.gateway.rate_limit.enabled = true;
            s.gateway.rate_limit.burst = 3;
            s.gateway.rate_limit.per_second = 0.5;
        })
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(shop.get("/api/orders").await.status(), 200);
    }
    let response = shop.get("/api/orders").await;
    assert_eq!(response.headers()["retry-after"], "2");
    problem(response, 429).await;
    assert_eq!(
        shop.get("/healthz").await.status(),
        204,
        "probes are not limited"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let shop = shop()
        .app("orders", echo_app("orders"))
        .settings(|s| {
            s.gateway.rate_limit.enabled = true;
            s.gateway.rate_limit.burst = 1;
            s.gateway.rate_limit.per_second = 0.1;
            s.gateway.trusted_proxies = vec!["127.0.0.0/8".into()];
        })
        .start()
        .await;
    let client = reqwest::Client::new();
    let from = |address: &str| {
        client
            .get(shop.url("/api/orders"))
            .header("x-forwarded-for", format!("203.0.113.66, {address}"))
            .send()
    };
    assert_eq!(from("198.51.100.1").await.expect("sent").status(), 200);
    assert_eq!(from("198.51.100.1").await.expect("sent").status(), 429);
    assert_eq!(
        from("198.51.100.2").await.expect("sent").status(),
        200,
        "another client behind the same proxy"
    );
    // What the client itself wrote first in the header does not matter.
    let spoofed = client
        .get(shop.url("/api/orders"))
        .header("x-forwarded-for", "203.0.113.99, 198.51.100.1")
        .send()
        .await
        .expect("sent");
    assert_eq!(spoofed.status(), 429);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let shop = shop()
        .app("orders", echo_app("orders"))
        .settings(|s| s.gateway.body_limit_bytes = 1024)
        .start()
        .await;
    let declared = shop
        .client()
        .post(shop.url("/api/orders"))
        .body(vec![b'x'; 1025])
        .send()
        .await
        .expect("answer");
    problem(declared, 413).await;

    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..4).map(|_| Ok(Bytes::from(vec![b'y'; 512]))).collect();
    let streamed = shop
        .client()
        .post(shop.url("/api/orders"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("answer");
    problem(streamed, 413).await;

    let within = shop
        .client()
        .post(shop.url("/api/orders"))
        .body(vec![b'z'; 1024])
        .send()
        .await
        .expect("answer");
    assert_eq!(within.status(), 200);
    let seen: Value = within.json().await.expect("json");
    assert_eq!(seen["body"].as_str().map(str::len), Some(1024));
}

#[tokio::test]
async fn cors_preflights_are_answered_for_any_origin_by_default() {
    let shop = shop().app("orders", echo_app("orders")).start().await;
    let preflight = shop
        .client()
        .request(reqwest::Method::OPTIONS, shop.url("/api/orders"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii");
    assert!(headers.contains("authorization"), "{headers}");
    let answer = shop
        .client()
        .get(shop.url("/api/orders"))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.headers()["access-control-allow-origin"], "*");
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii");
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let shop = shop()
        .app("orders", echo_app("orders"))
        .settings(|s| s.gateway.cors_origins = vec!["https://shop.example".into()])
        .start()
        .await;
    let preflight = |origin: &'static str| {
        shop.client()
            .request(reqwest::Method::OPTIONS, shop.url("/api/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .timeout(Duration::from_secs(5))
            .send()
    };
    let allowed = preflight("https://shop.example").await.expect("answer");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let other = preflight("https://evil.example").await.expect("answer");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
