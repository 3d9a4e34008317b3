//! The auth API's errors, each with its status and problem document.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::Problem;
use kit::dapr::DaprError;

/// What can go wrong in the auth API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is not acceptable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// Someone already registered with this email.
    #[error("the email address is already registered")]
    EmailTaken,
    /// Wrong email or password (never says which).
    #[error("invalid email or password")]
    BadCredentials,
    /// Too many failed logins for this email.
    #[error("too many failed logins")]
    TooManyAttempts,
    /// The user of a valid token does not exist any more.
    #[error("user not found")]
    UnknownUser,
    /// The app is still starting.
    #[error("starting up")]
    NotReady,
    /// The sidecar failed.
    #[error(transparent)]
    Dapr(#[from] DaprError),
    /// Anything else.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::EmailTaken => StatusCode::CONFLICT,
            Self::BadCredentials => StatusCode::UNAUTHORIZED,
            Self::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Self::UnknownUser => StatusCode::NOT_FOUND,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Dapr(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, message } => Problem::validation(*field, message.clone()),
            Self::EmailTaken => {
                Problem::conflict(self.to_string()).field("email", "is already registered")
            }
            Self::BadCredentials => Problem::unauthorized(self.to_string()),
            Self::TooManyAttempts => {
                Problem::too_many_requests("too many failed logins for this email; try again later")
            }
            Self::UnknownUser => Problem::not_found(self.to_string()),
            Self::NotReady => {
                Problem::unavailable("the service is starting; try again in a moment")
            }
            Self::Dapr(error) => {
                tracing::error!(%error, "sidecar call failed");
                Problem::internal()
            }
            Self::Internal(error) => {
                tracing::error!(error = %format!("{error:#}"), "request failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
