//! The payments app: customers pay their pending orders by card through the payment provider
//! (the paygate simulator, or a real processor with the same API), outside the mesh. Publishes
//! `PAYMENT_SUCCESSFUL` and `PAYMENT_FAILED`; consumes `ORDER_CANCELLED` to refund a charge
//! taken for an order that was cancelled meanwhile.

pub mod domain;
pub mod error;
pub mod events;
pub mod provider;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::App;
