//! `pubsub.rabbitmq`, with components-contrib's names and defaults: one exchange per topic
//! (`exchangeKind`, fanout by default), one queue per consumer group and topic
//! (`{consumerID}-{topic}`, or the subscription's `queueName`), optional dead-lettering to
//! `dlx-{queue}` / `dlq-{queue}`.
//!
//! Publishing waits for the broker's confirm when `publisherConfirm` is on, and a refused
//! confirm is an error (daprd only logs it). Consumers ack after the app's success, nack on
//! failure (`requeueInFailure` decides whether the broker redelivers or dead-letters), and leave
//! in-flight messages to the broker on shutdown. Lost connections are re-established with
//! backoff, for publishing and for every subscription.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use async_trait::async_trait;
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::envelope::message_ttl;
use super::{
    BatchLimits, BulkHandler, Features, Handler, HandlerError, Message, PubSub, PublishRequest,
    SubscribeRequest,
};
use crate::resources::{ComponentMetadata, ResourceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Concurrency {
    Single,
    Parallel,
}

#[derive(Debug, Clone)]
struct Settings {
    uri: String,
    consumer_id: String,
    durable: bool,
    delete_when_unused: bool,
    auto_ack: bool,
    requeue_in_failure: bool,
    delivery_mode: u8,
    prefetch_count: u16,
    reconnect_wait: Duration,
    max_len: Option<i64>,
    max_len_bytes: Option<i64>,
    exchange_kind: ExchangeKind,
    publisher_confirm: bool,
    enable_dead_letter: bool,
    default_ttl: Option<Duration>,
    concurrency: Concurrency,
    client_name: Option<String>,
}

/// How long publishing waits to (re)connect before failing the caller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `subscribe` waits for the first successful consume before reporting a failure (the
/// subscription keeps retrying in the background).
const FIRST_CONSUME_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of in-flight deliveries per subscription in parallel mode without a prefetch.
const MAX_IN_FLIGHT: usize = 256;

impl Settings {
    fn parse(metadata: &ComponentMetadata, consumer_id: String) -> Result<Self, ResourceError> {
        let mut uri = match (metadata.get("connectionString"), metadata.get("host")) {
            (Some(uri), _) | (None, Some(uri)) => uri.to_owned(),
            (None, None) => {
                let protocol = metadata.get("protocol").unwrap_or("amqp");
                let hostname = metadata.get("hostname").unwrap_or("localhost");
                match (metadata.get("username"), metadata.get("password")) {
                    (Some(user), Some(password)) => {
                        format!("{protocol}://{user}:{password}@{hostname}")
                    }
                    (Some(user), None) => format!("{protocol}://{user}@{hostname}"),
                    _ => format!("{protocol}://{hostname}"),
                }
            }
        };
        if uri.starts_with("amqps://") {
            return Err(metadata.error(
                "connectionString",
                "amqps (TLS) is not supported by the local sidecar",
            ));
        }
        if !uri.starts_with("amqp://") {
            return Err(metadata.error(
                "connectionString",
                format!("expected an amqp:// URI, got {uri:?}"),
            ));
        }
        let heartbeat = metadata
            .duration("heartBeat", Duration::from_secs(1))?
            .unwrap_or(Duration::from_secs(10));
        if !uri.contains("heartbeat=") {
            let separator = if uri.contains('?') { '&' } else { '?' };
            uri = format!("{uri}{separator}heartbeat={}", heartbeat.as_secs().max(1));
        }
        let delivery_mode = metadata.parse::<u8>("deliveryMode")?.unwrap_or(0);
        if delivery_mode > 2 {
            return Err(metadata.error("deliveryMode", "accepted values are between 0 and 2"));
        }
        let exchange_kind = match metadata.get("exchangeKind").unwrap_or("fanout") {
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "direct" => ExchangeKind::Direct,
            "headers" => ExchangeKind::Headers,
            other => {
                return Err(metadata.error(
                    "exchangeKind",
                    format!("invalid RabbitMQ exchange kind {other:?}"),
                ));
            }
        };
        let concurrency = match metadata.get("concurrencyMode").unwrap_or("parallel") {
            "parallel" => Concurrency::Parallel,
            "single" => Concurrency::Single,
            other => {
                return Err(metadata.error(
                    "concurrencyMode",
                    format!("invalid concurrencyMode {other:?}"),
                ));
            }
        };
        let ttl = match metadata.get("ttlInSeconds").or_else(|| metadata.get("ttl")) {
            None => None,
            Some(_) => {
                let map: BTreeMap<String, String> = metadata
                    .pairs()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                Some(message_ttl(&map).ok_or_else(|| {
                    metadata.error("ttlInSeconds", "expected a positive duration")
                })?)
            }
        };
        Ok(Self {
            uri,
            consumer_id,
            durable: metadata.bool("durable", true)?,
            delete_when_unused: metadata.bool("deletedWhenUnused", true)?,
            auto_ack: metadata.bool("autoAck", false)?,
            requeue_in_failure: metadata.bool("requeueInFailure", false)?,
            delivery_mode,
            prefetch_count: metadata.parse::<u16>("prefetchCount")?.unwrap_or(0),
            reconnect_wait: metadata
                .duration("reconnectWaitSeconds", Duration::from_secs(1))?
                .unwrap_or(Duration::from_secs(3)),
            max_len: metadata.parse::<i64>("maxLen")?.filter(|n| *n > 0),
            max_len_bytes: metadata.parse::<i64>("maxLenBytes")?.filter(|n| *n > 0),
            exchange_kind,
            publisher_confirm: metadata.bool("publisherConfirm", false)?,
            enable_dead_letter: metadata.bool("enableDeadLetter", false)?,
            default_ttl: ttl,
            concurrency,
            client_name: metadata.get("clientName").map(str::to_owned),
        })
    }

    /// How many deliveries of a subscription are handled at once.
    fn in_flight_limit(&self) -> usize {
        match (self.concurrency, self.prefetch_count) {
            (Concurrency::Single, _) => 1,
            (Concurrency::Parallel, 0) => MAX_IN_FLIGHT,
            (Concurrency::Parallel, n) => usize::from(n),
        }
    }

    fn connection_properties(&self) -> ConnectionProperties {
        let mut properties = ConnectionProperties::default();
        if let Some(name) = &self.client_name {
            properties =
                properties.with_client_property("connection_name".into(), name.clone().into());
        }
        properties
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&self.uri, self.connection_properties()),
        )
        .await
        .map_err(|_| anyhow!("timed out connecting to RabbitMQ"))?
        .context("cannot connect to RabbitMQ")
    }

    async fn declare_exchange(&self, channel: &Channel, topic: &str) -> lapin::Result<()> {
        channel
            .exchange_declare(
                topic.into(),
                self.exchange_kind.clone(),
                ExchangeDeclareOptions {
                    durable: self.durable,
                    auto_delete: self.delete_when_unused,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
    }
}

/// The channel used for publishing, with the exchanges already declared on it.
struct Publisher {
    connection: Connection,
    channel: Channel,
    declared: HashSet<String>,
}

/// The RabbitMQ pub/sub component.
pub(super) struct RabbitMq {
    settings: Arc<Settings>,
    publisher: Mutex<Option<Publisher>>,
}

impl RabbitMq {
    pub(super) async fn connect(
        metadata: &ComponentMetadata,
        consumer_id: String,
    ) -> Result<Self, ResourceError> {
        let settings = Settings::parse(metadata, consumer_id)?;
        let component = Self {
            settings: Arc::new(settings),
            publisher: Mutex::new(None),
        };
        component
            .publisher_channel()
            .await
            .map_err(|e| metadata.error("connectionString", format!("{e:#}")))?;
        Ok(component)
    }

    /// The publishing channel, connecting (again) when there is none or it broke.
    async fn publisher_channel(&self) -> anyhow::Result<Channel> {
        let mut guard = self.publisher.lock().await;
        if let Some(publisher) = guard.as_ref()
            && publisher.connection.status().connected()
            && publisher.channel.status().connected()
        {
            return Ok(publisher.channel.clone());
        }
        let connection = self.settings.connect().await?;
        let channel = connection
            .create_channel()
            .await
            .context("cannot open a channel")?;
        if self.settings.publisher_confirm {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .context("cannot enable publisher confirms")?;
        }
        *guard = Some(Publisher {
            connection,
            channel: channel.clone(),
            declared: HashSet::new(),
        });
        Ok(channel)
    }

    async fn ensure_exchange(&self, channel: &Channel, topic: &str) -> anyhow::Result<()> {
        {
            let guard = self.publisher.lock().await;
            if guard.as_ref().is_some_and(|p| p.declared.contains(topic)) {
                return Ok(());
            }
        }
        self.settings
            .declare_exchange(channel, topic)
            .await
            .with_context(|| format!("cannot declare exchange {topic}"))?;
        if let Some(publisher) = self.publisher.lock().await.as_mut() {
            publisher.declared.insert(topic.to_owned());
        }
        Ok(())
    }

    async fn forget_publisher(&self) {
        self.publisher.lock().await.take();
    }

    async fn publish_once(&self, request: &PublishRequest) -> anyhow::Result<()> {
        let channel = self.publisher_channel().await?;
        self.ensure_exchange(&channel, &request.topic).await?;
        let get = |key: &str| {
            request
                .metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let mut properties = BasicProperties::default()
            .with_content_type(get("contentType").unwrap_or("text/plain").into())
            .with_delivery_mode(self.settings.delivery_mode);
        if let Some(ttl) = message_ttl(&request.metadata).or(self.settings.default_ttl) {
            properties = properties.with_expiration(ttl.as_millis().to_string().into());
        }
        if let Some(priority) = get("priority").and_then(|p| p.parse::<u8>().ok()) {
            properties = properties.with_priority(priority);
        }
        for (key, apply) in [
            (
                "messageID",
                BasicProperties::with_message_id
                    as fn(BasicProperties, ShortString) -> BasicProperties,
            ),
            ("correlationID", BasicProperties::with_correlation_id),
            ("type", BasicProperties::with_type),
        ] {
            if let Some(value) = get(key) {
                properties = apply(properties, value.into());
            }
        }
        let routing_key = request
            .metadata
            .get("routingKey")
            .map_or("", String::as_str);
        let confirm = channel
            .basic_publish(
                request.topic.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &request.data,
                properties,
            )
            .await
            .context("publish failed")?
            .await
            .context("publish was not confirmed")?;
        match confirm {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => {
                bail!("RabbitMQ refused the message (negative publisher confirm)")
            }
        }
    }
}

#[async_trait]
impl PubSub for RabbitMq {
    fn features(&self) -> Features {
        Features {
            message_ttl: true,
            bulk_publish: false,
        }
    }

    async fn publish(&self, request: &PublishRequest) -> anyhow::Result<()> {
        let mut last = None;
        for attempt in 0..3 {
            match self.publish_once(request).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::warn!(topic = %request.topic, attempt, error = %format!("{error:#}"), "publishing to RabbitMQ failed");
                    self.forget_publisher().await;
                    last = Some(error);
                    if attempt < 2 {
                        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("publish failed")))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequest,
        handler: Handler,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let settings = self.settings.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(consume_forever(
            settings,
            request.clone(),
            handler,
            stop,
            ready_tx,
        ));
        match tokio::time::timeout(FIRST_CONSUME_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(anyhow!(
                "the subscription to {} is not consuming yet; it keeps retrying",
                request.topic
            )),
        }
    }

    async fn bulk_subscribe(
        &self,
        request: SubscribeRequest,
        limits: BatchLimits,
        handler: BulkHandler,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        // Deliveries arrive one by one up to the prefetch count; a batch gathers them.
        let in_flight = self.settings.in_flight_limit();
        super::batch_per_message(self, request, limits, in_flight, handler, stop).await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.publisher_channel().await.map(|_| ())
    }
}

/// Consumes until `stop`, reconnecting with backoff whenever the connection breaks.
async fn consume_forever(
    settings: Arc<Settings>,
    request: SubscribeRequest,
    handler: Handler,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = settings.reconnect_wait.max(Duration::from_millis(100));
    while !stop.is_cancelled() {
        match consume_once(&settings, &request, &handler, &stop, &mut ready).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(topic = %request.topic, error = %format!("{error:#}"), "RabbitMQ subscription interrupted; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn queue_name(settings: &Settings, request: &SubscribeRequest) -> String {
    request
        .metadata
        .get("queueName")
        .filter(|q| !q.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("{}-{}", settings.consumer_id, request.topic))
}

async fn declare_subscription(
    settings: &Settings,
    channel: &Channel,
    request: &SubscribeRequest,
) -> anyhow::Result<String> {
    let topic = &request.topic;
    let queue = queue_name(settings, request);
    settings
        .declare_exchange(channel, topic)
        .await
        .context("cannot declare the exchange")?;
    let mut arguments = FieldTable::default();
    let mut limits = FieldTable::default();
    if let Some(n) = settings.max_len {
        limits.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
    }
    if let Some(n) = settings.max_len_bytes {
        limits.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(n));
    }
    if settings.enable_dead_letter {
        let exchange = format!("dlx-{queue}");
        let dead_letters = format!("dlq-{queue}");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: settings.delete_when_unused,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .context("cannot declare the dead-letter exchange")?;
        let mut dlq_arguments = limits.clone();
        dlq_arguments.insert("x-queue-mode".into(), AMQPValue::LongString("lazy".into()));
        channel
            .queue_declare(
                dead_letters.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    auto_delete: settings.delete_when_unused,
                    ..Default::default()
                },
                dlq_arguments,
            )
            .await
            .context("cannot declare the dead-letter queue")?;
        channel
            .queue_bind(
                dead_letters.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("cannot bind the dead-letter queue")?;
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.as_str().into()),
        );
    }
    for (key, value) in &limits {
        arguments.insert(key.clone(), value.clone());
    }
    let queue_type = request
        .metadata
        .get("queueType")
        .map_or("classic", String::as_str);
    if !matches!(queue_type, "classic" | "quorum") {
        bail!("invalid queue type {queue_type}. Valid types are classic and quorum");
    }
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: settings.durable,
                auto_delete: settings.delete_when_unused,
                ..Default::default()
            },
            arguments,
        )
        .await
        .with_context(|| format!("cannot declare queue {queue}"))?;
    let routing_keys = request
        .metadata
        .get("routingKey")
        .map_or("", String::as_str);
    for key in routing_keys.split(',') {
        channel
            .queue_bind(
                queue.as_str().into(),
                topic.as_str().into(),
                key.trim().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot bind queue {queue} to exchange {topic}"))?;
    }
    if settings.prefetch_count > 0 {
        channel
            .basic_qos(settings.prefetch_count, BasicQosOptions::default())
            .await
            .context("cannot set the prefetch count")?;
    }
    Ok(queue)
}

