//! The shop launcher: every app of the shop, each behind a local Dapr sidecar of its own, in one
//! process. The sidecars share one in-process topology (they find each other in memory, and the
//! in-memory pub/sub spans them) and read one component set, `components/local` by default.
//! `dapr.yaml` describes the same topology for the real Dapr CLI.

pub mod secrets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use kit::server::{Service, Stop};
use kit::settings::DaprSettings;
use secrecy::SecretString;
use sidecar::{Sidecar, SidecarOptions, Topology};
use tokio::task::JoinSet;

pub use secrets::AdminSource;

/// The Dapr apps the launcher starts, each with its sidecar, in start order: orders after the
/// inventory it reserves stock with, payments after the orders it reads, the gateway last, once
/// what it routes to runs.
pub const APPS: &[&str] = &[
    "auth",
    "inventory",
    "orders",
    "payments",
    "notifications",
    "gateway",
];

/// The app that listens for the public.
pub const GATEWAY: &str = "gateway";

/// The payment provider simulator: started first, with no sidecar (it stands for a provider
/// outside the shop), on a free port, with the API key `paygate-api-key` of the secret file.
/// The payments app is pointed at it (`payments.provider_url`) and reads the same key through
/// its sidecar's secret store.
pub const PAYGATE: &str = "paygate";

/// What to start and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The working directory of every sidecar: relative paths in components (`.data/...`)
    /// resolve here.
    pub root: PathBuf,
    /// The component set.
    pub components: PathBuf,
    /// A Dapr `Configuration` for every sidecar.
    pub config: Option<PathBuf>,
    /// Address the gateway binds.
    pub host: String,
    /// Port the gateway binds (0 = any free port).
    pub port: u16,
    /// Settings for the apps as `SHOP_<APP>_...` entries, under the real environment (which
    /// wins): how a test gives an app a value (a short payment timeout) without touching the
    /// process environment.
    pub settings: Vec<(String, String)>,
}

impl Options {
    /// The defaults for a run from the repository: `components/local` under `root`, the gateway
    /// on 127.0.0.1:8080.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            components: root.join("components").join("local"),
            root,
            config: None,
            host: "127.0.0.1".into(),
            port: 8080,
            settings: Vec::new(),
        }
    }

    /// The secret file of the component sets (`secretstores.local.file`).
    pub fn secrets_file(&self) -> PathBuf {
        self.root.join(".data").join("secrets.json")
    }
}

/// One running app and its sidecar's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// App id.
    pub app_id: String,
    /// Where the app listens.
    pub app_port: u16,
    /// The sidecar's HTTP API (none for the paygate, which has no sidecar).
    pub dapr_http_port: Option<u16>,
    /// The sidecar's gRPC API.
    pub dapr_grpc_port: Option<u16>,
}

/// The running shop.
pub struct Shop {
    gateway: SocketAddr,
    members: Vec<Member>,
    admin: AdminSource,
    topology: Topology,
    /// Each app's sidecar, by app id.
    sidecars: Vec<(String, Sidecar)>,
    apps: JoinSet<(String, anyhow::Result<()>)>,
    /// Each app's own stop (a child of `stop`), by app id: what [`Shop::restart`] cancels.
    app_stops: Vec<(String, Stop)>,
    stop: Stop,
}

impl Shop {
    /// Creates missing secrets, then starts every app of [`APPS`] with its sidecar, and waits
    /// until each answers.
    pub async fn start(options: &Options) -> anyhow::Result<Self> {
        let components = &options.components;
        anyhow::ensure!(
            components.is_dir(),
            "the component set {} does not exist (pass --components DIR)",
            components.display()
        );
        let environment = std::env::vars().collect();
        let admin = secrets::ensure(&options.secrets_file(), &environment)?;
        let topology = Topology::in_process();
        let stop = Stop::new();
        let mut shop = Self {
            gateway: SocketAddr::from(([127, 0, 0, 1], 0)),
            members: Vec::new(),
            admin,
            topology: topology.clone(),
            sidecars: Vec::new(),
            apps: JoinSet::new(),
            app_stops: Vec::new(),
            stop,
        };
        if let Err(error) = shop.start_paygate(options).await {
            return Err(shop
                .abandon(error.context(format!("cannot start {PAYGATE}")))
                .await);
        }
        for app_id in APPS {
            if let Err(error) = shop.start_member(app_id, options, &topology).await {
                return Err(shop
                    .abandon(error.context(format!("cannot start {app_id}")))
                    .await);
            }
        }
        if let Err(error) = shop.wait_until_serving().await {
            return Err(shop.abandon(error).await);
        }
        Ok(shop)
    }

    /// Stops what has started after `error` made the start fail; returns `error`.
    async fn abandon(mut self, error: anyhow::Error) -> anyhow::Error {
        if let Err(also) = self.stop().await {
            tracing::warn!(error = %format!("{also:#}"), "stopping after a failed start");
        }
        error
    }

