//! The notifications API (the history and the live stream, reached through the gateway under
//! `/api/notifications`) and the event deliveries from the sidecar.

mod deliveries;
mod notifications;

use axum::Router;
use utoipa::OpenApi;

use crate::startup::AppState;

/// The OpenAPI description of the notifications API (the gateway publishes it under
/// `/api/notifications`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Notifications",
        description = "What happened to your account and orders: a history, and a live stream."
    ),
    paths(notifications::list, notifications::stream),
    components(schemas(notifications::NotificationView, notifications::PageView))
)]
pub struct ApiDoc;

/// Every route of the app.
pub fn router(state: AppState) -> Router {
    let subscriptions = crate::events::subscriptions(&state.pubsub);
    Router::new()
        .merge(notifications::router())
        .merge(deliveries::router())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
        .merge(kit::events::subscriptions_router(subscriptions))
}
