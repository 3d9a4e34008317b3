//! Test fixtures: a shop in one process (a real sidecar per app on port 0 in one in-process
//! topology, small fake apps behind them, the gateway and its own sidecar in front), fixed
//! Ed25519 test keys, and tokens minted with them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shop_gateway::{App, Settings};
use sidecar::{Sidecar, SidecarOptions, Topology};
use tokio::sync::oneshot;

/// Fixed Ed25519 test keys (never used outside tests).
const KEY_A: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
const KEY_B: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEYqpVmaoBuvPCshZABRQ24BCLWWAA+5qbwtWnAtydgd\n-----END PRIVATE KEY-----\n";

/// A signing key of the fake auth app.
#[derive(Clone)]
pub(crate) struct SigningKey {
    key: EncodingKey,
    kid: String,
    jwk: Jwk,
}

impl SigningKey {
    fn from_pem(pem: &str) -> Self {
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("valid test key");
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).expect("jwk");
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint");
        jwk.common.key_id = Some(kid.clone());
        Self { key, kid, jwk }
    }

    /// The first test key.
    pub(crate) fn a() -> Self {
        Self::from_pem(KEY_A)
    }

    /// The second test key (what the auth app rotates to).
    pub(crate) fn b() -> Self {
        Self::from_pem(KEY_B)
    }

    /// A valid token for a user with `role`.
    pub(crate) fn token(&self, role: &str) -> String {
        self.token_with(role, |_| {})
    }

    /// A token for `role` whose claims `change` alters first.
    pub(crate) fn token_with(&self, role: &str, change: impl FnOnce(&mut Value)) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = json!({
            "sub": uuid::Uuid::new_v4().to_string(),
            "email": format!("{role}@example.com"),
            "role": role,
            "iss": "shop-auth",
            "aud": "shop",
            "iat": now,
            "exp": now + 600,
        });
        change(&mut claims);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("signed")
    }
}

