//! Any method under a route prefix: checked, then forwarded to the route's app.

use axum::extract::{Request, State};
use axum::response::Response;

use crate::error::ApiError;
use crate::identity::Caller;
use crate::startup::AppState;

/// Forwards the request to the app its path routes to.
pub(super) async fn forward(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let target = state
        .routes
        .resolve(request.uri().path(), request.uri().query())?;
    target.route.authorize(request.method(), caller.as_ref())?;
    crate::proxy::forward(
        &state.upstream,
        &state.proxies,
        state.body_limit,
        &target,
        caller.as_ref(),
        request,
    )
    .await
}
