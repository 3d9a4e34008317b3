//! Secret stores: `secretstores.local.file` and `secretstores.local.env`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::components::ComponentContext;
use crate::resources::{ComponentDef, ComponentMetadata, ResourceError};

mod env;
mod file;

pub use env::EnvSecretStore;
pub use file::FileSecretStore;

/// The component types this module builds.
pub const TYPES: &[&str] = &["secretstores.local.file", "secretstores.local.env"];

/// One secret: a map, because a secret may hold several values.
pub type Secret = BTreeMap<String, String>;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The store has no secret with that name.
    #[error("secret {0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A secret store. Both local stores read their source once and answer from memory, so the
/// interface is synchronous.
pub trait SecretStore: Send + Sync + 'static {
    /// Reads the secret `name`.
    fn get(&self, name: &str) -> Result<Secret, SecretError>;
    /// Reads every secret.
    fn bulk_get(&self) -> Result<BTreeMap<String, Secret>, SecretError>;
    /// Whether one secret can hold several key/value pairs (Dapr's `MULTIPLE_KEY_VALUES_PER_SECRET`).
    fn multiple_key_values(&self) -> bool;
}

/// Builds the secret store a component describes.
pub fn build(
    def: &ComponentDef,
    metadata: &ComponentMetadata,
    context: &ComponentContext,
) -> Result<Arc<dyn SecretStore>, ResourceError> {
    Ok(match def.component_type.as_str() {
        "secretstores.local.file" => Arc::new(FileSecretStore::load(metadata, context)?),
        "secretstores.local.env" => Arc::new(EnvSecretStore::new(metadata)),
        other => {
            return Err(def
                .error(format!("unknown secret store type {other:?}"))
                .field("spec.type"));
        }
    })
}
