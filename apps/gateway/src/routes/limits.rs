//! The per-client rate limit, in front of every API route.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::domain::TokenBuckets;
use crate::error::ApiError;

/// Refuses a request with 429 when its client has no token left.
pub(super) async fn rate_limit(
    State(limiter): State<Arc<TokenBuckets>>,
    request: Request,
    next: Next,
) -> Response {
    // Without a peer address (in-process tests) every request shares one bucket.
    let client = crate::proxy::client_ip(request.extensions())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match limiter.take(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => {
            tracing::debug!(%client, ?retry_after, "rate limited");
            ApiError::TooManyRequests { retry_after }.into_response()
        }
    }
}
