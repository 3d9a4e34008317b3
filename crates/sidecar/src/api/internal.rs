//! The internal endpoint other sidecars invoke this app through (daprd's internal gRPC API,
//! `CallLocalStream`; here plain HTTP, since only these sidecars speak it). It enforces the
//! Configuration's `accessControl` and forwards to the app.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use super::ApiError;
use crate::acl;
use crate::invoke::{SIDECAR_ERROR, strip_response_headers};
use crate::runtime::Runtime;
use crate::trace::RequestTrace;

/// The internal router, served on the internal port and called directly by in-process peers.
pub(crate) fn router(runtime: Arc<Runtime>) -> Router {
    Router::new().fallback(call_local).with_state(runtime)
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A sidecar-made error, marked so the calling sidecar does not take it for the app's answer.
fn sidecar_error(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(SIDECAR_ERROR, HeaderValue::from_static("1"));
    response
}

async fn call_local(State(runtime): State<Arc<Runtime>>, mut request: Request) -> Response {
    let caller = header(&request, "dapr-caller-app-id")
        .unwrap_or("")
        .to_owned();
    let caller_namespace = header(&request, "dapr-caller-namespace")
        .unwrap_or("default")
        .to_owned();
    let method = request.uri().path().trim_start_matches('/').to_owned();
    let verb = request.method().as_str().to_owned();
    runtime.metrics.invocation_received(&caller);

    if let Some(access_control) = &runtime.configuration.access_control
        && !acl::is_allowed(access_control, &caller, &caller_namespace, &verb, &method)
    {
        let trust_domain = &access_control.trust_domain;
        return sidecar_error(ApiError::new(
            StatusCode::FORBIDDEN,
            tonic::Code::PermissionDenied,
            "ERR_PERMISSION_DENIED",
            format!(
                "access control policy has denied access to id: spiffe://{trust_domain}/ns/{caller_namespace}/{caller} operation: {method} verb: {verb}"
            ),
        ));
    }

    // The app sees this sidecar's span as its parent, as with daprd.
    let trace = RequestTrace::from_headers(request.headers(), runtime.sampling_rate());
    trace.inject(request.headers_mut());
    let result = runtime.app.send(request).await;
    trace.finish(
        || format!("CallLocal/{}/{method}", runtime.app_id),
        runtime.configuration.tracing.stdout,
    );
    match result {
        Ok(response) => strip_response_headers(response),
        Err(error) => sidecar_error(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_DIRECT_INVOKE",
            error.to_string(),
        )),
    }
}