    /// Starts the payment provider simulator, outside the mesh: no sidecar.
    async fn start_paygate(&mut self, options: &Options) -> anyhow::Result<()> {
        let api_key = secrets::get(&options.secrets_file(), "paygate-api-key")?;
        let mut presets = options.settings.clone();
        presets.push(("SHOP_PAYGATE_PAYGATE__API_KEY".to_owned(), api_key));
        let mut settings: shop_paygate::Settings = kit::settings::load_with(PAYGATE, presets)
            .map_err(|error| anyhow::anyhow!("{PAYGATE}: {error}"))?;
        settings.app.port = 0;
        let app = shop_paygate::App::build(settings).await?;
        let app_port = app.port();
        let run = Box::new(app).run(self.stop.clone());
        self.apps
            .spawn(async move { (PAYGATE.to_owned(), run.await) });
        self.members.push(Member {
            app_id: PAYGATE.to_owned(),
            app_port,
            dapr_http_port: None,
            dapr_grpc_port: None,
        });
        Ok(())
    }

    /// The payment provider simulator's URL.
    pub fn paygate_url(&self) -> Option<String> {
        self.members
            .iter()
            .find(|member| member.app_id == PAYGATE)
            .map(|member| format!("http://127.0.0.1:{}", member.app_port))
    }

    async fn start_member(
        &mut self,
        app_id: &str,
        options: &Options,
        topology: &Topology,
    ) -> anyhow::Result<()> {
        let mut sidecar_options = SidecarOptions::new(app_id).resources_path(&options.components);
        sidecar_options.working_dir = options.root.clone();
        sidecar_options.config = options.config.clone();
        sidecar_options.metrics_port = None;
        // Only its sidecar may call an app: a fresh app API token per app and run.
        let token = SecretString::from(uuid::Uuid::new_v4().simple().to_string());
        sidecar_options.app_api_token = Some(token.clone());
        let bound = Sidecar::bind(sidecar_options, topology).await?;
        let ports = bound.ports();
        let dapr = DaprSettings {
            http_port: ports.http,
            grpc_port: ports.grpc,
            app_api_token: Some(token),
            ..DaprSettings::default()
        };
        let app = build(app_id, dapr, options, self.paygate_url()).await?;
        let app_port = app.port();
        if app_id == GATEWAY {
            // Where to reach it: a wildcard bind (`0.0.0.0`) is reachable on loopback.
            let host = options
                .host
                .parse::<std::net::IpAddr>()
                .ok()
                .filter(|ip| !ip.is_unspecified())
                .unwrap_or([127, 0, 0, 1].into());
            self.gateway = SocketAddr::new(host, app_port);
        }
        self.sidecars.push((
            app_id.to_owned(),
            bound.with_app_port(app_port).start().await?,
        ));
        let id = app_id.to_owned();
        let stop = self.stop.child_token();
        self.app_stops.push((id.clone(), stop.clone()));
        let run = app.run(stop);
        self.apps.spawn(async move { (id, run.await) });
        self.members.push(Member {
            app_id: app_id.to_owned(),
            app_port,
            dapr_http_port: Some(ports.http),
            dapr_grpc_port: Some(ports.grpc),
        });
        Ok(())
    }

    /// Waits until every app answers `/healthz` (an app serves once its start-up work is done).
    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for member in &self.members {
            let url = if member.app_id == GATEWAY {
                format!("{}/healthz", self.url())
            } else {
                format!("http://127.0.0.1:{}/healthz", member.app_port)
            };
            loop {
                if client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
                if let Some(finished) = self.apps.try_join_next() {
                    let (app, result) = finished.context("an app panicked")?;
                    result.with_context(|| format!("{app} stopped while starting"))?;
                    anyhow::bail!("{app} stopped while starting");
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{} did not start within 60 s",
                    member.app_id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Where the gateway listens.
    pub fn gateway(&self) -> SocketAddr {
        self.gateway
    }

    /// `http://<gateway>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    /// The running apps.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The topology the sidecars share: more sidecars can join it (tests observe events so).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Where the admin's credentials come from.
    pub fn admin(&self) -> &AdminSource {
        &self.admin
    }

    /// Runs until `signal` resolves or an app stops on its own, then stops everything. An app
    /// that stopped on its own is an error.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            () = signal => Ok(()),
            Some(finished) = self.apps.join_next() => match finished {
                Ok((app, Ok(()))) => Err(anyhow::anyhow!("{app} stopped unexpectedly")),
                Ok((app, Err(error))) => Err(error.context(format!("{app} failed"))),
                Err(error) => Err(anyhow::Error::new(error).context("an app panicked")),
            },
        };
        let stopped = self.stop().await;
        outcome.and(stopped)
    }

    /// Stops the apps (each drains its requests), then their sidecars.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let mut outcome = Ok(());
        while let Some(finished) = self.apps.join_next().await {
            let result = match finished {
                Ok((app, result)) => result.with_context(|| format!("{app} failed while stopping")),
                Err(error) => Err(anyhow::Error::new(error).context("an app panicked")),
            };
            if outcome.is_ok() {
                outcome = result;
            }
        }
        for (_, sidecar) in self.sidecars.drain(..) {
            sidecar.shutdown().await;
        }
        outcome
    }

