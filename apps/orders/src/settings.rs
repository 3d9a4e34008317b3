//! The orders app's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use kit::settings::{AppSettings, DaprSettings, SettingsError, TelemetrySettings, Validate};

/// Everything the orders app is configured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener.
    pub app: AppSettings,
    /// Sidecar.
    pub dapr: DaprSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// Components, timeouts and limits.
    pub orders: OrdersSettings,
}

/// What the orders app itself needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersSettings {
    /// State store holding the orders' views, each user's order list and idempotency keys.
    pub state_store: String,
    /// Pub/sub component for ORDER_* (published) and PAYMENT_* (consumed) events.
    pub pubsub: String,
    /// App id of the inventory app, which holds the stock reservations.
    pub inventory_app_id: String,
    /// How long an order waits for its payment before it is cancelled, in seconds.
    pub payment_timeout_seconds: u64,
    /// How long `POST /orders` waits for the stock check before answering 503 (a retry with
    /// the same `Idempotency-Key` picks the order up), in seconds.
    pub placement_wait_seconds: u64,
    /// How often a waiting request reads the order again, in milliseconds (a change made on
    /// this replica wakes it at once).
    pub poll_millis: u64,
    /// Most lines in one order.
    pub max_lines: usize,
    /// Largest page of a listing.
    pub max_page_size: usize,
    /// Attempts of a workflow activity (the first included) before the workflow gives up.
    pub activity_max_attempts: u32,
    /// Wait before the first retry of an activity, in milliseconds; doubled on each retry.
    pub activity_first_retry_millis: u64,
    /// Longest wait between two attempts of an activity, in seconds.
    pub activity_max_retry_seconds: u64,
    /// Timeout of one call to the inventory app, in seconds.
    pub inventory_timeout_seconds: u64,
    /// App ids allowed to read any order's payable view (`GET /payable-orders/{id}`).
    pub payment_callers: Vec<String>,
}

impl Default for OrdersSettings {
    fn default() -> Self {
        Self {
            state_store: "statestore".into(),
            pubsub: "pubsub".into(),
            inventory_app_id: "inventory".into(),
            payment_timeout_seconds: 15 * 60,
            placement_wait_seconds: 10,
            poll_millis: 100,
            max_lines: 50,
            max_page_size: 100,
            activity_max_attempts: 10,
            activity_first_retry_millis: 500,
            activity_max_retry_seconds: 60,
            inventory_timeout_seconds: 10,
            payment_callers: vec!["payments".into()],
        }
    }
}

impl OrdersSettings {
    /// How long an order waits for its payment.
    pub fn payment_timeout(&self) -> Duration {
        Duration::from_secs(self.payment_timeout_seconds)
    }

    /// The retry policy of every workflow activity: exponential, capped.
    pub fn retry_policy(&self) -> dapr::workflow::RetryPolicy {
        dapr::workflow::RetryPolicy::new(
            self.activity_max_attempts,
            Duration::from_millis(self.activity_first_retry_millis),
        )
        .with_backoff_coefficient(2.0)
        .with_max_retry_interval(Duration::from_secs(self.activity_max_retry_seconds))
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        let orders = &self.orders;
        for (key, value) in [
            ("orders.state_store", &orders.state_store),
            ("orders.pubsub", &orders.pubsub),
            ("orders.inventory_app_id", &orders.inventory_app_id),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::new(key, "must not be empty"));
            }
        }
        for (key, value, min, max) in [
            (
                "orders.payment_timeout_seconds",
                orders.payment_timeout_seconds,
                1,
                30 * 24 * 3600,
            ),
            (
                "orders.placement_wait_seconds",
                orders.placement_wait_seconds,
                1,
                300,
            ),
            ("orders.poll_millis", orders.poll_millis, 1, 60_000),
            ("orders.max_lines", orders.max_lines as u64, 1, 1000),
            ("orders.max_page_size", orders.max_page_size as u64, 1, 1000),
            (
                "orders.activity_max_attempts",
                u64::from(orders.activity_max_attempts),
                1,
                1000,
            ),
            (
                "orders.activity_first_retry_millis",
                orders.activity_first_retry_millis,
                1,
                3_600_000,
            ),
            (
                "orders.activity_max_retry_seconds",
                orders.activity_max_retry_seconds,
                1,
                86_400,
            ),
            (
                "orders.inventory_timeout_seconds",
                orders.inventory_timeout_seconds,
                1,
                300,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(SettingsError::new(
                    key,
                    format!("must be between {min} and {max}"),
                ));
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
            "SHOP_ORDERS_",
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_payment_timeout_defaults_to_fifteen_minutes_and_is_configurable() {
        let settings = load(&[]).expect("valid");
        assert_eq!(settings.orders.payment_timeout(), Duration::from_secs(900));
        let settings =
            load(&[("SHOP_ORDERS_ORDERS__PAYMENT_TIMEOUT_SECONDS", "5")]).expect("valid");
        assert_eq!(settings.orders.payment_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (variable, value, key) in [
            (
                "SHOP_ORDERS_ORDERS__PAYMENT_TIMEOUT_SECONDS",
                "0",
                "orders.payment_timeout_seconds",
            ),
            (
                "SHOP_ORDERS_ORDERS__INVENTORY_APP_ID",
                " ",
                "orders.inventory_app_id",
            ),
            (
                "SHOP_ORDERS_ORDERS__ACTIVITY_MAX_ATTEMPTS",
                "0",
                "orders.activity_max_attempts",
            ),
        ] {
            let error = load(&[(variable, value)]).expect_err(variable);
            assert_eq!(error.key, key);
        }
    }
}
