//! A transactional outbox: events are written in the same state transaction as the change they
//! announce, then published and removed. A crash between the two leaves the event in the
//! outbox, and the relay publishes it later, so no event is lost (and consumers see the same
//! CloudEvent id if it is published twice).
//!
//! The state API cannot list keys, so pending events are tracked in index documents, updated
//! with their ETags like any other write. One index for the whole app made every write that
//! announces something conflict with every other (payments under load spent their time
//! retrying), so there are [`SHARDS`] of them: an event goes to the shard of the entity it is
//! about (its events stay in order), and within a replica the writers of one shard take turns
//! instead of conflicting. Writers in other replicas still meet on the ETag, as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contracts::Event;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::dapr::{Dapr, DaprError, StateOperation, Versioned, Write};

/// How many index documents the pending events are spread over.
pub const SHARDS: usize = 32;

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
    /// Per shard, in this replica: who may write its index now (a staged transaction, or the
    /// relay removing what it published).
    writers: Arc<[Arc<Mutex<()>>]>,
    /// Per shard: one relay at a time in this replica (two would publish the same events twice).
    relaying: Arc<[Mutex<()>]>,
}

/// The key of a shard's index. Shard 0 keeps the name of the single index this outbox had
/// before it was sharded, so that events pending in an older data directory are still relayed.
fn index_key(shard: usize) -> String {
    if shard == 0 {
        "outbox".to_owned()
    } else {
        format!("outbox.{shard}")
    }
}

fn entry_key(id: &Uuid) -> String {
    format!("outbox:{id}")
}

/// The shard of an entity: FNV-1a of its key, so that every replica picks the same one.
fn shard_of(entity: &str) -> usize {
    let hash = entity
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    usize::try_from(hash % SHARDS as u64).unwrap_or(0)
}

/// An event staged by [`Outbox::stage`]: the operations to put into the transaction that makes
/// the change it announces, and this replica's turn at its outbox shard, held until the
/// transaction is done. Hand it to [`Outbox::relay_soon`] once committed; dropping it (after a
/// conflict) gives the turn up.
#[must_use = "the operations belong in a transaction"]
pub struct Staged {
    /// The operations: the event's entry and the shard's index.
    pub operations: Vec<StateOperation>,
    shard: usize,
    _turn: OwnedMutexGuard<()>,
}

impl Staged {
    /// The operations, taken out (for `Vec::extend`); the turn stays held.
    pub fn take_operations(&mut self) -> Vec<StateOperation> {
        std::mem::take(&mut self.operations)
    }
}

