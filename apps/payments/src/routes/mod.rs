//! The payments API (reached through the gateway under `/api/payments`) and the event
//! deliveries from the sidecar.

mod deliveries;
mod payments;

use axum::Router;
use utoipa::OpenApi;

use crate::startup::AppState;

/// The OpenAPI description of the payments API (the gateway publishes it under
/// `/api/payments`).
#[derive(OpenApi)]
#[openapi(
    info(title = "Payments", description = "Pay your pending orders by card."),
    paths(payments::pay),
    components(schemas(payments::PayRequest, payments::CardRequest, payments::PaymentView))
)]
pub struct ApiDoc;

/// Every route of the app.
pub fn router(state: AppState) -> Router {
    let subscriptions = crate::events::subscriptions(&state.settings.pubsub);
    Router::new()
        .merge(payments::router())
        .merge(deliveries::router())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
        .merge(kit::events::subscriptions_router(subscriptions))
}
