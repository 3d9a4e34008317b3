//! `pubsub.redis`: Redis Streams, laid out as components-contrib's: one stream per topic,
//! entries with a `data` field and a JSON `metadata` field, one consumer group per `consumerID`
//! (created from the start of the stream).
//!
//! Entries are acknowledged (`XACK`) only after the app's success. A failed entry stays pending
//! and is reclaimed (`XPENDING` + `XCLAIM`) once idle for `processingTimeout`, by whichever
//! replica of the group looks first, so a crashed consumer's work is picked up too.
//!
//! A subscription reads up to `queueDepth` entries at a time and hands each to a worker (at most
//! `concurrency` at once). A bulk subscription reads up to a batch instead (reading again until
//! the batch is full or `maxAwaitDurationMs` has passed), delivers one batch at a time (the
//! next is read while the app has one) and acknowledges what the app took with one `XACK`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{
    StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands as _, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BatchLimits, BulkHandler, Features, Handler, HandlerError, Message, PubSub, PublishRequest,
    SubscribeRequest,
};
use crate::resources::{ComponentMetadata, ResourceError};

/// How long a publish may wait for Redis before it fails the caller.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a blocking read may take beyond its `BLOCK` time before it counts as failed.
const READ_GRACE: Duration = Duration::from_secs(2);

struct Settings {
    client: redis::Client,
    consumer_id: String,
    processing_timeout: Duration,
    redeliver_interval: Duration,
    queue_depth: usize,
    concurrency: usize,
    max_len_approx: Option<usize>,
    read_block: Duration,
}

/// The Redis Streams pub/sub component.
pub(super) struct RedisStreams {
    settings: Arc<Settings>,
    connection: ConnectionManager,
}

/// A Redis duration: a Go duration, or a bare number of milliseconds (components-contrib's
/// Redis settings read integers as milliseconds).
fn redis_duration(
    metadata: &ComponentMetadata,
    name: &str,
    default: Duration,
) -> Result<Duration, ResourceError> {
    Ok(metadata
        .duration(name, Duration::from_millis(1))?
        .unwrap_or(default))
}

impl RedisStreams {
    pub(super) async fn connect(
        metadata: &ComponentMetadata,
        consumer_id: String,
    ) -> Result<Self, ResourceError> {
        let client = crate::state::redis_client(metadata)?;
        let settings = Settings {
            client: client.clone(),
            consumer_id,
            processing_timeout: redis_duration(
                metadata,
                "processingTimeout",
                Duration::from_secs(60),
            )?,
            redeliver_interval: redis_duration(
                metadata,
                "redeliverInterval",
                Duration::from_secs(15),
            )?,
            queue_depth: metadata.parse::<usize>("queueDepth")?.unwrap_or(100).max(1),
            concurrency: metadata.parse::<usize>("concurrency")?.unwrap_or(10).max(1),
            max_len_approx: metadata.parse::<usize>("maxLenApprox")?.filter(|n| *n > 0),
            read_block: redis_duration(metadata, "readTimeout", Duration::from_secs(2))?
                .max(Duration::from_millis(100))
                .min(Duration::from_secs(5)),
        };
        // Quick to give up, so a publish while Redis is down fails fast instead of hanging.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let connection = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| metadata.error("redisHost", "timed out connecting to Redis"))?
        .map_err(|e| metadata.error("redisHost", format!("cannot connect to Redis: {e}")))?;
        Ok(Self {
            settings: Arc::new(settings),
            connection,
        })
    }
}

impl RedisStreams {
    /// The `XADD` of one message: its bytes and its metadata as JSON, as components-contrib
    /// writes entries.
    fn xadd(&self, request: &PublishRequest) -> anyhow::Result<redis::Cmd> {
        let metadata = serde_json::to_string(&request.metadata)?;
        let mut command = redis::cmd("XADD");
        command.arg(&request.topic);
        if let Some(max) = self.settings.max_len_approx {
            command.arg("MAXLEN").arg("~").arg(max);
        }
        command
            .arg("*")
            .arg("data")
            .arg(request.data.as_ref())
            .arg("metadata")
            .arg(metadata);
        Ok(command)
    }
}

