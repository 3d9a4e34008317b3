//! Orders in the state store, and waiting for one to change.
//!
//! `order:<id>` holds an order's view, written by the workflow's activities.
//! `orders-of:<user id>` lists a user's orders (the state API cannot list keys on every store,
//! so this list is what makes `GET /orders` work on all of them). `idempotency:<user id>:<key>`
//! remembers which order a key placed, and for which lines. Writes are guarded by ETags and
//! retried on conflict, and every write is safe to repeat: activities run at least once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kit::dapr::{Dapr, DaprError, StateOperation, Versioned, Write, back_off};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{IdempotencyKey, Items, OrderId, StoredOrder};
use crate::error::ApiError;

/// How often a conflicting write is tried again before giving up.
const ATTEMPTS: u32 = 60;

fn order_key(id: &OrderId) -> String {
    format!("order:{id}")
}

fn user_key(user: &Uuid) -> String {
    format!("orders-of:{user}")
}

fn idempotency_key(user: &Uuid, key: &IdempotencyKey) -> String {
    format!("idempotency:{user}:{}", key.as_str())
}

/// What an `Idempotency-Key` placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyRecord {
    order_id: OrderId,
    items: Items,
}

/// The outcome of claiming an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: it now belongs to this order.
    New(OrderId),
    /// The key already placed this order, with the same lines.
    Existing(OrderId),
}

/// A page of orders.
#[derive(Debug)]
pub struct Page {
    /// The orders, newest first.
    pub orders: Vec<StoredOrder>,
    /// The cursor for the next page, if there is one.
    pub next: Option<OrderId>,
}

/// Wakes requests waiting for an order to change on this replica; other replicas' changes are
/// seen by reading again.
#[derive(Clone, Default)]
struct Changes {
    waiting: Arc<Mutex<HashMap<OrderId, Arc<Notify>>>>,
}

impl Changes {
    fn entry(&self, id: OrderId) -> Arc<Notify> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default()
            .clone()
    }

    fn forget(&self, id: OrderId) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn changed(&self, id: OrderId) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(notify) = waiting {
            notify.notify_waiters();
        }
    }
}

/// The shop's orders.
#[derive(Clone)]
pub struct Orders {
    dapr: Dapr,
    store: String,
    poll: Duration,
    changes: Changes,
}

impl Orders {
    /// The orders in `store`; waiting requests read again every `poll`.
    pub fn new(dapr: Dapr, store: impl Into<String>, poll: Duration) -> Self {
        Self {
            dapr,
            store: store.into(),
            poll,
            changes: Changes::default(),
        }
    }

