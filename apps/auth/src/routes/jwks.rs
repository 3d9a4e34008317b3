//! `GET /.well-known/jwks.json`: the public keys tokens are signed with.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::jwk::JwkSet;

use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

/// The signing keys (current and previous) as a JSON Web Key Set.
#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "The public keys")))]
pub(super) async fn jwks(State(state): State<AppState>) -> Result<Json<JwkSet>, ApiError> {
    Ok(Json(state.signer()?.jwks().clone()))
}
