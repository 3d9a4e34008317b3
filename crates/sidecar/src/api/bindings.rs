//! The Bindings API (output bindings), shared by the HTTP and gRPC front ends.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;

use super::ApiError;
use crate::bindings::{BindingRequest, BindingResponse};
use crate::runtime::Runtime;
use crate::trace::RequestTrace;

/// A failed binding call: the API error and the metadata the binding still reported.
pub(crate) struct BindingFailure {
    pub(crate) error: ApiError,
    pub(crate) metadata: BTreeMap<String, String>,
}

fn failure(
    name: &str,
    message: impl std::fmt::Display,
    metadata: BTreeMap<String, String>,
) -> BindingFailure {
    // daprd answers every binding failure, an unknown binding included, with a 500.
    BindingFailure {
        error: ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_INVOKE_OUTPUT_BINDING",
            format!("error invoking output binding {name}: {message}"),
        ),
        metadata,
    }
}

impl Runtime {
    /// Calls output binding `name`. `Ok(None)` means no response body (HTTP 204).
    pub(crate) async fn invoke_binding(
        &self,
        name: &str,
        data: Bytes,
        mut metadata: BTreeMap<String, String>,
        operation: String,
        trace: &RequestTrace,
    ) -> Result<Option<BindingResponse>, BindingFailure> {
        if operation.is_empty() {
            return Err(failure(
                name,
                "operation field is missing from request",
                BTreeMap::new(),
            ));
        }
        let binding = self.components.bindings.get(name).ok_or_else(|| {
            failure(
                name,
                format!("couldn't find output binding {name}"),
                BTreeMap::new(),
            )
        })?;
        if !binding.operations().contains(&operation.as_str()) {
            return Err(failure(
                name,
                format!(
                    "binding {name} does not support operation {operation}. supported operations:{}",
                    binding.operations().join(" ")
                ),
                BTreeMap::new(),
            ));
        }
        metadata.insert("traceparent".into(), trace.span.to_string());
        if let Some(state) = &trace.tracestate {
            metadata.insert("tracestate".into(), state.clone());
        }
        let started = Instant::now();
        let result = binding
            .invoke(BindingRequest {
                data,
                metadata,
                operation: operation.clone(),
            })
            .await;
        self.metrics
            .component_operation(name, &operation, result.is_ok(), started.elapsed());
        result.map_err(|e| failure(name, &e.message, e.metadata))
    }
}
