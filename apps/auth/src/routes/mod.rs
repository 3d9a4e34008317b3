//! The auth API.

mod jwks;
mod users;

use axum::Router;
use utoipa::OpenApi;

use crate::startup::AppState;

/// The OpenAPI description of the auth API (the gateway publishes it under `/api/auth`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Auth",
        description = "Registration, login and the current user."
    ),
    paths(users::register, users::login, users::me, jwks::jwks),
    components(schemas(
        users::RegisterRequest,
        users::LoginRequest,
        users::UserView,
        users::TokenView
    ))
)]
pub struct ApiDoc;

/// Every route of the app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(users::router())
        .merge(jwks::router())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .with_state(state)
}