impl Outbox {
    /// The outbox in state store `store`, publishing to `pubsub`.
    pub fn new(dapr: Dapr, store: impl Into<String>, pubsub: impl Into<String>) -> Self {
        Self {
            dapr,
            store: store.into(),
            pubsub: pubsub.into(),
            writers: (0..SHARDS).map(|_| Arc::new(Mutex::new(()))).collect(),
            relaying: (0..SHARDS).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Stages `event`, about the entity whose key is `entity` (events of one entity are
    /// published in the order they were staged). Waits for this replica's turn at the entity's
    /// shard; the index is read here, so a writer in another replica makes the transaction fail
    /// with a conflict, and the caller retries as for any conflict. A transaction stages one
    /// event: a second `stage` of the same shard before the first [`Staged`] is dropped would
    /// wait for itself.
    pub async fn stage<E: Event>(&self, entity: &str, event: &E) -> Result<Staged, DaprError> {
        let id = Uuid::now_v7();
        let pending = Pending {
            topic: E::TOPIC.to_owned(),
            cloud_event_type: E::TYPE.to_owned(),
            data: serde_json::to_value(event).map_err(|e| DaprError::Failed(e.to_string()))?,
        };
        let shard = shard_of(entity);
        let turn = self.writers[shard].clone().lock_owned().await;
        let index = self
            .dapr
            .get_state::<Vec<Uuid>>(&self.store, &index_key(shard))
            .await?;
        let (mut ids, write) = match index {
            Some(Versioned { value, etag }) => (value, Write::if_match(etag)),
            None => (Vec::new(), Write::create_only()),
        };
        ids.push(id);
        Ok(Staged {
            operations: vec![
                StateOperation::upsert(entry_key(&id), &pending, Write::create_only())?,
                StateOperation::upsert(index_key(shard), &ids, write)?,
            ],
            shard,
            _turn: turn,
        })
    }

    /// Publishes every pending event of every shard, each shard's oldest first, and removes the
    /// ones published. Returns how many were published.
    pub async fn relay(&self) -> Result<usize, DaprError> {
        let keys: Vec<String> = (0..SHARDS).map(index_key).collect();
        let indexes = self
            .dapr
            .get_bulk_state::<Vec<Uuid>>(&self.store, &keys)
            .await?;
        let mut published = 0;
        let mut failure = None;
        for (shard, index) in indexes.into_iter().enumerate() {
            if index.is_none_or(|index| index.value.is_empty()) {
                continue;
            }
            // One shard failing (a publish refused) does not hold the others back.
            match self.relay_shard(shard).await {
                Ok(count) => published += count,
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            Some(error) if published == 0 => Err(error),
            Some(error) => {
                tracing::warn!(%error, published, "some of the outbox could not be published");
                Ok(published)
            }
            None => Ok(published),
        }
    }

    /// Publishes the pending events of one shard, oldest first, and removes the ones published.
    async fn relay_shard(&self, shard: usize) -> Result<usize, DaprError> {
        let _relaying = self.relaying[shard].lock().await;
        let Some(index) = self
            .dapr
            .get_state::<Vec<Uuid>>(&self.store, &index_key(shard))
            .await?
        else {
            return Ok(0);
        };
        let keys: Vec<String> = index.value.iter().map(entry_key).collect();
        let entries = self
            .dapr
            .get_bulk_state::<Pending>(&self.store, &keys)
            .await?;
        let mut published = Vec::new();
        let mut failure = None;
        for (id, entry) in index.value.iter().zip(entries) {
            let Some(pending) = entry else {
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
            match self
                .dapr
                .publish_raw(
                    &self.pubsub,
                    &pending.value.topic,
                    &pending.value.data,
                    metadata,
                )
                .await
            {
                Ok(()) => published.push(*id),
                // What follows waits, so that the shard's events keep their order.
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if !published.is_empty() {
            self.forget(shard, &published).await?;
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(published.len()),
        }
    }

    /// Removes published events from a shard's index and deletes them, retrying on conflicts
    /// (with writers in other replicas; this replica's wait for their turn).
    async fn forget(&self, shard: usize, published: &[Uuid]) -> Result<(), DaprError> {
        let key = index_key(shard);
        for _ in 0..20 {
            let turn = self.writers[shard].lock().await;
            let Some(index) = self.dapr.get_state::<Vec<Uuid>>(&self.store, &key).await? else {
                return Ok(());
            };
            let remaining: Vec<Uuid> = index
                .value
                .iter()
                .copied()
                .filter(|id| !published.contains(id))
                .collect();
            let mut operations = vec![StateOperation::upsert(
                &key,
                &remaining,
                Write::if_match(index.etag),
            )?];
            operations.extend(published.iter().map(|id| StateOperation::Delete {
                key: entry_key(id),
                etag: None,
            }));
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => return Ok(()),
                Err(DaprError::Conflict(_)) => {
                    drop(turn);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(other) => return Err(other),
            }
        }
        Err(DaprError::Conflict("the outbox index kept changing".into()))
    }

    /// Relays the shard of a committed event now, in the background, logging failures; the
    /// periodic relay catches up on anything left.
    pub fn relay_soon(&self, committed: Staged) {
        let shard = committed.shard;
        // The turn is given up first: the relay takes it again to update the index.
        drop(committed);
        let outbox = self.clone();
        tokio::spawn(async move {
            if let Err(error) = outbox.relay_shard(shard).await {
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
