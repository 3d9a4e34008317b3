//! The `Configuration` resource: tracing, access control, secret scopes, name resolution.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{ObjectMeta, ResourceError, decode};

/// A `Configuration`, as daprd reads it with `--config`.
#[derive(Debug, Clone, Default)]
pub struct Configuration {
    /// `metadata.name`.
    pub name: String,
    /// `spec.tracing`.
    pub tracing: TracingSpec,
    /// `spec.metric.enabled` (default true).
    pub metrics_enabled: bool,
    /// `spec.accessControl`, when present.
    pub access_control: Option<AccessControl>,
    /// `spec.secrets.scopes`.
    pub secret_scopes: Vec<SecretScope>,
    /// `spec.features` that are enabled.
    pub features: Vec<String>,
    /// `spec.nameResolution`.
    pub name_resolution: Option<NameResolutionSpec>,
    /// `spec.workflow`.
    pub workflow: WorkflowSpec,
}

/// `spec.workflow`: how much workflow work a sidecar hands out at once (daprd's defaults:
/// unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSpec {
    /// `maxConcurrentWorkflowInvocations`: orchestration turns in flight.
    #[serde(default)]
    pub max_concurrent_workflow_invocations: Option<u32>,
    /// `maxConcurrentActivityInvocations`: activities in flight.
    #[serde(default)]
    pub max_concurrent_activity_invocations: Option<u32>,
}

/// `spec.tracing`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingSpec {
    /// Share of traces sampled, 0 to 1. Dapr's default is 0: no trace is recorded, but
    /// `traceparent` still flows.
    pub sampling_rate: f64,
    /// `stdout`: log each finished span.
    pub stdout: bool,
    /// `otel.endpointAddress`, when set.
    pub otel_endpoint: Option<String>,
    /// `otel.isSecure`.
    pub otel_secure: bool,
    /// `otel.protocol` (`grpc` or `http`).
    pub otel_protocol: String,
}

/// `spec.accessControl`: who may invoke this app.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessControl {
    /// Applies to callers without a policy.
    pub default_action: AclAction,
    /// `trustDomain` (default `public`).
    pub trust_domain: String,
    /// One policy per calling app.
    pub policies: Vec<AclPolicy>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    /// Let the call through.
    Allow,
    /// Refuse it with 403.
    Deny,
}

/// The rules for one calling app.
#[derive(Debug, Clone, PartialEq)]
pub struct AclPolicy {
    /// The caller's app id.
    pub app_id: String,
    /// Applies to operations no rule matches.
    pub default_action: AclAction,
    /// The caller's trust domain.
    pub trust_domain: String,
    /// The caller's namespace.
    pub namespace: String,
    /// Per-operation rules.
    pub operations: Vec<AclOperation>,
}

/// A rule for one operation path (with `/*` and `/**` wildcards) and some HTTP verbs.
#[derive(Debug, Clone, PartialEq)]
pub struct AclOperation {
    /// The operation path, such as `/orders/*`.
    pub name: String,
    /// Upper-case verbs, or `*` for all.
    pub http_verbs: Vec<String>,
    /// What to do on a match.
    pub action: AclAction,
}

/// `spec.secrets.scopes[]`: which secrets of a store the app may read.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretScope {
    /// The secret store the scope applies to.
    pub store_name: String,
    /// Access to secrets in neither list.
    pub default_access: AclAction,
    /// Secrets that may be read (when not empty, only these).
    pub allowed_secrets: Vec<String>,
    /// Secrets that may never be read.
    pub denied_secrets: Vec<String>,
}

impl SecretScope {
    /// Whether `key` may be read, following Dapr: an allow list, when given, is the only way in;
    /// a deny list always wins; otherwise the default access applies.
    pub fn allows(&self, key: &str) -> bool {
        if !self.allowed_secrets.is_empty() {
            return self.allowed_secrets.iter().any(|k| k == key);
        }
        if self.denied_secrets.iter().any(|k| k == key) {
            return false;
        }
        self.default_access == AclAction::Allow
    }
}

