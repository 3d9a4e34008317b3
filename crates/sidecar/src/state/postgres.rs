//! `state.postgresql` version `v2`: components-contrib's v2 layout, where the value is `bytea`
//! and every write sets a new random UUID ETag.
//!
//! Only v2 is implemented. daprd loads v1 (a different, JSONB-based layout) when `spec.version`
//! is omitted, so the component must say `version: v2` for both runtimes to agree on the table.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{
    Concurrency, DeleteRequest, Features, Operation, SetRequest, StateError, StateItem, StateStore,
};
use crate::resources::{ComponentDef, ComponentMetadata, ResourceError};

/// The PostgreSQL (v2) state store.
pub struct PostgresStore {
    pool: Pool,
    queries: Queries,
}

/// SQL text, built once for the configured table.
struct Queries {
    get: String,
    scan: String,
    upsert: String,
    insert_if_absent: String,
    update_if_etag: String,
    delete: String,
    delete_if_etag: String,
}

const LIVE: &str = "(expires_at IS NULL OR expires_at >= now())";

impl Queries {
    /// The statement an operation runs.
    fn statement(&self, operation: &Operation) -> &str {
        match operation {
            Operation::Set(set) => match (&set.etag, set.concurrency) {
                (Some(_), _) => &self.update_if_etag,
                (None, Concurrency::FirstWrite) => &self.insert_if_absent,
                (None, Concurrency::LastWrite) => &self.upsert,
            },
            Operation::Delete(delete) => match &delete.etag {
                Some(_) => &self.delete_if_etag,
                None => &self.delete,
            },
        }
    }

    fn new(table: &str) -> Self {
        // `$4` is the TTL in seconds (NULL keeps the item forever).
        let expires = "CASE WHEN $4::bigint IS NULL THEN NULL ELSE now() + $4::bigint * interval '1 second' END";
        Self {
            get: format!("SELECT value, etag::text, expires_at FROM {table} WHERE key = $1 AND {LIVE}"),
            scan: format!("SELECT key, value FROM {table} WHERE starts_with(key, $1) AND {LIVE}"),
            upsert: format!(
                "INSERT INTO {table} AS t (key, value, etag, expires_at) VALUES ($1, $2, $3::text::uuid, {expires})
                 ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = now(), etag = $3::text::uuid, expires_at = {expires}"
            ),
            insert_if_absent: format!(
                "INSERT INTO {table} AS t (key, value, etag, expires_at) VALUES ($1, $2, $3::text::uuid, {expires})
                 ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = now(), etag = $3::text::uuid, expires_at = {expires}
                 WHERE t.expires_at IS NOT NULL AND t.expires_at < now()"
            ),
            update_if_etag: format!(
                "UPDATE {table} SET value = $2, updated_at = now(), etag = $3::text::uuid, expires_at = {expires}
                 WHERE key = $1 AND etag = $5::text::uuid AND {LIVE}"
            ),
            delete: format!("DELETE FROM {table} WHERE key = $1"),
            delete_if_etag: format!("DELETE FROM {table} WHERE key = $1 AND etag = $2::text::uuid"),
        }
    }
}

