//! The Pub/sub API (publish and bulk publish), shared by the HTTP and gRPC front ends.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;

use super::ApiError;
use crate::components::PubSubComponent;
use crate::pubsub::PublishRequest;
use crate::pubsub::envelope::{self, EnvelopeInput};
use crate::runtime::Runtime;
use crate::trace::RequestTrace;

/// One entry of a bulk publish, its event already as bytes.
#[derive(Debug, Clone)]
pub(crate) struct BulkEntry {
    pub(crate) entry_id: String,
    pub(crate) event: Bytes,
    pub(crate) content_type: String,
    /// The entry's own metadata; `None` keeps the request's metadata off the envelope (as daprd).
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// An entry the broker did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedEntry {
    pub(crate) entry_id: String,
    pub(crate) error: String,
}

fn raw_payload(metadata: &BTreeMap<String, String>) -> Result<bool, ApiError> {
    match metadata.get("rawPayload").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_PUBSUB_REQUEST_METADATA",
            format!(
                "failed deserializing metadata. Error: rawPayload value must be a valid boolean: actual is '{other}'"
            ),
        )),
    }
}

/// Where a publish goes, and what its envelopes need from the request.
struct Target<'a> {
    app_id: &'a str,
    component: &'a PubSubComponent,
    pubsub: &'a str,
    topic: &'a str,
    traceparent: String,
    tracestate: &'a str,
}

impl<'a> Target<'a> {
    fn new(
        runtime: &'a Runtime,
        component: &'a PubSubComponent,
        pubsub: &'a str,
        topic: &'a str,
        trace: &'a RequestTrace,
    ) -> Self {
        Self {
            app_id: &runtime.app_id,
            component,
            pubsub,
            topic,
            traceparent: trace.span.to_string(),
            tracestate: trace.tracestate.as_deref().unwrap_or(""),
        }
    }

    /// The CloudEvent for `data`, as bytes.
    fn envelope(
        &self,
        data: &[u8],
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Bytes, ApiError> {
        let input = EnvelopeInput {
            source: self.app_id,
            pubsub: self.pubsub,
            topic: self.topic,
            content_type,
            data,
            traceparent: &self.traceparent,
            tracestate: self.tracestate,
            metadata,
        };
        envelope::build(&input, self.component.pubsub.features().message_ttl).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::InvalidArgument,
                "ERR_PUBSUB_CLOUD_EVENTS_SER",
                e.to_string(),
            )
        })
    }
}

impl Runtime {
    fn pubsub_component(&self, name: &str, topic: &str) -> Result<&PubSubComponent, ApiError> {
        let component = self.components.pubsubs.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                tonic::Code::InvalidArgument,
                "ERR_PUBSUB_NOT_FOUND",
                format!("pubsub {name} is not found"),
            )
            .with_reason("DAPR_PUBSUB_NOT_FOUND", &self.app_id)
        })?;
        if topic.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                tonic::Code::InvalidArgument,
                "ERR_TOPIC_NAME_EMPTY",
                format!("topic is empty in pubsub {name}"),
            ));
        }
        if !component.scopes.may_publish(topic) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                tonic::Code::PermissionDenied,
                "ERR_PUBSUB_FORBIDDEN",
                format!("topic {topic} is not allowed for app id {}", self.app_id),
            ));
        }
        Ok(component)
    }

    /// Publishes one message.
    pub(crate) async fn publish_event(
        &self,
        pubsub: &str,
        topic: &str,
        data: &[u8],
        content_type: &str,
        metadata: BTreeMap<String, String>,
        trace: &RequestTrace,
    ) -> Result<(), ApiError> {
        let component = self.pubsub_component(pubsub, topic)?;
        let target = Target::new(self, component, pubsub, topic, trace);
        let data = if raw_payload(&metadata)? {
            Bytes::copy_from_slice(data)
        } else {
            target.envelope(data, content_type, &metadata)?
        };
        let request = PublishRequest {
            topic: topic.to_owned(),
            data,
            metadata,
        };
        let started = Instant::now();
        let result = component.pubsub.publish(&request).await;
        self.metrics
            .component_operation(pubsub, "publish", result.is_ok(), started.elapsed());
        result.map_err(|e| publish_error(pubsub, topic, &format!("{e:#}")))
    }

    /// Publishes several messages; returns the entries that failed.
    pub(crate) async fn bulk_publish_events(
        &self,
        pubsub: &str,
        topic: &str,
        entries: Vec<BulkEntry>,
        metadata: &BTreeMap<String, String>,
        trace: &RequestTrace,
    ) -> Result<Vec<FailedEntry>, ApiError> {
        let component = self.pubsub_component(pubsub, topic)?;
        let mut seen = HashSet::new();
        for entry in &entries {
            if entry.entry_id.is_empty() || !seen.insert(entry.entry_id.as_str()) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    "ERR_PUBSUB_EVENTS_SER",
                    format!(
                        "error marshaling events to bytes for topic {topic} pubsub {pubsub}. error: entryId is duplicated or not present for entry"
                    ),
                ));
            }
        }
        let raw = raw_payload(metadata)?;
        let target = Target::new(self, component, pubsub, topic, trace);
        let mut requests = Vec::with_capacity(entries.len());
        for entry in &entries {
            let entry_metadata = entry.metadata.clone().map(|mut own| {
                for (key, value) in metadata {
                    own.entry(key.clone()).or_insert_with(|| value.clone());
                }
                own
            });
            let envelope_metadata = entry_metadata.clone().unwrap_or_default();
            let data = if raw {
                entry.event.clone()
            } else {
                target.envelope(&entry.event, &entry.content_type, &envelope_metadata)?
            };
            requests.push(PublishRequest {
                topic: topic.to_owned(),
                data,
                metadata: entry_metadata.unwrap_or_default(),
            });
        }
        let started = Instant::now();
        let results = component.pubsub.bulk_publish(&requests).await;
        let failed: Vec<FailedEntry> = entries
            .iter()
            .zip(results)
            .filter_map(|(entry, result)| {
                result.err().map(|e| FailedEntry {
                    entry_id: entry.entry_id.clone(),
                    error: format!("{e:#}"),
                })
            })
            .collect();
        self.metrics.component_operation(
            pubsub,
            "bulk_publish",
            failed.is_empty(),
            started.elapsed(),
        );
        Ok(failed)
    }
}

/// `ERR_PUBSUB_PUBLISH_MESSAGE` (500 / Internal).
pub(crate) fn publish_error(pubsub: &str, topic: &str, error: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        "ERR_PUBSUB_PUBLISH_MESSAGE",
        format!("error when publishing to topic {topic} in pubsub {pubsub}: {error}"),
    )
}
