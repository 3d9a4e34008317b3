//! The payments app's settings.

use serde::{Deserialize, Serialize};

use kit::settings::{AppSettings, DaprSettings, SettingsError, TelemetrySettings, Validate};

/// Everything the payments app is configured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener.
    pub app: AppSettings,
    /// Sidecar.
    pub dapr: DaprSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// Components, the provider and limits.
    pub payments: PaymentsSettings,
}

/// What the payments app itself needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsSettings {
    /// State store holding the payments.
    pub state_store: String,
    /// Pub/sub component for PAYMENT_* (published) and ORDER_CANCELLED (consumed).
    pub pubsub: String,
    /// Secret store holding the provider's URL and API key.
    pub secret_store: String,
    /// Secret with the provider's base URL (`http://127.0.0.1:5006`).
    pub provider_url_secret: String,
    /// The provider's base URL, when it is not in the secret store (a launcher that starts the
    /// provider on a free port passes it here); takes precedence over the secret.
    pub provider_url: Option<String>,
    /// Secret with the provider's API key.
    pub provider_key_secret: String,
    /// App id of the orders app.
    pub orders_app_id: String,
    /// Timeout of one call to the provider, in seconds.
    pub provider_timeout_seconds: u64,
    /// Attempts of one provider call (the first included); retried only with the same
    /// idempotency key, so the provider never charges twice.
    pub provider_attempts: u32,
    /// Wait before the first retry, in milliseconds (doubled each time).
    pub provider_retry_millis: u64,
    /// Timeout of one call to the orders app, in seconds.
    pub orders_timeout_seconds: u64,
}

impl Default for PaymentsSettings {
    fn default() -> Self {
        Self {
            state_store: "statestore".into(),
            pubsub: "pubsub".into(),
            secret_store: "secretstore".into(),
            provider_url_secret: "paygate-url".into(),
            provider_url: None,
            provider_key_secret: "paygate-api-key".into(),
            orders_app_id: "orders".into(),
            provider_timeout_seconds: 10,
            provider_attempts: 3,
            provider_retry_millis: 200,
            orders_timeout_seconds: 5,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        let payments = &self.payments;
        for (key, value) in [
            ("payments.state_store", &payments.state_store),
            ("payments.pubsub", &payments.pubsub),
            ("payments.secret_store", &payments.secret_store),
            (
                "payments.provider_url_secret",
                &payments.provider_url_secret,
            ),
            (
                "payments.provider_key_secret",
                &payments.provider_key_secret,
            ),
            ("payments.orders_app_id", &payments.orders_app_id),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::new(key, "must not be empty"));
            }
        }
        if let Some(url) = &payments.provider_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(SettingsError::new(
                "payments.provider_url",
                format!("expected an http:// or https:// URL, got {url:?}"),
            ));
        }
        for (key, value, max) in [
            (
                "payments.provider_timeout_seconds",
                payments.provider_timeout_seconds,
                300,
            ),
            (
                "payments.provider_attempts",
                u64::from(payments.provider_attempts),
                20,
            ),
            (
                "payments.provider_retry_millis",
                payments.provider_retry_millis,
                60_000,
            ),
            (
                "payments.orders_timeout_seconds",
                payments.orders_timeout_seconds,
                300,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(SettingsError::new(
                    key,
                    format!("must be between 1 and {max}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let load = |pairs: &[(&str, &str)]| {
            kit::settings::load_from::<Settings>(
                "SHOP_PAYMENTS_",
                None,
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        assert!(load(&[]).is_ok());
        let error = load(&[("SHOP_PAYMENTS_PAYMENTS__PROVIDER_ATTEMPTS", "0")]).expect_err("zero");
        assert_eq!(error.key, "payments.provider_attempts");
        let error = load(&[("SHOP_PAYMENTS_PAYMENTS__ORDERS_APP_ID", "")]).expect_err("empty");
        assert_eq!(error.key, "payments.orders_app_id");
        let error = load(&[("SHOP_PAYMENTS_PAYMENTS__PROVIDER_URL", "localhost:5006")])
            .expect_err("no scheme");
        assert_eq!(error.key, "payments.provider_url");
    }
}
