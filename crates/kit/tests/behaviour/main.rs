//! What `kit` promises every app, tested over the wire and against real local sidecars
//! (`kit::testing`): one module per part of the kit.

mod dapr;
mod events;
mod extract;
mod outbox;
mod problem;
mod server;
mod settings;
mod support;