    /// One order, with its ETag.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, id: OrderId) -> Result<Option<Versioned<StoredOrder>>, DaprError> {
        self.dapr.get_state(&self.store, &order_key(&id)).await
    }

    /// Ties `key` to `order` (a new order), or finds the order it placed before. The same key
    /// with other lines is [`ApiError::KeyReused`].
    #[tracing::instrument(skip(self, key, items))]
    pub async fn claim(
        &self,
        user: Uuid,
        key: &IdempotencyKey,
        order: OrderId,
        items: &Items,
    ) -> Result<Claim, ApiError> {
        let state_key = idempotency_key(&user, key);
        let record = KeyRecord {
            order_id: order,
            items: items.clone(),
        };
        for attempt in 0..ATTEMPTS {
            // Create-only: of concurrent requests with one key, exactly one claims it. A new key
            // (the usual case) costs this one write; a key in use is read after the conflict.
            match self
                .dapr
                .save_state(&self.store, &state_key, &record, Write::create_only())
                .await
            {
                Ok(()) => return Ok(Claim::New(order)),
                Err(DaprError::Conflict(_)) => {}
                Err(other) => return Err(other.into()),
            }
            if let Some(existing) = self
                .dapr
                .get_state::<KeyRecord>(&self.store, &state_key)
                .await?
            {
                return if existing.value.items == *items {
                    Ok(Claim::Existing(existing.value.order_id))
                } else {
                    Err(ApiError::KeyReused)
                };
            }
            // Refused, yet gone when read (deleted in between): claim it anew.
            back_off(attempt).await;
        }
        Err(ApiError::Busy)
    }

    /// Stores a new order's view and lists it under its user. If the order is already stored
    /// (the activity ran before), returns what is stored and changes nothing.
    #[tracing::instrument(skip(self, order), fields(order_id = %order.id))]
    pub async fn open(&self, order: &StoredOrder) -> Result<StoredOrder, ApiError> {
        for attempt in 0..ATTEMPTS {
            // The first attempt does not look: the view is written create-only, so a stored one
            // fails the transaction, and the next attempt finds it.
            if attempt > 0
                && let Some(existing) = self.get(order.id).await?
            {
                return Ok(existing.value);
            }
            let listed = self
                .dapr
                .get_state::<Vec<OrderId>>(&self.store, &user_key(&order.user_id))
                .await?;
            let (mut ids, list_write) = match listed {
                Some(Versioned { value, etag }) => (value, Write::if_match(etag)),
                None => (Vec::new(), Write::create_only()),
            };
            if !ids.contains(&order.id) {
                ids.push(order.id);
            }
            let operations = vec![
                StateOperation::upsert(order_key(&order.id), order, Write::create_only())?,
                StateOperation::upsert(user_key(&order.user_id), &ids, list_write)?,
            ];
            match self.dapr.transact(&self.store, operations).await {
                Ok(()) => {
                    self.changes.changed(order.id);
                    return Ok(order.clone());
                }
                Err(DaprError::Conflict(_)) => back_off(attempt).await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// Replaces an order with what `change` makes of it; `None` leaves it as it is (the change
    /// was made before). Returns the order as stored afterwards.
    #[tracing::instrument(skip(self, change))]
    pub async fn update(
        &self,
        id: OrderId,
        change: impl Fn(&StoredOrder) -> Option<StoredOrder>,
    ) -> Result<StoredOrder, ApiError> {
        for attempt in 0..ATTEMPTS {
            let current = self.get(id).await?.ok_or(ApiError::NotFound)?;
            let Some(updated) = change(&current.value) else {
                return Ok(current.value);
            };
            match self
                .dapr
                .save_state(
                    &self.store,
                    &order_key(&id),
                    &updated,
                    Write::if_match(current.etag),
                )
                .await
            {
                Ok(()) => {
                    self.changes.changed(id);
                    return Ok(updated);
                }
                Err(DaprError::Conflict(_)) => back_off(attempt).await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(ApiError::Busy)
    }

    /// A user's orders older than `before`, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn list(
        &self,
        user: Uuid,
        before: Option<OrderId>,
        limit: usize,
    ) -> Result<Page, ApiError> {
        let mut ids = self
            .dapr
            .get_state::<Vec<OrderId>>(&self.store, &user_key(&user))
            .await?
            .map(|listed| listed.value)
            .unwrap_or_default();
        // Ids are UUIDv7: newest first is descending order.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut older = ids
            .into_iter()
            .filter(|id| before.is_none_or(|before| *id < before));
        let page: Vec<OrderId> = older.by_ref().take(limit).collect();
        let more = older.next().is_some();
        let keys: Vec<String> = page.iter().map(order_key).collect();
        let orders = self
            .dapr
            .get_bulk_state::<StoredOrder>(&self.store, &keys)
            .await?
            .into_iter()
            .flatten()
            .map(|order| order.value)
            .collect();
        Ok(Page {
            orders,
            next: if more { page.last().copied() } else { None },
        })
    }

    /// Waits until order `id` exists and satisfies `done`, up to `timeout`; `None` if it did
    /// not in time.
    pub async fn wait_for(
        &self,
        id: OrderId,
        timeout: Duration,
        done: impl Fn(&StoredOrder) -> bool,
    ) -> Result<Option<StoredOrder>, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let notify = self.changes.entry(id);
        let outcome = loop {
            // Listen before reading, so that a change between the two is not missed.
            let notified = notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(order) = self.get(id).await?
                && done(&order.value)
            {
                break Some(order.value);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            let wake = std::cmp::min(deadline, tokio::time::Instant::now() + self.poll);
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        };
        self.changes.forget(id);
        Ok(outcome)
    }
}
