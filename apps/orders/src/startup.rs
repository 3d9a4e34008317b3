//! Building and running the orders app.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use dapr::workflow::WorkflowClient;
use kit::dapr::Dapr;
use kit::server::{HttpMetrics, Readiness};
use tokio::net::TcpListener;

use crate::commands::Workflows;
use crate::settings::{OrdersSettings, Settings};
use crate::store::Orders;
use crate::workflow::Activities;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) orders: Orders,
    pub(crate) workflows: Workflows,
    pub(crate) settings: Arc<OrdersSettings>,
}

/// The orders app, bound to its port and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    dapr: Dapr,
    state: AppState,
    settings: Settings,
}

impl App {
    /// Binds the listener and builds the routes (the sidecar is not contacted yet: the workflow
    /// worker connects when the app runs).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = kit::server::bind(&settings.app).await?;
        let dapr = Dapr::new(&settings.dapr)?;
        let orders_settings = &settings.orders;
        let state = AppState {
            orders: Orders::new(
                dapr.clone(),
                &orders_settings.state_store,
                Duration::from_millis(orders_settings.poll_millis),
            ),
            workflows: Workflows::default(),
            settings: Arc::new(orders_settings.clone()),
        };
        let router = kit::server::app_router(
            "orders",
            crate::routes::router(state.clone()),
            HttpMetrics::new("orders"),
            Readiness::sidecar(&settings.dapr),
            &settings.dapr,
        );
        Ok(Self {
            listener,
            router,
            dapr,
            state,
            settings,
        })
    }

    /// The port the app listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Runs until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(kit::server::shutdown_signal()).await
    }

    /// Serves until `stop` resolves, running the workflow worker meanwhile.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = kit::server::stop_on(stop);
        tokio::select! {
            ready = self.dapr.wait_until_ready(Duration::from_secs(60)) => ready?,
            () = stop.cancelled() => return Ok(()),
        }
        // The worker dials the sidecar's gRPC port, as the Dapr SDKs do (no port of our own).
        let address = format!(
            "http://{}:{}",
            self.settings.dapr.host, self.settings.dapr.grpc_port
        );
        let mut client = WorkflowClient::new_with_address(address)
            .await
            .context("cannot connect the workflow client to the sidecar")?;
        let orders = &self.settings.orders;
        crate::workflow::register(
            client.registry_mut(),
            Activities::new(
                self.state.orders.clone(),
                self.dapr.clone(),
                &orders.inventory_app_id,
                &orders.pubsub,
                Duration::from_secs(orders.inventory_timeout_seconds),
            ),
            orders.retry_policy(),
        );
        let worker = client
            .start_worker()
            .await
            .context("cannot start the workflow worker")?;
        self.state.workflows.connect(client.scheduling_client());
        tracing::info!(port = self.port(), "orders is serving");
        let served = kit::server::serve(
            self.listener,
            self.router,
            stop.cancelled_owned(),
            Duration::from_secs(self.settings.app.drain_seconds),
        )
        .await;
        if let Err(error) = worker.shutdown().await {
            tracing::warn!(%error, "the workflow worker did not stop cleanly");
        }
        served
    }
}

impl kit::server::Service for App {
    fn port(&self) -> u16 {
        App::port(self)
    }

    fn run(
        self: Box<Self>,
        stop: kit::server::Stop,
    ) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(self.run_until(stop.cancelled_owned()))
    }
}
