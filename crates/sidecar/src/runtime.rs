//! One running sidecar: its loaded resources, its servers, and its lifecycle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::app_channel::{self, AppChannel, HttpClient};
use crate::components::{ComponentContext, Components};
use crate::metrics::Metrics;
use crate::options::SidecarOptions;
use crate::resiliency::Policies;
use crate::resources::{self, Configuration, SubscriptionDef};
use crate::subscriber::KnownSubscription;
use crate::topology::{SqliteResolver, SqliteResolverSettings, Topology};
use crate::workflow::{Engine, Limits, TraceSettings};

/// Everything the API handlers of one sidecar share.
pub(crate) struct Runtime {
    pub(crate) app_id: String,
    pub(crate) options: SidecarOptions,
    pub(crate) configuration: Configuration,
    pub(crate) components: Components,
    pub(crate) policies: Policies,
    /// `Subscription` resources that apply to this app.
    pub(crate) declarative_subscriptions: Vec<SubscriptionDef>,
    /// The subscriptions in effect (declarative and programmatic), for the metadata API.
    pub(crate) subscriptions: RwLock<Vec<KnownSubscription>>,
    pub(crate) metrics: Metrics,
    pub(crate) app: Arc<AppChannel>,
    pub(crate) client: HttpClient,
    pub(crate) topology: Topology,
    pub(crate) resolver: Option<Arc<SqliteResolver>>,
    pub(crate) extended_metadata: RwLock<BTreeMap<String, String>>,
    pub(crate) api_token: Option<SecretString>,
    /// Forwarding headers added to remote invocations (computed once).
    pub(crate) forwarded_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Set once the app is reachable and the sidecar serves: `/v1.0/healthz` answers 204.
    pub(crate) ready: AtomicBool,
    /// Set once the API servers listen: `/v1.0/healthz/outbound` answers 204.
    pub(crate) outbound_ready: AtomicBool,
    /// Cancelled to stop the sidecar (Ctrl-C, `/v1.0/shutdown`, or [`Sidecar::shutdown`]).
    pub(crate) shutdown: CancellationToken,
    /// The workflow engine, or why there is none (no actor state store).
    pub(crate) workflows: Result<Arc<Engine>, String>,
}

impl Runtime {
    /// Share of new traces sampled (Dapr's default without configuration is 1 in 10 000).
    pub(crate) fn sampling_rate(&self) -> f64 {
        self.configuration.tracing.sampling_rate
    }

    /// The workflow engine; an error naming the missing piece when workflows cannot run.
    pub(crate) fn workflows(&self) -> Result<Arc<Engine>, String> {
        self.workflows.clone()
    }
}

/// The ports a sidecar listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Dapr HTTP API.
    pub http: u16,
    /// Dapr gRPC API.
    pub grpc: u16,
    /// Sidecar-to-sidecar invocation.
    pub internal: u16,
    /// Prometheus metrics, if enabled.
    pub metrics: Option<u16>,
}

struct Listeners {
    http: TcpListener,
    grpc: TcpListener,
    internal: TcpListener,
    metrics: Option<TcpListener>,
}

/// A sidecar whose ports are bound but which serves nothing yet. Binding first lets an app
/// learn the sidecar's ports (chosen by the OS) before the sidecar learns the app's.
pub struct BoundSidecar {
    options: SidecarOptions,
    topology: Topology,
    listeners: Listeners,
}

async fn bind(address: std::net::IpAddr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(address, port))
        .await
        .with_context(|| format!("cannot listen for the {what} on {address}:{port}"))
}

fn port(listener: &TcpListener) -> u16 {
    listener.local_addr().map_or(0, |a| a.port())
}

impl BoundSidecar {
    /// The bound ports.
    pub fn ports(&self) -> Ports {
        Ports {
            http: port(&self.listeners.http),
            grpc: port(&self.listeners.grpc),
            internal: port(&self.listeners.internal),
            metrics: self.listeners.metrics.as_ref().map(port),
        }
    }

    /// Sets the app's port, once the app has bound it.
    pub fn with_app_port(mut self, app_port: u16) -> Self {
        self.options.app_port = Some(app_port);
        self
    }

