//! A transactional outbox: events are written in the same state transaction as the change they
//! announce, then published and removed. A crash between the two leaves the event in the
//! outbox, and the relay publishes it later, so no event is lost (and consumers see the same
//! CloudEvent id if it is published twice).
//!
//! The state API cannot list keys, so pending events are tracked in one index document, updated
//! with its ETag like any other write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contracts::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dapr::{Dapr, DaprError, StateOperation, Versioned, Write};

/// An event waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    topic: String,
    cloud_event_type: String,
    data: serde_json::Value,
}

/// The outbox of one app.
#[derive(Clone)]
pub struct Outbox {
    dapr: Dapr,
    store: String,
    pubsub: String,
    /// One relay at a time in this replica: two would publish the same events twice.
    relaying: Arc<tokio::sync::Mutex<()>>,
}

const INDEX: &str = "outbox";

fn entry_key(id: &Uuid) -> String {
    format!("outbox:{id}")
}

impl Outbox {
    /// The outbox in state store `store`, publishing to `pubsub`.
    pub fn new(dapr: Dapr, store: impl Into<String>, pubsub: impl Into<String>) -> Self {
        Self {
            dapr,
            store: store.into(),
            pubsub: pubsub.into(),
            relaying: Arc::default(),
        }
    }

    /// The operations that add `event` to the outbox; put them in the transaction that makes the
    /// change the event announces. The index is read here, so a concurrent writer makes the
    /// transaction fail with a conflict, and the caller retries as for any conflict.
    pub async fn stage<E: Event>(&self, event: &E) -> Result<Vec<StateOperation>, DaprError> {
        let id = Uuid::now_v7();
        let pending = Pending {
            topic: E::TOPIC.to_owned(),
            cloud_event_type: E::TYPE.to_owned(),
            data: serde_json::to_value(event).map_err(|e| DaprError::Failed(e.to_string()))?,
        };
        let index = self.dapr.get_state::<Vec<Uuid>>(&self.store, INDEX).await?;
        let (mut ids, write) = match index {
            Some(Versioned { value, etag }) => (value, Write::if_match(etag)),
            None => (Vec::new(), Write::create_only()),
        };
        ids.push(id);
        Ok(vec![
            StateOperation::upsert(entry_key(&id), &pending, Write::create_only())?,
            StateOperation::upsert(INDEX, &ids, write)?,
        ])
    }

    /// Publishes every pending event, oldest first, and removes the ones published. Returns how
    /// many were published.
    pub async fn relay(&self) -> Result<usize, DaprError> {
        let _relaying = self.relaying.lock().await;
        let Some(index) = self.dapr.get_state::<Vec<Uuid>>(&self.store, INDEX).await? else {
            return Ok(0);
        };
        let mut published = Vec::new();
        for id in &index.value {
            let Some(pending) = self
                .dapr
                .get_state::<Pending>(&self.store, &entry_key(id))
                .await?
            else {
                // Already published by another relay; drop it from the index below.
                published.push(*id);
                continue;
            };
            let metadata = HashMap::from([
                (
                    "cloudevent.type".to_owned(),
                    pending.value.cloud_event_type.clone(),
                ),
                // The same id on every attempt lets consumers drop duplicates.
                ("cloudevent.id".to_owned(), id.to_string()),
            ]);
            self.dapr
                .publish_raw(
                    &self.pubsub,
                    &pending.value.topic,
                    &pending.value.data,
                    metadata,
                )
                .await?;
            published.push(*id);
        }
        if published.is_empty() {
            return Ok(0);
        }
        self.forget(&published).await?;
        Ok(published.len())
    }

    /// Removes published events from the index and deletes them, retrying on conflicts.
    async fn forget(&self, published: &[Uuid]) -> Result<(), DaprError> {
        for _ in 0..20 {
            let Some(index) = self.dapr.get_state::<Vec<Uuid>>(&self.store, INDEX).await? else {
                return Ok(());
            };
            let remaining: Vec<Uuid> = index
                .value
                .iter()
                .copied()
                .filter(|id| !published.contains(id))
                .collect();
            let mut operations = vec![StateOperation::upsert(
                INDEX,
                &remaining,
                Write::if_match(index.etag),
            )?];
            operations.extend(published.iter().map(|id| StateOperation::Delete {
                key: entry_key(id),
                etag: None,
            }));
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => return Ok(()),
                Err(DaprError::Conflict(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(other) => return Err(other),
            }
        }
        Err(DaprError::Conflict("the outbox index kept changing".into()))
    }

    /// Relays now in the background (after a commit), logging failures; the periodic relay
    /// catches up on anything left.
    pub fn relay_soon(&self) {
        let outbox = self.clone();
        tokio::spawn(async move {
            if let Err(error) = outbox.relay().await {
                tracing::warn!(%error, "publishing from the outbox failed; will retry");
            }
        });
    }

    /// Relays every `interval` until `stop` resolves.
    pub async fn run(self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self.relay().await {
                        tracing::warn!(%error, "publishing from the outbox failed; will retry");
                    }
                }
                () = &mut stop => return,
            }
        }
    }
}
