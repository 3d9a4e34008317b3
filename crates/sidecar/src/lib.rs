//! A Dapr-compatible sidecar: the subset of Dapr's HTTP and gRPC APIs the shop uses, driven by
//! the same component YAML as daprd, so apps run unchanged against either.
//!
//! Start one sidecar per app with [`Sidecar::start`]; sidecars that share a [`Topology`] find
//! each other in memory, so a whole system can run in one process (the shop launcher and the
//! tests do this).

mod acl;
pub mod api;
mod app_channel;
pub mod bindings;
pub mod components;
mod invoke;
pub mod metrics;
pub mod options;
pub mod pubsub;
pub mod resiliency;
pub mod resources;
mod runtime;
pub mod secrets;
pub mod state;
mod subscriber;
pub mod testing;
mod topology;
pub mod trace;
mod workflow;

pub use options::{AppHealthOptions, SidecarOptions};
pub use runtime::{BoundSidecar, Ports, Sidecar};
pub use topology::Topology;
