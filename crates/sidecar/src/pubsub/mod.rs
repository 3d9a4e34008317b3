//! Pub/sub components: one trait, four brokers, and the topic scoping every component shares.
//!
//! A component publishes bytes and, for each subscription, calls a handler per message, or for a
//! bulk subscription a handler per batch with one answer per message. The answer decides what
//! the broker does with the message: [`Ok`] acknowledges it, [`HandlerError::Retry`] hands it
//! back for redelivery (per broker: requeue, leave pending, retry in place), and
//! [`HandlerError::Shutdown`] releases it untouched so that another consumer, or this one after
//! a restart, gets it. Nothing is acknowledged before the app's success or an explicit drop.
//!
//! Every component batches on its own side of the broker (reads of up to a batch, one
//! acknowledgement per batch where the broker has one). daprd instead feeds bulk subscriptions
//! through its per-message subscription, which caps a batch at the number of messages the
//! component has in flight at once (1 for Kafka and the in-memory broker here, `concurrency`
//! for Redis, the prefetch for RabbitMQ) and then waits out `maxAwaitDurationMs` for a batch
//! that cannot grow; RabbitMQ's batches here are gathered the same way, but one that cannot
//! grow goes out at once.

pub mod envelope;
mod kafka;
mod memory;
mod rabbitmq;
mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

/// Called by a component with each batch of a bulk subscription; answers one result per
/// message, in the batch's order.
pub type BulkHandler =
    Arc<dyn Fn(Vec<Message>) -> BoxFuture<'static, Vec<Result<(), HandlerError>>> + Send + Sync>;

/// How a bulk subscription groups messages (`bulkSubscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many messages in a batch (`maxMessagesCount`), at least 1.
    pub max_messages: usize,
    /// A batch that is not full goes out this long after its first message arrived
    /// (`maxAwaitDurationMs`).
    pub max_await: Duration,
}

impl BatchLimits {
    /// Dapr's defaults for what `bulkSubscribe` leaves out (or sets to 0): 100 messages, 1 s.
    pub fn new(max_messages: Option<u32>, max_await_ms: Option<u32>) -> Self {
        Self {
            max_messages: max_messages.filter(|n| *n > 0).unwrap_or(100) as usize,
            max_await: Duration::from_millis(u64::from(
                max_await_ms.filter(|n| *n > 0).unwrap_or(1000),
            )),
        }
    }
}

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

    /// Like [`PubSub::subscribe`], but `handler` gets batches: one batch at a time, each
    /// holding what arrived within `limits`. Each message is settled with the broker by its
    /// own result, as in [`PubSub::subscribe`].
    async fn bulk_subscribe(
        &self,
        request: SubscribeRequest,
        limits: BatchLimits,
        handler: BulkHandler,
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

/// Bulk delivery over a component's per-message subscription: messages handed over one at a
/// time (up to the component's prefetch in parallel) are gathered into batches within `limits`;
/// each waits for its own result from the batch. This is how daprd batches for every broker.
///
/// `in_flight` is the most messages the component hands over before one is settled. A batch
/// that holds that many cannot grow, so it goes out at once; daprd waits out
/// `maxAwaitDurationMs` even then, which caps a RabbitMQ bulk subscription at one prefetch per
/// wait (1 300 messages a second with a prefetch of 16 and 10 ms, in the benchmark).
pub(crate) async fn batch_per_message<P: PubSub + ?Sized>(
    pubsub: &P,
    request: SubscribeRequest,
    limits: BatchLimits,
    in_flight: usize,
    handler: BulkHandler,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let full = limits.max_messages.min(in_flight.max(1));
    type Waiting = (
        Message,
        tokio::sync::oneshot::Sender<Result<(), HandlerError>>,
    );
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Waiting>(limits.max_messages * 2);
    let batches_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                first = receiver.recv() => first,
                () = batches_stop.cancelled() => None,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            let deadline = tokio::time::sleep(limits.max_await);
            tokio::pin!(deadline);
            while batch.len() < full {
                tokio::select! {
                    next = receiver.recv() => match next {
                        Some(entry) => batch.push(entry),
                        None => break,
                    },
                    () = &mut deadline => break,
                    () = batches_stop.cancelled() => break,
                }
            }
            let (messages, replies): (Vec<Message>, Vec<_>) = batch.into_iter().unzip();
            let results = handler(messages).await;
            for (i, reply) in replies.into_iter().enumerate() {
                let result = results.get(i).copied().unwrap_or(Err(HandlerError::Retry));
                let _ = reply.send(result);
            }
        }
    });
    let per_message: Handler = Arc::new(move |message| {
        let sender = sender.clone();
        Box::pin(async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            sender
                .send((message, reply))
                .await
                .map_err(|_| HandlerError::Shutdown)?;
            answer.await.unwrap_or(Err(HandlerError::Shutdown))
        })
    });
    pubsub.subscribe(request, per_message, stop).await
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
