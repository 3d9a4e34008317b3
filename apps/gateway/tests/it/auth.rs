//! Tokens: optional, but checked when sent; keys from the auth app's JWKS, fetched again when
//! it rotates; product writes need an admin.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{FakeAuth, SigningKey, echo_app, problem, shop};

#[tokio::test]
async fn bad_expired_and_foreign_tokens_are_refused_with_401() {
    let key = SigningKey::a();
    let auth = FakeAuth::publishing(&[&key]);
    let shop = shop()
        .auth(&auth)
        .app("orders", echo_app("orders"))
        .start()
        .await;
    let now = jsonwebtoken::get_current_timestamp();
    let refused = [
        ("garbage", "not.a.jwt".to_owned()),
        ("unknown key", SigningKey::b().token("customer")),
        (
            "expired",
            key.token_with("customer", |c| c["exp"] = json!(now - 3600)),
        ),
        (
            "wrong audience",
            key.token_with("customer", |c| c["aud"] = json!("another-shop")),
        ),
        (
            "wrong issuer",
            key.token_with("customer", |c| c["iss"] = json!("someone")),
        ),
        ("unknown role", key.token("superuser")),
    ];
    for (why, token) in refused {
        let response = shop.get_as("/api/orders", &token).await;
        assert_eq!(response.status(), 401, "{why}");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#,
            "{why}"
        );
        problem(response, 401).await;
    }
    let seen: Value = shop
        .get_as("/api/orders", &key.token("customer"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(seen["headers"]["x-shop-user-role"], "customer");
}

#[tokio::test]
async fn a_token_of_a_rotated_key_is_accepted_once_the_keys_are_fetched_again() {
    let (old, new) = (SigningKey::a(), SigningKey::b());
    let auth = FakeAuth::publishing(&[&old]);
    let shop = shop()
        .auth(&auth)
        .app("orders", echo_app("orders"))
        .settings(|s| s.gateway.jwks_min_refresh_seconds = 0)
        .start()
        .await;
    assert_eq!(
        shop.get_as("/api/orders", &old.token("customer"))
            .await
            .status(),
        200
    );
    assert_eq!(auth.jwks_calls(), 1);
    assert_eq!(
        shop.get_as("/api/orders", &old.token("admin"))
            .await
            .status(),
        200
    );
    assert_eq!(auth.jwks_calls(), 1, "the keys are cached");

    auth.publish(&[&new]);
    assert_eq!(
        shop.get_as("/api/orders", &new.token("customer"))
            .await
            .status(),
        200
    );
    assert_eq!(
        auth.jwks_calls(),
        2,
        "an unknown kid fetched the keys again"
    );
    assert_eq!(
        shop.get_as("/api/orders", &old.token("customer"))
            .await
            .status(),
        401,
        "the retired key is no longer accepted"
    );
}

#[tokio::test]
async fn unknown_kids_fetch_the_keys_at_most_once_per_interval() {
    let key = SigningKey::a();
    let auth = FakeAuth::publishing(&[&key]);
    let shop = shop()
        .auth(&auth)
        .app("orders", echo_app("orders"))
        .settings(|s| s.gateway.jwks_min_refresh_seconds = 1)
        .start()
        .await;
    assert_eq!(
        shop.get_as("/api/orders", &key.token("customer"))
            .await
            .status(),
        200
    );
    let forged = SigningKey::b();
    for _ in 0..5 {
        assert_eq!(
            shop.get_as("/api/orders", &forged.token("admin"))
                .await
                .status(),
            401
        );
    }
    assert_eq!(auth.jwks_calls(), 1, "the keys were fetched just now");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..5 {
        assert_eq!(
            shop.get_as("/api/orders", &forged.token("admin"))
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        auth.jwks_calls(),
        2,
        "one more fetch for a run of unknown kids"
    );
}

#[tokio::test]
async fn a_token_cannot_be_checked_while_the_auth_app_is_away() {
    let shop = shop().app("orders", echo_app("orders")).start().await;
    let problem = problem(
        shop.get_as("/api/orders", &SigningKey::a().token("customer"))
            .await,
        503,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tokens")),
        "{problem}"
    );
    assert_eq!(
        shop.get("/api/orders").await.status(),
        200,
        "anonymous calls go on"
    );
}

#[tokio::test]
async fn product_writes_need_an_admin_token() {
    let key = SigningKey::a();
    let auth = FakeAuth::publishing(&[&key]);
    let shop = shop()
        .auth(&auth)
        .app("inventory", echo_app("inventory"))
        .start()
        .await;
    let write = |method: reqwest::Method, path: &str, token: Option<String>| {
        let mut request = shop
            .client()
            .request(method, shop.url(path))
            .header("content-type", "application/json")
            .body(r#"{"name":"Teapot"}"#);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let anonymous = write(method.clone(), "/api/products/1", None)
            .await
            .expect("answer");
        problem(anonymous, 401).await;
        let customer = write(
            method.clone(),
            "/api/products/1",
            Some(key.token("customer")),
        )
        .await
        .expect("answer");
        let refused = problem(customer, 403).await;
        assert_eq!(refused["detail"], "this needs the admin role");
        let admin = write(method.clone(), "/api/products/1", Some(key.token("admin")))
            .await
            .expect("answer");
        assert_eq!(admin.status(), 200, "{method}");
        let seen: Value = admin.json().await.expect("json");
        assert_eq!(seen["method"], method.as_str());
        assert_eq!(seen["headers"]["x-shop-user-role"], "admin");
    }
    let created = write(reqwest::Method::POST, "/api/products", None)
        .await
        .expect("answer");
    problem(created, 401).await;
    assert_eq!(
        shop.get("/api/products").await.status(),
        200,
        "anyone may read"
    );
    assert_eq!(
        shop.get_as("/api/products/1", &key.token("customer"))
            .await
            .status(),
        200
    );
}
