//! The gateway over the wire: real sidecars in-process on port 0, small fake apps behind them.

mod auth;
mod docs;
mod limits;
mod routing;
mod streaming;
mod support;
