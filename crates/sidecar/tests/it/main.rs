//! Black-box tests of the sidecar: real sidecars on port 0, talked to over HTTP and gRPC, with
//! the real local PostgreSQL and Redis behind the stores that need them.

mod bindings;
mod component_sets;
mod health_metadata;
mod invoke;
mod pubsub;
mod pubsub_api;
mod pubsub_durability;
mod resources;
mod sdk;
mod secrets;
mod state_api;
mod state_conformance;
mod support;
mod workflow;
