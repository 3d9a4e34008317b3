//! State stores: one trait, four implementations, and the key prefixing Dapr applies in front of them.

mod memory;
mod postgres;
mod redis;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::components::ComponentContext;
use crate::resources::{ComponentDef, ComponentMetadata, ResourceError};

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use redis::RedisStore;
pub(crate) use redis::client as redis_client;
pub use sqlite::SqliteStore;

/// The component types this module builds.
pub const TYPES: &[&str] = &[
    "state.in-memory",
    "state.sqlite",
    "state.postgresql",
    "state.redis",
];

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateItem {
    /// The bytes as saved.
    pub value: Bytes,
    /// The item's current ETag.
    pub etag: String,
    /// When the item expires, if it has a TTL.
    pub expire_time: Option<DateTime<Utc>>,
}

/// Dapr's concurrency option for writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Without an ETag the write must create the key (it fails if the key exists).
    FirstWrite,
    /// Without an ETag the write always wins.
    #[default]
    LastWrite,
}

/// A write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRequest {
    /// The full (prefixed) key.
    pub key: String,
    /// The bytes to store.
    pub value: Bytes,
    /// When present, the write succeeds only if the stored ETag matches.
    pub etag: Option<String>,
    /// First-write or last-write.
    pub concurrency: Concurrency,
    /// Time to live; `None` keeps the item forever (and clears an earlier TTL).
    pub ttl: Option<Duration>,
}

/// A delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The full (prefixed) key.
    pub key: String,
    /// When present, the delete succeeds only if the stored ETag matches.
    pub etag: Option<String>,
    /// First-write or last-write (a first-write delete needs an ETag to be meaningful).
    pub concurrency: Concurrency,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// An upsert.
    Set(SetRequest),
    /// A delete.
    Delete(DeleteRequest),
}

impl Operation {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Self::Set(set) => &set.key,
            Self::Delete(delete) => &delete.key,
        }
    }
}

/// What a state store can do, reported in the metadata API as Dapr's capability names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Optimistic concurrency with ETags.
    pub etag: bool,
    /// Multi-key transactions.
    pub transactional: bool,
    /// Per-item time to live.
    pub ttl: bool,
}

impl Features {
    /// Dapr's names for the features, as listed under `capabilities` in `/v1.0/metadata`.
    pub fn capability_names(&self, actor_state_store: bool) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.etag {
            names.push("ETAG");
        }
        if self.transactional {
            names.push("TRANSACTIONAL");
        }
        if self.ttl {
            names.push("TTL");
        }
        if actor_state_store {
            names.push("ACTOR");
        }
        names
    }
}

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The ETag given does not match the stored one (or the key is missing, or exists on a
    /// first-write create).
    #[error("possible etag mismatch. error from state store: {0}")]
    EtagMismatch(String),
    /// The ETag given cannot be a valid ETag for this store.
    #[error("invalid etag value: {0}")]
    InvalidEtag(String),
    /// The request is not valid for this store (e.g. too many operations).
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A state store. Keys reaching it are already prefixed; stores never see Dapr's key rules.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// What the store supports.
    fn features(&self) -> Features;

    /// Reads one key; `None` when missing or expired.
    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError>;

    /// Reads many keys, in order.
    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Option<StateItem>>, StateError> {
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            items.push(self.get(key).await?);
        }
        Ok(items)
    }

    /// Writes one key.
    async fn set(&self, request: &SetRequest) -> Result<(), StateError>;

    /// Deletes one key. Deleting a missing key without an ETag succeeds.
    async fn delete(&self, request: &DeleteRequest) -> Result<(), StateError>;

    /// Applies every operation or none.
    async fn transact(&self, operations: &[Operation]) -> Result<(), StateError>;

    /// Every live key starting with `prefix`, with its value (the workflow engine loads its
    /// instances with this at start; Dapr's actor state stores need the same kind of listing).
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError>;

    /// Checks the store answers (for `/v1.0/healthz/outbound` and start-up).
    async fn ping(&self) -> anyhow::Result<()>;
}

/// Builds the state store a component describes.
pub async fn build(
    def: &ComponentDef,
    metadata: &ComponentMetadata,
    context: &ComponentContext,
) -> Result<Arc<dyn StateStore>, ResourceError> {
    let store: Arc<dyn StateStore> = match def.component_type.as_str() {
        "state.in-memory" => Arc::new(MemoryStore::new()),
        "state.sqlite" => Arc::new(SqliteStore::open(metadata, context).await?),
        "state.postgresql" => Arc::new(PostgresStore::connect(def, metadata).await?),
        "state.redis" => Arc::new(RedisStore::connect(metadata).await?),
        other => {
            return Err(def
                .error(format!("unknown state store type {other:?}"))
                .field("spec.type"));
        }
    };
    Ok(store)
}
