//! Pub/sub components: one trait, four brokers, and the topic scoping every component shares.
//!
//! A component publishes bytes and, for each subscription, calls a handler per message. The
//! handler's answer decides what the broker does with the message: [`Ok`] acknowledges it,
//! [`HandlerError::Retry`] hands it back for redelivery (per broker: requeue, leave pending,
//! retry in place), and [`HandlerError::Shutdown`] releases it untouched so that another
//! consumer, or this one after a restart, gets it. Nothing is acknowledged before the app's
//! success or an explicit drop.

pub mod envelope;
mod kafka;
mod memory;
mod rabbitmq;
mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::components::ComponentContext;
use crate::resources::{ComponentDef, ComponentMetadata, ResourceError};

pub use memory::{MemoryBroker, MemoryBrokers};

/// The component types this module builds.
pub const TYPES: &[&str] = &[
    "pubsub.in-memory",
    "pubsub.rabbitmq",
    "pubsub.kafka",
    "pubsub.redis",
];

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The topic.
    pub topic: String,
    /// The bytes (a CloudEvent, unless published raw).
    pub data: Bytes,
    /// Publish metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A message received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// The bytes as published.
    pub data: Bytes,
    /// What the broker carried along (Kafka headers, Redis stream metadata, ...).
    pub metadata: BTreeMap<String, String>,
}

/// Why the runtime did not accept a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Delivery failed: the broker should deliver the message again.
    #[error("the message should be delivered again")]
    Retry,
    /// The sidecar is stopping: release the message without acknowledging it.
    #[error("the subscriber is shutting down")]
    Shutdown,
}

/// Called by a component for each message of a subscription.
pub type Handler =
    Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// A subscription as the component sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// The topic.
    pub topic: String,
    /// Subscription metadata (e.g. RabbitMQ `queueName`).
    pub metadata: BTreeMap<String, String>,
}

/// What a component supports, as reported in the metadata API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// The broker expires messages itself (`MESSAGE_TTL`).
    pub message_ttl: bool,
    /// The broker takes batches (`BULK_PUBLISH`).
    pub bulk_publish: bool,
}

impl Features {
    /// Dapr's capability names.
    pub fn capability_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.message_ttl {
            names.push("MESSAGE_TTL".to_owned());
        }
        if self.bulk_publish {
            names.push("BULK_PUBLISH".to_owned());
        }
        names
    }
}

/// A pub/sub component.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// What the component supports.
    fn features(&self) -> Features;

    /// Publishes one message; returns once the broker has it (confirmed, where the broker can).
    async fn publish(&self, request: &PublishRequest) -> anyhow::Result<()>;

    /// Publishes several messages; one result per message, in order.
    async fn bulk_publish(&self, requests: &[PublishRequest]) -> Vec<anyhow::Result<()>> {
        let publishes = requests.iter().map(|request| self.publish(request));
        futures::future::join_all(publishes).await
    }

    /// Starts consuming `request.topic`, calling `handler` for each message, until `stop` is
    /// cancelled. Returns once the subscription is in place.
    async fn subscribe(
        &self,
        request: SubscribeRequest,
        handler: Handler,
        stop: CancellationToken,
    ) -> anyhow::Result<()>;

    /// Checks the broker answers.
    async fn ping(&self) -> anyhow::Result<()>;
}

/// Builds the pub/sub component a resource describes.
pub async fn build(
    def: &ComponentDef,
    metadata: &ComponentMetadata,
    context: &ComponentContext,
) -> Result<Arc<dyn PubSub>, ResourceError> {
    let consumer_id = consumer_id(metadata, context);
    Ok(match def.component_type.as_str() {
        "pubsub.in-memory" => context.brokers.memory(&def.name, consumer_id),
        "pubsub.rabbitmq" => Arc::new(rabbitmq::RabbitMq::connect(metadata, consumer_id).await?),
        "pubsub.kafka" => Arc::new(kafka::Kafka::connect(metadata, consumer_id).await?),
        "pubsub.redis" => Arc::new(redis::RedisStreams::connect(metadata, consumer_id).await?),
        other => {
            return Err(def
                .error(format!("unknown pub/sub type {other:?}"))
                .field("spec.type"));
        }
    })
}

/// daprd gives every pub/sub component a `consumerID`, the app id unless set: replicas of one
/// app share it (and compete for messages), different apps each get every message.
fn consumer_id(metadata: &ComponentMetadata, context: &ComponentContext) -> String {
    metadata
        .get("consumerID")
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .unwrap_or(&context.app_id)
        .to_owned()
}

/// The topic scoping metadata of a pub/sub component (`publishingScopes`, `subscriptionScopes`,
/// `allowedTopics`, `protectedTopics`), resolved for one app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicScopes {
    allowed: Vec<String>,
    protected: Vec<String>,
    publishing: Option<Vec<String>>,
    subscribing: Option<Vec<String>>,
}

impl TopicScopes {
    /// Reads the scoping metadata for `app_id` (spaces are ignored, as daprd strips them).
    pub fn new(metadata: &ComponentMetadata, app_id: &str) -> Self {
        let list = |name: &str| -> Vec<String> {
            metadata
                .get(name)
                .map(|v| {
                    v.replace(' ', "")
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let scoped = |name: &str| -> Option<Vec<String>> {
            let value = metadata.get(name)?.replace(' ', "");
            value.split(';').find_map(|entry| {
                let (app, topics) = entry.split_once('=')?;
                (app == app_id).then(|| topics.split(',').map(str::to_owned).collect())
            })
        };
        Self {
            allowed: list("allowedTopics"),
            protected: list("protectedTopics"),
            publishing: scoped("publishingScopes"),
            subscribing: scoped("subscriptionScopes"),
        }
    }

    fn allows(&self, topic: &str, scoped: Option<&Vec<String>>) -> bool {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|t| t == topic) {
            return false;
        }
        let protected = self.protected.iter().any(|t| t == topic);
        match scoped {
            None if !protected => true,
            None => false,
            Some(topics) => topics.iter().any(|t| t == topic),
        }
    }

    /// Whether the app may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.allows(topic, self.publishing.as_ref())
    }

    /// Whether the app may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.allows(topic, self.subscribing.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_scopes_follow_dapr() {
        let metadata = ComponentMetadata::from_pairs(
            "pubsub",
            [
                (
                    "publishingScopes",
                    "orders=order-created, order-cancelled;payments=",
                ),
                ("protectedTopics", "payment-succeeded"),
            ],
        );
        let orders = TopicScopes::new(&metadata, "orders");
        assert!(orders.may_publish("order-created"));
        assert!(
            !orders.may_publish("product-added"),
            "a scoped app is limited to its list"
        );
        assert!(
            orders.may_subscribe("product-added"),
            "subscriptions are not scoped here"
        );
        assert!(
            !orders.may_subscribe("payment-succeeded"),
            "protected topics need a scope"
        );
        let payments = TopicScopes::new(&metadata, "payments");
        assert!(!payments.may_publish("anything"), "`app=` allows no topic");
        let other = TopicScopes::new(&metadata, "inventory");
        assert!(other.may_publish("product-added"));

        let allowed = ComponentMetadata::from_pairs("pubsub", [("allowedTopics", "a,b")]);
        let scopes = TopicScopes::new(&allowed, "x");
        assert!(scopes.may_publish("a") && !scopes.may_publish("c"));
    }
}
