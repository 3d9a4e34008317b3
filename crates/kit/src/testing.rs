//! A small Dapr world for an app's tests (feature `testing`): local sidecars in one process,
//! with component YAML in a temp dir for the state store under test (SQLite, the real local
//! PostgreSQL or Redis, or memory), a local secret file and in-memory pub/sub. Apps run behind
//! their sidecar exactly as in production; other app ids call them through sidecars of their
//! own, so `dapr-caller-app-id` is what real Dapr would send; an observer app records events.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use secrecy::SecretString;
use serde_json::{Value, json};
use sidecar::testing::{RedisKeys, TestDatabase, unique};
use sidecar::{BoundSidecar, Sidecar, SidecarOptions, Topology};
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::server::{Service, Stop};
use crate::settings::DaprSettings;

/// The name of the state store, secret store and pub/sub components, as in `components/`.
pub const STATE_STORE: &str = "statestore";
/// See [`STATE_STORE`].
pub const SECRET_STORE: &str = "secretstore";
/// See [`STATE_STORE`].
pub const PUBSUB: &str = "pubsub";

/// The state store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `state.in-memory`.
    Memory,
    /// `state.sqlite`, a file in the temp dir (the embedded default).
    Sqlite,
    /// `state.postgresql` v2 on a database of its own on the local server.
    Postgres,
    /// `state.redis` on the local server, under a key prefix of its own.
    Redis,
}

impl Store {
    /// Every store the project ships.
    pub const ALL: [Self; 4] = [Self::Memory, Self::Sqlite, Self::Postgres, Self::Redis];
}

/// Sidecars, apps and their components for one test; everything stops and is removed on drop.
pub struct Stack {
    root: PathBuf,
    components: PathBuf,
    _dir: Option<TempDir>,
    topology: Topology,
    stop: Stop,
    sidecars: Vec<Sidecar>,
    apps: Vec<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
    _database: Option<TestDatabase>,
    _redis: Option<RedisKeys>,
}

fn component(name: &str, kind: &str, version: &str, metadata: &[(&str, String)]) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: {version}\n  metadata:\n"
    );
    if metadata.is_empty() {
        yaml = yaml.replace("  metadata:\n", "  metadata: []\n");
    }
    for (key, value) in metadata {
        yaml.push_str(&format!("  - name: {key}\n    value: {}\n", json!(value)));
    }
    yaml
}

impl Stack {
    /// Components for `store`, with `secrets` in the local secret store.
    pub async fn new(store: Store, secrets: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let components = dir.path().join("components");
        std::fs::create_dir_all(&components)?;
        let secrets: serde_json::Map<String, Value> = secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        std::fs::write(
            dir.path().join("secrets.json"),
            serde_json::to_vec(&secrets)?,
        )?;
        let mut database = None;
        let mut redis = None;
        let state = match store {
            Store::Memory => component(STATE_STORE, "state.in-memory", "v1", &[]),
            Store::Sqlite => component(
                STATE_STORE,
                "state.sqlite",
                "v1",
                &[("connectionString", "state.db".into())],
            ),
            Store::Postgres => {
                let created = TestDatabase::create().await;
                let yaml = component(
                    STATE_STORE,
                    "state.postgresql",
                    "v2",
                    &[("connectionString", created.connection_string())],
                );
                database = Some(created);
                yaml
            }
            Store::Redis => {
                let prefix = unique("test");
                let yaml = component(
                    STATE_STORE,
                    "state.redis",
                    "v1",
                    &[
                        ("redisHost", sidecar::testing::REDIS.into()),
                        ("keyPrefix", prefix.clone()),
                    ],
                );
                redis = Some(RedisKeys { prefix });
                yaml
            }
        };
        for (file, yaml) in [
            ("statestore.yaml", state),
            (
                "secretstore.yaml",
                component(
                    SECRET_STORE,
                    "secretstores.local.file",
                    "v1",
                    &[("secretsFile", "secrets.json".into())],
                ),
            ),
            (
                "pubsub.yaml",
                component(PUBSUB, "pubsub.in-memory", "v1", &[]),
            ),
        ] {
            std::fs::write(components.join(file), yaml)?;
        }
        Ok(Self {
            root: dir.path().to_path_buf(),
            components,
            _dir: Some(dir),
            topology: Topology::in_process(),
            stop: Stop::new(),
            sidecars: Vec::new(),
            apps: Vec::new(),
            http: reqwest::Client::new(),
            _database: database,
            _redis: redis,
        })
    }