/// The same failure for every entry of a bulk publish.
fn fail_all(count: usize, error: &str) -> Vec<anyhow::Result<()>> {
    (0..count).map(|_| Err(anyhow!("{error}"))).collect()
}

#[async_trait]
impl PubSub for RedisStreams {
    /// No `BULK_PUBLISH`: components-contrib's Redis component has no bulk publisher, so
    /// daprd reports none (a bulk publish here is still one pipeline, see below).
    fn features(&self) -> Features {
        Features::default()
    }

    async fn publish(&self, request: &PublishRequest) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        let command = self.xadd(request)?;
        let _: String = tokio::time::timeout(PUBLISH_TIMEOUT, command.query_async(&mut connection))
            .await
            .map_err(|_| anyhow!("timed out publishing to Redis"))?
            .context("XADD failed")?;
        Ok(())
    }

    /// One pipeline of `XADD`s: one write and one read on the connection for the whole batch.
    /// Each entry keeps its own result (an `XADD` Redis refuses fails only its entry).
    async fn bulk_publish(&self, requests: &[PublishRequest]) -> Vec<anyhow::Result<()>> {
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for request in requests {
            match self.xadd(request) {
                Ok(command) => pipeline.add_command(command),
                Err(error) => return fail_all(requests.len(), &format!("{error:#}")),
            };
        }
        let mut connection = self.connection.clone();
        let answered: Result<redis::RedisResult<Vec<redis::RedisResult<String>>>, _> =
            tokio::time::timeout(PUBLISH_TIMEOUT, pipeline.query_async(&mut connection)).await;
        match answered {
            Err(_) => fail_all(requests.len(), "timed out publishing to Redis"),
            Ok(Err(error)) => fail_all(requests.len(), &format!("XADD failed: {error}")),
            Ok(Ok(results)) if results.len() != requests.len() => fail_all(
                requests.len(),
                "Redis answered a different number of XADDs than were sent",
            ),
            Ok(Ok(results)) => results
                .into_iter()
                .map(|result| result.map(drop).context("XADD failed"))
                .collect(),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequest,
        handler: Handler,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let delivery = Delivery::OneByOne {
            handler,
            workers: Arc::new(Semaphore::new(self.settings.concurrency)),
        };
        self.start(request, delivery, stop).await
    }

    async fn bulk_subscribe(
        &self,
        request: SubscribeRequest,
        limits: BatchLimits,
        handler: BulkHandler,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let delivery = Delivery::Batches {
            handler,
            limits,
            turn: Semaphore::new(1),
        };
        self.start(request, delivery, stop).await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }
}

impl RedisStreams {
    /// Creates the consumer group if needed, then reads new entries and reclaims stale ones
    /// until `stop`.
    async fn start(
        &self,
        request: SubscribeRequest,
        delivery: Delivery,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        create_group(&mut connection, &request.topic, &self.settings.consumer_id).await?;
        let subscription = Arc::new(Subscription {
            settings: self.settings.clone(),
            topic: request.topic,
            consumer: format!(
                "{}-{}",
                self.settings.consumer_id,
                uuid::Uuid::new_v4().simple()
            ),
            delivery,
            connection,
        });
        tokio::spawn(subscription.clone().poll_new(stop.clone()));
        if !self.settings.processing_timeout.is_zero()
            && !self.settings.redeliver_interval.is_zero()
        {
            tokio::spawn(subscription.reclaim_pending(stop));
        }
        Ok(())
    }
}

async fn create_group(
    connection: &mut ConnectionManager,
    topic: &str,
    group: &str,
) -> anyhow::Result<()> {
    let created: redis::RedisResult<String> =
        connection.xgroup_create_mkstream(topic, group, "0").await;
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("BUSYGROUP") => Ok(()),
        Err(error) => {
            Err(anyhow!(error).context(format!("cannot create consumer group {group} on {topic}")))
        }
    }
}

