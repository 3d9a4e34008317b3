//! The payments API's errors, each with its status and problem document.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::Problem;
use kit::dapr::DaprError;

use crate::provider::ProviderError;

/// What can go wrong in the payments API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is not acceptable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        message: String,
    },
    /// No such order (or payment) of the caller's.
    #[error("not found")]
    NotFound,
    /// The order does not wait for a payment.
    #[error("the order is {0}, not pending payment")]
    NotPayable(String),
    /// The provider's secrets are not loaded yet.
    #[error("the app is starting")]
    NotReady,
    /// Too much contention.
    #[error("too many concurrent changes")]
    Busy,
    /// The orders app did not answer as expected.
    #[error("orders: {0}")]
    Orders(String),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The sidecar failed.
    #[error(transparent)]
    Dapr(#[from] DaprError),
}

impl ApiError {
    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NotPayable(_) => StatusCode::CONFLICT,
            Self::NotReady | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Provider(_) => StatusCode::BAD_GATEWAY,
            Self::Orders(_) | Self::Dapr(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, message } => Problem::validation(field.clone(), message.clone()),
            Self::NotFound => Problem::not_found("no such order of yours"),
            Self::NotPayable(_) => Problem::new(
                StatusCode::CONFLICT,
                "order-not-payable",
                "The order does not wait for a payment",
            )
            .detail(self.to_string()),
            Self::NotReady => Problem::unavailable("the payments app is starting; try again"),
            Self::Busy => Problem::unavailable("too many concurrent changes; try again"),
            Self::Provider(error) => {
                tracing::warn!(%error, "payment provider call failed");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "provider-unavailable",
                    "The payment provider did not answer",
                )
                .detail("nothing was charged twice: pay again to retry the same payment")
            }
            Self::Orders(error) => {
                tracing::error!(%error, "orders call failed");
                Problem::internal()
            }
            Self::Dapr(error) => {
                tracing::error!(%error, "sidecar call failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
