//! `pubsub.in-memory`, shared by the sidecars of one process.
//!
//! daprd's in-memory broker lives inside one sidecar, so apps cannot talk through it. Here it is
//! shared by every sidecar of a [`Topology`](crate::Topology) (by component name), which is what
//! lets the whole shop run in one process without a broker. It keeps daprd's consumer-group
//! semantics: each `consumerID` gets every message, and the replicas of one app (same
//! `consumerID`) take turns. A group's queue outlives its consumers, so a restarting app misses
//! nothing; a topic nobody ever subscribed to drops what is published to it. Messages live in
//! memory only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BatchLimits, BulkHandler, Features, Handler, HandlerError, Message, PubSub, PublishRequest,
    SubscribeRequest,
};

/// How long a message the app asked to retry waits before it is delivered again.
const REDELIVERY_DELAY: Duration = Duration::from_millis(100);

/// The in-memory brokers of one topology, by component name.
#[derive(Default)]
pub struct MemoryBrokers {
    brokers: Mutex<HashMap<String, Arc<MemoryBroker>>>,
}

impl std::fmt::Debug for MemoryBrokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBrokers").finish_non_exhaustive()
    }
}

impl MemoryBrokers {
    /// The component `name` as seen by the consumer group `consumer_id`.
    pub(crate) fn memory(&self, name: &str, consumer_id: String) -> Arc<dyn PubSub> {
        let broker = self
            .brokers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone();
        Arc::new(MemoryPubSub {
            broker,
            consumer_id,
        })
    }
}

/// One in-memory broker: topics, and per topic one queue per consumer group.
#[derive(Default)]
pub struct MemoryBroker {
    topics: Mutex<HashMap<String, HashMap<String, Arc<Group>>>>,
}

#[derive(Default)]
struct Group {
    queue: Mutex<VecDeque<Message>>,
    arrived: Notify,
}

impl Group {
    fn push_back(&self, message: Message) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(message);
        self.arrived.notify_waiters();
    }

    fn push_front(&self, message: Message) {
        self.push_all_front(vec![message]);
    }

    /// Puts `messages` back at the head of the queue, in their order.
    fn push_all_front(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for message in messages.into_iter().rev() {
            queue.push_front(message);
        }
        drop(queue);
        self.arrived.notify_waiters();
    }

    /// The next message, or `None` once `stop` is cancelled.
    async fn next(&self, stop: &CancellationToken) -> Option<Message> {
        loop {
            let arrived = self.arrived.notified();
            if let Some(message) = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Some(message);
            }
            tokio::select! {
                () = arrived => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// The next batch: the first message, then whatever else arrives until the batch is full or
    /// `limits.max_await` after the first. `None` once `stop` is cancelled (a batch being
    /// collected goes back to the queue).
    async fn next_batch(
        &self,
        limits: BatchLimits,
        stop: &CancellationToken,
    ) -> Option<Vec<Message>> {
        let first = self.next(stop).await?;
        let deadline = Instant::now() + limits.max_await;
        let mut batch = vec![first];
        loop {
            let arrived = self.arrived.notified();
            {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let wanted = limits
                    .max_messages
                    .saturating_sub(batch.len())
                    .min(queue.len());
                batch.extend(queue.drain(..wanted));
            }
            if batch.len() >= limits.max_messages {
                return Some(batch);
            }
            tokio::select! {
                () = arrived => {}
                () = tokio::time::sleep_until(deadline) => return Some(batch),
                () = stop.cancelled() => {
                    self.push_all_front(batch);
                    return None;
                }
            }
        }
    }
}

impl MemoryBroker {
    fn group(&self, topic: &str, consumer_id: &str) -> Arc<Group> {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.to_owned())
            .or_default()
            .entry(consumer_id.to_owned())
            .or_default()
            .clone()
    }

    fn publish(&self, message: Message) {
        let groups: Vec<Arc<Group>> = self
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&message.topic)
            .map(|groups| groups.values().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            group.push_back(message.clone());
        }
    }
}

struct MemoryPubSub {
    broker: Arc<MemoryBroker>,
    consumer_id: String,
}

#[async_trait]
impl PubSub for MemoryPubSub {
    fn features(&self) -> Features {
        Features::default()
    }

    async fn publish(&self, request: &PublishRequest) -> anyhow::Result<()> {
        self.broker.publish(Message {
            topic: request.topic.clone(),
            data: request.data.clone(),
            metadata: request.metadata.clone(),
        });
        Ok(())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequest,
        handler: Handler,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let group = self.broker.group(&request.topic, &self.consumer_id);
        // One message at a time per subscription, in order, as daprd's in-memory broker.
        tokio::spawn(async move {
            while let Some(message) = group.next(&stop).await {
                match handler(message.clone()).await {
                    Ok(()) => {}
                    Err(HandlerError::Retry) => {
                        tokio::select! {
                            () = tokio::time::sleep(REDELIVERY_DELAY) => group.push_front(message),
                            () = stop.cancelled() => {
                                group.push_front(message);
                                return;
                            }
                        }
                    }
                    Err(HandlerError::Shutdown) => {
                        group.push_front(message);
                        return;
                    }
                }
            }
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
        let group = self.broker.group(&request.topic, &self.consumer_id);
        // One batch at a time per subscription, in order; what the app did not take goes back
        // to the head of the queue, as a single message does.
        tokio::spawn(async move {
            while let Some(batch) = group.next_batch(limits, &stop).await {
                let results = handler(batch.clone()).await;
                let mut not_taken = Vec::new();
                let mut stopping = false;
                for (i, message) in batch.into_iter().enumerate() {
                    match results.get(i).copied().unwrap_or(Err(HandlerError::Retry)) {
                        Ok(()) => {}
                        Err(error) => {
                            stopping |= error == HandlerError::Shutdown;
                            not_taken.push(message);
                        }
                    }
                }
                if stopping {
                    group.push_all_front(not_taken);
                    return;
                }
                if not_taken.is_empty() {
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(REDELIVERY_DELAY) => group.push_all_front(not_taken),
                    () = stop.cancelled() => {
                        group.push_all_front(not_taken);
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
