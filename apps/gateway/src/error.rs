//! The gateway's own errors, each with its status and problem document. Answers of the apps
//! are passed through unchanged and never become one of these.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kit::Problem;

use crate::domain::{AccessError, RouteError, TokenError};

/// What can go wrong in front of the apps.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route takes the path.
    #[error("no API route matches this path")]
    NoRoute,
    /// The path would leave its app's prefix.
    #[error(transparent)]
    UnsafePath(RouteError),
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    /// The token is not valid.
    #[error(transparent)]
    InvalidToken(#[from] TokenError),
    /// The route needs a token or a role the caller lacks.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The client sends too fast.
    #[error("too many requests")]
    TooManyRequests {
        /// When to try again.
        retry_after: Duration,
    },
    /// The body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The auth app's keys cannot be fetched, so tokens cannot be checked.
    #[error("the signing keys cannot be fetched: {0}")]
    KeysUnavailable(String),
    /// The sidecar could not deliver the request to the app.
    #[error("invoking {app} failed: {cause}")]
    BadGateway {
        /// The app.
        app: String,
        /// What the sidecar said.
        cause: String,
    },
    /// The gateway's own sidecar does not answer.
    #[error("the sidecar does not answer: {0}")]
    SidecarUnavailable(String),
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::NotFound => Self::NoRoute,
            RouteError::UnsafePath => Self::UnsafePath(error),
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::UnsafePath(_) => StatusCode::BAD_REQUEST,
            Self::NotBearer | Self::InvalidToken(_) | Self::Access(AccessError::SignInRequired) => {
                StatusCode::UNAUTHORIZED
            }
            Self::Access(AccessError::RoleRequired(_)) => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::KeysUnavailable(_) | Self::SidecarUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let problem = match &self {
            Self::NoRoute => Problem::not_found(detail),
            Self::UnsafePath(_) => Problem::bad_request(detail),
            Self::NotBearer | Self::InvalidToken(_) | Self::Access(AccessError::SignInRequired) => {
                Problem::unauthorized(detail)
            }
            Self::Access(AccessError::RoleRequired(_)) => Problem::forbidden(detail),
            Self::TooManyRequests { .. } => {
                Problem::too_many_requests("slow down and try again after Retry-After seconds")
            }
            Self::BodyTooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "The body is too large",
            )
            .detail(detail),
            Self::KeysUnavailable(_) => {
                tracing::error!(error = %self, "cannot check a token");
                Problem::unavailable("tokens cannot be checked right now; try again shortly")
            }
            Self::BadGateway { app, .. } => {
                tracing::warn!(error = %self, "invocation failed");
                Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway")
                    .detail(format!("the {app} service could not be reached"))
            }
            Self::SidecarUnavailable(_) => {
                tracing::error!(error = %self, "the sidecar does not answer");
                Problem::unavailable("the shop's services cannot be reached right now")
            }
        };
        let mut response = problem.into_response();
        let headers = response.headers_mut();
        match &self {
            Self::TooManyRequests { retry_after } => {
                // Whole seconds, rounded up: a client that waits that long gets a token.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            Self::NotBearer | Self::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            Self::Access(AccessError::SignInRequired) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::BodyTooLarge { .. } => {
                // The rest of the body is still on its way: this connection cannot carry
                // another request, and the client must know before it tries.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
