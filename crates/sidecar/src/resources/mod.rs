//! Dapr resources read from YAML: `Component`, `Configuration`, `Resiliency` and `Subscription`.
//!
//! Like daprd in self-hosted mode, every `*.yaml`/`*.yml` file in each resources directory is read, a
//! file may hold several documents separated by `---`, documents that are not Dapr resources are
//! skipped, and resources scoped to other apps are left out. Every error names the file, the resource
//! and the field, so a broken component stops start-up with a message that says what to fix.

mod component;
mod configuration;
pub mod duration;
mod resiliency;
mod subscription;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use component::{ComponentDef, ComponentMetadata, MetadataSource};
pub use configuration::{
    AccessControl, AclAction, AclOperation, AclPolicy, Configuration, NameResolutionSpec,
    SecretScope, TracingSpec, WorkflowSpec,
};
pub use resiliency::{
    CircuitBreakerPolicy, ComponentPolicies, Resiliency, RetryBackoff, RetryPolicy, StatusMatcher,
    TargetPolicies,
};
pub use subscription::{BulkSubscribe, RouteRule, SubscriptionDef};

/// A resource that could not be loaded: which file, which resource, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceError {
    /// The file the resource came from.
    pub file: PathBuf,
    /// `Kind/name` of the resource, when known.
    pub resource: Option<String>,
    /// The offending field, as a path into the document (`spec.metadata.connectionString`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ResourceError {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            resource: None,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn resource(mut self, kind: &str, name: &str) -> Self {
        self.resource = Some(format!("{kind}/{name}"));
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for ResourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(resource) = &self.resource {
            write!(f, ": {resource}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ResourceError {}

/// Every resource found under the resources paths that applies to one app.
#[derive(Debug, Default, Clone)]
pub struct ResourceSet {
    /// Components, in the order they were found.
    pub components: Vec<ComponentDef>,
    /// Resiliency documents; their policies are merged by the runtime.
    pub resiliencies: Vec<Resiliency>,
    /// Declarative subscriptions.
    pub subscriptions: Vec<SubscriptionDef>,
    /// `Configuration` documents found among the resources (daprd only reads the one given with
    /// `--config`, so these are kept for reporting, not applied).
    pub configurations: Vec<Configuration>,
}

/// The header every Dapr resource shares.
#[derive(Debug, Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct ObjectMeta {
    #[serde(default)]
    pub(crate) name: String,
}

/// Loads every resource under `paths` (directories or single files) that applies to `app_id`.
/// With a `namespace`, resources of other namespaces are skipped, as daprd does when
/// `NAMESPACE` is set.
pub fn load_resources(
    paths: &[PathBuf],
    app_id: &str,
    namespace: Option<&str>,
) -> Result<ResourceSet, ResourceError> {
    let mut set = ResourceSet::default();
    for file in resource_files(paths)? {
        for document in read_documents(&file)? {
            if let (Some(ours), Some(theirs)) = (namespace, document.namespace.as_deref())
                && ours != theirs
            {
                continue;
            }
            match document.kind.as_str() {
                "Component" => {
                    let component = ComponentDef::parse(&file, document.value)?;
                    if in_scope(&component.scopes, app_id) {
                        if let Some(existing) =
                            set.components.iter().find(|c| c.name == component.name)
                        {
                            return Err(ResourceError::new(
                                &file,
                                format!(
                                    "a component with this name is already defined in {}",
                                    existing.source.display()
                                ),
                            )
                            .resource("Component", &component.name)
                            .field("metadata.name"));
                        }
                        set.components.push(component);
                    }
                }
                "Resiliency" => {
                    let resiliency = Resiliency::parse(&file, document.value)?;
                    if in_scope(&resiliency.scopes, app_id) {
                        set.resiliencies.push(resiliency);
                    }
                }
                "Subscription" => {
                    let subscription =
                        SubscriptionDef::parse(&file, &document.api_version, document.value)?;
                    if in_scope(&subscription.scopes, app_id) {
                        set.subscriptions.push(subscription);
                    }
                }
                "Configuration" => {
                    set.configurations
                        .push(Configuration::parse(&file, document.value)?);
                }
                // HTTPEndpoint and other Dapr kinds are not used by the shop; Kubernetes objects
                // that share a file with Dapr resources are not ours to read.
                _ => {}
            }
        }
    }
    Ok(set)
}

/// Loads the `Configuration` named by `--config`. The file must hold exactly one.
pub fn load_configuration(path: &Path) -> Result<Configuration, ResourceError> {
    let mut found = None;
    for document in read_documents(path)? {
        if document.kind == "Configuration" {
            if found.is_some() {
                return Err(ResourceError::new(
                    path,
                    "the file holds more than one Configuration",
                ));
            }
            found = Some(Configuration::parse(path, document.value)?);
        }
    }
    found.ok_or_else(|| ResourceError::new(path, "the file holds no Configuration resource"))
}

/// Whether a resource with these `scopes` applies to `app_id` (no scopes = every app).
pub(crate) fn in_scope(scopes: &[String], app_id: &str) -> bool {
    scopes.is_empty() || scopes.iter().any(|scope| scope == app_id)
}

fn resource_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ResourceError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|error| {
            ResourceError::new(path, format!("cannot read resources path: {error}"))
        })?;
        if metadata.is_file() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|error| {
            ResourceError::new(path, format!("cannot list resources directory: {error}"))
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| {
                file.is_file()
                    && matches!(
                        file.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml")
                    )
            })
            .collect();
        // A stable order makes duplicate-name errors and start-up logs deterministic.
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

