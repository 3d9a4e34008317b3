//! Forwarding one client request to its app: headers cleaned and the caller's identity added,
//! the body streamed under the size limit, the answer streamed back.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures::StreamExt as _;
use kit::extract::AuthUser;

use crate::domain::forwarding;
use crate::domain::{Target, TrustedProxies};
use crate::error::ApiError;
use crate::upstream::{InvokeError, Upstream};

/// Why the gateway stopped reading a request body.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body failed: {0}")]
    Client(axum::Error),
}

/// The client's address: the peer the listener saw, or behind trusted proxies the address
/// they forwarded.
pub(crate) fn client_ip(request: &Request, proxies: &TrustedProxies) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| proxies.client(address.ip(), request.headers()))
}

/// Sends `request` to the app of `target` as `caller` and returns the app's answer.
#[tracing::instrument(
    skip_all,
    fields(app = %target.route.app_id, method = %request.method(), path = %target.path_and_query)
)]
pub(crate) async fn forward(
    upstream: &Upstream,
    proxies: &TrustedProxies,
    body_limit: u64,
    target: &Target<'_>,
    caller: Option<&AuthUser>,
    request: Request,
) -> Result<Response, ApiError> {
    let client_ip = client_ip(&request, proxies);
    let (parts, body) = request.into_parts();
    if content_length(&parts.headers).is_some_and(|length| length > body_limit) {
        return Err(ApiError::BodyTooLarge { limit: body_limit });
    }
    let headers = forwarding::upstream_headers(&parts.headers, caller, client_ip);
    let too_large = Arc::new(AtomicBool::new(false));
    let body = limited(body, body_limit, too_large.clone());
    let app = target.route.app_id.as_str();
    match upstream
        .forward(app, parts.method, &target.path_and_query, headers, body)
        .await
    {
        Ok(response) => Ok(response),
        Err(_) if too_large.load(Ordering::SeqCst) => {
            Err(ApiError::BodyTooLarge { limit: body_limit })
        }
        Err(InvokeError::Unreachable(cause)) => Err(ApiError::SidecarUnavailable(cause)),
        Err(error @ InvokeError::Sidecar { .. }) => Err(ApiError::BadGateway {
            app: app.to_owned(),
            cause: error.to_string(),
        }),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The body as a stream for the sidecar, failing (and flagging `too_large`) past `limit`
/// bytes; `None` when there is no body at all.
fn limited(body: Body, limit: u64, too_large: Arc<AtomicBool>) -> Option<reqwest::Body> {
    if http_body::Body::is_end_stream(&body) {
        return None;
    }
    let mut seen: u64 = 0;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(BodyError::Client)?;
        seen = seen.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if seen > limit {
            too_large.store(true, Ordering::SeqCst);
            return Err(BodyError::TooLarge(limit));
        }
        Ok(chunk)
    });
    Some(reqwest::Body::wrap_stream(stream))
}
