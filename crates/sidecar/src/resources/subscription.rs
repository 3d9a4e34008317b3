//! The declarative `Subscription` resource (`dapr.io/v1alpha1` and `dapr.io/v2alpha1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ObjectMeta, ResourceError, decode};

/// A subscription, declared in YAML or returned by the app's `/dapr/subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionDef {
    /// `metadata.name` (empty for programmatic subscriptions).
    #[serde(skip)]
    pub name: String,
    /// The pub/sub component.
    pub pubsub_name: String,
    /// The topic.
    pub topic: String,
    /// Routing rules, evaluated in order; the first match wins.
    pub rules: Vec<RouteRule>,
    /// The path used when no rule matches (`routes.default`, or v1alpha1's `route`).
    pub default_route: Option<String>,
    /// Where dropped or undeliverable messages go.
    pub dead_letter_topic: Option<String>,
    /// Subscription metadata passed to the pub/sub component.
    pub metadata: BTreeMap<String, String>,
    /// Bulk delivery settings.
    pub bulk_subscribe: Option<BulkSubscribe>,
    /// `scopes`.
    #[serde(skip)]
    pub scopes: Vec<String>,
    /// Where the subscription came from (a file), if declarative.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A routing rule: a CEL expression over the CloudEvent and the path to deliver matches to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRule {
    /// The CEL expression (`event.type == "order.created"`); empty matches everything.
    #[serde(rename = "match", default)]
    pub match_expr: String,
    /// The app path.
    pub path: String,
}

/// `bulkSubscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkSubscribe {
    /// Whether messages are delivered in batches.
    #[serde(default)]
    pub enabled: bool,
    /// Largest batch (Dapr's default 100).
    #[serde(default)]
    pub max_messages_count: Option<u32>,
    /// Longest wait for a batch to fill, in milliseconds (Dapr's default 1000).
    #[serde(default)]
    pub max_await_duration_ms: Option<u32>,
}

#[derive(Deserialize)]
struct SubscriptionDoc {
    metadata: ObjectMeta,
    #[serde(default)]
    scopes: Vec<String>,
    spec: SpecDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecDoc {
    pubsubname: String,
    topic: String,
    /// v1alpha1 only.
    #[serde(default)]
    route: Option<String>,
    /// v2alpha1 only.
    #[serde(default)]
    routes: Option<RoutesDoc>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    bulk_subscribe: Option<BulkSubscribe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesDoc {
    #[serde(default)]
    rules: Vec<RouteRule>,
    #[serde(default)]
    default: Option<String>,
}

impl SubscriptionDef {
    pub(crate) fn parse(
        file: &Path,
        api_version: &str,
        value: serde_yaml_ng::Value,
    ) -> Result<Self, ResourceError> {
        let doc: SubscriptionDoc = decode(file, "Subscription", value)?;
        let name = doc.metadata.name;
        let error = |field: &str, message: &str| {
            ResourceError::new(file, message)
                .resource("Subscription", &name)
                .field(field)
        };
        let spec = doc.spec;
        if spec.pubsubname.is_empty() {
            return Err(error("spec.pubsubname", "must not be empty"));
        }
        if spec.topic.is_empty() {
            return Err(error("spec.topic", "must not be empty"));
        }
        let (rules, default_route) = match (api_version, spec.route, spec.routes) {
            ("dapr.io/v1alpha1", Some(route), None) => (Vec::new(), Some(route)),
            ("dapr.io/v1alpha1", _, _) => {
                return Err(error(
                    "spec.route",
                    "a v1alpha1 Subscription needs `route` (and no `routes`)",
                ));
            }
            (_, None, Some(routes)) => (routes.rules, routes.default),
            (_, Some(_), _) => {
                return Err(error("spec.route", "v2alpha1 uses `routes`, not `route`"));
            }
            (_, None, None) => return Err(error("spec.routes", "required field is missing")),
        };
        if rules.is_empty() && default_route.as_deref().is_none_or(str::is_empty) {
            return Err(error(
                "spec.routes",
                "needs at least one rule or a default route",
            ));
        }
        for (index, rule) in rules.iter().enumerate() {
            if !rule.match_expr.is_empty()
                && let Err(e) = cel::Program::compile(&rule.match_expr)
            {
                return Err(error(
                    &format!("spec.routes.rules[{index}].match"),
                    &format!("invalid CEL expression: {e}"),
                ));
            }
        }
        Ok(Self {
            name,
            pubsub_name: spec.pubsubname,
            topic: spec.topic,
            rules,
            default_route,
            dead_letter_topic: spec.dead_letter_topic.filter(|t| !t.is_empty()),
            metadata: spec.metadata,
            bulk_subscribe: spec.bulk_subscribe,
            scopes: doc.scopes,
            source: Some(file.to_path_buf()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(api: &str, spec: &str) -> Result<SubscriptionDef, ResourceError> {
        let yaml =
            format!("apiVersion: {api}\nkind: Subscription\nmetadata: {{name: s}}\nspec:\n{spec}");
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("test YAML parses");
        SubscriptionDef::parse(Path::new("sub.yaml"), api, value)
    }

    #[test]
    fn v2alpha1_reads_rules_and_default() {
        let sub = parse(
            "dapr.io/v2alpha1",
            "  pubsubname: pubsub\n  topic: orders\n  routes:\n    rules:\n    - {match: 'event.type == \"a\"', path: /a}\n    default: /orders\n",
        )
        .expect("valid");
        assert_eq!(sub.rules.len(), 1);
        assert_eq!(sub.default_route.as_deref(), Some("/orders"));
    }

    #[test]
    fn v1alpha1_route_becomes_the_default_route() {
        let sub = parse(
            "dapr.io/v1alpha1",
            "  pubsubname: pubsub\n  topic: orders\n  route: /orders\n",
        )
        .expect("valid");
        assert_eq!(sub.default_route.as_deref(), Some("/orders"));
    }

    #[test]
    fn an_invalid_match_expression_names_the_rule() {
        let error = parse(
            "dapr.io/v2alpha1",
            "  pubsubname: pubsub\n  topic: orders\n  routes:\n    rules:\n    - {match: 'event.type ==', path: /a}\n",
        )
        .expect_err("bad CEL");
        assert_eq!(error.field.as_deref(), Some("spec.routes.rules[0].match"));
    }
}
