//! What every shop app shares, written once: typed settings, telemetry (JSON logs, W3C trace
//! context, OTLP), the HTTP server skeleton (health, readiness, metrics, graceful shutdown),
//! problem+json errors and extractors, the Dapr clients, and CloudEvent handling.

pub mod dapr;
pub mod events;
pub mod extract;
pub mod outbox;
pub mod problem;
pub mod server;
pub mod settings;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use problem::{FieldError, Problem};
