//! The inventory app: the product catalog (admins change it, everyone reads it) and stock
//! reservations for the orders app. Publishes `PRODUCT_ADDED`, `PRODUCT_UPDATED` and
//! `PRODUCT_DELETED`.

pub mod domain;
pub mod error;
pub mod events;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::App;
