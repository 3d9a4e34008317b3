//! The orders API's errors, each with its status and problem document.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::Problem;
use kit::dapr::DaprError;

use crate::domain::OrderStatus;

/// What can go wrong in the orders API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is not acceptable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field (a path into the request, or a header name).
        field: String,
        /// Why.
        message: String,
    },
    /// No such order, or not the caller's.
    #[error("order not found")]
    NotFound,
    /// The `Idempotency-Key` was used before for another request.
    #[error("the Idempotency-Key was already used for a different order")]
    KeyReused,
    /// Only a pending order can be cancelled.
    #[error("the order is {0:?}, not pending payment")]
    NotPending(OrderStatus),
    /// The order's stock check has not finished in time; a retry with the same key is safe.
    #[error("the order is still being placed")]
    StillPlacing,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The workflow client is not connected yet.
    #[error("the app is starting")]
    NotReady,
    /// Too much contention: a write kept conflicting.
    #[error("too many concurrent changes")]
    Busy,
    /// The workflow engine failed.
    #[error("workflow: {0}")]
    Workflow(String),
    /// The sidecar failed.
    #[error(transparent)]
    Dapr(#[from] DaprError),
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
            Self::Invalid { .. } | Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotPending(_) => StatusCode::CONFLICT,
            Self::StillPlacing | Self::NotReady | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Workflow(_) | Self::Dapr(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, message } => Problem::validation(field.clone(), message.clone()),
            Self::KeyReused => Problem::validation(
                "Idempotency-Key",
                "was already used for a different order; use a new key for a new order",
            ),
            Self::NotFound => Problem::not_found(self.to_string()),
            Self::Forbidden(why) => Problem::forbidden(*why),
            Self::NotPending(_) => Problem::new(
                StatusCode::CONFLICT,
                "order-not-pending",
                "The order is no longer pending payment",
            )
            .detail(self.to_string()),
            Self::StillPlacing => Problem::unavailable(
                "the order is still being placed; retry with the same Idempotency-Key",
            ),
            Self::NotReady => Problem::unavailable("the orders app is starting; try again"),
            Self::Busy => Problem::unavailable("too many concurrent changes; try again"),
            Self::Workflow(error) => {
                tracing::error!(%error, "workflow call failed");
                Problem::internal()
            }
            Self::Dapr(error) => {
                tracing::error!(%error, "sidecar call failed");
                Problem::internal()
            }
        };
        let mut response = problem.into_response();
        if matches!(self, Self::StillPlacing | Self::NotReady | Self::Busy) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
