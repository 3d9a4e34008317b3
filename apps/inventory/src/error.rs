//! The inventory API's errors, each with its status and problem document.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::Problem;
use kit::dapr::DaprError;

use crate::domain::{ProductId, ReservationStatus};

/// What can go wrong in the inventory API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is not acceptable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field (a path into the request).
        field: String,
        /// Why.
        message: String,
    },
    /// No product with that id.
    #[error("product not found")]
    ProductNotFound,
    /// A reservation names a product that does not exist.
    #[error("unknown product {id}")]
    UnknownProduct {
        /// Line of the request.
        index: usize,
        /// The product.
        id: ProductId,
    },
    /// Not enough stock for a line.
    #[error("not enough stock of {id}: {available} left")]
    OutOfStock {
        /// Line of the request.
        index: usize,
        /// The product.
        id: ProductId,
        /// Units left.
        available: i64,
    },
    /// No reservation for the order.
    #[error("reservation not found")]
    ReservationNotFound,
    /// The order already has a different reservation.
    #[error("the order already has a reservation with other lines")]
    ReservationMismatch,
    /// The reservation was already committed or released.
    #[error("the reservation is already {0:?}")]
    ReservationClosed(ReservationStatus),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Too much contention: the write kept conflicting.
    #[error("the inventory is busy")]
    Busy,
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
            Self::Invalid { .. } | Self::UnknownProduct { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ProductNotFound | Self::ReservationNotFound => StatusCode::NOT_FOUND,
            Self::OutOfStock { .. } | Self::ReservationMismatch | Self::ReservationClosed(_) => {
                StatusCode::CONFLICT
            }
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Dapr(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, message } => Problem::validation(field.clone(), message.clone()),
            Self::ProductNotFound | Self::ReservationNotFound => {
                Problem::not_found(self.to_string())
            }
            Self::UnknownProduct { index, .. } => {
                Problem::validation(format!("items[{index}].product_id"), self.to_string())
            }
            Self::OutOfStock { index, .. } => {
                Problem::new(StatusCode::CONFLICT, "out-of-stock", "Out of stock")
                    .detail(self.to_string())
                    .field(
                        format!("items[{index}].quantity"),
                        "is more than the stock left",
                    )
            }
            Self::ReservationMismatch | Self::ReservationClosed(_) => {
                Problem::conflict(self.to_string())
            }
            Self::Forbidden(why) => Problem::forbidden(*why),
            Self::Busy => Problem::unavailable("too many concurrent changes; try again"),
            Self::Dapr(error) => {
                tracing::error!(%error, "sidecar call failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
