//! Service invocation, the caller's side: find the target sidecar, apply the app's resiliency
//! policy, forward the request, and stream the answer back.
//!
//! Bodies stream both ways. A request with a known length is buffered only when a retry policy
//! may need to send it again; a chunked request is never retried (daprd ≥ 1.17.2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::api::ApiError;
use crate::app_channel::{AppChannelError, error_chain};
use crate::resiliency::{self, BreakerRejection};
use crate::resources::TargetPolicies;
use crate::runtime::Runtime;
use crate::topology::Peer;
use crate::trace::RequestTrace;

/// Header a peer sidecar sets on errors it produced itself (as opposed to the app's answers).
pub(crate) const SIDECAR_ERROR: &str = "x-dapr-sidecar-error";
/// The largest request body kept in memory so that it can be retried.
const MAX_REPLAY_BODY: u64 = 4 * 1024 * 1024;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers, including those named by `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// `ERR_DIRECT_INVOKE` with daprd's message shape.
pub(crate) fn invoke_error(
    status: StatusCode,
    target: &str,
    error: impl std::fmt::Display,
) -> ApiError {
    ApiError::new(
        status,
        if status == StatusCode::FORBIDDEN {
            tonic::Code::PermissionDenied
        } else {
            tonic::Code::Internal
        },
        "ERR_DIRECT_INVOKE",
        format!("failed to invoke, id: {target}, err: {error}"),
    )
}

/// Cleans a method the way daprd's `NormalizeMethod` does: no control characters, `?` or `#`;
/// `.` and `..` segments resolved; no leading slash.
pub(crate) fn normalize_method(method: &str) -> Result<String, String> {
    if method
        .chars()
        .any(|c| c.is_control() || c == '?' || c == '#')
    {
        return Err(format!("invalid method: {method:?}"));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in method.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    Ok(segments.join("/"))
}

/// Percent-encodes what may not stand in a URL path: everything but unreserved characters,
/// sub-delimiters, `:`, `@` and `/` (a literal `%` becomes `%25`).
pub(crate) fn escape_path(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// Decodes `%XX` escapes as Go's `URL.Path` holds them; malformed escapes stay as they are.
pub(crate) fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Splits `app` or `app.namespace`.
fn split_target(target: &str) -> Result<(&str, Option<&str>), String> {
    let mut parts = target.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(app), None, _) if !app.is_empty() => Ok((app, None)),
        (Some(app), Some(namespace), None) if !app.is_empty() => Ok((app, Some(namespace))),
        _ => Err(format!("invalid app id {target}")),
    }
}

/// The outcome of one attempt.
enum Attempt {
    /// The app answered (any status).
    Answered(Response<Body>),
    /// The request did not reach the app; `retryable` says whether trying again can help,
    /// `unreachable` that the target's sidecar could not be connected to at all.
    Failed {
        error: ApiError,
        retryable: bool,
        unreachable: bool,
    },
}

impl Attempt {
    fn failed(error: ApiError, retryable: bool) -> Self {
        Self::Failed {
            error,
            retryable,
            unreachable: false,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(self, Self::Answered(r) if (200..400).contains(&r.status().as_u16()))
    }

    fn into_result(self) -> Result<Response<Body>, ApiError> {
        match self {
            Self::Answered(response) => Ok(response),
            Self::Failed { error, .. } => Err(error),
        }
    }
}

impl Runtime {
    /// Invokes `method` on `target` with the caller's request, returning what the target
    /// answered or an `ERR_DIRECT_INVOKE` error.
    pub(crate) async fn invoke(
        self: &Arc<Self>,
        target: &str,
        method: &str,
        request: Request<Body>,
        trace: &RequestTrace,
    ) -> Response<Body> {
        match self.try_invoke(target, method, request, trace).await {
            Ok(response) => response,
            Err(error) => axum::response::IntoResponse::into_response(error),
        }
    }

    async fn try_invoke(
        self: &Arc<Self>,
        target: &str,
        method: &str,
        request: Request<Body>,
        trace: &RequestTrace,
    ) -> Result<Response<Body>, ApiError> {
        let (app_id, _namespace) = split_target(target)
            .map_err(|e| invoke_error(StatusCode::INTERNAL_SERVER_ERROR, target, e))?;
        let method = normalize_method(method)
            .map_err(|e| invoke_error(StatusCode::INTERNAL_SERVER_ERROR, target, e))?;
        let (mut parts, body) = request.into_parts();
        // The method was percent-decoded from the caller's URL; it goes out escaped again, as
        // Go's `URL.EscapedPath` writes it for daprd.
        let path = escape_path(&method);
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("/{path}?{query}"),
            None => format!("/{path}"),
        };
        parts.uri = Uri::try_from(path_and_query)
            .map_err(|e| invoke_error(StatusCode::INTERNAL_SERVER_ERROR, target, e))?;
        strip_hop_by_hop(&mut parts.headers);
        for name in ["dapr-app-id", "host", SIDECAR_ERROR] {
            parts.headers.remove(name);
        }
        trace.inject(&mut parts.headers);