/// How a subscription hands entries to the runtime.
enum Delivery {
    /// Each entry to `handler`, at most `concurrency` at once.
    OneByOne {
        handler: Handler,
        workers: Arc<Semaphore>,
    },
    /// Batches to `handler`, one at a time (`turn`: new entries and reclaimed ones take turns).
    Batches {
        handler: BulkHandler,
        limits: BatchLimits,
        turn: Semaphore,
    },
}

/// Where a bulk subscription's reader hands full batches to be delivered.
type Deliverer = tokio::sync::mpsc::Sender<Vec<StreamId>>;

/// Entries of a bulk subscription read but not delivered yet.
#[derive(Default)]
struct Batch {
    entries: Vec<StreamId>,
    /// When the batch goes out even if it is not full.
    deadline: Option<Instant>,
}

impl Batch {
    fn push(&mut self, entry: StreamId, limits: BatchLimits) {
        if self.entries.is_empty() {
            self.deadline = Some(Instant::now() + limits.max_await);
        }
        self.entries.push(entry);
    }

    fn is_due(&self, limits: BatchLimits) -> bool {
        !self.entries.is_empty()
            && (self.entries.len() >= limits.max_messages
                || self.deadline.is_some_and(|d| d <= Instant::now()))
    }

    fn take(&mut self) -> Vec<StreamId> {
        self.deadline = None;
        std::mem::take(&mut self.entries)
    }
}

struct Subscription {
    settings: Arc<Settings>,
    topic: String,
    consumer: String,
    delivery: Delivery,
    connection: ConnectionManager,
}

impl Subscription {
    fn group(&self) -> &str {
        &self.settings.consumer_id
    }

    /// `COUNT` and `BLOCK` of the next read: up to `queueDepth` entries, or what the pending
    /// batch still takes. A batch being filled reads without blocking: Redis times blocked reads
    /// out on its own clock (10 times a second by default), so a short `BLOCK` would hold a
    /// partial batch for about 100 ms, not `maxAwaitDurationMs`.
    fn next_read(&self, batch: &Batch) -> (usize, Option<Duration>) {
        match &self.delivery {
            Delivery::OneByOne { .. } => {
                (self.settings.queue_depth, Some(self.settings.read_block))
            }
            Delivery::Batches { limits, .. } => {
                let block = batch.entries.is_empty().then_some(self.settings.read_block);
                (limits.max_messages - batch.entries.len(), block)
            }
        }
    }

    /// Hands the pending batch to the deliverer if it is full or its time has come (or, with
    /// `now`, if it holds anything).
    async fn flush(&self, batch: &mut Batch, now: bool, deliverer: Option<&Deliverer>) {
        if let (Delivery::Batches { limits, .. }, Some(deliverer)) = (&self.delivery, deliverer)
            && (batch.is_due(*limits) || (now && !batch.entries.is_empty()))
        {
            // Waits while a batch is already queued behind the one the app has: reading runs
            // at most one queued batch (and the one being filled) ahead of the app.
            let _ = deliverer.send(batch.take()).await;
        }
    }

    /// For a bulk subscription: a task that delivers the batches it is handed, one at a time
    /// and in order, so that the next batch is read from Redis while the app has this one.
    fn start_deliverer(self: &Arc<Self>) -> Option<Deliverer> {
        let Delivery::Batches { .. } = &self.delivery else {
            return None;
        };
        let (sender, mut batches) = tokio::sync::mpsc::channel::<Vec<StreamId>>(1);
        let subscription = self.clone();
        tokio::spawn(async move {
            // After a stop the handler answers `Shutdown` at once: what is left is not
            // acknowledged and stays pending.
            while let Some(entries) = batches.recv().await {
                subscription.deliver_batch(entries).await;
            }
        });
        Some(sender)
    }

