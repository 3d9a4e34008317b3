//! Routing by prefix, header forwarding, and answers passed back unchanged.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;

use crate::support::{FakeAuth, SigningKey, echo_app, problem, shop};

#[tokio::test]
async fn requests_reach_the_app_of_their_prefix_with_the_path_it_expects() {
    let shop = shop()
        .app("auth", echo_app("auth"))
        .app("inventory", echo_app("inventory"))
        .app("orders", echo_app("orders"))
        .app("payments", echo_app("payments"))
        .app("notifications", echo_app("notifications"))
        .start()
        .await;
    for (path, app, seen_path) in [
        ("/api/auth/login", "auth", "/login"),
        (
            "/api/auth/.well-known/jwks.json",
            "auth",
            "/.well-known/jwks.json",
        ),
        ("/api/products", "inventory", "/products"),
        (
            "/api/products/42?page=2&size=10",
            "inventory",
            "/products/42?page=2&size=10",
        ),
        ("/api/orders/7/cancel", "orders", "/orders/7/cancel"),
        ("/api/payments", "payments", "/payments"),
        (
            "/api/notifications/stream",
            "notifications",
            "/notifications/stream",
        ),
    ] {
        let seen: Value = shop.get(path).await.json().await.expect("json");
        assert_eq!(seen["app"], app, "{path}");
        assert_eq!(seen["uri"], seen_path, "{path}");
        assert_eq!(seen["headers"]["dapr-caller-app-id"], "gateway", "{path}");
    }
    let seen: Value = shop
        .client()
        .post(shop.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"email":"ada@example.com"}"#)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], r#"{"email":"ada@example.com"}"#);
    assert_eq!(seen["headers"]["content-type"], "application/json");
    assert_eq!(seen["headers"]["content-length"], "27");
    for internal in [
        "/api/auth/metrics",
        "/api/auth/events/user-registered",
        "/api/auth/%6detrics",
    ] {
        problem(shop.get(internal).await, 404).await;
    }
}

#[tokio::test]
async fn a_verified_callers_identity_reaches_the_app_and_spoofed_headers_do_not() {
    let key = SigningKey::a();
    let auth = FakeAuth::publishing(&[&key]);
    let shop = shop()
        .auth(&auth)
        .app("orders", echo_app("orders"))
        .start()
        .await;
    let token = key.token_with("customer", |claims| {
        claims["sub"] = "8d9b4f3e-3f5c-4d6c-9d7e-1f2a3b4c5d6e".into();
    });
    let spoofing = |request: reqwest::RequestBuilder| {
        request
            .header("x-shop-user-role", "admin")
            .header("x-shop-user-id", "00000000-0000-0000-0000-000000000000")
            .header("x-shop-user-email", "root@example.com")
            .header("dapr-caller-app-id", "auth")
            .header("dapr-app-id", "auth")
            .header("dapr-anything", "no")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-custom", "kept")
    };
    let seen: Value = spoofing(shop.client().get(shop.url("/api/orders")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let headers = &seen["headers"];
    assert_eq!(
        seen["app"], "orders",
        "dapr-app-id did not redirect the call"
    );
    assert_eq!(
        headers["x-shop-user-id"],
        "8d9b4f3e-3f5c-4d6c-9d7e-1f2a3b4c5d6e"
    );
    assert_eq!(headers["x-shop-user-email"], "customer@example.com");
    assert_eq!(headers["x-shop-user-role"], "customer");
    assert_eq!(headers["dapr-caller-app-id"], "gateway");
    assert_eq!(headers["x-custom"], "kept");
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(headers.get("dapr-anything").is_none(), "{headers}");
    let forwarded_for = headers["x-forwarded-for"].as_str().expect("set");
    assert!(forwarded_for.starts_with("127.0.0.1"), "{forwarded_for}");
    assert!(!forwarded_for.contains("203.0.113.9"), "{forwarded_for}");

    let anonymous: Value = spoofing(shop.client().get(shop.url("/api/orders")))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let headers = &anonymous["headers"];
    for spoofed in [
        "x-shop-user-id",
        "x-shop-user-email",
        "x-shop-user-role",
        "dapr-anything",
    ] {
        assert!(
            headers.get(spoofed).is_none(),
            "{spoofed} was dropped: {headers}"
        );
    }
}

#[tokio::test]
async fn app_answers_come_back_unchanged() {
    let app = Router::new()
        .route(
            "/orders/teapot",
            get(|| async {
                (
                    StatusCode::IM_A_TEAPOT,
                    [("x-reason", "tea")],
                    "short and stout",
                )
            }),
        )
        .route(
            "/orders/moved",
            get(|| async { (StatusCode::FOUND, [("location", "/elsewhere")]) }),
        )
        .route(
            "/orders/broken",
            get(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(
                        serde_json::json!({ "errorCode": "MINE", "message": "the app's own" }),
                    ),
                )
            }),
        );
    let shop = shop().app("orders", app).start().await;
    let response = shop.get("/api/orders/teapot").await;
    assert_eq!(response.status(), 418);
    assert_eq!(response.headers()["x-reason"], "tea");
    assert_eq!(response.text().await.expect("body"), "short and stout");
    let response = shop.get("/api/orders/moved").await;
    assert_eq!(response.status(), 302, "redirects go back to the client");
    assert_eq!(response.headers()["location"], "/elsewhere");
    let response = shop.get("/api/orders/broken").await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["message"], "the app's own");
}

#[tokio::test]
async fn an_app_that_is_not_running_is_a_bad_gateway_problem() {
    let shop = shop().app("inventory", echo_app("inventory")).start().await;
    let problem = problem(shop.get("/api/orders/1").await, 502).await;
    assert_eq!(problem["detail"], "the orders service could not be reached");
    assert_eq!(shop.get("/api/products").await.status(), 200);
}

#[tokio::test]
async fn the_request_id_is_passed_to_the_app_and_returned() {
    let shop = shop().app("orders", echo_app("orders")).start().await;
    let response = shop
        .client()
        .get(shop.url("/api/orders"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["headers"]["x-request-id"], "req-123");

    let response = shop.get("/api/orders").await;
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["headers"]["x-request-id"], generated.as_str());
}
