//! `state.sqlite`: a durable file with components-contrib's table layout, so a database written
//! by daprd can be read here and the other way round.
//!
//! Layout (migration 1 of components-contrib): `state(key, value, is_binary, etag,
//! expiration_time, update_time)` plus a `metadata(key, value)` table. JSON values are stored as
//! text; anything else base64-encoded with `is_binary = 1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    Concurrency, DeleteRequest, Features, Operation, SetRequest, StateError, StateItem, StateStore,
};
use crate::components::ComponentContext;
use crate::resources::{ComponentMetadata, ResourceError};

/// The sqlite state store.
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    table: String,
    path: PathBuf,
}

const LIVE: &str = "(expiration_time IS NULL OR expiration_time > CURRENT_TIMESTAMP)";

/// How often the WAL is checkpointed into the database, from a connection of its own.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// The WAL size (in pages) at which a commit checkpoints by itself: a safety net for when the
/// background checkpoints fall behind. SQLite's default, 1000 pages, makes every few hundredth
/// commit wait for a checkpoint and its fsync.
const WAL_SAFETY_NET_PAGES: u32 = 10_000;
/// A WAL file larger than this is truncated to it when it is reset.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

impl SqliteStore {
    /// Opens (and if needed creates) the database named by `connectionString`.
    pub async fn open(
        metadata: &ComponentMetadata,
        context: &ComponentContext,
    ) -> Result<Self, ResourceError> {
        let connection_string = metadata
            .get("connectionString")
            .or_else(|| metadata.get("url"))
            .ok_or_else(|| {
                metadata.error("connectionString", "required metadata field is missing")
            })?;
        let table = table_name(metadata, "tableName", "state")?;
        let metadata_table = table_name(metadata, "metadataTableName", "metadata")?;
        let busy_timeout = metadata
            .duration("busyTimeout", Duration::from_millis(1))?
            .unwrap_or(Duration::from_secs(2));
        let disable_wal = metadata.bool("disableWAL", false)?;
        let cleanup_interval = metadata
            .duration("cleanupInterval", Duration::from_secs(1))?
            .or(metadata.duration("cleanupIntervalInSeconds", Duration::from_secs(1))?)
            .filter(|interval| !interval.is_zero());
        let path = database_path(connection_string, &context.working_dir);

        let wal = !disable_wal && path != Path::new(":memory:");
        let opened = {
            let path = path.clone();
            let table = table.clone();
            tokio::task::spawn_blocking(move || {
                let connection =
                    open_database(&path, &table, &metadata_table, busy_timeout, disable_wal)?;
                let checkpointer = if wal {
                    Some(Connection::open(&path)?)
                } else {
                    None
                };
                anyhow::Ok((connection, checkpointer))
            })
            .await
            .map_err(|e| metadata.error("connectionString", e.to_string()))?
        };
        let (connection, checkpointer) = opened.map_err(|e| {
            metadata.error(
                "connectionString",
                format!("cannot open sqlite database {}: {e:#}", path.display()),
            )
        })?;
        let store = Self {
            connection: Arc::new(Mutex::new(connection)),
            table,
            path,
        };
        if let Some(interval) = cleanup_interval {
            store.spawn_cleanup(interval);
        }
        if let Some(checkpointer) = checkpointer {
            store.spawn_checkpoints(checkpointer);
        }
        Ok(store)
    }

    /// Checkpoints the WAL every [`CHECKPOINT_EVERY`] from `checkpointer`, a connection of its
    /// own: a passive checkpoint takes no lock that writers wait for, so commits (which with
    /// `synchronous = NORMAL` do not fsync) never wait for the checkpoint's fsync.
    fn spawn_checkpoints(&self, checkpointer: Connection) {
        let alive = Arc::downgrade(&self.connection);
        let checkpointer = Arc::new(Mutex::new(checkpointer));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if alive.strong_count() == 0 {
                    return; // the store was dropped
                }
                let checkpointer = checkpointer.clone();
                let result = tokio::task::spawn_blocking(move || {
                    checkpoint(&checkpointer.lock().unwrap_or_else(|e| e.into_inner()))
                })
                .await;
                if let Ok(Err(error)) = result {
                    tracing::warn!(%error, "sqlite state store: checkpointing the WAL failed");
                }
            }
        });
    }

    /// The database file (or `:memory:`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn spawn_cleanup(&self, interval: Duration) {
        let connection = Arc::downgrade(&self.connection);
        let sql = format!(
            "DELETE FROM {} WHERE expiration_time IS NOT NULL AND expiration_time < CURRENT_TIMESTAMP",
            self.table
        );
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(connection) = connection.upgrade() else {
                    return; // the store was dropped
                };
                let sql = sql.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
                    connection.execute(&sql, [])
                })
                .await;
                if let Ok(Err(error)) = result {
                    tracing::warn!(%error, "sqlite state store: removing expired items failed");
                }
            }
        });
    }

    /// Runs `work` on the connection on the blocking pool.
    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &str) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let connection = self.connection.clone();
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut connection, &table)
        })
        .await
        .map_err(|e| StateError::Store(anyhow::anyhow!("sqlite worker failed: {e}")))?
    }
}

