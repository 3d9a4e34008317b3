//! Turning `Component` resources into live components: secret stores first, then everything
//! else with `secretKeyRef`s resolved, each within its `initTimeout`, as daprd initialises them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::bindings::{self, OutputBinding};
use crate::pubsub::{self, MemoryBrokers, PubSub, TopicScopes};
use crate::resources::{ComponentDef, ComponentMetadata, MetadataSource, ResourceError};
use crate::secrets::{self, SecretStore};
use crate::state::{self, StateStore};

/// What a component needs to know about the app it serves.
#[derive(Debug, Clone)]
pub struct ComponentContext {
    /// The app id.
    pub app_id: String,
    /// The namespace (`NAMESPACE` in daprd's environment), if any.
    pub namespace: Option<String>,
    /// Where relative paths (sqlite files, secret files) are resolved.
    pub working_dir: PathBuf,
    /// The in-memory brokers shared by the sidecars of one topology.
    pub brokers: Arc<MemoryBrokers>,
}

impl ComponentContext {
    /// A context for `app_id` with no namespace and in-memory brokers of its own.
    pub fn new(app_id: impl Into<String>, working_dir: impl Into<PathBuf>) -> Self {
        Self {
            app_id: app_id.into(),
            namespace: None,
            working_dir: working_dir.into(),
            brokers: Arc::default(),
        }
    }

    /// A context for unit tests: the current directory.
    #[cfg(test)]
    pub(crate) fn for_tests(app_id: &str) -> Self {
        Self::new(app_id, std::env::current_dir().unwrap_or_default())
    }
}

/// A loaded component as the metadata API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub component_type: String,
    /// `spec.version`.
    pub version: String,
    /// Dapr's capability names.
    pub capabilities: Vec<String>,
}

/// A state store with the key prefix its component asks for.
pub struct StateComponent {
    /// The store.
    pub store: Arc<dyn StateStore>,
    /// What goes before `||` in stored keys (`None` for `keyPrefix: none`).
    pub key_prefix: Option<String>,
    /// Whether workflows (and actors) persist here (`actorStateStore: "true"`).
    pub actor_state_store: bool,
}

/// Why a state key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input key/keyPrefix '{0}' can't contain '||'")]
pub struct IllegalKey(pub String);

impl StateComponent {
    /// The key as stored: `<prefix>||<key>`, Dapr's `GetModifiedStateKey`.
    pub fn storage_key(&self, key: &str) -> Result<String, IllegalKey> {
        if key.contains("||") {
            return Err(IllegalKey(key.to_owned()));
        }
        Ok(match &self.key_prefix {
            Some(prefix) => format!("{prefix}||{key}"),
            None => key.to_owned(),
        })
    }

    /// The key as the app knows it, Dapr's `GetOriginalStateKey`.
    pub fn original_key(stored: &str) -> &str {
        let mut parts = stored.splitn(3, "||");
        match (parts.next(), parts.next()) {
            (Some(_), Some(key)) => key,
            _ => stored,
        }
    }
}

/// A pub/sub component with the topic scopes that apply to this app.
pub struct PubSubComponent {
    /// The broker.
    pub pubsub: Arc<dyn PubSub>,
    /// `publishingScopes`, `subscriptionScopes`, `allowedTopics`, `protectedTopics`.
    pub scopes: TopicScopes,
}

/// Every component a sidecar loaded.
#[derive(Default)]
pub struct Components {
    /// State stores by name.
    pub state: BTreeMap<String, StateComponent>,
    /// Secret stores by name.
    pub secrets: BTreeMap<String, Arc<dyn SecretStore>>,
    /// Pub/sub components by name.
    pub pubsubs: BTreeMap<String, PubSubComponent>,
    /// Output bindings by name.
    pub bindings: BTreeMap<String, Arc<dyn OutputBinding>>,
    /// What the metadata API lists, in load order.
    pub infos: Vec<ComponentInfo>,
}