/// One connection's worth of consuming. `Ok` means `stop` was cancelled.
async fn consume_once(
    settings: &Settings,
    request: &SubscribeRequest,
    handler: &Handler,
    stop: &CancellationToken,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let connection = settings.connect().await?;
    let channel = connection
        .create_channel()
        .await
        .context("cannot open a channel")?;
    let queue = declare_subscription(settings, &channel, request).await?;
    let tag = format!("{queue}-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: settings.auto_ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot consume from {queue}"))?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    tracing::info!(queue, "consuming from RabbitMQ");
    let permits = Arc::new(tokio::sync::Semaphore::new(settings.in_flight_limit()));
    let mut in_flight = tokio::task::JoinSet::new();
    let result = loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.map_err(|e| anyhow!(e))?,
            () = stop.cancelled() => break Ok(()),
        };
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            () = stop.cancelled() => break Ok(()),
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => break Err(anyhow!(error).context("the consumer failed")),
            None => break Err(anyhow!("the broker closed the consumer")),
        };
        let handler = handler.clone();
        let topic = request.topic.clone();
        let (auto_ack, requeue) = (settings.auto_ack, settings.requeue_in_failure);
        in_flight.spawn(async move {
            let message = Message {
                topic,
                data: delivery.data.clone().into(),
                metadata: BTreeMap::new(),
            };
            let outcome = handler(message).await;
            if !auto_ack {
                let acked = match outcome {
                    Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                    Err(HandlerError::Retry) => delivery.nack(BasicNackOptions { requeue, multiple: false }).await,
                    // Released untouched: the broker gives it to another consumer, or to this
                    // one once it is back.
                    Err(HandlerError::Shutdown) => delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await,
                };
                if let Err(error) = acked {
                    tracing::warn!(%error, "could not settle a RabbitMQ delivery; the broker will redeliver it");
                }
            }
            drop(permit);
        });
        while in_flight.try_join_next().is_some() {}
    };
    while in_flight.join_next().await.is_some() {}
    let _ = channel.close(200, "subscription stopped".into()).await;
    let _ = connection.close(200, "subscription stopped".into()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_components_contrib() {
        let metadata = ComponentMetadata::from_pairs("pubsub", [("host", "amqp://localhost:5672")]);
        let settings = Settings::parse(&metadata, "orders".into()).expect("valid");
        assert!(settings.durable && settings.delete_when_unused);
        assert!(!settings.requeue_in_failure && !settings.publisher_confirm);
        assert_eq!(settings.delivery_mode, 0);
        assert_eq!(settings.concurrency, Concurrency::Parallel);
        assert_eq!(settings.uri, "amqp://localhost:5672?heartbeat=10");
        let request = SubscribeRequest {
            topic: "order-created".into(),
            metadata: BTreeMap::new(),
        };
        assert_eq!(queue_name(&settings, &request), "orders-order-created");
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (key, value) in [
            ("deliveryMode", "3"),
            ("exchangeKind", "bus"),
            ("concurrencyMode", "many"),
        ] {
            let metadata = ComponentMetadata::from_pairs(
                "pubsub",
                [("host", "amqp://localhost"), (key, value)],
            );
            let error = Settings::parse(&metadata, "a".into()).expect_err("invalid");
            assert_eq!(
                error.field.as_deref(),
                Some(format!("spec.metadata.{key}").as_str())
            );
        }
    }
}
