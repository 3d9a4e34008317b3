//! Registration, login and the current user.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use kit::extract::{AuthUser, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Email, Name, Password, StoredUser, UserId};
use crate::error::ApiError;
use crate::startup::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/me", get(me))
}

/// `POST /register`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterRequest {
    /// Email address (case is ignored).
    email: String,
    /// At least 8 characters.
    password: String,
    /// Display name.
    name: String,
}

/// `POST /login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    email: String,
    password: String,
}

/// A user, as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserView {
    id: Uuid,
    email: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    role: Option<Role>,
}

/// A bearer token.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenView {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
}

fn invalid(field: &'static str) -> impl FnOnce(String) -> ApiError {
    move |message| ApiError::Invalid { field, message }
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/register",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = UserView, description = "Registered"),
        (status = 409, description = "The email is already registered"),
        (status = 422, description = "A field is not valid"),
    )
)]
pub(super) async fn register(
    State(state): State<AppState>,
    kit::extract::Json(request): kit::extract::Json<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let email = Email::parse(&request.email).map_err(invalid("email"))?;
    let name = Name::parse(&request.name).map_err(invalid("name"))?;
    let password = Password::new(request.password).map_err(invalid("password"))?;
    let user = StoredUser {
        id: UserId::generate(),
        email,
        name,
        password_hash: hash(password).await?,
        role: Role::Customer,
        created_at: Utc::now(),
    };
    state.users.create(&user).await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((
        StatusCode::CREATED,
        Json(UserView {
            id: user.id.as_uuid(),
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            role: None,
        }),
    ))
}

/// Argon2 is slow on purpose: off the async workers.
async fn hash(password: Password) -> Result<crate::domain::PasswordHash, ApiError> {
    tokio::task::spawn_blocking(move || password.hash())
        .await
        .map_err(|e| anyhow::anyhow!("hashing task failed: {e}"))?
        .map_err(ApiError::from)
}

/// Trades an email and password for a token.
#[utoipa::path(
    post,
    path = "/login",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenView, description = "Signed in"),
        (status = 401, description = "Wrong email or password"),
        (status = 429, description = "Too many failed logins"),
    )
)]
pub(super) async fn login(
    State(state): State<AppState>,
    kit::extract::Json(request): kit::extract::Json<LoginRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let signer = state.signer()?;
    // An address that cannot exist fails like a wrong password: no hints either way.
    let email = Email::parse(&request.email).map_err(|_| ApiError::BadCredentials)?;
    let settings = &state.settings;
    if state.users.failed_logins(&email).await? >= settings.max_failed_logins {
        return Err(ApiError::TooManyAttempts);
    }
    let user = state.users.by_email(&email).await?;
    let password = Password::attempt(request.password);
    let dummy = state.dummy_hash.clone();
    let verified = {
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        tokio::task::spawn_blocking(move || match hash {
            Some(hash) => password.matches(&hash),
            // Same work for unknown users, so timing does not reveal who is registered.
            None => {
                let _ = password.matches(&dummy);
                false
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("verification task failed: {e}"))?
    };
    let Some(user) = user.filter(|_| verified) else {
        let window = Duration::from_secs(settings.failed_login_window_seconds);
        state.users.record_failed_login(&email, window).await?;
        return Err(ApiError::BadCredentials);
    };
    state.users.clear_failed_logins(&email).await?;
    let token = signer.issue(user.id, &user.email, user.role)?;
    Ok(Json(TokenView {
        access_token: token,
        token_type: "Bearer",
        expires_in: signer.ttl_seconds(),
    }))
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/me",
    responses((status = 200, body = UserView), (status = 401, description = "Not signed in"))
)]
pub(super) async fn me(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<UserView>, ApiError> {
    let user = state
        .users
        .by_id(UserId::from(caller.id))
        .await?
        .ok_or(ApiError::UnknownUser)?;
    Ok(Json(UserView {
        id: user.id.as_uuid(),
        email: user.email.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
        role: Some(user.role),
    }))
}
