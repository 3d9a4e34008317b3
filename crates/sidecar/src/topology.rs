//! How sidecars find each other.
//!
//! Sidecars started in one process share a [`Topology`]: a lookup finds them in memory and calls
//! them without a network hop. Sidecars in other processes are found through Dapr's
//! `nameresolution.sqlite` layout (a `hosts` table in a shared SQLite file, refreshed by
//! heartbeats), which every sidecar of a shared topology registers in. daprd's self-hosted
//! default is mDNS; here the default is that SQLite file in the temp directory, so separate
//! `sidecar` processes on one machine find each other with no configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use rusqlite::{Connection, params};

use crate::pubsub::MemoryBrokers;
use crate::resources::NameResolutionSpec;

/// Where a peer sidecar can be reached.
#[derive(Clone)]
pub(crate) enum Peer {
    /// In this process: its internal router, called directly.
    Local(Router),
    /// In another process: `host:port` of its internal endpoint.
    Remote(String),
}

struct LocalEntry {
    registration: u64,
    router: Router,
}

/// A set of sidecars that can invoke one another.
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

struct Inner {
    local: RwLock<HashMap<String, Vec<LocalEntry>>>,
    brokers: Arc<MemoryBrokers>,
    next_registration: AtomicUsize,
    round_robin: AtomicUsize,
    /// Whether sidecars also register in, and resolve through, the cross-process name resolution.
    shared: bool,
}

impl Topology {
    /// A topology whose sidecars see only each other: what tests want, so parallel tests with
    /// the same app ids never reach one another.
    pub fn in_process() -> Self {
        Self::build(false)
    }

    /// A topology whose sidecars also register in the machine-wide name resolution and find
    /// sidecars of other processes there.
    pub fn shared() -> Self {
        Self::build(true)
    }

    fn build(shared: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                local: RwLock::default(),
                brokers: Arc::default(),
                next_registration: AtomicUsize::new(1),
                round_robin: AtomicUsize::new(0),
                shared,
            }),
        }
    }

    /// The in-memory pub/sub brokers the sidecars of this topology share.
    pub(crate) fn brokers(&self) -> Arc<MemoryBrokers> {
        self.inner.brokers.clone()
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// Registers a sidecar of this process; returns the handle to unregister it.
    pub(crate) fn register_local(&self, app_id: &str, router: Router) -> u64 {
        let registration = self.inner.next_registration.fetch_add(1, Ordering::Relaxed) as u64;
        self.inner
            .local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app_id.to_owned())
            .or_default()
            .push(LocalEntry {
                registration,
                router,
            });
        registration
    }

    pub(crate) fn unregister_local(&self, app_id: &str, registration: u64) {
        let mut local = self.inner.local.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = local.get_mut(app_id) {
            entries.retain(|entry| entry.registration != registration);
            if entries.is_empty() {
                local.remove(app_id);
            }
        }
    }

    /// An in-process sidecar for `app_id`; replicas take turns.
    pub(crate) fn find_local(&self, app_id: &str) -> Option<Router> {
        let local = self.inner.local.read().unwrap_or_else(|e| e.into_inner());
        let entries = local.get(app_id).filter(|e| !e.is_empty())?;
        let turn = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
        Some(entries[turn % entries.len()].router.clone())
    }
}

/// Settings of the SQLite name resolution, from Configuration `spec.nameResolution`.
#[derive(Debug, Clone)]
pub(crate) struct SqliteResolverSettings {
    path: PathBuf,
    table: String,
    update_interval: Duration,
}

impl SqliteResolverSettings {
    /// Reads `spec.nameResolution` (component `sqlite`), or the default file when none is set.
    pub(crate) fn from_spec(
        spec: Option<&NameResolutionSpec>,
        working_dir: &Path,
    ) -> Result<Self, String> {
        let default_path = std::env::temp_dir().join("dapr-local-sidecars.db");
        let Some(spec) = spec else {
            return Ok(Self {
                path: default_path,
                table: "hosts".into(),
                update_interval: Duration::from_secs(5),
            });
        };
        match spec.component.to_ascii_lowercase().as_str() {
            "sqlite" => {}
            "mdns" => {
                tracing::warn!(
                    "nameResolution mdns is not supported by the local sidecar; using the SQLite registry"
                );
                return Self::from_spec(None, working_dir);
            }
            other => {
                return Err(format!(
                    "spec.nameResolution.component {other:?} is not supported (only `sqlite`)"
                ));
            }
        }
        let get = |name: &str| {
            spec.configuration
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let connection_string = get("connectionString")
            .or_else(|| get("url"))
            .ok_or("spec.nameResolution.configuration.connectionString is required")?;
        let path = connection_string
            .strip_prefix("file:")
            .unwrap_or(connection_string);
        let path = path.split('?').next().unwrap_or(path);
        let table = get("tableName").unwrap_or("hosts").to_owned();
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("spec.nameResolution.configuration.tableName may only contain letters, digits and `_`".into());
        }
        let update_interval = match get("updateInterval") {
            Some(text) => crate::resources::duration::parse(text)
                .map_err(|e| format!("spec.nameResolution.configuration.updateInterval: {e}"))?,
            None => Duration::from_secs(5),
        };
        if update_interval < Duration::from_secs(2) {
            return Err(
                "spec.nameResolution.configuration.updateInterval must be at least 2s".into(),
            );
        }
        Ok(Self {
            path: working_dir.join(path),
            table,
            update_interval,
        })
    }
}