impl PostgresStore {
    /// Connects, and creates the tables when they do not exist.
    pub async fn connect(
        def: &ComponentDef,
        metadata: &ComponentMetadata,
    ) -> Result<Self, ResourceError> {
        if def.version != "v2" {
            return Err(def
                .error(format!(
                    "version {:?} is not supported: the local sidecar implements the v2 table layout \
                     only; set `version: v2` (daprd would otherwise use the v1 layout)",
                    def.version
                ))
                .field("spec.version"));
        }
        let connection_string = metadata
            .get("connectionString")
            .or_else(|| metadata.get("url"))
            .ok_or_else(|| {
                metadata.error("connectionString", "required metadata field is missing")
            })?;
        let mut config: tokio_postgres::Config = connection_string.parse().map_err(|e| {
            metadata.error(
                "connectionString",
                format!("invalid connection string: {e}"),
            )
        })?;
        let timeout = metadata
            .duration("timeout", Duration::from_secs(1))?
            .or(metadata.duration("timeoutInSeconds", Duration::from_secs(1))?)
            .unwrap_or(Duration::from_secs(20));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        let table_prefix = metadata.get("tablePrefix").unwrap_or("");
        let metadata_table = metadata.get("metadataTableName").unwrap_or("dapr_metadata");
        for (field, name) in [
            ("tablePrefix", table_prefix),
            ("metadataTableName", metadata_table),
        ] {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(metadata.error(field, "may only contain letters, digits, `_` and `.`"));
            }
        }
        let max_connections = metadata.parse::<usize>("maxConns")?.unwrap_or(8).max(1);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| metadata.error("connectionString", e.to_string()))?;
        let table = format!("{table_prefix}state");
        migrate(&pool, &table, metadata_table, table_prefix)
            .await
            .map_err(|e| {
                metadata.error(
                    "connectionString",
                    format!("cannot prepare the state table in PostgreSQL: {e:#}"),
                )
            })?;
        let store = Self {
            pool,
            queries: Queries::new(&table),
        };
        let cleanup = match metadata.get("cleanupInterval") {
            None => Some(Duration::from_secs(3600)),
            Some(_) => metadata
                .duration("cleanupInterval", Duration::from_secs(1))?
                .filter(|d| !d.is_zero()),
        };
        if let Some(interval) = cleanup {
            store.spawn_cleanup(interval, table);
        }
        Ok(store)
    }

    fn spawn_cleanup(&self, interval: Duration, table: String) {
        let pool = self.pool.clone();
        let sql =
            format!("DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at < now()");
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if pool.is_closed() {
                    return;
                }
                let result = async {
                    let client = pool.get().await?;
                    client.execute(sql.as_str(), &[]).await?;
                    anyhow::Ok(())
                }
                .await;
                if let Err(error) = result {
                    tracing::warn!(error = %format!("{error:#}"), "postgres state store: removing expired items failed");
                }
            }
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StateError> {
        self.pool.get().await.map_err(|e| {
            StateError::Store(anyhow::anyhow!("cannot get a PostgreSQL connection: {e}"))
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.pool.close();
    }
}

async fn migrate(
    pool: &Pool,
    table: &str,
    metadata_table: &str,
    prefix: &str,
) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Several sidecars may start at once against one database: serialise the DDL.
    tx.execute("SELECT pg_advisory_xact_lock(4242424242)", &[])
        .await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {metadata_table} (key text NOT NULL PRIMARY KEY, value text NOT NULL);
         CREATE TABLE IF NOT EXISTS {table} (
           key text NOT NULL PRIMARY KEY,
           value bytea NOT NULL,
           etag uuid NOT NULL DEFAULT gen_random_uuid(),
           created_at timestamp with time zone NOT NULL DEFAULT now(),
           updated_at timestamp with time zone,
           expires_at timestamp with time zone
         );
         CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);",
        index = format!("{table}_expires_at_idx").replace('.', "_"),
    ))
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO {metadata_table} (key, value) VALUES ($1, '1') ON CONFLICT (key) DO NOTHING"
        ),
        &[&format!("migrations-state-v2-{prefix}")],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn store_error(error: tokio_postgres::Error) -> StateError {
    StateError::Store(error.into())
}

/// Postgres ETags are UUIDs; anything else can never match.
fn parse_etag(etag: &str) -> Result<&str, StateError> {
    uuid::Uuid::parse_str(etag)
        .map(|_| etag)
        .map_err(|_| StateError::InvalidEtag(format!("{etag:?} is not a UUID")))
}

fn ttl_seconds(ttl: Option<Duration>) -> Option<i64> {
    ttl.filter(|t| !t.is_zero())
        .map(|t| i64::try_from(t.as_secs().max(1)).unwrap_or(i64::MAX))
}

