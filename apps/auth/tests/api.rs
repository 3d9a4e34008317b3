//! The auth app behind a real local sidecar, on each state store the project ships: called
//! through a `gateway` sidecar as in production, its events seen by an observer app.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kit::testing::{Caller, Events, Stack, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop_auth::{App, Settings};

/// An Ed25519 key for tests only.
const SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
const ADMIN_EMAIL: &str = "boss@shop.test";
const ADMIN_PASSWORD: &str = "correct horse battery";

struct Auth {
    stack: Stack,
    gateway: Caller,
    events: Events,
    /// The app itself, without a sidecar in between.
    direct: String,
}

impl Auth {
    async fn start(store: Store) -> Self {
        let mut stack = Stack::new(
            store,
            &[
                ("jwt-signing-key", SIGNING_KEY),
                ("admin-email", ADMIN_EMAIL),
                ("admin-password", ADMIN_PASSWORD),
            ],
        )
        .await
        .unwrap();
        let events = stack.observe(&["users"]).await.unwrap();
        let (bound, dapr) = stack.bind("auth").await.unwrap();
        let settings = Settings {
            dapr,
            ..Settings::default()
        };
        let app = App::build(settings).await.unwrap();
        let direct = stack.run(bound, Box::new(app)).await.unwrap();
        let gateway = stack.caller("gateway").await.unwrap();
        Self {
            stack,
            gateway,
            events,
            direct,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.gateway.invoke(method, "auth", path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    async fn register(&self, email: &str, password: &str, name: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/register",
            Some(json!({"email": email, "password": password, "name": name})),
        )
        .await
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/login",
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    /// The claims of `token`, checked against the published JWKS as the gateway checks them.
    async fn verify(&self, token: &str) -> Value {
        let (status, jwks) = self.call(Method::GET, "/.well-known/jwks.json", None).await;
        assert_eq!(status, StatusCode::OK);
        let jwks: JwkSet = serde_json::from_value(jwks).unwrap();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).expect("the token's key is published");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["shop-auth"]);
        validation.set_audience(&["shop"]);
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims
    }

    async fn stop(self) {
        self.stack.shutdown().await.unwrap();
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let text = response.text().await.unwrap();
    if !status.is_success() {
        assert!(problem, "errors are problem+json: {status} {text}");
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The field a 422 problem names.
fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_normalises_the_email_publishes_user_registered_and_refuses_a_second_one() {
    let auth = Auth::start(Store::Sqlite).await;
    let address = email("ada");
    let (status, user) = auth
        .register(
            &format!("  {}  ", address.to_uppercase()),
            "s3cret-pass",
            "Ada Lovelace",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["email"], address);
    assert_eq!(user["name"], "Ada Lovelace");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    let id = user["id"].as_str().unwrap().to_owned();

    let event = auth
        .events
        .wait_for("shop.user.registered.v1", Duration::from_secs(10), |data| {
            data["user_id"] == id.as_str()
        })
        .await
        .unwrap();
    assert_eq!(event["data"]["email"], address);
    assert_eq!(event["source"], "auth");
    assert_eq!(event["topic"], "users");

    let (status, problem) = auth.register(&address, "another-pass", "Ada Again").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(field(&problem), "email");
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_create_one_user_on_every_store() {
    for store in Store::ALL {
        let auth = Auth::start(store).await;
        let address = email("race");
        let attempts = (0..8).map(|i| {
            let auth = &auth;
            let address = address.clone();
            async move {
                auth.register(&address, "s3cret-pass", &format!("Racer {i}"))
                    .await
                    .0
            }
        });
        let statuses = futures::future::join_all(attempts).await;
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let taken = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((created, taken), (1, 7), "{store:?}: {statuses:?}");
        auth.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_name_the_field_and_store_nothing() {
    let auth = Auth::start(Store::Sqlite).await;
    let address = email("careful");
    for (body, expected) in [
        (
            json!({"email": "not-an-email", "password": "s3cret-pass", "name": "A"}),
            "email",
        ),
        (
            json!({"email": address, "password": "short", "name": "A"}),
            "password",
        ),
        (
            json!({"email": address, "password": "s3cret-pass", "name": "  "}),
            "name",
        ),
        (json!({"email": address, "password": "s3cret-pass"}), "name"),
        (
            json!({"email": address, "password": 12345678, "name": "A"}),
            "password",
        ),
        (
            json!({"email": address, "password": "s3cret-pass", "name": "A", "role": "admin"}),
            "role",
        ),
    ] {
        let (status, problem) = auth
            .call(Method::POST, "/register", Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(field(&problem), expected, "{body}: {problem}");
    }
    let response = auth
        .gateway
        .invoke(Method::POST, "auth", "/register")
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    let (status, _) = read(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // None of them was stored: the address is still free.
    let (status, _) = auth.register(&address, "s3cret-pass", "Careful").await;
    assert_eq!(status, StatusCode::CREATED);
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_issues_a_token_the_jwks_verifies_and_me_names_the_user() {
    let auth = Auth::start(Store::Sqlite).await;
    let address = email("grace");
    let (_, user) = auth.register(&address, "s3cret-pass", "Grace").await;
    let (status, token) = auth.login(&address.to_uppercase(), "s3cret-pass").await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3600);
    let access = token["access_token"].as_str().unwrap();

    let claims = auth.verify(access).await;
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["email"], address);
    assert_eq!(claims["role"], "customer");

    // The gateway passes the verified identity on in headers.
    let response = auth
        .gateway
        .invoke(Method::GET, "auth", "/me")
        .header("x-shop-user-id", user["id"].as_str().unwrap())
        .header("x-shop-user-email", &address)
        .header("x-shop-user-role", "customer")
        .send()
        .await
        .unwrap();
    let (status, me) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], address);
    assert_eq!(me["role"], "customer");
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_count_only_from_the_gateway() {
    let mut auth = Auth::start(Store::Memory).await;
    let (_, user) = auth.register(&email("eve"), "s3cret-pass", "Eve").await;
    let id = user["id"].as_str().unwrap().to_owned();
    let headers = [
        ("x-shop-user-id", id.as_str()),
        ("x-shop-user-email", "eve@example.com"),
        ("x-shop-user-role", "admin"),
    ];
    // Straight to the app, forging the sidecar's caller header too.
    let mut direct = reqwest::Client::new()
        .get(format!("{}/me", auth.direct))
        .header("dapr-caller-app-id", "gateway");
    for (name, value) in headers {
        direct = direct.header(name, value);
    }
    let (status, _) = read(direct.send().await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "only the sidecar knows the app API token"
    );
    // Through another app's sidecar, the caller header is the truth.
    let intruder = auth.stack.caller("payments").await.unwrap();
    let mut request = intruder.invoke(Method::GET, "auth", "/me");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let (status, problem) = read(request.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, _) = read(
        auth.gateway
            .invoke(Method::GET, "auth", "/me")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no identity, no user");
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_refused_alike_and_then_rate_limited() {
    let auth = Auth::start(Store::Sqlite).await;
    let address = email("mallory");
    auth.register(&address, "s3cret-pass", "Mallory").await;
    let (status, wrong) = auth.login(&address, "not-the-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, unknown) = auth.login(&email("nobody"), "not-the-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong["detail"], unknown["detail"],
        "no hint whether the address exists"
    );
    for _ in 1..5 {
        assert_eq!(
            auth.login(&address, "still-wrong").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, problem) = auth.login(&address, "s3cret-pass").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_is_seeded_from_the_secret_store() {
    let auth = Auth::start(Store::Sqlite).await;
    let (status, token) = auth.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let claims = auth.verify(token["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["role"], "admin");
    let (status, _) = auth.register(ADMIN_EMAIL, "s3cret-pass", "Impostor").await;
    assert_eq!(status, StatusCode::CONFLICT);
    auth.stop().await;
}