struct Document {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    value: serde_yaml_ng::Value,
}

fn read_documents(file: &Path) -> Result<Vec<Document>, ResourceError> {
    let text = std::fs::read_to_string(file)
        .map_err(|error| ResourceError::new(file, format!("cannot read file: {error}")))?;
    let mut documents = Vec::new();
    for (index, deserializer) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(deserializer).map_err(|error| {
            ResourceError::new(
                file,
                format!("invalid YAML in document {}: {error}", index + 1),
            )
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let type_meta: TypeMeta = serde_yaml_ng::from_value(value.clone()).map_err(|error| {
            ResourceError::new(
                file,
                format!("document {} is not a mapping: {error}", index + 1),
            )
        })?;
        let (Some(api_version), Some(kind)) = (type_meta.api_version, type_meta.kind) else {
            continue;
        };
        if !api_version.starts_with("dapr.io/") {
            continue;
        }
        let namespace = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        documents.push(Document {
            api_version,
            kind,
            namespace,
            value,
        });
    }
    Ok(documents)
}

/// Deserializes a document into `T`, naming the offending field on error.
pub(crate) fn decode<T: DeserializeOwned>(
    file: &Path,
    kind: &str,
    value: serde_yaml_ng::Value,
) -> Result<T, ResourceError> {
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_owned();
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        let error = ResourceError::new(file, inner).resource(kind, &name);
        if path == "." {
            error
        } else {
            error.field(path)
        }
    })
}

/// A YAML scalar read as text, whatever its YAML type (`250`, `"5s"`, `true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_yaml_ng::Value::deserialize(deserializer)?;
        match value {
            serde_yaml_ng::Value::Sequence(_) | serde_yaml_ng::Value::Mapping(_) => {
                Err(serde::de::Error::custom("expected a single value"))
            }
            other => Ok(Self(yaml_to_string(&other))),
        }
    }
}

/// Renders a YAML scalar (or structure) as the string Dapr hands to components: strings as they
/// are, numbers and booleans in their plain form, anything else as JSON.
pub(crate) fn yaml_to_string(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::Null => String::new(),
        serde_yaml_ng::Value::Bool(b) => b.to_string(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_limit_a_resource_to_the_listed_apps() {
        assert!(in_scope(&[], "orders"));
        assert!(in_scope(&["orders".into()], "orders"));
        assert!(!in_scope(&["auth".into()], "orders"));
    }

    #[test]
    fn errors_name_the_file_the_resource_and_the_field() {
        let error = ResourceError::new(Path::new("components/state.yaml"), "is required")
            .resource("Component", "statestore")
            .field("spec.metadata.connectionString");
        assert_eq!(
            error.to_string(),
            "components/state.yaml: Component/statestore: field `spec.metadata.connectionString`: is required"
        );
    }
}
