//! Output bindings: `bindings.smtp`, `bindings.localstorage` and `bindings.http`.

mod http;
mod localstorage;
mod smtp;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::components::ComponentContext;
use crate::resources::{ComponentDef, ComponentMetadata, ResourceError};

/// The component types this module builds.
pub const TYPES: &[&str] = &["bindings.smtp", "bindings.localstorage", "bindings.http"];

/// A call to an output binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRequest {
    /// The payload, as the component receives it (daprd re-encodes HTTP `data` as JSON).
    pub data: Bytes,
    /// Request metadata.
    pub metadata: BTreeMap<String, String>,
    /// The operation (`create`, `get`, ...).
    pub operation: String,
}

/// What a binding answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindingResponse {
    /// The payload.
    pub data: Bytes,
    /// Response metadata (sent back as `metadata.<key>` headers).
    pub metadata: BTreeMap<String, String>,
}

/// A failed binding call, with whatever metadata the component still reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingError {
    /// What went wrong.
    pub message: String,
    /// Response metadata reported with the error.
    pub metadata: BTreeMap<String, String>,
}

impl BindingError {
    /// An error without metadata.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }
}

impl std::fmt::Display for BindingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An output binding.
#[async_trait]
pub trait OutputBinding: Send + Sync + 'static {
    /// The operations it supports (matched exactly, as daprd does).
    fn operations(&self) -> &'static [&'static str];

    /// Performs an operation. `Ok(None)` is daprd's "no response" (HTTP 204).
    async fn invoke(
        &self,
        request: BindingRequest,
    ) -> Result<Option<BindingResponse>, BindingError>;
}

/// Builds the output binding a resource describes.
pub fn build(
    def: &ComponentDef,
    metadata: &ComponentMetadata,
    context: &ComponentContext,
) -> Result<Arc<dyn OutputBinding>, ResourceError> {
    Ok(match def.component_type.as_str() {
        "bindings.smtp" => Arc::new(smtp::Smtp::new(metadata)?),
        "bindings.localstorage" => Arc::new(localstorage::LocalStorage::new(metadata, context)?),
        "bindings.http" => Arc::new(http::HttpBinding::new(metadata)?),
        other => {
            return Err(def
                .error(format!("unknown binding type {other:?}"))
                .field("spec.type"));
        }
    })
}

/// The metadata value under `key`, if set and not empty (exact key, as daprd's request lookups).
fn request_value<'a>(metadata: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// daprd's components `strconv.Unquote` payloads: a JSON string literal becomes its text.
fn unquote(data: &[u8]) -> Bytes {
    match serde_json::from_slice::<String>(data) {
        Ok(text) => Bytes::from(text),
        Err(_) => Bytes::copy_from_slice(data),
    }
}
