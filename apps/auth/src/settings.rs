//! The auth app's settings.

use serde::{Deserialize, Serialize};

use kit::settings::{AppSettings, DaprSettings, SettingsError, TelemetrySettings, Validate};

/// Everything the auth app is configured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener.
    pub app: AppSettings,
    /// Sidecar.
    pub dapr: DaprSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// Component names and token policy.
    pub auth: AuthSettings,
}

/// What the auth app itself needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// State store holding users.
    pub state_store: String,
    /// Pub/sub component for USER_REGISTERED.
    pub pubsub: String,
    /// Secret store with `jwt-signing-key`, `admin-email` and `admin-password`.
    pub secret_store: String,
    /// Token lifetime in seconds.
    pub token_ttl_seconds: u64,
    /// Token issuer (`iss`).
    pub issuer: String,
    /// Token audience (`aud`).
    pub audience: String,
    /// Failed logins per email before logins are refused for a while.
    pub max_failed_logins: u32,
    /// How long failed logins count, in seconds.
    pub failed_login_window_seconds: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            state_store: "statestore".into(),
            pubsub: "pubsub".into(),
            secret_store: "secretstore".into(),
            token_ttl_seconds: 3600,
            issuer: "shop-auth".into(),
            audience: "shop".into(),
            max_failed_logins: 5,
            failed_login_window_seconds: 900,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        let auth = &self.auth;
        for (key, value) in [
            ("auth.state_store", &auth.state_store),
            ("auth.pubsub", &auth.pubsub),
            ("auth.secret_store", &auth.secret_store),
            ("auth.issuer", &auth.issuer),
            ("auth.audience", &auth.audience),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::new(key, "must not be empty"));
            }
        }
        if !(60..=86_400).contains(&auth.token_ttl_seconds) {
            return Err(SettingsError::new(
                "auth.token_ttl_seconds",
                "must be between 60 and 86400",
            ));
        }
        if auth.max_failed_logins == 0 {
            return Err(SettingsError::new(
                "auth.max_failed_logins",
                "must be at least 1",
            ));
        }
        if auth.failed_login_window_seconds == 0 {
            return Err(SettingsError::new(
                "auth.failed_login_window_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