    /// Stops one app of [`APPS`] and its sidecar, as a crash or a redeploy would, then starts
    /// both again (on new ports: the others find them by app id). What the app keeps in its
    /// state store, workflows included, is still there; another app failing meanwhile is an
    /// error.
    pub async fn restart(&mut self, app_id: &str, options: &Options) -> anyhow::Result<()> {
        anyhow::ensure!(
            APPS.contains(&app_id) && app_id != GATEWAY,
            "only an app behind the gateway can be restarted, not {app_id:?}"
        );
        let (_, stop) = self
            .app_stops
            .iter()
            .position(|(id, _)| id == app_id)
            .map(|i| self.app_stops.remove(i))
            .with_context(|| format!("{app_id} is not running"))?;
        stop.cancel();
        // The first app to finish is the one stopped, unless another failed meanwhile.
        let (app, result) = self
            .apps
            .join_next()
            .await
            .context("no app is running")?
            .context("an app panicked")?;
        if app != app_id {
            let error = result
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("it stopped"));
            return Err(error.context(format!("{app} stopped while {app_id} restarted")));
        }
        result.with_context(|| format!("{app_id} failed while stopping"))?;
        if let Some(i) = self.sidecars.iter().position(|(id, _)| id == app_id) {
            let (_, sidecar) = self.sidecars.remove(i);
            sidecar.shutdown().await;
        }
        self.members.retain(|member| member.app_id != app_id);
        let topology = self.topology.clone();
        self.start_member(app_id, options, &topology).await?;
        self.wait_until_serving().await
    }
}

/// Builds app `app_id` with its settings (`config/<app>.toml`, `SHOP_<APP>_...`), pointed at
/// its sidecar; the payments app at the paygate the launcher started, when it did.
async fn build(
    app_id: &str,
    dapr: DaprSettings,
    options: &Options,
    paygate_url: Option<String>,
) -> anyhow::Result<Box<dyn Service>> {
    Ok(match app_id {
        "auth" => {
            let mut settings: shop_auth::Settings = load_settings(app_id, options)?;
            settings.dapr = dapr;
            settings.app.port = 0;
            Box::new(shop_auth::App::build(settings).await?)
        }
        "inventory" => {
            let mut settings: shop_inventory::Settings = load_settings(app_id, options)?;
            settings.dapr = dapr;
            settings.app.port = 0;
            Box::new(shop_inventory::App::build(settings).await?)
        }
        "orders" => {
            let mut settings: shop_orders::Settings = load_settings(app_id, options)?;
            settings.dapr = dapr;
            settings.app.port = 0;
            Box::new(shop_orders::App::build(settings).await?)
        }
        "payments" => {
            let mut settings: shop_payments::Settings = load_settings(app_id, options)?;
            settings.dapr = dapr;
            settings.app.port = 0;
            // The paygate listens on a free port, which no secret file can know in advance.
            if paygate_url.is_some() {
                settings.payments.provider_url = paygate_url;
            }
            Box::new(shop_payments::App::build(settings).await?)
        }
        "notifications" => {
            let mut settings: shop_notifications::Settings = load_settings(app_id, options)?;
            settings.dapr = dapr;
            settings.app.port = 0;
            Box::new(shop_notifications::App::build(settings).await?)
        }
        GATEWAY => {
            let mut settings: shop_gateway::Settings = load_settings(app_id, options)?;
            settings.dapr = dapr;
            settings.app.host.clone_from(&options.host);
            settings.app.port = options.port;
            Box::new(shop_gateway::App::build(settings).await?)
        }
        other => anyhow::bail!("the launcher does not know the app {other:?}"),
    })
}

/// The settings of `app_id`: its file and environment over [`Options::settings`].
fn load_settings<S>(app_id: &str, options: &Options) -> anyhow::Result<S>
where
    S: serde::Serialize + serde::de::DeserializeOwned + Default + kit::settings::Validate,
{
    kit::settings::load_with(app_id, options.settings.clone())
        .map_err(|error| anyhow::anyhow!("{app_id}: {error}"))
}

/// The repository the launcher was built from, if it is still there: `cargo run` from a
/// subdirectory still finds `components/`.
pub fn repository_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("components")
        .is_dir()
        .then(|| root.canonicalize().unwrap_or(root))
}
