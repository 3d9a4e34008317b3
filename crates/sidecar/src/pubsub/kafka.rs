//! `pubsub.kafka` (librdkafka): `partitionKey` is the record key, metadata travels as headers,
//! one consumer group per `consumerGroup` (the `consumerID` when unset).
//!
//! As components-contrib with `consumeRetryEnabled` (its pub/sub default): a message the app
//! fails is retried in place every `backOffDuration`, holding its partition, and an offset is
//! stored only after the app's success, then committed. On shutdown nothing in flight is
//! committed, so the next owner of the partition gets it again. A bulk subscription takes
//! what the consumer has (up to a batch, waiting at most `maxAwaitDurationMs` for more),
//! retries in place only the entries the app did not take, and stores the offsets once the
//! batch is done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BatchLimits, BulkHandler, Features, Handler, HandlerError, Message, PubSub, PublishRequest,
    SubscribeRequest,
};
use crate::resources::{ComponentMetadata, ResourceError};

/// How long a publish may wait for the broker before it fails the caller.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

struct Settings {
    brokers: String,
    group: String,
    client_id: Option<String>,
    initial_offset: &'static str,
    retry_interval: Duration,
    max_message_bytes: Option<u32>,
}

impl Settings {
    fn parse(metadata: &ComponentMetadata, consumer_id: String) -> Result<Self, ResourceError> {
        let brokers = metadata.required("brokers")?.to_owned();
        match metadata.get("authType") {
            None | Some("none") => {}
            Some(other) => {
                return Err(metadata.error(
                    "authType",
                    format!("{other:?} is not supported by the local sidecar (only `none`)"),
                ));
            }
        }
        let initial_offset = match metadata
            .get("initialOffset")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("newest") => "latest",
            Some("oldest") => "earliest",
            Some(other) => {
                return Err(metadata.error(
                    "initialOffset",
                    format!("expected `oldest` or `newest`, got {other:?}"),
                ));
            }
        };
        Ok(Self {
            brokers,
            group: metadata
                .get("consumerGroup")
                .map_or(consumer_id, str::to_owned),
            client_id: metadata.get("clientID").map(str::to_owned),
            initial_offset,
            retry_interval: metadata
                .duration("backOffDuration", Duration::from_secs(1))?
                .unwrap_or(Duration::from_secs(5)),
            max_message_bytes: metadata.parse::<u32>("maxMessageBytes")?.filter(|n| *n > 0),
        })
    }

    fn base_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        if let Some(id) = &self.client_id {
            config.set("client.id", id);
        }
        config.set("log_level", "3");
        config
    }
}

/// The Kafka pub/sub component.
pub(super) struct Kafka {
    settings: Arc<Settings>,
    producer: FutureProducer,
}

impl Kafka {
    pub(super) async fn connect(
        metadata: &ComponentMetadata,
        consumer_id: String,
    ) -> Result<Self, ResourceError> {
        let settings = Settings::parse(metadata, consumer_id)?;
        let mut config = settings.base_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                PUBLISH_TIMEOUT.as_millis().to_string(),
            );
        if let Some(bytes) = settings.max_message_bytes {
            config.set("message.max.bytes", bytes.to_string());
        }
        let producer: FutureProducer = config.create().map_err(|e| {
            metadata.error("brokers", format!("cannot create a Kafka producer: {e}"))
        })?;
        let component = Self {
            settings: Arc::new(settings),
            producer,
        };
        component
            .ping()
            .await
            .map_err(|e| metadata.error("brokers", format!("{e:#}")))?;
        Ok(component)
    }
}

#[async_trait]
impl PubSub for Kafka {
    fn features(&self) -> Features {
        Features {
            message_ttl: false,
            bulk_publish: true,
        }
    }

    async fn publish(&self, request: &PublishRequest) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &request.metadata {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let key = request
            .metadata
            .get("partitionKey")
            .or_else(|| request.metadata.get("__key"));
        let mut record = FutureRecord::to(&request.topic)
            .payload(request.data.as_ref())
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        self.producer
            .send(record, Timeout::After(PUBLISH_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(error, _)| anyhow!(error).context("Kafka did not take the message"))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequest,
        handler: Handler,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let consumer = self.consumer(&request)?;
        let retry_interval = self.settings.retry_interval;
        tokio::spawn(async move {
            consume(consumer, handler, stop, retry_interval).await;
        });
        Ok(())
    }

    async fn bulk_subscribe(
        &self,
        request: SubscribeRequest,
        limits: BatchLimits,
        handler: BulkHandler,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let consumer = self.consumer(&request)?;
        let retry_interval = self.settings.retry_interval;
        tokio::spawn(async move {
            consume_batches(consumer, handler, limits, stop, retry_interval).await;
        });
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|_| ())
                .map_err(|e| anyhow!("cannot reach the Kafka brokers: {e}"))
        })
        .await
        .map_err(|e| anyhow!(e))?
    }
}

