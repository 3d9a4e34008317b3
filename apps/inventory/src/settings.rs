//! The inventory app's settings.

use serde::{Deserialize, Serialize};

use kit::settings::{AppSettings, DaprSettings, SettingsError, TelemetrySettings, Validate};

/// Everything the inventory app is configured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener.
    pub app: AppSettings,
    /// Sidecar.
    pub dapr: DaprSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// Components and rules.
    pub inventory: InventorySettings,
}

/// What the inventory app itself needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct InventorySettings {
    /// State store holding products and reservations.
    pub state_store: String,
    /// Pub/sub component for PRODUCT_* events.
    pub pubsub: String,
    /// App ids allowed to reserve, release and commit stock.
    pub reservation_callers: Vec<String>,
    /// Largest page of a product listing.
    pub max_page_size: usize,
}

impl Default for InventorySettings {
    fn default() -> Self {
        Self {
            state_store: "statestore".into(),
            pubsub: "pubsub".into(),
            reservation_callers: vec!["orders".into()],
            max_page_size: 100,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate()?;
        let inventory = &self.inventory;
        if inventory.state_store.trim().is_empty() {
            return Err(SettingsError::new(
                "inventory.state_store",
                "must not be empty",
            ));
        }
        if inventory.pubsub.trim().is_empty() {
            return Err(SettingsError::new("inventory.pubsub", "must not be empty"));
        }
        if !(1..=1000).contains(&inventory.max_page_size) {
            return Err(SettingsError::new(
                "inventory.max_page_size",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}
