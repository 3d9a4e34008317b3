//! The Metadata API: what the sidecar loaded and how it reaches its app.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::resources::duration;
use crate::runtime::Runtime;
use crate::subscriber::SubscriptionKind;

/// The version of the Dapr API this sidecar implements; SDKs read it from the metadata API.
pub const DAPR_RUNTIME_VERSION: &str = "1.17.0";

/// `GET /v1.0/metadata`, field for field as daprd writes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetadataSnapshot {
    pub(crate) id: String,
    pub(crate) runtime_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) enabled_features: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) components: Vec<ComponentJson>,
    pub(crate) extended: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) subscriptions: Vec<SubscriptionJson>,
    pub(crate) app_connection_properties: AppConnectionJson,
    pub(crate) actor_runtime: ActorRuntimeJson,
    /// Present when the workflow engine runs, as daprd's `workflows` field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) workflows: Option<WorkflowsJson>,
}

/// daprd's `MetadataWorkflows`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkflowsJson {
    pub(crate) connected_workers: i32,
    /// Not in daprd (which lists only `connectedWorkers`): how many instances this sidecar
    /// holds in each runtime status (`RUNNING`, `COMPLETED`, ...). gRPC GetMetadata has no
    /// field for it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) instances: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ComponentJson {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) component_type: String,
    pub(crate) version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) capabilities: Vec<String>,
}

/// A subscription as daprd lists it (the field names mix conventions, as daprd's do).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SubscriptionJson {
    pub(crate) pubsubname: String,
    pub(crate) topic: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) rules: Vec<RuleJson>,
    #[serde(rename = "deadLetterTopic")]
    pub(crate) dead_letter_topic: String,
    #[serde(rename = "type")]
    pub(crate) kind: SubscriptionKind,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RuleJson {
    #[serde(rename = "match", skip_serializing_if = "String::is_empty")]
    pub(crate) match_expr: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) path: String,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppConnectionJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    pub(crate) protocol: String,
    pub(crate) channel_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) health: Option<AppHealthJson>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppHealthJson {
    pub(crate) health_check_path: String,
    pub(crate) health_probe_interval: String,
    pub(crate) health_probe_timeout: String,
    pub(crate) health_threshold: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActorRuntimeJson {
    pub(crate) runtime_status: String,
    pub(crate) host_ready: bool,
}

impl Runtime {
    /// What `/v1.0/metadata` and GetMetadata report.
    pub(crate) fn metadata(&self) -> MetadataSnapshot {
        let options = &self.options;
        let mut extended = self
            .extended_metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        extended.insert("daprRuntimeVersion".into(), DAPR_RUNTIME_VERSION.into());
        extended.insert(
            "localSidecarVersion".into(),
            env!("CARGO_PKG_VERSION").into(),
        );
        MetadataSnapshot {
            id: self.app_id.clone(),
            runtime_version: DAPR_RUNTIME_VERSION.into(),
            enabled_features: self.configuration.features.clone(),
            components: self
                .components
                .infos
                .iter()
                .map(|info| ComponentJson {
                    name: info.name.clone(),
                    component_type: info.component_type.clone(),
                    version: info.version.clone(),
                    capabilities: info.capabilities.clone(),
                })
                .collect(),
            extended,
            subscriptions: self
                .subscriptions
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|known| {
                    let def = &known.def;
                    let mut rules: Vec<RuleJson> = def
                        .rules
                        .iter()
                        .map(|rule| RuleJson {
                            match_expr: rule.match_expr.clone(),
                            path: rule.path.clone(),
                        })
                        .collect();
                    if let Some(default) = &def.default_route {
                        rules.push(RuleJson {
                            match_expr: String::new(),
                            path: default.clone(),
                        });
                    }
                    SubscriptionJson {
                        pubsubname: def.pubsub_name.clone(),
                        topic: def.topic.clone(),
                        metadata: def.metadata.clone(),
                        rules,
                        dead_letter_topic: def.dead_letter_topic.clone().unwrap_or_default(),
                        kind: known.kind,
                    }
                })
                .collect(),
            app_connection_properties: AppConnectionJson {
                port: options.app_port,
                protocol: "http".into(),
                channel_address: options.app_channel_address.clone(),
                max_concurrency: options.app_max_concurrency,
                health: options.app_health.enabled.then(|| AppHealthJson {
                    health_check_path: options.app_health.path.clone(),
                    health_probe_interval: duration::format(options.app_health.interval),
                    health_probe_timeout: duration::format(options.app_health.timeout),
                    health_threshold: options.app_health.threshold,
                }),
            },
            actor_runtime: ActorRuntimeJson {
                runtime_status: "DISABLED".into(),
                host_ready: false,
            },
            workflows: self.workflows.as_ref().ok().map(|engine| WorkflowsJson {
                connected_workers: i32::try_from(engine.connected_workers()).unwrap_or(i32::MAX),
                instances: engine
                    .instance_counts()
                    .into_iter()
                    .map(|(status, count)| {
                        (crate::workflow::http::status_name(status as i32), count)
                    })
                    .collect(),
            }),
        }
    }

    /// `PUT /v1.0/metadata/{key}`: an attribute reported under `extended`.
    pub(crate) fn set_metadata(&self, key: String, value: String) {
        if key.is_empty() {
            return;
        }
        self.extended_metadata
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
    }
}