/// This sidecar's row in the shared `hosts` table, kept fresh by a heartbeat.
pub(crate) struct SqliteResolver {
    connection: Arc<Mutex<Connection>>,
    settings: SqliteResolverSettings,
    cache: Mutex<HashMap<String, (std::time::Instant, Vec<String>)>>,
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl SqliteResolver {
    pub(crate) fn open(settings: SqliteResolverSettings) -> anyhow::Result<Self> {
        if let Some(parent) = settings.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let connection = Connection::open(&settings.path)?;
        connection.busy_timeout(Duration::from_millis(800))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        let table = &settings.table;
        connection.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
               registration_id TEXT NOT NULL PRIMARY KEY,
               address TEXT NOT NULL,
               app_id TEXT NOT NULL,
               namespace TEXT NOT NULL,
               last_update INTEGER NOT NULL
             );
             CREATE UNIQUE INDEX IF NOT EXISTS {table}_address_idx ON {table} (address);
             CREATE INDEX IF NOT EXISTS {table}_last_update_idx ON {table} (last_update);"
        ))?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            settings,
            cache: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `address` for `app_id` (replacing a stale row with the same address).
    pub(crate) fn register(
        &self,
        registration_id: &str,
        app_id: &str,
        address: &str,
    ) -> anyhow::Result<()> {
        self.lock().execute(
            &format!(
                "REPLACE INTO {} (registration_id, address, app_id, namespace, last_update) VALUES (?1, ?2, ?3, '', ?4)",
                self.settings.table
            ),
            params![registration_id, address, app_id, now_seconds()],
        )?;
        Ok(())
    }

    /// Refreshes the registration; re-creates it if another process removed it.
    pub(crate) fn heartbeat(
        &self,
        registration_id: &str,
        app_id: &str,
        address: &str,
    ) -> anyhow::Result<()> {
        let updated = self.lock().execute(
            &format!(
                "UPDATE {} SET last_update = ?1 WHERE registration_id = ?2 AND address = ?3",
                self.settings.table
            ),
            params![now_seconds(), registration_id, address],
        )?;
        if updated == 0 {
            tracing::warn!(
                app_id,
                "name resolution registration was lost; registering again"
            );
            self.register(registration_id, app_id, address)?;
        }
        Ok(())
    }

    pub(crate) fn unregister(&self, registration_id: &str) {
        let result = self.lock().execute(
            &format!(
                "DELETE FROM {} WHERE registration_id = ?1",
                self.settings.table
            ),
            [registration_id],
        );
        if let Err(error) = result {
            tracing::warn!(%error, "could not remove the name resolution registration");
        }
    }

    /// How often the registration must be refreshed.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        self.settings.update_interval / 2
    }

    /// A live address for `app_id`, picked at random among the replicas. Answers are cached
    /// for a second to keep SQLite off the invocation path; a miss queries on the blocking pool.
    pub(crate) async fn resolve(self: &Arc<Self>, app_id: &str) -> anyhow::Result<Option<String>> {
        let now = std::time::Instant::now();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app_id)
            .filter(|(at, _)| now.duration_since(*at) < Duration::from_secs(1))
            .map(|(_, addresses)| addresses.clone());
        let addresses = match cached {
            Some(addresses) => addresses,
            None => {
                let resolver = self.clone();
                let id = app_id.to_owned();
                let addresses = tokio::task::spawn_blocking(move || resolver.query(&id))
                    .await
                    .map_err(|e| anyhow::anyhow!("name resolution worker failed: {e}"))??;
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(app_id.to_owned(), (now, addresses.clone()));
                addresses
            }
        };
        if addresses.is_empty() {
            return Ok(None);
        }
        let pick = rand::random_range(0..addresses.len());
        Ok(addresses.get(pick).cloned())
    }

    fn query(&self, app_id: &str) -> anyhow::Result<Vec<String>> {
        let fresh_after = now_seconds()
            - i64::try_from(self.settings.update_interval.as_secs()).unwrap_or(i64::MAX);
        let connection = self.lock();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT address FROM {} WHERE app_id = ?1 AND last_update > ?2",
            self.settings.table
        ))?;
        let addresses = statement
            .query_map(params![app_id, fresh_after], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(addresses)
    }
}
