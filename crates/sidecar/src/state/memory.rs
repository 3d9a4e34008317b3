//! `state.in-memory`: a map behind a lock, with UUID ETags and lazy expiry, as components-contrib's
//! in-memory store. Nothing survives a restart.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::RwLock;

use super::{
    Concurrency, DeleteRequest, Features, Operation, SetRequest, StateError, StateItem, StateStore,
};

/// The in-memory state store.
pub struct MemoryStore {
    items: RwLock<HashMap<String, StateItem>>,
    /// Expired items are dropped on reads; a sweep at most once a second frees the rest.
    last_sweep: std::sync::Mutex<DateTime<Utc>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            items: RwLock::default(),
            last_sweep: std::sync::Mutex::new(Utc::now()),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn live(item: &StateItem, now: DateTime<Utc>) -> bool {
    item.expire_time.is_none_or(|expires| expires > now)
}

fn expiry(ttl: Option<Duration>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    ttl.and_then(|ttl| chrono::Duration::from_std(ttl).ok())
        .map(|ttl| now + ttl)
}

/// Checks a write or delete against the current item, with the rules every store shares.
fn check(
    key: &str,
    current: Option<&StateItem>,
    etag: Option<&str>,
    concurrency: Concurrency,
    is_delete: bool,
) -> Result<(), StateError> {
    match (etag, current) {
        (Some(expected), Some(item)) if item.etag == expected => Ok(()),
        (Some(expected), Some(item)) => Err(StateError::EtagMismatch(format!(
            "state etag not match for key={key}: current={}, expect={expected}",
            item.etag
        ))),
        (Some(_), None) => Err(StateError::EtagMismatch(format!(
            "state not exist or expired for key={key}"
        ))),
        (None, Some(_)) if concurrency == Concurrency::FirstWrite && !is_delete => Err(
            StateError::EtagMismatch("item already exists and no etag was passed".into()),
        ),
        (None, _) => Ok(()),
    }
}

/// The effect of `operation` on the key it touches, after checking it against `current`.
fn evaluate(
    operation: &Operation,
    current: Option<&StateItem>,
    now: DateTime<Utc>,
) -> Result<Option<StateItem>, StateError> {
    let current = current.filter(|item| live(item, now));
    match operation {
        Operation::Set(set) => {
            check(
                &set.key,
                current,
                set.etag.as_deref(),
                set.concurrency,
                false,
            )?;
            Ok(Some(StateItem {
                value: set.value.clone(),
                etag: uuid::Uuid::new_v4().to_string(),
                expire_time: expiry(set.ttl, now),
            }))
        }
        Operation::Delete(delete) => {
            let etag = delete.etag.as_deref();
            check(&delete.key, current, etag, delete.concurrency, true)?;
            Ok(None)
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError> {
        let now = Utc::now();
        Ok(self
            .items
            .read()
            .await
            .get(key)
            .filter(|item| live(item, now))
            .cloned())
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, bytes::Bytes)>, StateError> {
        let now = Utc::now();
        Ok(self
            .items
            .read()
            .await
            .iter()
            .filter(|(key, item)| key.starts_with(prefix) && live(item, now))
            .map(|(key, item)| (key.clone(), item.value.clone()))
            .collect())
    }

    async fn set(&self, request: &SetRequest) -> Result<(), StateError> {
        self.transact(std::slice::from_ref(&Operation::Set(request.clone())))
            .await
    }

    async fn delete(&self, request: &DeleteRequest) -> Result<(), StateError> {
        self.transact(std::slice::from_ref(&Operation::Delete(request.clone())))
            .await
    }

    async fn transact(&self, operations: &[Operation]) -> Result<(), StateError> {
        let now = Utc::now();
        let mut items = self.items.write().await;
        // Every operation is checked before anything is applied, so a transaction is all or
        // nothing; later operations see the effects of earlier ones.
        let mut staged: HashMap<&str, Option<StateItem>> = HashMap::new();
        for operation in operations {
            let key = operation.key();
            let current = match staged.get(key) {
                Some(staged) => staged.as_ref(),
                None => items.get(key),
            };
            let next = evaluate(operation, current, now)?;
            staged.insert(key, next);
        }
        for (key, item) in staged {
            match item {
                Some(item) => items.insert(key.to_owned(), item),
                None => items.remove(key),
            };
        }
        let mut last_sweep = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if now - *last_sweep > chrono::Duration::seconds(1) {
            items.retain(|_, item| live(item, now));
            *last_sweep = now;
        }
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
