//! The per-client rate limit, in front of every API route.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::domain::{TokenBuckets, TrustedProxies};
use crate::error::ApiError;

/// The buckets, and whose forwarded addresses name the client.
#[derive(Clone)]
pub(super) struct Limits {
    pub(super) buckets: Arc<TokenBuckets>,
    pub(super) proxies: Arc<TrustedProxies>,
}

/// Refuses a request with 429 when its client has no token left.
pub(super) async fn rate_limit(
    State(limits): State<Limits>,
    request: Request,
    next: Next,
) -> Response {
    // Without a peer address (in-process tests) every request shares one bucket.
    let client = crate::proxy::client_ip(&request, &limits.proxies)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match limits.buckets.take(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => {
            tracing::debug!(%client, ?retry_after, "rate limited");
            ApiError::TooManyRequests { retry_after }.into_response()
        }
    }
}