    /// Sidecars that join a running `topology` (the launcher's, say) with its component set
    /// and working directory, to observe or call what runs there.
    pub fn join(topology: &Topology, root: &Path, components: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            components: components.to_path_buf(),
            _dir: None,
            topology: topology.clone(),
            stop: Stop::new(),
            sidecars: Vec::new(),
            apps: Vec::new(),
            http: reqwest::Client::new(),
            _database: None,
            _redis: None,
        }
    }

    /// The sidecars' working directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// A sidecar for `app_id`, bound but not started, and the settings its app needs. As in
    /// production, the sidecar proves itself to the app with an app API token (`APP_API_TOKEN`),
    /// so nothing else can call the app directly.
    pub async fn bind(&self, app_id: &str) -> anyhow::Result<(BoundSidecar, DaprSettings)> {
        self.bind_with(app_id, |_| {}).await
    }

    /// [`Stack::bind`] with options changed by `configure` (a `DAPR_API_TOKEN`, a
    /// configuration file, more resources paths...); the settings follow the tokens set.
    pub async fn bind_with(
        &self,
        app_id: &str,
        configure: impl FnOnce(&mut SidecarOptions),
    ) -> anyhow::Result<(BoundSidecar, DaprSettings)> {
        let mut options = SidecarOptions::new(app_id).resources_path(&self.components);
        options.working_dir = self.root.clone();
        options.metrics_port = None;
        options.app_api_token = Some(SecretString::from(unique("token-")));
        configure(&mut options);
        let api_token = options.api_token.clone();
        let app_api_token = options.app_api_token.clone();
        let bound = Sidecar::bind(options, &self.topology).await?;
        let ports = bound.ports();
        let dapr = DaprSettings {
            http_port: ports.http,
            grpc_port: ports.grpc,
            api_token,
            app_api_token,
            ..DaprSettings::default()
        };
        Ok((bound, dapr))
    }

    /// Starts `bound` with no app behind it, to call the Dapr API through it; it stops with
    /// the stack.
    pub async fn start(&mut self, bound: BoundSidecar) -> anyhow::Result<()> {
        self.sidecars.push(bound.start().await?);
        Ok(())
    }

    /// Adds a component (`<name>.yaml` in the components directory) for the sidecars bound
    /// after this call: a binding, a second pub/sub...
    pub fn add_component(
        &self,
        name: &str,
        kind: &str,
        metadata: &[(&str, String)],
    ) -> anyhow::Result<()> {
        std::fs::write(
            self.components.join(format!("{name}.yaml")),
            component(name, kind, "v1", metadata),
        )
        .with_context(|| format!("cannot write the component {name}"))
    }

    /// Starts `bound` for `app`, runs the app, and waits until it answers `/healthz`. Returns
    /// the app's base URL (to call it directly, bypassing every sidecar).
    pub async fn run(
        &mut self,
        bound: BoundSidecar,
        app: Box<dyn Service>,
    ) -> anyhow::Result<String> {
        let port = app.port();
        self.sidecars.push(bound.with_app_port(port).start().await?);
        self.apps.push(tokio::spawn(app.run(self.stop.clone())));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.http.get(format!("{base}/healthz")).send().await {
                Ok(response) if response.status().is_success() => return Ok(base),
                _ if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!("the app on port {port} did not start within 30 s")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// A sidecar for `app_id` with no app: calls through it carry `dapr-caller-app-id: app_id`.
    pub async fn caller(&mut self, app_id: &str) -> anyhow::Result<Caller> {
        let (bound, dapr) = self.bind(app_id).await?;
        self.start(bound).await?;
        Ok(Caller {
            base: format!("http://127.0.0.1:{}", dapr.http_port),
            http: self.http.clone(),
        })
    }

    /// An app of its own that subscribes to `topics` and records every event delivered.
    pub async fn observe(&mut self, topics: &[&str]) -> anyhow::Result<Events> {
        let events = Events::default();
        let subscriptions: Vec<Value> = topics
            .iter()
            .map(|topic| json!({"pubsubname": PUBSUB, "topic": topic, "route": "/events"}))
            .collect();
        let recorded = events.clone();
        let router = Router::new()
            .route(
                "/dapr/subscribe",
                get(move || async move { axum::Json(subscriptions.clone()) }),
            )
            .route(
                "/events",
                post(move |axum::Json(event): axum::Json<Value>| async move {
                    recorded.push(event);
                    axum::Json(json!({"status": "SUCCESS"}))
                }),
            )
            .route("/healthz", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let stop = self.stop.clone();
        self.apps.push(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("the observer failed")
        }));
        let (bound, dapr) = self.bind(&unique("observer")).await?;
        self.sidecars.push(bound.with_app_port(port).start().await?);
        // Subscribing happens after the sidecar starts; an event published before would be
        // missed, so wait until the metadata API lists the subscriptions.
        let metadata = format!("http://127.0.0.1:{}/v1.0/metadata", dapr.http_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let subscribed = match self.http.get(&metadata).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|m| m["subscriptions"].as_array().map(Vec::len))
                    .unwrap_or(0),
                Err(_) => 0,
            };
            if subscribed >= topics.len() {
                return Ok(events);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the observer did not subscribe to {topics:?} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every app and sidecar and reports the first app that failed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let mut outcome = Ok(());
        for app in self.apps.drain(..) {
            let result = app.await.context("an app panicked").and_then(|r| r);
            if outcome.is_ok() {
                outcome = result;
            }
        }
        for sidecar in self.sidecars.drain(..) {
            sidecar.shutdown().await;
        }
        outcome
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Calls apps through a sidecar, as the app id it was made for.
#[derive(Clone)]
pub struct Caller {
    base: String,
    http: reqwest::Client,
}

impl Caller {
    /// A request to `path` of `app_id` through service invocation.
    pub fn invoke(
        &self,
        method: reqwest::Method,
        app_id: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(
            method,
            format!(
                "{}/v1.0/invoke/{app_id}/method/{}",
                self.base,
                path.trim_start_matches('/')
            ),
        )
    }

    /// The sidecar's HTTP API, `http://127.0.0.1:<port>`.
    pub fn sidecar(&self) -> &str {
        &self.base
    }
}

/// The CloudEvents an observer received, in order.
#[derive(Clone, Default)]
pub struct Events {
    inner: Arc<(Mutex<Vec<Value>>, Notify)>,
}

impl Events {
    fn push(&self, event: Value) {
        self.inner
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        self.inner.1.notify_waiters();
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Value> {
        self.inner
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The events after the first `seen`, for a reader that keeps its place (a load test
    /// would spend its time copying [`Events::all`] again and again).
    pub fn since(&self, seen: usize) -> Vec<Value> {
        let events = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .get(seen..)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    }

    /// The first event of CloudEvent type `kind` whose `data` satisfies `matches`, waiting up to
    /// `timeout` for it.
    pub async fn wait_for(
        &self,
        kind: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.1.notified();
            if let Some(event) = self
                .all()
                .into_iter()
                .find(|event| event["type"] == kind && matches(&event["data"]))
            {
                return Ok(event);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "no {kind} event within {timeout:?}; received: {}",
                    serde_json::to_string(&self.all()).unwrap_or_default()
                );
            }
        }
    }
}
