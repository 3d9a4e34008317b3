//! The gateway: the shop's only public entry. Routes `/api/...` to the apps through Dapr service
//! invocation (streaming both ways), checks optional bearer tokens against the auth app's JWKS
//! and passes the caller's identity on, requires an admin for product writes, limits request
//! rates and body sizes, answers CORS, sets request ids, and publishes the merged OpenAPI
//! document of every app with a docs page. Publishes and consumes no events.

mod catalog;
pub mod domain;
pub mod error;
mod identity;
mod proxy;
pub mod routes;
pub mod settings;
pub mod startup;
mod upstream;

pub use identity::Caller;
pub use settings::Settings;
pub use startup::App;
