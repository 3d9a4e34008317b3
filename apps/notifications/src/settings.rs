//! The notifications app's settings.

use serde::{Deserialize, Serialize};

use kit::settings::{AppSettings, DaprSettings, SettingsError, TelemetrySettings, Validate};

/// Everything the notifications app is configured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener.
    pub app: AppSettings,
    /// Sidecar.
    pub dapr: DaprSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// Components and limits.
    pub notifications: NotificationsSettings,
}

/// What the notifications app itself needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSettings {
    /// State store holding contacts, histories and the events already handled.
    pub state_store: String,
    /// Pub/sub component the events come from.
    pub pubsub: String,
    /// Output binding that sends email (`bindings.smtp`, or `bindings.localstorage` locally).
    pub email_binding: String,
    /// Notifications kept per user; older ones are dropped from the history.
    pub history_limit: usize,
    /// Largest page of a history listing.
    pub max_page_size: usize,
    /// How often an idle stream sends a keep-alive comment, in seconds.
    pub keep_alive_seconds: u64,
    /// How often an open stream also reads the history, to pick up notifications handled by
    /// another replica, in seconds.
    pub stream_poll_seconds: u64,
    /// How long a handled event's id is remembered to drop redeliveries, in seconds.
    pub dedupe_ttl_seconds: u64,
}

impl Default for NotificationsSettings {
    fn default() -> Self {
        Self {
            state_store: "statestore".into(),
            pubsub: "pubsub".into(),
            email_binding: "email".into(),
            history_limit: 100,
            max_page_size: 100,
            keep_alive_seconds: 15,
            stream_poll_seconds: 5,
            dedupe_ttl_seconds: 7 * 24 * 3600,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        let notifications = &self.notifications;
        for (key, value) in [
            ("notifications.state_store", &notifications.state_store),
            ("notifications.pubsub", &notifications.pubsub),
            ("notifications.email_binding", &notifications.email_binding),
        ] {
            if value.trim().is_empty() {
                return Err(SettingsError::new(key, "must not be empty"));
            }
        }
        for (key, value, max) in [
            (
                "notifications.history_limit",
                notifications.history_limit,
                1000,
            ),
            (
                "notifications.max_page_size",
                notifications.max_page_size,
                1000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(SettingsError::new(
                    key,
                    format!("must be between 1 and {max}"),
                ));
            }
        }
        for (key, value) in [
            (
                "notifications.keep_alive_seconds",
                notifications.keep_alive_seconds,
            ),
            (
                "notifications.stream_poll_seconds",
                notifications.stream_poll_seconds,
            ),
            (
                "notifications.dedupe_ttl_seconds",
                notifications.dedupe_ttl_seconds,
            ),
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
            "SHOP_NOTIFICATIONS_",
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn the_defaults_are_valid_and_name_the_component_sets_binding() {
        let settings = load(&[]).expect("valid");
        assert_eq!(settings.notifications.email_binding, "email");
        assert_eq!(settings.notifications.state_store, "statestore");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (variable, value, key) in [
            (
                "SHOP_NOTIFICATIONS_NOTIFICATIONS__HISTORY_LIMIT",
                "0",
                "notifications.history_limit",
            ),
            (
                "SHOP_NOTIFICATIONS_NOTIFICATIONS__EMAIL_BINDING",
                " ",
                "notifications.email_binding",
            ),
            (
                "SHOP_NOTIFICATIONS_NOTIFICATIONS__KEEP_ALIVE_SECONDS",
                "0",
                "notifications.keep_alive_seconds",
            ),
        ] {
            let error = load(&[(variable, value)]).expect_err(variable);
            assert_eq!(error.key, key);
        }
    }
}
