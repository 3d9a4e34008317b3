//! The payment provider simulator: a stand-in for a third-party card processor, outside the
//! Dapr mesh (no sidecar; the payments app calls it over plain HTTP). Charges and refunds
//! with an API key and idempotency keys, test card numbers for each outcome, and configurable
//! latency and random failures. Everything is kept in memory, bounded.

pub mod domain;
pub mod error;
pub mod events;
pub mod routes;
pub mod settings;
pub mod simulation;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::App;