impl Components {
    /// Builds every component in `defs`: secret stores first, then the rest, in file order.
    /// A component that fails stops start-up unless it sets `ignoreErrors`.
    pub async fn load(
        defs: &[ComponentDef],
        context: &ComponentContext,
    ) -> Result<Self, ResourceError> {
        let mut components = Self::default();
        let (secret_stores, others): (Vec<_>, Vec<_>) = defs
            .iter()
            .partition(|def| def.category() == "secretstores");
        for def in secret_stores.into_iter().chain(others) {
            let loaded = tokio::time::timeout(def.init_timeout, components.load_one(def, context))
                .await
                .unwrap_or_else(|_| {
                    Err(def.error(format!(
                        "initialisation did not finish within initTimeout ({})",
                        crate::resources::duration::format(def.init_timeout)
                    )))
                });
            match loaded {
                Ok(()) => tracing::info!(
                    component = %def.name, r#type = %def.component_type, version = %def.version,
                    "component loaded"
                ),
                Err(error) if def.ignore_errors => {
                    tracing::error!(%error, "ignoring a component that failed (ignoreErrors is set)");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(components)
    }

    async fn load_one(
        &mut self,
        def: &ComponentDef,
        context: &ComponentContext,
    ) -> Result<(), ResourceError> {
        let metadata = self.resolve_metadata(def, context)?;
        let capabilities: Vec<String>;
        match def.category() {
            "secretstores" => {
                let store = secrets::build(def, &metadata, context)?;
                capabilities = if store.multiple_key_values() {
                    vec!["MULTIPLE_KEY_VALUES_PER_SECRET".into()]
                } else {
                    Vec::new()
                };
                self.secrets.insert(def.name.clone(), store);
            }
            "state" => {
                let key_prefix = key_prefix(def, &metadata, context)?;
                let actor_state_store = metadata.bool("actorStateStore", false)?;
                if actor_state_store
                    && let Some((other, _)) = self.state.iter().find(|(_, s)| s.actor_state_store)
                {
                    return Err(def
                        .error(format!(
                            "detected duplicate actor state store: {other} and {}",
                            def.name
                        ))
                        .field("spec.metadata.actorStateStore"));
                }
                let store = state::build(def, &metadata, context).await?;
                store
                    .ping()
                    .await
                    .map_err(|e| def.error(format!("the store does not answer: {e:#}")))?;
                let features = store.features();
                capabilities = features
                    .capability_names(features.etag && features.transactional)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                self.state.insert(
                    def.name.clone(),
                    StateComponent {
                        store,
                        key_prefix,
                        actor_state_store,
                    },
                );
            }
            "pubsub" => {
                let component = pubsub::build(def, &metadata, context).await?;
                component
                    .ping()
                    .await
                    .map_err(|e| def.error(format!("the broker does not answer: {e:#}")))?;
                capabilities = component.features().capability_names();
                self.pubsubs.insert(
                    def.name.clone(),
                    PubSubComponent {
                        pubsub: component,
                        scopes: TopicScopes::new(&metadata, &context.app_id),
                    },
                );
            }
            "bindings" => {
                // `direction` limits what a binding is used for; these three are output-only.
                let output = metadata.get("direction").is_none_or(|direction| {
                    direction
                        .split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("output"))
                });
                let binding = bindings::build(def, &metadata, context)?;
                capabilities = if output {
                    self.bindings.insert(def.name.clone(), binding);
                    vec!["OUTPUT_BINDING".into()]
                } else {
                    Vec::new()
                };
            }
            _ => {
                return Err(def
                    .error(format!(
                        "unknown component type {:?}; the local sidecar supports: {}",
                        def.component_type,
                        supported_types().join(", ")
                    ))
                    .field("spec.type"));
            }
        }
        self.infos.push(ComponentInfo {
            name: def.name.clone(),
            component_type: def.component_type.clone(),
            version: def.version.clone(),
            capabilities,
        });
        Ok(())
    }

    /// Resolves `secretKeyRef`s through `auth.secretStore`, `envRef`s from the environment, and
    /// the `{appID}`, `{namespace}`, `{uuid}` and `{podName}` placeholders.
    fn resolve_metadata(
        &self,
        def: &ComponentDef,
        context: &ComponentContext,
    ) -> Result<ComponentMetadata, ResourceError> {
        let mut values = Vec::with_capacity(def.metadata.len());
        for (name, source) in &def.metadata {
            let field = format!("spec.metadata.{name}");
            let value = match source {
                MetadataSource::Value(value) => value.clone(),
                MetadataSource::Env(variable) => {
                    let upper = variable.to_ascii_uppercase();
                    if upper.starts_with("DAPR_") || upper == "APP_API_TOKEN" {
                        return Err(def
                            .error(format!("envRef {variable:?} is not allowed"))
                            .field(field));
                    }
                    std::env::var(variable).unwrap_or_default()
                }
                // daprd lets a component without a usable secret store start with an empty value;
                // a clear start-up error is kinder than a component that silently misbehaves.
                MetadataSource::Secret { name: secret, key } => {
                    let store_name = def.secret_store.as_deref().ok_or_else(|| {
                        def.error(
                            "uses secretKeyRef but names no secret store in `auth.secretStore`",
                        )
                        .field(field.clone())
                    })?;
                    let store = self.secrets.get(store_name).ok_or_else(|| {
                        def.error(format!(
                            "auth.secretStore names {store_name:?}, which is not a loaded secret store"
                        ))
                        .field("auth.secretStore")
                    })?;
                    let values = store.get(secret).map_err(|e| {
                        def.error(format!(
                            "cannot read secret {secret:?} from {store_name:?}: {e}"
                        ))
                        .field(field.clone())
                    })?;
                    values.get(key).cloned().ok_or_else(|| {
                        def.error(format!(
                            "secret {secret:?} in {store_name:?} has no key {key:?}"
                        ))
                        .field(field.clone())
                    })?
                }
            };
            let value =
                expand_placeholders(&value, context).map_err(|e| def.error(e).field(field))?;
            values.push((name.clone(), value));
        }
        Ok(ComponentMetadata::new(def, values))
    }
}

/// Every component type the sidecar can load.
pub fn supported_types() -> Vec<&'static str> {
    secrets::TYPES
        .iter()
        .chain(state::TYPES)
        .chain(pubsub::TYPES)
        .chain(bindings::TYPES)
        .copied()
        .collect()
}

fn expand_placeholders(value: &str, context: &ComponentContext) -> Result<String, String> {
    if !value.contains('{') {
        return Ok(value.to_owned());
    }
    let mut value = value.replace("{appID}", &context.app_id);
    if value.contains("{namespace}") {
        let namespace = context.namespace.as_deref().unwrap_or("default");
        value = value.replace("{namespace}", &format!("{namespace}.{}", context.app_id));
    }
    if value.contains("{podName}") {
        let pod = std::env::var("POD_NAME")
            .map_err(|_| "refers to {podName} but POD_NAME is not set".to_owned())?;
        value = value.replace("{podName}", &pod);
    }
    while value.contains("{uuid}") {
        value = value.replacen("{uuid}", &uuid::Uuid::new_v4().to_string(), 1);
    }
    Ok(value)
}

fn key_prefix(
    def: &ComponentDef,
    metadata: &ComponentMetadata,
    context: &ComponentContext,
) -> Result<Option<String>, ResourceError> {
    let setting = metadata
        .get("keyPrefix")
        .unwrap_or("appid")
        .to_ascii_lowercase();
    let prefix = match setting.as_str() {
        "appid" => Some(context.app_id.clone()),
        "name" => Some(def.name.clone()),
        "namespace" => Some(match &context.namespace {
            Some(namespace) => format!("{namespace}.{}", context.app_id),
            None => context.app_id.clone(),
        }),
        "none" => None,
        literal => Some(literal.to_owned()),
    };
    if prefix.as_deref().is_some_and(|p| p.contains("||")) {
        return Err(metadata.error("keyPrefix", "can't contain '||'"));
    }
    Ok(prefix.filter(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(prefix: Option<&str>) -> StateComponent {
        StateComponent {
            store: Arc::new(state::MemoryStore::new()),
            key_prefix: prefix.map(str::to_owned),
            actor_state_store: false,
        }
    }

    #[test]
    fn keys_are_prefixed_and_the_prefix_stripped_on_the_way_back() {
        let store = component(Some("orders"));
        assert_eq!(store.storage_key("o-1"), Ok("orders||o-1".into()));
        assert_eq!(StateComponent::original_key("orders||o-1"), "o-1");
        assert_eq!(StateComponent::original_key("plain"), "plain");
        assert_eq!(component(None).storage_key("o-1"), Ok("o-1".into()));
    }

    #[test]
    fn a_key_containing_the_separator_is_refused() {
        assert_eq!(
            component(Some("a")).storage_key("x||y"),
            Err(IllegalKey("x||y".into()))
        );
    }

    #[test]
    fn placeholders_expand_like_daprd() {
        let context = ComponentContext {
            app_id: "orders".into(),
            namespace: Some("shop".into()),
            working_dir: PathBuf::new(),
            brokers: Arc::default(),
        };
        assert_eq!(
            expand_placeholders("{appID}-group", &context),
            Ok("orders-group".into())
        );
        assert_eq!(
            expand_placeholders("{namespace}", &context),
            Ok("shop.orders".into())
        );
        let unique = expand_placeholders("{uuid}", &context).expect("expands");
        assert!(uuid::Uuid::parse_str(&unique).is_ok());
    }
}
