//! The gateway's settings: where it listens, its sidecar, and the public API it exposes (the
//! route table, token checks, rate limit, body limit, CORS).

use kit::extract::Role;
use kit::settings::{AppSettings, DaprSettings, SettingsError, TelemetrySettings, Validate};
use serde::{Deserialize, Serialize};

use crate::domain::{AppId, Origins, RouteTable, TrustedProxies};

/// Everything the gateway is configured with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener (standalone default: port 8080).
    pub app: AppSettings,
    /// Sidecar.
    pub dapr: DaprSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// The public API.
    pub gateway: GatewaySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            app: AppSettings {
                port: 8080,
                ..AppSettings::default()
            },
            dapr: DaprSettings::default(),
            telemetry: TelemetrySettings::default(),
            gateway: GatewaySettings::default(),
        }
    }
}

/// What the gateway itself needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Public path prefixes and the apps behind them; the longest matching prefix wins.
    pub routes: Vec<RouteSettings>,
    /// App paths never forwarded, whatever the route (each matches itself and what is below
    /// it): the apps' Dapr, event delivery and operations endpoints.
    pub internal_paths: Vec<String>,
    /// The app that serves `GET /.well-known/jwks.json`.
    pub auth_app_id: String,
    /// Accepted token issuer (`iss`).
    pub issuer: String,
    /// Accepted token audience (`aud`).
    pub audience: String,
    /// How long the fetched JWKS is used before it is fetched again, in seconds.
    pub jwks_cache_seconds: u64,
    /// Least time between two JWKS fetches caused by unknown key ids (or failed fetches), in
    /// seconds, so that forged tokens cannot make the gateway hammer the auth app.
    pub jwks_min_refresh_seconds: u64,
    /// How long the aggregated OpenAPI document is reused, in seconds.
    pub openapi_cache_seconds: u64,
    /// Per-client rate limit.
    pub rate_limit: RateLimitSettings,
    /// Proxies in front of the gateway (addresses or networks such as `10.0.0.0/8`) whose
    /// `X-Forwarded-For` names the client; empty = the peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: u64,
    /// Origins browsers may call the API from: `["*"]` for any, else exact origins such as
    /// `https://shop.example`.
    pub cors_origins: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            routes: default_routes(),
            internal_paths: default_internal_paths(),
            auth_app_id: "auth".into(),
            issuer: "shop-auth".into(),
            audience: "shop".into(),
            jwks_cache_seconds: 300,
            jwks_min_refresh_seconds: 5,
            openapi_cache_seconds: 30,
            rate_limit: RateLimitSettings::default(),
            trusted_proxies: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            cors_origins: vec!["*".into()],
        }
    }
}

/// One line of the route table: requests under `prefix` go to `app_id`, with `prefix`
/// replaced by `upstream_prefix`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Public path prefix, e.g. `/api/products` (matches itself and what is below it).
    pub prefix: String,
    /// Dapr app id of the app behind it.
    pub app_id: String,
    /// What replaces `prefix` in the path the app sees: `/products`, or empty to strip it.
    #[serde(default)]
    pub upstream_prefix: String,
    /// Role a token must carry for writes (POST, PUT, PATCH, DELETE); none = the app decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_role: Option<Role>,
}

impl RouteSettings {
    /// A route from `prefix` to `app_id`, where the app sees `upstream_prefix` instead.
    pub fn new(prefix: &str, app_id: &str, upstream_prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            app_id: app_id.to_owned(),
            upstream_prefix: upstream_prefix.to_owned(),
            write_role: None,
        }
    }

    /// Writes need a token with `role`.
    pub fn writes_need(mut self, role: Role) -> Self {
        self.write_role = Some(role);
        self
    }
}

/// The shop's routes.
pub fn default_routes() -> Vec<RouteSettings> {
    vec![
        RouteSettings::new("/api/auth", "auth", ""),
        RouteSettings::new("/api/products", "inventory", "/products").writes_need(Role::Admin),
        RouteSettings::new("/api/orders", "orders", "/orders"),
        RouteSettings::new("/api/payments", "payments", "/payments"),
        RouteSettings::new("/api/notifications", "notifications", "/notifications"),
    ]
}

/// What no client reaches: Dapr's calls into the apps (`/dapr/...`), CloudEvent deliveries
/// (`/events/...`), and health, readiness and metrics.
pub fn default_internal_paths() -> Vec<String> {
    ["/dapr", "/events", "/healthz", "/readyz", "/metrics"]
        .map(String::from)
        .to_vec()
}