        // Invoking oneself goes straight to the app: no ACL, no caller headers (as daprd).
        if app_id == self.app_id {
            let request = Request::from_parts(parts, body);
            return self
                .app
                .send(request)
                .await
                .map(strip_response_headers)
                .map_err(|e| self_invoke_error(target, &e));
        }

        set_header(&mut parts.headers, "dapr-caller-app-id", &self.app_id);
        set_header(&mut parts.headers, "dapr-callee-app-id", app_id);
        if let Some(namespace) = &self.options.namespace {
            set_header(&mut parts.headers, "dapr-caller-namespace", namespace);
        }
        for (name, value) in &self.forwarded_headers {
            parts.headers.append(name, value.clone());
        }

        let policies = self.policies.app(app_id);
        let streaming = parts.headers.get(header::CONTENT_LENGTH).is_none()
            && http_body::Body::size_hint(&body).exact() != Some(0);
        let length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Keep the body for another attempt when a retry may happen: with a retry policy, or
        // without any policy (daprd's built-in retry of unreachable peers).
        let may_retry = match policies {
            Some(p) => p.retry.as_ref().is_some_and(|r| r.max_retries != Some(0)),
            None => true,
        };
        self.metrics.invocation_sent(app_id, streaming);
        let started = Instant::now();
        let body = if !streaming && may_retry && length.unwrap_or(0) <= MAX_REPLAY_BODY {
            let bytes = body
                .collect()
                .await
                .map_err(|e| {
                    invoke_error(
                        StatusCode::BAD_REQUEST,
                        target,
                        format!("reading the request body: {e}"),
                    )
                })?
                .to_bytes();
            Replay::Bytes(bytes)
        } else {
            Replay::Once(Some(body))
        };
        let response = self
            .invoke_with_policy(app_id, &method, &parts, body, policies)
            .await;
        if let Ok(response) = &response {
            self.metrics
                .invocation_response(app_id, response.status().as_u16(), started.elapsed());
        }
        response
    }

    async fn invoke_with_policy(
        &self,
        app_id: &str,
        method: &str,
        parts: &http::request::Parts,
        mut body: Replay,
        policies: Option<&TargetPolicies>,
    ) -> Result<Response<Body>, ApiError> {
        let breaker = policies
            .and_then(|p| p.circuit_breaker.as_ref())
            .map(|policy| self.policies.breaker(&format!("{app_id}:{method}"), policy));
        let retry = policies.and_then(|p| p.retry.as_ref());
        let timeout = policies.and_then(|p| p.timeout);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let Some(this_body) = body.take() else {
                unreachable!("a request that cannot be replayed is never retried")
            };
            if let Some(breaker) = &breaker {
                breaker.acquire().map_err(|rejection| {
                    let error = match rejection {
                        BreakerRejection::Open => "circuit breaker is open",
                        BreakerRejection::TooManyRequests => "too many requests",
                    };
                    invoke_error(StatusCode::INTERNAL_SERVER_ERROR, app_id, error)
                })?;
            }
            let request = Request::from_parts(parts.clone(), this_body);
            let outcome = match timeout {
                Some(limit) => tokio::time::timeout(limit, self.send_to_peer(app_id, request))
                    .await
                    .unwrap_or_else(|_| {
                        let error = invoke_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            app_id,
                            "context deadline exceeded",
                        );
                        Attempt::failed(error, true)
                    }),
                None => self.send_to_peer(app_id, request).await,
            };
            if let Some(breaker) = &breaker {
                breaker.record(outcome.succeeded());
            }
            let delay = match retry {
                _ if outcome.succeeded() || !body.is_replayable() => None,
                Some(policy) => {
                    let wanted = match &outcome {
                        Attempt::Answered(response) => {
                            policy.matching.retries_http(response.status().as_u16())
                        }
                        Attempt::Failed { retryable, .. } => *retryable,
                    };
                    let more = policy.max_retries.is_none_or(|max| attempt <= max);
                    (wanted && more).then(|| resiliency::retry_delay(&policy.backoff, attempt))
                }
                // Without a policy daprd still retries a peer it could not connect to.
                None => matches!(
                    outcome,
                    Attempt::Failed {
                        unreachable: true,
                        ..
                    }
                )
                .then_some(BUILT_IN_RETRY_DELAY)
                .filter(|_| attempt <= BUILT_IN_RETRIES),
            };
            match delay {
                None => return outcome.into_result(),
                Some(delay) => {
                    tracing::debug!(app_id, method, attempt, "retrying invocation");
                    drop(outcome);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Sends one attempt to the target's sidecar and classifies the outcome.
    async fn send_to_peer(&self, app_id: &str, request: Request<Body>) -> Attempt {
        let peer = match self.resolve(app_id).await {
            Ok(Some(peer)) => peer,
            Ok(None) => {
                let error = invoke_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    app_id,
                    "no host found with the given ID",
                );
                return Attempt::failed(error, false);
            }
            Err(error) => {
                let error = invoke_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    app_id,
                    format!("{error:#}"),
                );
                return Attempt::failed(error, false);
            }
        };
        let response = match peer {
            Peer::Local(router) => match router.oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            },
            Peer::Remote(address) => {
                let (mut parts, body) = request.into_parts();
                let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                parts.uri = match format!("http://{address}{path}").parse() {
                    Ok(uri) => uri,
                    Err(error) => {
                        let error = invoke_error(StatusCode::INTERNAL_SERVER_ERROR, app_id, error);
                        return Attempt::failed(error, false);
                    }
                };
                match self.client.request(Request::from_parts(parts, body)).await {
                    Ok(response) => response.map(Body::new),
                    Err(error) => {
                        let text = error_chain(&error);
                        return Attempt::Failed {
                            error: invoke_error(StatusCode::INTERNAL_SERVER_ERROR, app_id, text),
                            retryable: true,
                            unreachable: error.is_connect(),
                        };
                    }
                }
            }
        };
        if response.headers().contains_key(SIDECAR_ERROR) {
            return sidecar_error(app_id, response).await;
        }
        Attempt::Answered(strip_response_headers(response))
    }

    async fn resolve(&self, app_id: &str) -> anyhow::Result<Option<Peer>> {
        if let Some(router) = self.topology.find_local(app_id) {
            return Ok(Some(Peer::Local(router)));
        }
        match &self.resolver {
            Some(resolver) => Ok(resolver.resolve(app_id).await?.map(Peer::Remote)),
            None => Ok(None),
        }
    }
}