async fn set_item<C: GenericClient + ?Sized>(
    client: &C,
    queries: &Queries,
    request: &SetRequest,
) -> Result<(), StateError> {
    let etag = uuid::Uuid::new_v4().to_string();
    let ttl = ttl_seconds(request.ttl);
    let value: &[u8] = &request.value;
    let changed = match (&request.etag, request.concurrency) {
        (Some(expected), _) => {
            let expected = parse_etag(expected)?;
            let statement = client
                .prepare_cached(&queries.update_if_etag)
                .await
                .map_err(store_error)?;
            client
                .execute(&statement, &[&request.key, &value, &etag, &ttl, &expected])
                .await
                .map_err(store_error)?
        }
        (None, concurrency) => {
            let sql = match concurrency {
                Concurrency::FirstWrite => &queries.insert_if_absent,
                Concurrency::LastWrite => &queries.upsert,
            };
            let statement = client.prepare_cached(sql).await.map_err(store_error)?;
            client
                .execute(&statement, &[&request.key, &value, &etag, &ttl])
                .await
                .map_err(store_error)?
        }
    };
    if changed != 1 {
        return Err(StateError::EtagMismatch(match request.etag {
            Some(_) => format!("no item with key {} and the given etag", request.key),
            None => format!("item {} already exists and no etag was passed", request.key),
        }));
    }
    Ok(())
}

async fn delete_item<C: GenericClient + ?Sized>(
    client: &C,
    queries: &Queries,
    request: &DeleteRequest,
) -> Result<(), StateError> {
    match &request.etag {
        Some(expected) => {
            let expected = parse_etag(expected)?;
            let statement = client
                .prepare_cached(&queries.delete_if_etag)
                .await
                .map_err(store_error)?;
            let changed = client
                .execute(&statement, &[&request.key, &expected])
                .await
                .map_err(store_error)?;
            if changed != 1 {
                return Err(StateError::EtagMismatch(format!(
                    "no item with key {} and the given etag",
                    request.key
                )));
            }
        }
        None => {
            let statement = client
                .prepare_cached(&queries.delete)
                .await
                .map_err(store_error)?;
            client
                .execute(&statement, &[&request.key])
                .await
                .map_err(store_error)?;
        }
    }
    Ok(())
}

#[async_trait]
impl StateStore for PostgresStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries.get)
            .await
            .map_err(store_error)?;
        let row = client
            .query_opt(&statement, &[&key])
            .await
            .map_err(store_error)?;
        Ok(row.map(|row| StateItem {
            value: Bytes::from(row.get::<_, Vec<u8>>(0)),
            etag: row.get(1),
            expire_time: row.get::<_, Option<DateTime<Utc>>>(2),
        }))
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries.scan)
            .await
            .map_err(store_error)?;
        let rows = client
            .query(&statement, &[&prefix])
            .await
            .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), Bytes::from(row.get::<_, Vec<u8>>(1))))
            .collect())
    }

    async fn set(&self, request: &SetRequest) -> Result<(), StateError> {
        let client = self.client().await?;
        set_item(&client, &self.queries, request).await
    }

    async fn delete(&self, request: &DeleteRequest) -> Result<(), StateError> {
        let client = self.client().await?;
        delete_item(&client, &self.queries, request).await
    }

    async fn transact(&self, operations: &[Operation]) -> Result<(), StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        // Prepare each statement kind first (cached afterwards): the statements below then reach
        // the server in operation order, pipelined on the one connection, so a transaction of
        // many operations costs about one round trip instead of one per operation.
        let mut prepared: Vec<&str> = Vec::new();
        for operation in operations {
            let sql = self.queries.statement(operation);
            if !prepared.contains(&sql) {
                tx.prepare_cached(sql).await.map_err(store_error)?;
                prepared.push(sql);
            }
        }
        futures::future::try_join_all(operations.iter().map(|operation| {
            let tx = &tx;
            async move {
                match operation {
                    Operation::Set(set) => set_item(tx, &self.queries, set).await,
                    Operation::Delete(delete) => delete_item(tx, &self.queries, delete).await,
                }
            }
        }))
        .await?;
        // An early return drops `tx`, which rolls the whole transaction back.
        tx.commit().await.map_err(store_error)
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let client = self.pool.get().await?;
        client.execute("SELECT 1", &[]).await?;
        Ok(())
    }
}
