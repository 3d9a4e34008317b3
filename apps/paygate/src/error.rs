//! The simulator's API errors, each with its status and problem document.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kit::Problem;

/// What can go wrong in the simulator's API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No API key, or the wrong one.
    #[error("missing or wrong API key")]
    Unauthorized,
    /// A required header is missing or malformed.
    #[error("header {header}: {message}")]
    Header {
        /// The header.
        header: &'static str,
        /// Why.
        message: String,
    },
    /// A field of the request is not acceptable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field (a path into the request).
        field: String,
        /// Why.
        message: String,
    },
    /// The idempotency key was used for another request.
    #[error("the idempotency key was used with another request")]
    KeyReused,
    /// A request with the same idempotency key is still running.
    #[error("a request with this idempotency key is still running")]
    KeyInUse,
    /// No charge with that id.
    #[error("no such charge")]
    ChargeNotFound {
        /// The field (or path parameter) that named it.
        field: Option<&'static str>,
    },
    /// A refund asks for more than is left.
    #[error("only {remaining} cents of the charge are left to refund")]
    RefundTooLarge {
        /// What is left.
        remaining: i64,
    },
    /// The charge took no money.
    #[error("the charge did not succeed; there is nothing to refund")]
    NotRefundable,
    /// The simulated outage.
    #[error("the provider could not process the request")]
    ProcessingError,
    /// A bug of ours (logged, never sent).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>) -> impl FnOnce(String) -> Self {
        let field = field.into();
        move |message| Self::Invalid { field, message }
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Header { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid { .. }
            | Self::KeyReused
            | Self::RefundTooLarge { .. }
            | Self::NotRefundable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::KeyInUse => StatusCode::CONFLICT,
            Self::ChargeNotFound { .. } => StatusCode::NOT_FOUND,
            Self::ProcessingError | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = self.to_string();
        let problem = match &self {
            Self::Unauthorized => {
                Problem::unauthorized("send the API key as `Authorization: Bearer <key>`")
            }
            Self::Header { header, message } => {
                Problem::bad_request(detail.clone()).field(*header, message.clone())
            }
            Self::Invalid { field, message } => Problem::validation(field.clone(), message.clone()),
            Self::KeyReused => Problem::new(
                status,
                "idempotency-key-reused",
                "The idempotency key was used with another request",
            )
            .detail("use a new Idempotency-Key for a different request")
            .field("Idempotency-Key", detail),
            Self::KeyInUse => Problem::new(
                status,
                "idempotency-key-in-use",
                "A request with this idempotency key is running",
            )
            .detail("retry once the first request has answered")
            .field("Idempotency-Key", detail),
            Self::ChargeNotFound { field } => {
                let problem = Problem::not_found(detail.clone());
                match field {
                    Some(field) => problem.field(*field, detail),
                    None => problem,
                }
            }
            Self::RefundTooLarge { .. } => Problem::validation("amount_cents", detail),
            Self::NotRefundable => Problem::validation("charge_id", detail),
            Self::ProcessingError => Problem::new(
                status,
                "processing-error",
                "The provider could not process the request",
            )
            .detail("a simulated outage; retrying with the same Idempotency-Key is safe"),
            Self::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                Problem::internal()
            }
        };
        let mut response = problem.into_response();
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