const BUILT_IN_RETRIES: u32 = 3;
const BUILT_IN_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A request body that can be sent once, or again and again.
enum Replay {
    Once(Option<Body>),
    Bytes(Bytes),
}

impl Replay {
    fn is_replayable(&self) -> bool {
        matches!(self, Self::Bytes(_))
    }

    fn take(&mut self) -> Option<Body> {
        match self {
            Self::Once(body) => body.take(),
            Self::Bytes(bytes) => Some(Body::from(bytes.clone())),
        }
    }
}

/// Turns an error a peer sidecar produced into the caller's `ERR_DIRECT_INVOKE`.
async fn sidecar_error(app_id: &str, response: Response<Body>) -> Attempt {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    if status == StatusCode::FORBIDDEN {
        let message = format!("rpc error: code = PermissionDenied desc = {message}");
        Attempt::failed(invoke_error(StatusCode::FORBIDDEN, app_id, message), false)
    } else {
        let message = format!("rpc error: code = Internal desc = {message}");
        Attempt::failed(
            invoke_error(StatusCode::INTERNAL_SERVER_ERROR, app_id, message),
            true,
        )
    }
}

fn self_invoke_error(target: &str, error: &AppChannelError) -> ApiError {
    let message = match error {
        AppChannelError::NotConfigured => {
            "cannot invoke local endpoint: app channel not initialized".to_owned()
        }
        other => other.to_string(),
    };
    invoke_error(StatusCode::INTERNAL_SERVER_ERROR, target, message)
}

/// The app's response headers minus what describes the app's own connection.
pub(crate) fn strip_response_headers(mut response: Response<Body>) -> Response<Body> {
    strip_hop_by_hop(response.headers_mut());
    response
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The machine's host name (read once at start-up).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `X-Forwarded-For`, `X-Forwarded-Host` and `Forwarded`, as daprd adds them on remote calls.
pub(crate) fn forwarded_headers(address: &std::net::IpAddr) -> Vec<(HeaderName, HeaderValue)> {
    let host = address.to_string();
    let hostname = hostname();
    [
        ("x-forwarded-for", host.clone()),
        ("x-forwarded-host", hostname.clone()),
        ("forwarded", format!("for={host};by={host};host={hostname}")),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        Some((
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).ok()?,
        ))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_normalised_like_daprd() {
        assert_eq!(normalize_method("/orders/42/"), Ok("orders/42".into()));
        assert_eq!(normalize_method("a/./b/../c"), Ok("a/c".into()));
        assert_eq!(
            normalize_method("../../etc/passwd"),
            Ok("etc/passwd".into())
        );
        assert!(normalize_method("a?b").is_err());
        assert!(normalize_method("a\u{1}b").is_err());
    }

    #[test]
    fn decoded_methods_are_escaped_again_for_the_app() {
        assert_eq!(escape_path("products/a b"), "products/a%20b");
        assert_eq!(escape_path("100%/ü"), "100%25/%C3%BC");
        assert_eq!(
            escape_path("a-b_c.d~e/f:g@h!$&'()*+,;="),
            "a-b_c.d~e/f:g@h!$&'()*+,;="
        );
        assert_eq!(percent_decode("a%20b%2fc%zz%"), "a b/c%zz%");
    }

    #[test]
    fn targets_may_carry_a_namespace() {
        assert_eq!(split_target("orders"), Ok(("orders", None)));
        assert_eq!(split_target("orders.shop"), Ok(("orders", Some("shop"))));
        assert!(split_target("a.b.c").is_err());
        assert!(split_target("").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("x-private, keep-alive"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }
}