fn table_name(
    metadata: &ComponentMetadata,
    field: &str,
    default: &str,
) -> Result<String, ResourceError> {
    let name = metadata.get(field).unwrap_or(default);
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_owned())
    } else {
        Err(metadata.error(field, "may only contain letters, digits and underscores"))
    }
}

/// Turns Dapr's connection string (`file:path?options`, a bare path, or `:memory:`) into a path.
fn database_path(connection_string: &str, working_dir: &Path) -> PathBuf {
    let without_scheme = connection_string
        .strip_prefix("file:")
        .unwrap_or(connection_string);
    let path = without_scheme.split('?').next().unwrap_or(without_scheme);
    if path == ":memory:" || path.is_empty() {
        return PathBuf::from(":memory:");
    }
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        working_dir.join(path)
    }
}

fn open_database(
    path: &Path,
    table: &str,
    metadata_table: &str,
    busy_timeout: Duration,
    disable_wal: bool,
) -> anyhow::Result<Connection> {
    let connection = if path == Path::new(":memory:") {
        Connection::open_in_memory()?
    } else {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create directory {}", parent.display()))?;
        }
        Connection::open(path)?
    };
    connection.busy_timeout(busy_timeout)?;
    let journal = if disable_wal { "DELETE" } else { "WAL" };
    connection.pragma_update(None, "journal_mode", journal)?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "wal_autocheckpoint", WAL_SAFETY_NET_PAGES)?;
    connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    connection.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {metadata_table} (key text NOT NULL PRIMARY KEY, value text NOT NULL);
         CREATE TABLE IF NOT EXISTS {table} (
           key TEXT NOT NULL PRIMARY KEY,
           value TEXT NOT NULL,
           is_binary BOOLEAN NOT NULL,
           etag TEXT NOT NULL,
           expiration_time TIMESTAMP DEFAULT NULL,
           update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
         );
         INSERT OR IGNORE INTO {metadata_table} (key, value) VALUES ('migrations', '1');"
    ))?;
    Ok(connection)
}

/// Copies what the WAL holds into the database as far as no reader needs it (a passive
/// checkpoint), and returns the WAL's size and how much of it is now copied, in pages.
fn checkpoint(connection: &Connection) -> rusqlite::Result<(i64, i64)> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

/// Splits a value into the text stored and the `is_binary` flag.
fn encode(value: &[u8]) -> (String, bool) {
    match std::str::from_utf8(value) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            (text.to_owned(), false)
        }
        _ => (
            base64::engine::general_purpose::STANDARD.encode(value),
            true,
        ),
    }
}

fn decode(text: String, is_binary: bool) -> Result<Bytes, StateError> {
    if is_binary {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| {
                StateError::Store(anyhow::anyhow!("stored binary value is not base64: {e}"))
            })
    } else {
        Ok(Bytes::from(text))
    }
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S").ok())
        .map(|naive| naive.and_utc())
}

/// The modifier of `DATETIME(CURRENT_TIMESTAMP, ?)` that sets an expiration `ttl` from now
/// (`'+N seconds'`); NULL without a TTL, which makes the expression NULL too. A parameter rather
/// than SQL text, so that each write statement is prepared once per connection.
fn expiration_modifier(ttl: Option<Duration>) -> Option<String> {
    ttl.filter(|ttl| !ttl.is_zero())
        .map(|ttl| format!("+{} seconds", ttl.as_secs().max(1)))
}

fn store_error(error: rusqlite::Error) -> StateError {
    StateError::Store(error.into())
}

