//! The simulator's settings: where it listens, its API key, how slow and unreliable it is, and
//! how much it remembers.

use kit::settings::{AppSettings, SettingsError, TelemetrySettings, Validate};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// Everything the simulator is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener (standalone default: port 5006).
    pub app: AppSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// The simulated provider.
    pub paygate: PaygateSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            app: AppSettings {
                port: 5006,
                ..AppSettings::default()
            },
            telemetry: TelemetrySettings::default(),
            paygate: PaygateSettings::default(),
        }
    }
}

/// What the simulated provider itself needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaygateSettings {
    /// The API key clients send as `Authorization: Bearer <key>` (`SHOP_PAYGATE_PAYGATE__API_KEY`).
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// Time every API call takes at least, in milliseconds.
    pub latency_ms: u64,
    /// Up to this many milliseconds more, at random.
    pub jitter_ms: u64,
    /// Share of charge and refund requests that fail with a 500 processing error, 0 to 1.
    pub failure_rate: f64,
    /// Charges remembered; the oldest are forgotten past this.
    pub max_charges: usize,
    /// Idempotency keys remembered; the oldest are forgotten past this.
    pub max_idempotency_keys: usize,
}

impl Default for PaygateSettings {
    fn default() -> Self {
        Self {
            api_key: None,
            latency_ms: 50,
            jitter_ms: 50,
            failure_rate: 0.0,
            max_charges: 100_000,
            max_idempotency_keys: 100_000,
        }
    }
}

/// Shortest API key accepted.
const MIN_API_KEY: usize = 16;
/// Longest latency accepted, so that a typo cannot hang every client.
const MAX_LATENCY_MS: u64 = 60_000;

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        let paygate = &self.paygate;
        match &paygate.api_key {
            None => {
                return Err(SettingsError::new(
                    "paygate.api_key",
                    "is required (SHOP_PAYGATE_PAYGATE__API_KEY)",
                ));
            }
            Some(key) if key.expose_secret().trim().chars().count() < MIN_API_KEY => {
                return Err(SettingsError::new(
                    "paygate.api_key",
                    format!("must be at least {MIN_API_KEY} characters"),
                ));
            }
            Some(_) => {}
        }
        for (key, value) in [
            ("paygate.latency_ms", paygate.latency_ms),
            ("paygate.jitter_ms", paygate.jitter_ms),
        ] {
            if value > MAX_LATENCY_MS {
                return Err(SettingsError::new(
                    key,
                    format!("must be at most {MAX_LATENCY_MS}"),
                ));
            }
        }
        if !(paygate.failure_rate.is_finite() && (0.0..=1.0).contains(&paygate.failure_rate)) {
            return Err(SettingsError::new(
                "paygate.failure_rate",
                "must be between 0 and 1",
            ));
        }
        for (key, value) in [
            ("paygate.max_charges", paygate.max_charges),
            ("paygate.max_idempotency_keys", paygate.max_idempotency_keys),
        ] {
            if value == 0 {
                return Err(SettingsError::new(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        kit::settings::load_from(
            "SHOP_PAYGATE_",
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    const KEY: (&str, &str) = ("SHOP_PAYGATE_PAYGATE__API_KEY", "pg_test_0123456789abcdef");

    #[test]
    fn the_defaults_need_only_an_api_key_and_listen_on_5006() {
        let error = load(&[]).expect_err("no key");
        assert_eq!(error.key, "paygate.api_key");
        let settings = load(&[KEY]).expect("valid");
        assert_eq!(settings.app.port, 5006);
        assert_eq!(
            settings
                .paygate
                .api_key
                .map(|k| k.expose_secret().to_owned()),
            Some(KEY.1.to_owned())
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = load(&[("SHOP_PAYGATE_PAYGATE__API_KEY", "short")]).expect_err("short");
        assert_eq!(error.key, "paygate.api_key");
        for (variable, value, key) in [
            (
                "SHOP_PAYGATE_PAYGATE__FAILURE_RATE",
                "1.5",
                "paygate.failure_rate",
            ),
            (
                "SHOP_PAYGATE_PAYGATE__FAILURE_RATE",
                "NaN",
                "paygate.failure_rate",
            ),
            (
                "SHOP_PAYGATE_PAYGATE__LATENCY_MS",
                "600000",
                "paygate.latency_ms",
            ),
            ("SHOP_PAYGATE_PAYGATE__JITTER_MS", "-1", "paygate.jitter_ms"),
            (
                "SHOP_PAYGATE_PAYGATE__MAX_CHARGES",
                "0",
                "paygate.max_charges",
            ),
        ] {
            let error = load(&[KEY, (variable, value)]).expect_err(variable);
            assert_eq!(error.key, key, "{variable}={value}");
        }
    }
}
