//! The inventory API.

mod products;
mod reservations;

use axum::Router;
use utoipa::OpenApi;

use crate::startup::AppState;

/// The OpenAPI description of the inventory API (the gateway publishes the product part under
/// `/api/products`).
#[derive(OpenApi)]
#[openapi(
    info(title = "Inventory", description = "The product catalog and stock."),
    paths(
        products::list,
        products::get_one,
        products::create,
        products::replace,
        products::delete
    ),
    components(schemas(products::ProductInput, products::ProductView, products::PageView))
)]
pub struct ApiDoc;

/// Every route of the app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(products::router())
        .merge(reservations::router())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
}
