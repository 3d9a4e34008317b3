//! The orders app: customers place, read and cancel orders; each order runs `OrderWorkflow`
//! (a Dapr workflow) that reserves its stock through the inventory app, waits for the payment
//! outcome and confirms the order or gives the stock back. Publishes `ORDER_CREATED`,
//! `ORDER_CONFIRMED` and `ORDER_CANCELLED`; consumes `PAYMENT_SUCCESSFUL` and `PAYMENT_FAILED`.

pub mod commands;
pub mod domain;
pub mod error;
pub mod events;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;
pub mod workflow;

pub use settings::Settings;
pub use startup::App;
