//! Errors of the Dapr API, with daprd's error codes, HTTP statuses and gRPC codes.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

/// An API error: `{"errorCode": "...", "message": "..."}` over HTTP, a status over gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// gRPC code.
    pub grpc: tonic::Code,
    /// daprd's error code, e.g. `ERR_STATE_STORE_NOT_FOUND`.
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// `google.rpc.ErrorInfo` reason and app id, for the errors daprd reports with details.
    pub reason: Option<(&'static str, String)>,
}

impl ApiError {
    /// An error with a status, a gRPC code, an error code and a message.
    pub fn new(
        status: StatusCode,
        grpc: tonic::Code,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            grpc,
            code,
            message: message.into(),
            reason: None,
        }
    }

    /// Adds the ErrorInfo detail daprd attaches (`reason`, with the app id as metadata).
    pub fn with_reason(mut self, reason: &'static str, app_id: &str) -> Self {
        self.reason = Some((reason, app_id.to_owned()));
        self
    }

    /// `ERR_MALFORMED_REQUEST` (400 / InvalidArgument).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_MALFORMED_REQUEST",
            message,
        )
    }

    /// The JSON body daprd writes.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({"errorCode": self.code, "message": self.message});
        if let Some((reason, app_id)) = &self.reason {
            body["details"] = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "domain": "dapr.io",
                "reason": reason,
                "metadata": {"appID": app_id},
            }]);
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        tonic::Status::new(error.grpc, error.message)
    }
}
