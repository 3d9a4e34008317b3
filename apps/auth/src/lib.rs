//! The auth app: users register and log in; tokens are Ed25519-signed JWTs the gateway checks
//! against the published JWKS. Publishes `USER_REGISTERED`.

pub mod domain;
pub mod error;
pub mod events;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::App;
