//! The orders API (reached through the gateway under `/api/orders`) and the event deliveries
//! from the sidecar.

mod deliveries;
mod orders;
mod payable;

use axum::Router;
use utoipa::OpenApi;

use crate::startup::AppState;

/// The OpenAPI description of the orders API (the gateway publishes it under `/api/orders`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orders",
        description = "Place orders, follow them, cancel them while they wait for payment."
    ),
    paths(orders::place, orders::list, orders::get_one, orders::cancel),
    components(schemas(
        orders::PlaceRequest,
        orders::ItemRequest,
        orders::OrderView,
        orders::LineView,
        orders::PageView
    ))
)]
pub struct ApiDoc;

/// Every route of the app.
pub fn router(state: AppState) -> Router {
    let subscriptions = crate::events::subscriptions(&state.settings.pubsub);
    Router::new()
        .merge(orders::router())
        .merge(deliveries::router())
        .merge(payable::router())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
        .merge(kit::events::subscriptions_router(subscriptions))
}
