//! The sidecar's APIs: HTTP and gRPC front ends over shared implementations.

mod bindings;
mod error;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod internal;
mod metadata;
mod pubsub;
mod secrets;
mod state;

pub use error::ApiError;
pub use metadata::DAPR_RUNTIME_VERSION;
