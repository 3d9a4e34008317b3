//! The notifications app: consumes `USER_REGISTERED`, `ORDER_*` and `PAYMENT_*`, and for each
//! event sends the user an email (through the `email` output binding), keeps it in the user's
//! history, and pushes it to the user's open browser sessions as a server-sent event. A
//! redelivered event (same CloudEvent source and id) is not notified twice.

pub mod domain;
pub mod error;
pub mod events;
pub mod hub;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::App;
