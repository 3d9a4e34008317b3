//! Dapr Workflows: the durabletask protocol (`TaskHubSidecarService`) workers and clients speak,
//! a durable engine behind it on the actor state store, and the `/v1.0/workflows` HTTP API.

mod engine;
pub(crate) mod grpc;
pub(crate) mod http;
mod store;

pub(crate) use engine::{Engine, EngineError, Limits, TraceSettings};
