//! The `Component` resource and the resolved metadata components are built from.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::{ObjectMeta, ResourceError, decode, duration, yaml_to_string};

/// A `Component` as written in YAML, its metadata not yet resolved.
#[derive(Debug, Clone)]
pub struct ComponentDef {
    /// `metadata.name`: how apps address the component.
    pub name: String,
    /// `spec.type`, e.g. `state.postgresql`.
    pub component_type: String,
    /// `spec.version` (`v1` when absent).
    pub version: String,
    /// `spec.metadata`, in order.
    pub metadata: Vec<(String, MetadataSource)>,
    /// `auth.secretStore`: the store that resolves `secretKeyRef`s.
    pub secret_store: Option<String>,
    /// `spec.ignoreErrors`: a failing init is logged instead of stopping start-up.
    pub ignore_errors: bool,
    /// `spec.initTimeout` (Dapr's default is 5s).
    pub init_timeout: Duration,
    /// `scopes`: the app ids allowed to load the component (empty = all).
    pub scopes: Vec<String>,
    /// The file the component came from.
    pub source: PathBuf,
}

/// Where a metadata value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataSource {
    /// `value:`
    Value(String),
    /// `secretKeyRef: {name, key}`, resolved through the component's secret store.
    Secret { name: String, key: String },
    /// `envRef:`, read from the sidecar's environment.
    Env(String),
}