/// `spec.nameResolution`.
#[derive(Debug, Clone, PartialEq)]
pub struct NameResolutionSpec {
    /// `component`, e.g. `sqlite` or `mdns`.
    pub component: String,
    /// `configuration`, flattened to strings.
    pub configuration: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ConfigurationDoc {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    tracing: Option<TracingDoc>,
    #[serde(default)]
    metric: Option<MetricDoc>,
    #[serde(default)]
    access_control: Option<AccessControlDoc>,
    #[serde(default)]
    secrets: Option<SecretsDoc>,
    #[serde(default)]
    features: Vec<FeatureDoc>,
    #[serde(default)]
    name_resolution: Option<NameResolutionDoc>,
    #[serde(default)]
    workflow: Option<WorkflowSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TracingDoc {
    #[serde(default)]
    sampling_rate: Option<String>,
    #[serde(default)]
    stdout: bool,
    #[serde(default)]
    otel: Option<OtelDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtelDoc {
    #[serde(default)]
    endpoint_address: Option<String>,
    #[serde(default)]
    is_secure: bool,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize)]
struct MetricDoc {
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AccessControlDoc {
    #[serde(default)]
    default_action: Option<AclAction>,
    #[serde(default)]
    trust_domain: Option<String>,
    #[serde(default)]
    policies: Vec<AclPolicyDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AclPolicyDoc {
    app_id: String,
    #[serde(default)]
    default_action: Option<AclAction>,
    #[serde(default)]
    trust_domain: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operations: Vec<AclOperationDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AclOperationDoc {
    name: String,
    #[serde(default)]
    http_verb: Vec<String>,
    action: AclAction,
}

#[derive(Deserialize)]
struct SecretsDoc {
    #[serde(default)]
    scopes: Vec<SecretScopeDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretScopeDoc {
    store_name: String,
    #[serde(default)]
    default_access: Option<AclAction>,
    #[serde(default)]
    allowed_secrets: Vec<String>,
    #[serde(default)]
    denied_secrets: Vec<String>,
}

#[derive(Deserialize)]
struct FeatureDoc {
    name: String,
    #[serde(default)]
    enabled: bool,
}

#[derive(Deserialize)]
struct NameResolutionDoc {
    component: String,
    #[serde(default)]
    configuration: BTreeMap<String, serde_yaml_ng::Value>,
}

impl Configuration {
    pub(crate) fn parse(file: &Path, value: serde_yaml_ng::Value) -> Result<Self, ResourceError> {
        let doc: ConfigurationDoc = decode(file, "Configuration", value)?;
        let name = doc.metadata.name;
        let error = |field: &str, message: String| {
            ResourceError::new(file, message)
                .resource("Configuration", &name)
                .field(field)
        };
        let tracing = match doc.spec.tracing {
            None => TracingSpec::default(),
            Some(t) => {
                let sampling_rate = match t.sampling_rate.as_deref().map(str::trim) {
                    None | Some("") => 0.0,
                    Some(text) => text
                        .parse::<f64>()
                        .ok()
                        .filter(|rate| (0.0..=1.0).contains(rate))
                        .ok_or_else(|| {
                            error(
                                "spec.tracing.samplingRate",
                                format!("expected a number between 0 and 1, got {text:?}"),
                            )
                        })?,
                };
                let otel = t.otel;
                TracingSpec {
                    sampling_rate,
                    stdout: t.stdout,
                    otel_endpoint: otel
                        .as_ref()
                        .and_then(|o| o.endpoint_address.clone())
                        .filter(|e| !e.is_empty()),
                    otel_secure: otel.as_ref().is_some_and(|o| o.is_secure),
                    otel_protocol: otel
                        .and_then(|o| o.protocol)
                        .unwrap_or_else(|| "grpc".into()),
                }
            }
        };
        let access_control = doc.spec.access_control.map(|acl| {
            let trust_domain = acl.trust_domain.unwrap_or_else(|| "public".into());
            AccessControl {
                default_action: acl.default_action.unwrap_or(AclAction::Allow),
                policies: acl
                    .policies
                    .into_iter()
                    .map(|p| AclPolicy {
                        app_id: p.app_id,
                        default_action: p
                            .default_action
                            .or(acl.default_action)
                            .unwrap_or(AclAction::Allow),
                        trust_domain: p.trust_domain.unwrap_or_else(|| trust_domain.clone()),
                        namespace: p.namespace.unwrap_or_else(|| "default".into()),
                        operations: p
                            .operations
                            .into_iter()
                            .map(|o| AclOperation {
                                name: o.name,
                                http_verbs: o
                                    .http_verb
                                    .into_iter()
                                    .map(|v| v.to_ascii_uppercase())
                                    .collect(),
                                action: o.action,
                            })
                            .collect(),
                    })
                    .collect(),
                trust_domain,
            }
        });
        let secret_scopes = doc
            .spec
            .secrets
            .map(|s| s.scopes)
            .unwrap_or_default()
            .into_iter()
            .map(|s| SecretScope {
                store_name: s.store_name,
                default_access: s.default_access.unwrap_or(AclAction::Allow),
                allowed_secrets: s.allowed_secrets,
                denied_secrets: s.denied_secrets,
            })
            .collect();
        Ok(Self {
            tracing,
            metrics_enabled: doc.spec.metric.is_none_or(|m| m.enabled),
            access_control,
            secret_scopes,
            features: doc
                .spec
                .features
                .into_iter()
                .filter(|f| f.enabled)
                .map(|f| f.name)
                .collect(),
            name_resolution: doc.spec.name_resolution.map(|nr| NameResolutionSpec {
                component: nr.component,
                configuration: nr
                    .configuration
                    .iter()
                    .map(|(k, v)| (k.clone(), super::yaml_to_string(v)))
                    .collect(),
            }),
            workflow: doc.spec.workflow.unwrap_or_default(),
            name,
        })
    }

    /// The secret scope for `store`, if the configuration has one.
    pub fn secret_scope(&self, store: &str) -> Option<&SecretScope> {
        self.secret_scopes.iter().find(|s| s.store_name == store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Configuration, ResourceError> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("test YAML parses");
        Configuration::parse(Path::new("config.yaml"), value)
    }

    #[test]
    fn secret_scopes_follow_dapr_precedence() {
        let scope = |default_access, allowed: &[&str], denied: &[&str]| SecretScope {
            store_name: "s".into(),
            default_access,
            allowed_secrets: allowed.iter().map(|s| s.to_string()).collect(),
            denied_secrets: denied.iter().map(|s| s.to_string()).collect(),
        };
        assert!(scope(AclAction::Allow, &[], &[]).allows("a"));
        assert!(!scope(AclAction::Deny, &[], &[]).allows("a"));
        assert!(!scope(AclAction::Allow, &[], &["a"]).allows("a"));
        assert!(scope(AclAction::Deny, &["a"], &[]).allows("a"));
        assert!(!scope(AclAction::Allow, &["a"], &[]).allows("b"));
    }

    #[test]
    fn a_bad_sampling_rate_names_the_field() {
        let error = parse("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  tracing: {samplingRate: lots}\n")
            .expect_err("invalid rate");
        assert_eq!(error.field.as_deref(), Some("spec.tracing.samplingRate"));
    }

    #[test]
    fn an_unknown_acl_action_names_the_field() {
        let error = parse("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  accessControl: {defaultAction: maybe}\n")
            .expect_err("invalid action");
        assert_eq!(
            error.field.as_deref(),
            Some("spec.accessControl.defaultAction")
        );
    }
}
