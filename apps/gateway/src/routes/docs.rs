//! `GET /api/openapi.json`, the shop's aggregated OpenAPI document, and `GET /api/docs`, a
//! self-contained page that renders it (no external scripts: it works offline).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use crate::identity::Caller;
use crate::startup::AppState;

/// The docs page: HTML, CSS and script in one file.
const PAGE: &str = include_str!("../../static/docs.html");

/// The page may load nothing from elsewhere and talk only to the gateway.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The merged OpenAPI document of every app that answers.
pub(super) async fn openapi(State(state): State<AppState>, _caller: Caller) -> Response {
    let document = state.catalog.document().await;
    Json(document.as_ref()).into_response()
}

/// The API reference page.
pub(super) async fn page(_caller: Caller) -> Response {
    let mut response = Html(PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    response
}