#[derive(Deserialize)]
struct ComponentDoc {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: ObjectMeta,
    spec: ComponentSpec,
    #[serde(default)]
    auth: Option<AuthSpec>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ComponentSpec {
    #[serde(rename = "type")]
    component_type: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    ignore_errors: bool,
    #[serde(default)]
    init_timeout: Option<String>,
    #[serde(default)]
    metadata: Option<Vec<MetadataItem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AuthSpec {
    secret_store: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MetadataItem {
    name: String,
    #[serde(default)]
    value: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    secret_key_ref: Option<SecretKeyRef>,
    #[serde(default)]
    env_ref: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyRef {
    name: String,
    #[serde(default)]
    key: Option<String>,
}

const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

impl ComponentDef {
    pub(crate) fn parse(file: &Path, value: serde_yaml_ng::Value) -> Result<Self, ResourceError> {
        let doc: ComponentDoc = decode(file, "Component", value)?;
        let name = doc.metadata.name;
        let error = |field: &str, message: String| {
            ResourceError::new(file, message)
                .resource("Component", &name)
                .field(field)
        };
        if name.is_empty() {
            return Err(ResourceError::new(file, "a Component needs a name").field("metadata.name"));
        }
        if doc.spec.component_type.is_empty() {
            return Err(error("spec.type", "must not be empty".into()));
        }
        let init_timeout = match &doc.spec.init_timeout {
            Some(text) => duration::parse(text).map_err(|e| error("spec.initTimeout", e))?,
            None => DEFAULT_INIT_TIMEOUT,
        };
        let mut metadata = Vec::new();
        for item in doc.spec.metadata.unwrap_or_default() {
            let field = format!("spec.metadata.{}", item.name);
            let source = match (item.value, item.secret_key_ref, item.env_ref) {
                (Some(value), None, None) => MetadataSource::Value(yaml_to_string(&value)),
                (None, Some(secret), None) => MetadataSource::Secret {
                    // Dapr uses the reference's name as the key when no key is given.
                    key: secret.key.unwrap_or_else(|| secret.name.clone()),
                    name: secret.name,
                },
                (None, None, Some(variable)) => MetadataSource::Env(variable),
                (None, None, None) => MetadataSource::Value(String::new()),
                _ => {
                    return Err(error(
                        &field,
                        "set only one of `value`, `secretKeyRef` and `envRef`".into(),
                    ));
                }
            };
            if metadata
                .iter()
                .any(|(n, _): &(String, _)| n.eq_ignore_ascii_case(&item.name))
            {
                return Err(error(&field, "is set more than once".into()));
            }
            metadata.push((item.name, source));
        }
        Ok(Self {
            name,
            component_type: doc.spec.component_type,
            version: doc.spec.version.unwrap_or_else(|| "v1".into()),
            metadata,
            secret_store: doc.auth.and_then(|auth| auth.secret_store),
            ignore_errors: doc.spec.ignore_errors,
            init_timeout,
            scopes: doc.scopes,
            source: file.to_path_buf(),
        })
    }

    /// The category of the component: the part of `spec.type` before the first dot.
    pub fn category(&self) -> &str {
        self.component_type
            .split_once('.')
            .map_or(self.component_type.as_str(), |(category, _)| category)
    }

    /// An error about this component, naming its file and itself.
    pub fn error(&self, message: impl Into<String>) -> ResourceError {
        ResourceError::new(&self.source, message).resource("Component", &self.name)
    }
}

/// A component's metadata after `secretKeyRef`s and `envRef`s were resolved. Names are matched
/// without regard to case, as components-contrib decodes them.
#[derive(Debug, Clone)]
pub struct ComponentMetadata {
    component: String,
    source: PathBuf,
    values: Vec<(String, String)>,
}

impl ComponentMetadata {
    /// Metadata for `component` (used in error messages) from resolved `values`.
    pub fn new(def: &ComponentDef, values: Vec<(String, String)>) -> Self {
        Self {
            component: def.name.clone(),
            source: def.source.clone(),
            values,
        }
    }

    /// Metadata built directly from pairs, for components created in code (tests, defaults).
    pub fn from_pairs<'a>(
        component: &str,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        Self {
            component: component.to_owned(),
            source: PathBuf::from("<in code>"),
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// Every name/value pair, as resolved.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `name`, or an error naming the missing field.
    pub fn required(&self, name: &str) -> Result<&str, ResourceError> {
        self.get(name)
            .ok_or_else(|| self.error(name, "required metadata field is missing"))
    }

    /// A boolean field (`true`/`false`, `1`/`0`, `yes`/`no`, as Dapr's `IsTruthy`).
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ResourceError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "y" | "on") => Ok(true),
            Some("false" | "0" | "no" | "n" | "off") => Ok(false),
            Some(other) => Err(self.error(name, format!("expected a boolean, got {other:?}"))),
        }
    }

    /// A field parsed with `FromStr`.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, ResourceError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|text| {
                text.trim()
                    .parse()
                    .map_err(|e| self.error(name, format!("invalid value {text:?}: {e}")))
            })
            .transpose()
    }

    /// A duration field: a Go duration (`"30s"`) or, as many Dapr components accept, a bare
    /// number of `bare_unit`s.
    pub fn duration(
        &self,
        name: &str,
        bare_unit: Duration,
    ) -> Result<Option<Duration>, ResourceError> {
        self.get(name)
            .map(|text| {
                if let Ok(count) = text.trim().parse::<u64>() {
                    return Ok(bare_unit * u32::try_from(count).unwrap_or(u32::MAX));
                }
                duration::parse(text).map_err(|e| self.error(name, e))
            })
            .transpose()
    }

    /// An error about metadata field `name` of this component.
    pub fn error(&self, name: &str, message: impl Into<String>) -> ResourceError {
        ResourceError::new(&self.source, message)
            .resource("Component", &self.component)
            .field(format!("spec.metadata.{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ComponentDef, ResourceError> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("test YAML parses");
        ComponentDef::parse(Path::new("c.yaml"), value)
    }

    #[test]
    fn scalar_values_are_handed_to_components_as_strings() {
        let def = parse(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec:\n  type: state.redis\n  metadata:\n  - {name: a, value: 5}\n  - {name: b, value: true}\n  - {name: c, secretKeyRef: {name: pw}}\n",
        )
        .expect("valid component");
        assert_eq!(def.metadata[0].1, MetadataSource::Value("5".into()));
        assert_eq!(def.metadata[1].1, MetadataSource::Value("true".into()));
        assert_eq!(
            def.metadata[2].1,
            MetadataSource::Secret {
                name: "pw".into(),
                key: "pw".into()
            }
        );
        assert_eq!(def.version, "v1");
        assert_eq!(def.category(), "state");
    }

    #[test]
    fn a_missing_type_names_the_field() {
        let error = parse("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {version: v1}\n")
            .expect_err("type is required");
        assert_eq!(error.resource.as_deref(), Some("Component/s"));
        assert!(error.message.contains("type"), "{error}");
    }

    #[test]
    fn metadata_lookups_ignore_case_and_report_missing_fields() {
        let meta = ComponentMetadata::from_pairs("s", [("RedisHost", "localhost:6379")]);
        assert_eq!(meta.get("redisHost"), Some("localhost:6379"));
        let error = meta.required("redisPassword").expect_err("missing");
        assert_eq!(error.field.as_deref(), Some("spec.metadata.redisPassword"));
    }
}