    /// Loads the resources and starts serving.
    pub async fn start(self) -> anyhow::Result<Sidecar> {
        let Self {
            options,
            topology,
            listeners,
        } = self;
        options.validate().map_err(anyhow::Error::msg)?;
        let ports = Ports {
            http: port(&listeners.http),
            grpc: port(&listeners.grpc),
            internal: port(&listeners.internal),
            metrics: listeners.metrics.as_ref().map(port),
        };
        let app_id = options.app_id.clone();

        let configuration = match &options.config {
            Some(path) => resources::load_configuration(path)?,
            None => Configuration::default(),
        };
        let resources = resources::load_resources(
            &options.resources_paths,
            &app_id,
            options.namespace.as_deref(),
        )?;
        let context = ComponentContext {
            app_id: app_id.clone(),
            namespace: options.namespace.clone(),
            working_dir: options.working_dir.clone(),
            brokers: topology.brokers(),
        };
        let components = Components::load(&resources.components, &context).await?;
        let resolver = if topology.is_shared() {
            let settings = SqliteResolverSettings::from_spec(
                configuration.name_resolution.as_ref(),
                &options.working_dir,
            )
            .map_err(anyhow::Error::msg)?;
            Some(Arc::new(
                SqliteResolver::open(settings)
                    .context("cannot open the name resolution database")?,
            ))
        } else {
            None
        };
        let client = app_channel::http_client();
        let app = Arc::new(AppChannel::new(
            client.clone(),
            &options.app_channel_address,
            options.app_port,
            options.app_api_token.clone(),
            options.app_max_concurrency,
            options.app_health.enabled,
        ));
        let metrics = Metrics::new(&app_id);
        let shutdown = CancellationToken::new();
        // As daprd: workflows persist in the actor state store and are unavailable without one.
        let workflows = match components.state.values().find(|s| s.actor_state_store) {
            Some(actor_store) => Ok(Engine::start(
                &app_id,
                actor_store.store.clone(),
                metrics.clone(),
                Limits {
                    workflows: configuration
                        .workflow
                        .max_concurrent_workflow_invocations
                        .map(|n| n.max(1) as usize),
                    activities: configuration
                        .workflow
                        .max_concurrent_activity_invocations
                        .map(|n| n.max(1) as usize),
                },
                TraceSettings {
                    sampling_rate: configuration.tracing.sampling_rate,
                    stdout: configuration.tracing.stdout,
                },
                shutdown.clone(),
            )
            .await?),
            None => Err(
                "no state store with actorStateStore: \"true\" is configured, and workflows persist there"
                    .to_owned(),
            ),
        };
        let runtime = Arc::new(Runtime {
            app_id: app_id.clone(),
            metrics,
            policies: Policies::new(&resources.resiliencies),
            declarative_subscriptions: resources.subscriptions,
            subscriptions: RwLock::default(),
            api_token: options.api_token.clone(),
            forwarded_headers: crate::invoke::forwarded_headers(&options.listen_address),
            options,
            configuration,
            components,
            app,
            client,
            topology: topology.clone(),
            resolver,
            extended_metadata: RwLock::default(),
            ready: AtomicBool::new(false),
            outbound_ready: AtomicBool::new(false),
            shutdown,
            workflows,
        });
        Sidecar::serve(runtime, listeners, ports).await
    }
}

/// A running sidecar.
pub struct Sidecar {
    runtime: Arc<Runtime>,
    ports: Ports,
    tasks: JoinSet<()>,
    registration: u64,
    registration_id: String,
}

impl Sidecar {
    /// Binds the sidecar's ports (0 = any free port) without serving yet.
    pub async fn bind(
        options: SidecarOptions,
        topology: &Topology,
    ) -> anyhow::Result<BoundSidecar> {
        let address = options.listen_address;
        let listeners = Listeners {
            http: bind(address, options.http_port, "Dapr HTTP API").await?,
            grpc: bind(address, options.grpc_port, "Dapr gRPC API").await?,
            internal: bind(
                address,
                options.internal_port,
                "internal invocation endpoint",
            )
            .await?,
            metrics: match options.metrics_port {
                Some(port) => Some(bind(address, port, "metrics endpoint").await?),
                None => None,
            },
        };
        Ok(BoundSidecar {
            options,
            topology: topology.clone(),
            listeners,
        })
    }

    /// Binds and starts a sidecar in `topology`.
    pub async fn start(options: SidecarOptions, topology: &Topology) -> anyhow::Result<Self> {
        Self::bind(options, topology).await?.start().await
    }

