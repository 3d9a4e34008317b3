//! The gateway's rules, free of I/O: the route table, token checks, header forwarding, rate
//! limiting, allowed origins and the merged OpenAPI document.

pub mod clients;
pub mod forwarding;
pub mod openapi;
pub mod origins;
pub mod rate;
pub mod routes;
pub mod tokens;

pub use clients::TrustedProxies;
pub use origins::Origins;
pub use rate::TokenBuckets;
pub use routes::{AccessError, AppId, Route, RouteError, RouteTable, Target};
pub use tokens::{KeySet, TokenError, TokenRules};