/// Runs `sql` with `params` through the connection's statement cache, so that each write
/// statement is prepared once per connection: the rows it changed.
fn execute_cached(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StateError> {
    tx.prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(store_error)
}

fn get_item(
    connection: &Connection,
    table: &str,
    key: &str,
) -> Result<Option<StateItem>, StateError> {
    connection
        .prepare_cached(&format!(
            "SELECT value, is_binary, etag, expiration_time FROM {table} WHERE key = ?1 AND {LIVE}"
        ))
        .and_then(|mut statement| {
            statement
                .query_row([key], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, bool>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()
        })
        .map_err(store_error)?
        .map(|(value, is_binary, etag, expires)| {
            Ok(StateItem {
                value: decode(value, is_binary)?,
                etag,
                expire_time: parse_time(expires),
            })
        })
        .transpose()
}

fn set_item(tx: &Transaction<'_>, table: &str, request: &SetRequest) -> Result<(), StateError> {
    let (value, is_binary) = encode(&request.value);
    let etag = uuid::Uuid::new_v4().to_string();
    let expires = expiration_modifier(request.ttl);
    let changed = match (&request.etag, request.concurrency) {
        (Some(expected), _) => execute_cached(
            tx,
            &format!(
                "UPDATE {table} SET value = ?1, etag = ?2, is_binary = ?3, update_time = CURRENT_TIMESTAMP,
                   expiration_time = DATETIME(CURRENT_TIMESTAMP, ?6)
                 WHERE key = ?4 AND etag = ?5 AND {LIVE}"
            ),
            params![value, etag, is_binary, request.key, expected, expires],
        )?,
        (None, Concurrency::FirstWrite) => execute_cached(
            tx,
            &format!(
                "INSERT INTO {table} (key, value, is_binary, etag, update_time, expiration_time)
                 VALUES (?1, ?2, ?3, ?4, CURRENT_TIMESTAMP, DATETIME(CURRENT_TIMESTAMP, ?5))
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, is_binary = excluded.is_binary,
                   etag = excluded.etag, update_time = excluded.update_time,
                   expiration_time = excluded.expiration_time
                 WHERE {table}.expiration_time IS NOT NULL AND {table}.expiration_time <= CURRENT_TIMESTAMP"
            ),
            params![request.key, value, is_binary, etag, expires],
        )?,
        (None, Concurrency::LastWrite) => execute_cached(
            tx,
            &format!(
                "INSERT OR REPLACE INTO {table} (key, value, is_binary, etag, update_time, expiration_time)
                 VALUES (?1, ?2, ?3, ?4, CURRENT_TIMESTAMP, DATETIME(CURRENT_TIMESTAMP, ?5))"
            ),
            params![request.key, value, is_binary, etag, expires],
        )?,
    };
    if changed == 0 {
        return Err(StateError::EtagMismatch(match request.etag {
            Some(_) => format!("no item with key {} and the given etag", request.key),
            None => format!("item {} already exists and no etag was passed", request.key),
        }));
    }
    Ok(())
}

fn delete_item(
    tx: &Transaction<'_>,
    table: &str,
    request: &DeleteRequest,
) -> Result<(), StateError> {
    match &request.etag {
        Some(expected) => {
            let changed = execute_cached(
                tx,
                &format!("DELETE FROM {table} WHERE key = ?1 AND etag = ?2"),
                params![request.key, expected],
            )?;
            if changed == 0 {
                return Err(StateError::EtagMismatch(format!(
                    "no item with key {} and the given etag",
                    request.key
                )));
            }
        }
        None => {
            execute_cached(
                tx,
                &format!("DELETE FROM {table} WHERE key = ?1"),
                [&request.key],
            )?;
        }
    }
    Ok(())
}

fn run_transaction(
    connection: &mut Connection,
    table: &str,
    operations: &[Operation],
) -> Result<(), StateError> {
    let tx = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(store_error)?;
    for operation in operations {
        match operation {
            Operation::Set(set) => set_item(&tx, table, set)?,
            Operation::Delete(delete) => delete_item(&tx, table, delete)?,
        }
    }
    // Dropping an uncommitted transaction rolls it back, so an early return above undoes it all.
    tx.commit().map_err(store_error)
}

#[async_trait]
impl StateStore for SqliteStore {
    fn features(&self) -> Features {
        Features {
            etag: true,
            transactional: true,
            ttl: true,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<StateItem>, StateError> {
        let key = key.to_owned();
        self.with_connection(move |connection, table| get_item(connection, table, &key))
            .await
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Option<StateItem>>, StateError> {
        let keys = keys.to_vec();
        self.with_connection(move |connection, table| {
            keys.iter()
                .map(|key| get_item(connection, table, key))
                .collect()
        })
        .await
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, StateError> {
        let prefix = prefix.to_owned();
        self.with_connection(move |connection, table| {
            // `substr` rather than LIKE: keys may hold `%` and `_`.
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT key, value, is_binary FROM {table} WHERE substr(key, 1, ?2) = ?1 AND {LIVE}"
                ))
                .map_err(store_error)?;
            let length = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
            let rows = statement
                .query_map(params![prefix, length], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, bool>(2)?,
                    ))
                })
                .map_err(store_error)?;
            let mut items = Vec::new();
            for row in rows {
                let (key, value, is_binary) = row.map_err(store_error)?;
                items.push((key, decode(value, is_binary)?));
            }
            Ok(items)
        })
        .await
    }

    async fn set(&self, request: &SetRequest) -> Result<(), StateError> {
        let operations = vec![Operation::Set(request.clone())];
        self.transact(&operations).await
    }

    async fn delete(&self, request: &DeleteRequest) -> Result<(), StateError> {
        let operations = vec![Operation::Delete(request.clone())];
        self.transact(&operations).await
    }

    async fn transact(&self, operations: &[Operation]) -> Result<(), StateError> {
        let operations = operations.to_vec();
        self.with_connection(move |connection, table| {
            run_transaction(connection, table, &operations)
        })
        .await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.with_connection(|connection, _| {
            connection
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(store_error)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_stored_as_text_and_anything_else_as_base64() {
        assert_eq!(encode(br#"{"a":1}"#), (r#"{"a":1}"#.to_owned(), false));
        assert_eq!(encode(&[0xff, 0x00]), ("/wA=".to_owned(), true));
        assert_eq!(encode(b"plain text"), ("cGxhaW4gdGV4dA==".to_owned(), true));
    }

    fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// A JSON string of about 4 KB: one page or more per write.
    fn big_value(n: usize) -> String {
        format!("\"{n}{}\"", "x".repeat(4000))
    }

    #[test]
    fn commits_do_not_checkpoint_and_a_passive_checkpoint_copies_the_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let mut writer = open_database(&path, "state", "metadata", Duration::from_secs(1), false)
            .expect("opened");
        // 1500 commits of two pages or more each: over SQLite's default checkpoint size (1000
        // pages), under the safety net.
        for n in 0..1500 {
            let tx = writer.transaction().expect("begin");
            tx.execute(
                "INSERT OR REPLACE INTO state (key, value, is_binary, etag) VALUES (?1, ?2, 0, 'e')",
                params![format!("k{}", n % 500), big_value(n)],
            )
            .expect("insert");
            tx.commit().expect("commit");
        }
        assert!(
            file_size(&path) < 1024 * 1024,
            "no commit checkpointed: the database file is {} bytes",
            file_size(&path)
        );
        let (wal, copied) =
            checkpoint(&Connection::open(&path).expect("second connection")).expect("checkpoint");
        assert!(wal > 3000, "the WAL holds every commit: {wal} pages");
        assert!(wal < i64::from(WAL_SAFETY_NET_PAGES), "{wal} pages");
        assert_eq!(copied, wal, "nothing reads the WAL, so all of it is copied");
        assert!(
            file_size(&path) > 500 * 4000,
            "the database holds the 500 keys: {} bytes",
            file_size(&path)
        );
    }

    #[tokio::test]
    async fn the_store_checkpoints_in_the_background() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metadata =
            ComponentMetadata::from_pairs("statestore", [("connectionString", "state.db")]);
        let store = SqliteStore::open(&metadata, &ComponentContext::new("app", dir.path()))
            .await
            .expect("opened");
        for n in 0..300 {
            store
                .set(&SetRequest {
                    key: format!("app||k{n}"),
                    value: Bytes::from(big_value(n)),
                    etag: None,
                    concurrency: Concurrency::LastWrite,
                    ttl: None,
                })
                .await
                .expect("set");
        }
        // Nothing else checkpoints before the WAL reaches the safety net.
        let path = dir.path().join("state.db");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while file_size(&path) < 300 * 4000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no checkpoint within 10 s: the database file is {} bytes",
                file_size(&path)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(store.get("app||k7").await.expect("get").is_some());
    }

    #[test]
    fn connection_strings_become_paths() {
        let cwd = Path::new("/srv");
        assert_eq!(
            database_path("file:data/state.db?_txlock=immediate", cwd),
            Path::new("/srv/data/state.db")
        );
        assert_eq!(database_path("/tmp/x.db", cwd), Path::new("/tmp/x.db"));
        assert_eq!(database_path(":memory:", cwd), Path::new(":memory:"));
    }
}