    async fn serve(
        runtime: Arc<Runtime>,
        listeners: Listeners,
        ports: Ports,
    ) -> anyhow::Result<Self> {
        let mut tasks = JoinSet::new();
        let stop = runtime.shutdown.clone();
        let app_id = runtime.app_id.clone();

        let internal_router = api::internal::router(runtime.clone());
        let registration = runtime
            .topology
            .register_local(&app_id, internal_router.clone());
        let registration_id = uuid::Uuid::new_v4().to_string();
        let internal_address = format!("{}:{}", runtime.options.listen_address, ports.internal);
        if let Some(resolver) = &runtime.resolver {
            resolver
                .register(&registration_id, &app_id, &internal_address)
                .context("cannot register in the name resolution database")?;
            let resolver = resolver.clone();
            let stop = stop.clone();
            let (registration_id, app_id) = (registration_id.clone(), app_id.clone());
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval(resolver.heartbeat_interval());
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = ticker.tick() => {}
                    }
                    if let Err(error) = resolver.heartbeat(&registration_id, &app_id, &internal_address) {
                        tracing::warn!(error = %format!("{error:#}"), "name resolution heartbeat failed");
                    }
                }
            });
        }

        serve_http(
            &mut tasks,
            listeners.http,
            api::http::router(runtime.clone()),
            stop.clone(),
        );
        serve_http(
            &mut tasks,
            listeners.internal,
            internal_router,
            stop.clone(),
        );
        if let Some(metrics) = listeners.metrics {
            serve_http(
                &mut tasks,
                metrics,
                api::http::metrics_router(runtime.clone()),
                stop.clone(),
            );
        }
        serve_http(
            &mut tasks,
            listeners.grpc,
            api::grpc::router(runtime.clone()),
            stop.clone(),
        );
        runtime.outbound_ready.store(true, Ordering::Release);

        // As daprd: wait for the app to listen before reporting ready and probing its health.
        let starting = runtime.clone();
        tasks.spawn(async move {
            starting.app.wait_until_reachable(&starting.shutdown).await;
            if starting.shutdown.is_cancelled() {
                return;
            }
            starting.ready.store(true, Ordering::Release);
            tracing::info!(app_id = %starting.app_id, "dapr initialized, status: running");
            if starting.options.app_health.enabled && starting.app.is_configured() {
                tokio::spawn(starting.app.clone().run_health_checks(
                    starting.options.app_health.clone(),
                    starting.metrics.clone(),
                    starting.shutdown.clone(),
                ));
            }
            // As daprd: subscriptions start once the app is healthy (deliveries wait for it).
            let mut health = starting.app.health().subscribe();
            while !*health.borrow_and_update() {
                tokio::select! {
                    changed = health.changed() => if changed.is_err() { return },
                    () = starting.shutdown.cancelled() => return,
                }
            }
            starting.start_subscriptions().await;
        });

        tracing::info!(
            app_id = %app_id,
            http_port = ports.http,
            grpc_port = ports.grpc,
            internal_port = ports.internal,
            metrics_port = ?ports.metrics,
            "sidecar started"
        );
        Ok(Self {
            runtime,
            ports,
            tasks,
            registration,
            registration_id,
        })
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.runtime.app_id
    }

    /// The ports the sidecar listens on.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The Dapr HTTP API port.
    pub fn http_port(&self) -> u16 {
        self.ports.http
    }

    /// The Dapr gRPC API port.
    pub fn grpc_port(&self) -> u16 {
        self.ports.grpc
    }

    /// Whether `/v1.0/healthz` would answer 204.
    pub fn is_ready(&self) -> bool {
        self.runtime.ready.load(Ordering::Acquire)
    }

    /// Waits until the sidecar is asked to stop (through `/v1.0/shutdown` or the gRPC Shutdown).
    pub async fn stopped(&self) {
        self.runtime.shutdown.cancelled().await;
    }

    /// Stops serving: no new requests, in-flight ones get the graceful-shutdown time to finish.
    pub async fn shutdown(mut self) {
        let runtime = self.runtime.clone();
        runtime.ready.store(false, Ordering::Release);
        runtime
            .topology
            .unregister_local(&runtime.app_id, self.registration);
        if let Some(resolver) = &runtime.resolver {
            resolver.unregister(&self.registration_id);
        }
        runtime.shutdown.cancel();
        let deadline = runtime.options.graceful_shutdown;
        let drained = tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(app_id = %runtime.app_id, "graceful shutdown deadline passed; aborting what is left");
            self.tasks.abort_all();
        }
        tracing::info!(app_id = %runtime.app_id, "sidecar stopped");
    }
}

fn serve_http(
    tasks: &mut JoinSet<()>,
    listener: TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) {
    // No Nagle, as Go's listeners (and so daprd's): a small frame or answer written after
    // another would otherwise wait for the peer's delayed ACK (40 ms on Linux) whenever the
    // connection is quiet, a workflow's work items on their stream among them.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    tasks.spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "an HTTP server of the sidecar failed");
        }
    });
}