impl Kafka {
    /// A consumer of the group, subscribed to the request's topic.
    fn consumer(
        &self,
        request: &SubscribeRequest,
    ) -> anyhow::Result<StreamConsumer<CommitOnRevoke>> {
        let mut config = self.settings.base_config();
        config
            .set("group.id", &self.settings.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Offsets are stored by hand, after the app's success.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", self.settings.initial_offset)
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000");
        let consumer: StreamConsumer<CommitOnRevoke> = config
            .create_with_context(CommitOnRevoke)
            .context("cannot create a Kafka consumer")?;
        consumer
            .subscribe(&[request.topic.as_str()])
            .with_context(|| format!("cannot subscribe to {}", request.topic))?;
        Ok(consumer)
    }
}

/// Commits what was processed before partitions move to another consumer, so a rebalance does
/// not hand finished work out again.
struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance
            && let Err(error) = consumer.commit_consumer_state(CommitMode::Sync)
        {
            tracing::debug!(%error, "no offsets to commit before the rebalance");
        }
    }
}

async fn consume(
    consumer: StreamConsumer<CommitOnRevoke>,
    handler: Handler,
    stop: CancellationToken,
    retry_interval: Duration,
) {
    loop {
        let received = tokio::select! {
            received = consumer.recv() => received,
            () = stop.cancelled() => break,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "Kafka consumer error");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    () = stop.cancelled() => break,
                }
            }
        };
        let delivered = to_message(&message);
        // Retried in place until the app takes it: Kafka has no per-message negative ack.
        let done = loop {
            match handler(delivered.clone()).await {
                Ok(()) => break true,
                Err(HandlerError::Shutdown) => break false,
                Err(HandlerError::Retry) => {
                    tokio::select! {
                        () = tokio::time::sleep(retry_interval) => {}
                        () = stop.cancelled() => break false,
                    }
                }
            }
        };
        if !done {
            break;
        }
        if let Err(error) = consumer.store_offset_from_message(&message) {
            tracing::warn!(%error, "could not store a Kafka offset; the message may be delivered again");
        }
    }
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "nothing to commit when stopping the Kafka consumer");
    }
}

/// The message as the runtime sees it: key, offset, partition, timestamp and headers as
/// metadata.
fn to_message(message: &BorrowedMessage<'_>) -> Message {
    let mut metadata = BTreeMap::new();
    if let Some(key) = message.key() {
        metadata.insert(
            "__key".to_owned(),
            String::from_utf8_lossy(key).into_owned(),
        );
    }
    metadata.insert("__offset".to_owned(), message.offset().to_string());
    metadata.insert("__topic".to_owned(), message.topic().to_owned());
    metadata.insert("__partition".to_owned(), message.partition().to_string());
    if let Some(millis) = message.timestamp().to_millis() {
        metadata.insert("__timestamp".to_owned(), millis.to_string());
    }
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            if let Some(value) = header.value {
                metadata.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
    }
    Message {
        topic: message.topic().to_owned(),
        data: message
            .payload()
            .map(bytes::Bytes::copy_from_slice)
            .unwrap_or_default(),
        metadata,
    }
}

/// A bulk subscription's loop: one batch at a time; the entries the app did not take are
/// retried in place (holding the partitions, as single messages are) until it takes them.
async fn consume_batches(
    consumer: StreamConsumer<CommitOnRevoke>,
    handler: BulkHandler,
    limits: BatchLimits,
    stop: CancellationToken,
    retry_interval: Duration,
) {
    loop {
        let received = tokio::select! {
            received = consumer.recv() => received,
            () = stop.cancelled() => break,
        };
        let first = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "Kafka consumer error");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    () = stop.cancelled() => break,
                }
            }
        };
        let deadline = Instant::now() + limits.max_await;
        let mut batch = vec![first];
        while batch.len() < limits.max_messages {
            tokio::select! {
                received = consumer.recv() => match received {
                    Ok(message) => batch.push(message),
                    Err(error) => {
                        tracing::warn!(%error, "Kafka consumer error");
                        break;
                    }
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = stop.cancelled() => break,
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let messages: Vec<Message> = batch.iter().map(to_message).collect();
        let mut taken = vec![false; messages.len()];
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut stopping = false;
        while !pending.is_empty() {
            let results = handler(pending.iter().map(|&i| messages[i].clone()).collect()).await;
            let mut again = Vec::new();
            for (slot, &i) in pending.iter().enumerate() {
                match results
                    .get(slot)
                    .copied()
                    .unwrap_or(Err(HandlerError::Retry))
                {
                    Ok(()) => taken[i] = true,
                    Err(error) => {
                        stopping |= error == HandlerError::Shutdown;
                        again.push(i);
                    }
                }
            }
            pending = again;
            if stopping || pending.is_empty() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(retry_interval) => {}
                () = stop.cancelled() => {
                    stopping = true;
                    break;
                }
            }
        }
        // In each partition, offsets are stored up to the first entry not taken: that one and
        // everything after it is delivered again to the partition's next owner.
        let mut held: Vec<i32> = Vec::new();
        for (message, taken) in batch.iter().zip(&taken) {
            if held.contains(&message.partition()) {
                continue;
            }
            if !taken {
                held.push(message.partition());
                continue;
            }
            if let Err(error) = consumer.store_offset_from_message(message) {
                tracing::warn!(%error, "could not store a Kafka offset; the message may be delivered again");
            }
        }
        if stopping {
            break;
        }
    }
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "nothing to commit when stopping the Kafka consumer");
    }
}
