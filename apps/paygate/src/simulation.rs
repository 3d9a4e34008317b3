//! How the simulated provider misbehaves: every call takes a configured time plus random jitter,
//! and a configured share of charges and refunds fails with a processing error.

use std::time::Duration;

use rand::RngExt as _;

use crate::settings::PaygateSettings;

/// The latency and failure rate of the simulated provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conditions {
    latency: Duration,
    jitter_ms: u64,
    failure_rate: f64,
}

impl Conditions {
    /// From the settings.
    pub fn new(settings: &PaygateSettings) -> Self {
        Self {
            latency: Duration::from_millis(settings.latency_ms),
            jitter_ms: settings.jitter_ms,
            failure_rate: settings.failure_rate,
        }
    }

    /// Waits as long as a call to the provider takes.
    pub async fn delay(&self) {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=self.jitter_ms)
        };
        let total = self.latency + Duration::from_millis(jitter);
        if !total.is_zero() {
            tokio::time::sleep(total).await;
        }
    }

    /// Whether this call fails with a processing error.
    pub fn fails(&self) -> bool {
        self.failure_rate > 0.0 && rand::rng().random_bool(self.failure_rate)
    }
}