    /// Reads new entries with a blocking `XREADGROUP` on a connection of its own.
    async fn poll_new(self: Arc<Self>, stop: CancellationToken) {
        let mut reader: Option<MultiplexedConnection> = None;
        let mut backoff = Duration::from_millis(100);
        let deliverer = self.start_deliverer();
        // Stopping with entries still in here leaves them pending, to be reclaimed.
        let mut batch = Batch::default();
        while !stop.is_cancelled() {
            self.flush(&mut batch, false, deliverer.as_ref()).await;
            if reader.is_none() {
                // The read blocks on the server for up to `read_block`, so the response timeout
                // has to outlast it. With redis-rs's default (500 ms) every read on an idle topic
                // timed out, dropped the connection and doubled the backoff (up to 10 s): a
                // message published after a quiet spell waited seconds to be read.
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(self.settings.read_block + READ_GRACE));
                match self
                    .settings
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(connection) => reader = Some(connection),
                    Err(error) => {
                        tracing::warn!(%error, topic = %self.topic, "cannot connect to Redis; retrying");
                        // What was read already need not wait for Redis.
                        self.flush(&mut batch, true, deliverer.as_ref()).await;
                        if sleep_or_stop(backoff, &stop).await {
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
            let Some(connection) = reader.as_mut() else {
                continue;
            };
            let (count, block) = self.next_read(&batch);
            let mut options = StreamReadOptions::default()
                .group(self.group(), &self.consumer)
                .count(count);
            if let Some(block) = block {
                options = options.block(usize::try_from(block.as_millis()).unwrap_or(2000));
            }
            let topics = [self.topic.as_str()];
            let read: redis::RedisResult<StreamReadReply> = tokio::select! {
                read = connection.xread_options(&topics, &[">"], &options) => read,
                () = stop.cancelled() => return,
            };
            match read {
                Ok(reply) => {
                    backoff = Duration::from_millis(100);
                    if block.is_none() && reply.keys.iter().all(|key| key.ids.is_empty()) {
                        // Nothing more for the partial batch yet: it waits out its time here.
                        if let Some(deadline) = batch.deadline {
                            tokio::select! {
                                () = tokio::time::sleep_until(deadline) => {}
                                () = stop.cancelled() => return,
                            }
                        }
                    }
                    for key in reply.keys {
                        for entry in key.ids {
                            match &self.delivery {
                                Delivery::OneByOne { .. } => {
                                    self.clone().dispatch(entry, &stop).await;
                                }
                                Delivery::Batches { limits, .. } => batch.push(entry, *limits),
                            }
                        }
                    }
                }
                Err(error) => {
                    self.flush(&mut batch, true, deliverer.as_ref()).await;
                    if error.to_string().contains("NOGROUP") {
                        let mut connection = self.connection.clone();
                        if let Err(error) =
                            create_group(&mut connection, &self.topic, self.group()).await
                        {
                            tracing::warn!(error = %format!("{error:#}"), "cannot recreate the consumer group");
                        }
                    } else {
                        tracing::warn!(%error, topic = %self.topic, "reading from Redis failed; retrying");
                        reader = None;
                    }
                    if sleep_or_stop(backoff, &stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Hands an entry to a worker (at most `concurrency` at once).
    async fn dispatch(self: Arc<Self>, entry: StreamId, stop: &CancellationToken) {
        let Delivery::OneByOne { workers, .. } = &self.delivery else {
            return;
        };
        let permit = tokio::select! {
            permit = workers.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        tokio::spawn(async move {
            self.process(entry).await;
            drop(permit);
        });
    }

    /// The message an entry carries, and the entry's id.
    fn message(&self, entry: StreamId) -> (String, Message) {
        let StreamId { id, mut map, .. } = entry;
        // The bytes are moved out of the reply, not copied.
        let data = match map.remove("data") {
            Some(Value::BulkString(bytes)) => Bytes::from(bytes),
            Some(Value::SimpleString(text)) => Bytes::from(text),
            _ => Bytes::new(),
        };
        let metadata: BTreeMap<String, String> = match map.get("metadata") {
            Some(Value::BulkString(bytes)) => serde_json::from_slice(bytes).unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        let message = Message {
            topic: self.topic.clone(),
            data,
            metadata,
        };
        (id, message)
    }

    async fn process(&self, entry: StreamId) {
        let Delivery::OneByOne { handler, .. } = &self.delivery else {
            return;
        };
        let (id, message) = self.message(entry);
        match handler(message).await {
            Ok(()) => self.acknowledge(&[id]).await,
            // Not acknowledged: the entry stays pending and is reclaimed after processingTimeout.
            Err(HandlerError::Retry | HandlerError::Shutdown) => {}
        }
    }

    /// One batch to the app; what it took is acknowledged with one `XACK`, the rest stays
    /// pending (reclaimed after processingTimeout).
    async fn deliver_batch(&self, entries: Vec<StreamId>) {
        let Delivery::Batches { handler, turn, .. } = &self.delivery else {
            return;
        };
        let Ok(_turn) = turn.acquire().await else {
            return;
        };
        let (ids, messages): (Vec<String>, Vec<Message>) =
            entries.into_iter().map(|entry| self.message(entry)).unzip();
        let results = handler(messages).await;
        let taken: Vec<String> = ids
            .into_iter()
            .zip(results)
            .filter_map(|(id, result)| result.is_ok().then_some(id))
            .collect();
        self.acknowledge(&taken).await;
    }

    async fn acknowledge(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut connection = self.connection.clone();
        let acked: redis::RedisResult<i64> = connection.xack(&self.topic, self.group(), ids).await;
        if let Err(error) = acked {
            tracing::warn!(%error, count = ids.len(), first = %ids[0], "XACK failed; the entries will be delivered again");
        }
    }

    /// Every `redeliverInterval`, claims entries pending for longer than `processingTimeout`
    /// (this consumer's failures, or a dead replica's) and delivers them again.
    async fn reclaim_pending(self: Arc<Self>, stop: CancellationToken) {
        let idle = self.settings.processing_timeout;
        loop {
            if sleep_or_stop(self.settings.redeliver_interval, &stop).await {
                return;
            }
            let mut connection = self.connection.clone();
            let pending: redis::RedisResult<StreamPendingCountReply> = connection
                .xpending_count(
                    &self.topic,
                    self.group(),
                    "-",
                    "+",
                    self.settings.queue_depth,
                )
                .await;
            let ids: Vec<String> = match pending {
                Ok(reply) => reply
                    .ids
                    .into_iter()
                    .filter(|p| {
                        u128::try_from(p.last_delivered_ms).unwrap_or(0) >= idle.as_millis()
                    })
                    .map(|p| p.id)
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, topic = %self.topic, "XPENDING failed");
                    continue;
                }
            };
            if ids.is_empty() {
                continue;
            }
            let claimed: redis::RedisResult<StreamClaimReply> = connection
                .xclaim(
                    &self.topic,
                    self.group(),
                    &self.consumer,
                    u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
                    &ids,
                )
                .await;
            match claimed {
                Ok(reply) => match &self.delivery {
                    Delivery::OneByOne { .. } => {
                        for entry in reply.ids {
                            self.clone().dispatch(entry, &stop).await;
                        }
                    }
                    Delivery::Batches { limits, .. } => {
                        let mut entries = reply.ids.into_iter().peekable();
                        while entries.peek().is_some() && !stop.is_cancelled() {
                            let batch = entries.by_ref().take(limits.max_messages).collect();
                            self.deliver_batch(batch).await;
                        }
                    }
                },
                Err(error) => tracing::warn!(%error, topic = %self.topic, "XCLAIM failed"),
            }
        }
    }
}

/// Sleeps unless stopped first; returns whether `stop` was cancelled.
async fn sleep_or_stop(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = stop.cancelled() => true,
    }
}