/// A token bucket per client IP address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// Sustained requests per second per client.
    pub per_second: f64,
    /// Requests a client may send at once before being slowed down.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 50.0,
            burst: 100,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        let gateway = &self.gateway;
        RouteTable::parse(&gateway.routes, &gateway.internal_paths)?;
        AppId::parse(&gateway.auth_app_id)
            .map_err(|e| SettingsError::new("gateway.auth_app_id", e))?;
        for (key, value) in [
            ("gateway.issuer", &gateway.issuer),
            ("gateway.audience", &gateway.audience),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::new(key, "must not be empty"));
            }
        }
        for (key, value) in [
            ("gateway.jwks_cache_seconds", gateway.jwks_cache_seconds),
            ("gateway.body_limit_bytes", gateway.body_limit_bytes),
        ] {
            if value == 0 {
                return Err(SettingsError::new(key, "must be at least 1"));
            }
        }
        TrustedProxies::parse(&gateway.trusted_proxies)
            .map_err(|e| SettingsError::new("gateway.trusted_proxies", e))?;
        let rate = &gateway.rate_limit;
        if rate.enabled {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
                return Err(SettingsError::new(
                    "gateway.rate_limit.per_second",
                    "must be a number above 0",
                ));
            }
            if rate.burst == 0 {
                return Err(SettingsError::new(
                    "gateway.rate_limit.burst",
                    "must be at least 1",
                ));
            }
        }
        Origins::parse(&gateway.cors_origins)
            .map_err(|e| SettingsError::new("gateway.cors_origins", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        kit::settings::load_from(
            "SHOP_GATEWAY_",
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_defaults_are_valid_and_listen_on_8080() {
        let settings = load(&[]).expect("valid defaults");
        assert_eq!(settings.app.port, 8080);
        assert_eq!(settings.gateway.routes, default_routes());
        assert_eq!(settings.gateway.issuer, "shop-auth");
        assert_eq!(settings.gateway.audience, "shop");
        assert_eq!(settings.gateway.body_limit_bytes, 1024 * 1024);
    }

    #[test]
    fn a_route_table_from_a_file_replaces_the_defaults() {
        let dir = std::env::temp_dir().join(format!("gateway-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("gateway.toml");
        std::fs::write(
            &file,
            "[[gateway.routes]]\nprefix = \"/api/things\"\napp_id = \"things\"\nupstream_prefix = \"/things\"\nwrite_role = \"admin\"\n",
        )
        .expect("write");
        let settings: Settings =
            kit::settings::load_from("SHOP_GATEWAY_", Some(&file), Vec::new()).expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            settings.gateway.routes,
            vec![RouteSettings::new("/api/things", "things", "/things").writes_need(Role::Admin)]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = load(&[("SHOP_GATEWAY_GATEWAY__BODY_LIMIT_BYTES", "0")]).expect_err("zero");
        assert_eq!(error.key, "gateway.body_limit_bytes");
        let error =
            load(&[("SHOP_GATEWAY_GATEWAY__RATE_LIMIT__PER_SECOND", "-1")]).expect_err("negative");
        assert_eq!(error.key, "gateway.rate_limit.per_second");
        let error = load(&[("SHOP_GATEWAY_GATEWAY__AUTH_APP_ID", "a.b")]).expect_err("dots");
        assert_eq!(error.key, "gateway.auth_app_id");
        let error = load(&[("SHOP_GATEWAY_GATEWAY__ISSUER", " ")]).expect_err("empty");
        assert_eq!(error.key, "gateway.issuer");
    }

    #[test]
    fn a_bad_route_names_its_index_and_field() {
        let mut settings = Settings::default();
        settings.gateway.routes[2].prefix = "/api/orders/".into();
        let error = settings.validate().expect_err("trailing slash");
        assert_eq!(error.key, "gateway.routes[2].prefix");
        let mut settings = Settings::default();
        settings.gateway.routes[1].upstream_prefix = "products".into();
        let error = settings.validate().expect_err("relative");
        assert_eq!(error.key, "gateway.routes[1].upstream_prefix");
        let mut settings = Settings::default();
        settings.gateway.routes[3].prefix = "/api/auth".into();
        let error = settings.validate().expect_err("duplicate");
        assert_eq!(error.key, "gateway.routes[3].prefix");
        let mut settings = Settings::default();
        settings.gateway.routes[0].prefix = "/api/docs".into();
        let error = settings.validate().expect_err("the gateway's own path");
        assert_eq!(error.key, "gateway.routes[0].prefix");
        let mut settings = Settings::default();
        settings.gateway.internal_paths.push("metrics".into());
        let error = settings.validate().expect_err("relative");
        assert_eq!(error.key, "gateway.internal_paths[5]");
    }

    #[test]
    fn cors_origins_are_any_or_exact_origins() {
        let mut settings = Settings::default();
        settings.gateway.cors_origins = vec!["https://shop.example".into()];
        settings.validate().expect("an exact origin");
        settings.gateway.cors_origins = vec!["https://shop.example/".into()];
        let error = settings.validate().expect_err("a path");
        assert_eq!(error.key, "gateway.cors_origins");
        settings.gateway.cors_origins = vec!["*".into(), "https://shop.example".into()];
        settings.validate().expect_err("any and a list");
    }
}