/// Records what an app received; answers with it as JSON.
async fn echo(app: &'static str, request: Request) -> axum::response::Response {
    if request.uri().path().starts_with("/dapr/") {
        // No subscriptions, no actors.
        return StatusCode::NOT_FOUND.into_response();
    }
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in request.headers() {
        let value = value.to_str().unwrap_or("<binary>").to_owned();
        headers
            .entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    axum::Json(json!({
        "app": app,
        "method": method,
        "uri": uri,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// An app that answers every request with what it received, and its own name.
pub(crate) fn echo_app(app: &'static str) -> Router {
    Router::new().fallback(any(move |request: Request| echo(app, request)))
}

/// The fake auth app: its JWKS (which tests can rotate) and OpenAPI document; anything else
/// is echoed.
#[derive(Clone)]
pub(crate) struct FakeAuth {
    keys: Arc<RwLock<Vec<Jwk>>>,
    jwks_calls: Arc<AtomicUsize>,
}

impl FakeAuth {
    /// Publishing `keys`.
    pub(crate) fn publishing(keys: &[&SigningKey]) -> Self {
        let auth = Self {
            keys: Arc::default(),
            jwks_calls: Arc::default(),
        };
        auth.publish(keys);
        auth
    }

    /// Publishes `keys` instead.
    pub(crate) fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.write().expect("not poisoned") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// How often the JWKS was fetched.
    pub(crate) fn jwks_calls(&self) -> usize {
        self.jwks_calls.load(Ordering::SeqCst)
    }

    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route(
                "/.well-known/jwks.json",
                get(|State(auth): State<FakeAuth>| async move {
                    auth.jwks_calls.fetch_add(1, Ordering::SeqCst);
                    let keys = auth.keys.read().expect("not poisoned").clone();
                    axum::Json(JwkSet { keys })
                }),
            )
            .route(
                "/openapi.json",
                get(|| async { axum::Json(auth_openapi()) }),
            )
            .fallback(any(|request: Request| echo("auth", request)))
            .with_state(self.clone())
    }
}

/// An OpenAPI document shaped like the one utoipa writes for the auth app.
pub(crate) fn auth_openapi() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Auth", "description": "Registration, login and the current user.", "version": "0.1.0" },
        "paths": {
            "/login": { "post": {
                "summary": "Logs in.",
                "operationId": "login",
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/LoginRequest" } } } },
                "responses": {
                    "200": { "description": "A token", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/TokenView" } } } },
                    "401": { "description": "Wrong email or password" }
                }
            } },
            "/.well-known/jwks.json": { "get": {
                "summary": "The signing keys.",
                "responses": { "200": { "description": "The public keys" } }
            } }
        },
        "components": { "schemas": {
            "LoginRequest": { "type": "object", "required": ["email", "password"], "properties": {
                "email": { "type": "string" }, "password": { "type": "string" } } },
            "TokenView": { "type": "object", "properties": {
                "access_token": { "type": "string" }, "expires_in": { "type": "integer" } } },
            "Error": { "type": "object", "properties": { "detail": { "type": "string" } } }
        } }
    })
}

/// Builds a shop for one test.
pub(crate) struct ShopBuilder {
    apps: Vec<(&'static str, Router)>,
    settings: Settings,
    gateway_resources: Option<std::path::PathBuf>,
}

/// A shop with no apps yet, and test-friendly settings (port 0, no rate limit).
pub(crate) fn shop() -> ShopBuilder {
    let mut settings = Settings::default();
    settings.app.port = 0;
    settings.gateway.rate_limit.enabled = false;
    ShopBuilder {
        apps: Vec::new(),
        settings,
        gateway_resources: None,
    }
}

impl ShopBuilder {
    /// Runs `router` as app `app_id`, behind a sidecar of its own.
    pub(crate) fn app(mut self, app_id: &'static str, router: Router) -> Self {
        self.apps.push((app_id, router));
        self
    }

    /// Runs the fake auth app.
    pub(crate) fn auth(self, auth: &FakeAuth) -> Self {
        self.app("auth", auth.router())
    }

    /// Changes the gateway's settings.
    pub(crate) fn settings(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(&mut self.settings);
        self
    }

    /// Loads the resources in `dir` (a Resiliency, say) into the gateway's sidecar.
    pub(crate) fn gateway_resources(mut self, dir: &std::path::Path) -> Self {
        self.gateway_resources = Some(dir.to_path_buf());
        self
    }

    /// Starts the apps, their sidecars, the gateway's sidecar and the gateway.
    pub(crate) async fn start(self) -> TestShop {
        let topology = Topology::in_process();
        let mut sidecars = Vec::new();
        for (app_id, router) in self.apps {
            let port = serve(router).await;
            let sidecar = Sidecar::start(SidecarOptions::new(app_id).app_port(port), &topology)
                .await
                .expect("app sidecar starts");
            sidecars.push(sidecar);
        }
        // As the launcher does: bind the gateway's sidecar, tell the gateway its ports, bind the
        // gateway, then start both.
        let mut gateway = SidecarOptions::new("gateway");
        if let Some(dir) = &self.gateway_resources {
            gateway = gateway.resources_path(dir);
        }
        let bound = Sidecar::bind(gateway, &topology)
            .await
            .expect("gateway sidecar binds");
        let mut settings = self.settings;
        settings.dapr.http_port = bound.ports().http;
        settings.dapr.grpc_port = bound.ports().grpc;
        let app = App::build(settings).await.expect("gateway builds");
        let port = app.port();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            app.run_until(async move {
                let _ = stopped.await;
            })
            .await
            .expect("gateway runs");
        });
        let sidecar = bound
            .with_app_port(port)
            .start()
            .await
            .expect("gateway sidecar starts");
        sidecars.push(sidecar);
        TestShop {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            _sidecars: sidecars,
            _stop: stop,
        }
    }
}

/// A running shop; everything stops when it is dropped.
pub(crate) struct TestShop {
    base: String,
    client: reqwest::Client,
    _sidecars: Vec<Sidecar>,
    _stop: oneshot::Sender<()>,
}

impl TestShop {
    /// The gateway's URL for `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client that does not follow redirects.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the gateway answers")
    }

    /// `GET path` with a bearer token.
    pub(crate) async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the gateway answers")
    }
}

/// Serves `router` on a free port; returns the port.
pub(crate) async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("test app serves");
    });
    port
}

/// Asserts that `response` is a problem document with `status`; returns it.
pub(crate) async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("problem json");
    assert_eq!(problem["status"], status);
    problem
}
