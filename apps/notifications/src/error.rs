//! The notifications API's errors, each with its status and problem document.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::Problem;
use kit::dapr::DaprError;

/// What can go wrong in the notifications API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter or header is not acceptable.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The parameter or header.
        field: String,
        /// Why.
        message: String,
    },
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
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Dapr(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, message } => Problem::validation(field.clone(), message.clone()),
            Self::Dapr(error) => {
                tracing::error!(%error, "sidecar call failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

/// Why an event could not be handled (it is delivered again).
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The state store failed.
    #[error("state store: {0}")]
    State(#[from] DaprError),
    /// The email could not be sent.
    #[error("sending the email failed: {0}")]
    Email(DaprError),
    /// The history kept changing under concurrent writes.
    #[error("the history kept changing")]
    Busy,
    /// Another delivery of the same event is sending its email now.
    #[error("another delivery is sending the email")]
    Sending,
}
