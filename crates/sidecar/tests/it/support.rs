//! Test fixtures: sidecars with component YAML in a temp dir, small apps, and per-test databases.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sidecar::state::StateStore;
use sidecar::{Sidecar, SidecarOptions, Topology};
use tempfile::TempDir;

/// A running sidecar and the directory holding its resources.
pub(crate) struct TestSidecar {
    pub(crate) sidecar: Sidecar,
    pub(crate) dir: TempDir,
    pub(crate) http: String,
}

impl TestSidecar {
    /// `http://127.0.0.1:<port>` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// A gRPC client from the official `dapr` crate.
    pub(crate) async fn client(&self) -> dapr::Client<dapr::client::TonicClientWithAuth> {
        let options = dapr::client::ClientOptions::new()
            .with_address(format!("http://127.0.0.1:{}", self.sidecar.grpc_port()));
        dapr::Client::from_options(options)
            .await
            .expect("gRPC client connects")
    }

    /// The raw generated gRPC client (for the calls the `dapr` client does not wrap).
    pub(crate) async fn raw_client(
        &self,
    ) -> dapr::dapr::proto::runtime::v1::dapr_client::DaprClient<tonic::transport::Channel> {
        dapr::dapr::proto::runtime::v1::dapr_client::DaprClient::connect(format!(
            "http://127.0.0.1:{}",
            self.sidecar.grpc_port()
        ))
        .await
        .expect("gRPC client connects")
    }
}

/// Builds sidecars for tests.
pub(crate) struct SidecarBuilder {
    options: SidecarOptions,
    files: Vec<(String, String)>,
    working_files: Vec<(String, String)>,
    config: Option<String>,
    topology: Topology,
}

pub(crate) fn sidecar(app_id: &str) -> SidecarBuilder {
    SidecarBuilder {
        options: SidecarOptions::new(app_id),
        files: Vec::new(),
        working_files: Vec::new(),
        config: None,
        topology: Topology::in_process(),
    }
}

impl SidecarBuilder {
    /// Adds a resource file.
    pub(crate) fn resource(mut self, name: &str, yaml: impl Into<String>) -> Self {
        self.files.push((name.to_owned(), yaml.into()));
        self
    }

    /// Adds a file to the sidecar's working directory (where relative paths resolve).
    pub(crate) fn file(mut self, name: &str, content: impl Into<String>) -> Self {
        self.working_files.push((name.to_owned(), content.into()));
        self
    }

    /// Adds an in-memory state store named `name`.
    pub(crate) fn memory_store(self, name: &str) -> Self {
        let yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.in-memory\n  version: v1\n"
        );
        self.resource(&format!("{name}.yaml"), yaml)
    }

    /// Sets the Configuration.
    pub(crate) fn config(mut self, yaml: impl Into<String>) -> Self {
        self.config = Some(yaml.into());
        self
    }

    pub(crate) fn app_port(mut self, port: u16) -> Self {
        self.options.app_port = Some(port);
        self
    }

    pub(crate) fn topology(mut self, topology: &Topology) -> Self {
        self.topology = topology.clone();
        self
    }

    pub(crate) fn options(mut self, change: impl FnOnce(&mut SidecarOptions)) -> Self {
        change(&mut self.options);
        self
    }

    /// Writes the files and starts the sidecar, returning start-up errors.
    pub(crate) async fn try_start(mut self) -> anyhow::Result<TestSidecar> {
        let dir = tempfile::tempdir()?;
        let resources = dir.path().join("resources");
        std::fs::create_dir(&resources)?;
        for (name, yaml) in &self.files {
            std::fs::write(resources.join(name), yaml)?;
        }
        for (name, content) in &self.working_files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, content)?;
        }
        if let Some(config) = &self.config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, config)?;
            self.options.config = Some(path);
        }
        self.options.resources_paths.push(resources);
        self.options.working_dir = dir.path().to_path_buf();
        let sidecar = Sidecar::start(self.options, &self.topology).await?;
        let http = format!("http://127.0.0.1:{}", sidecar.http_port());
        Ok(TestSidecar { sidecar, dir, http })
    }

    pub(crate) async fn start(self) -> TestSidecar {
        self.try_start().await.expect("sidecar starts")
    }
}

/// Serves `router` on a free port; returns the port.
pub(crate) async fn serve(router: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("test app serves");
    });
    port
}

/// A client for the tests' calls; a call that hangs fails the test where it hangs.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

/// Waits until `check` is true, for at most `seconds`.
pub(crate) async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

pub(crate) use sidecar::testing::{RedisKeys, TestDatabase, unique};

/// A store built from component YAML, with whatever keeps its data space alive.
pub(crate) struct TestStore {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) prefix: String,
    _database: Option<TestDatabase>,
    _redis: Option<RedisKeys>,
    _dir: TempDir,
}

async fn build_store(
    component: &str,
    database: Option<TestDatabase>,
    redis: Option<RedisKeys>,
) -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("store.yaml"), component).expect("write component");
    let app_id = unique("app");
    let set = sidecar::resources::load_resources(&[dir.path().to_path_buf()], &app_id, None)
        .expect("component parses");
    let context = sidecar::components::ComponentContext::new(app_id.clone(), dir.path());
    let mut components = sidecar::components::Components::load(&set.components, &context)
        .await
        .expect("store initialises");
    let entry = components
        .state
        .remove("store")
        .expect("the store is loaded");
    TestStore {
        store: entry.store,
        prefix: app_id,
        _database: database,
        _redis: redis,
        _dir: dir,
    }
}

fn component(kind: &str, version: &str, metadata: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: store\nspec:\n  type: {kind}\n  version: {version}\n  metadata: []\n"
    );
    if !metadata.is_empty() {
        yaml = yaml.replace("  metadata: []\n", "  metadata:\n");
        for (name, value) in metadata {
            yaml.push_str(&format!("  - name: {name}\n    value: \"{value}\"\n"));
        }
    }
    yaml
}

pub(crate) async fn memory_store() -> TestStore {
    build_store(&component("state.in-memory", "v1", &[]), None, None).await
}

pub(crate) async fn sqlite_store() -> TestStore {
    build_store(
        &component("state.sqlite", "v1", &[("connectionString", "state.db")]),
        None,
        None,
    )
    .await
}

pub(crate) async fn postgres_store() -> TestStore {
    let database = TestDatabase::create().await;
    let yaml = component(
        "state.postgresql",
        "v2",
        &[
            ("connectionString", &database.connection_string()),
            ("cleanupInterval", "0"),
        ],
    );
    build_store(&yaml, Some(database), None).await
}

pub(crate) async fn redis_store() -> TestStore {
    let store = build_store(
        &component("state.redis", "v1", &[("redisHost", "127.0.0.1:6379")]),
        None,
        None,
    )
    .await;
    let prefix = store.prefix.clone();
    TestStore {
        _redis: Some(RedisKeys { prefix }),
        ..store
    }
}
