//! Building and running the inventory app.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use kit::dapr::Dapr;
use kit::outbox::Outbox;
use kit::server::{HttpMetrics, Readiness};
use tokio::net::TcpListener;

use crate::settings::{InventorySettings, Settings};
use crate::store::Inventory;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inventory: Inventory,
    pub(crate) settings: Arc<InventorySettings>,
}

/// The inventory app, bound to its port and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    dapr: Dapr,
    outbox: Outbox,
    settings: Settings,
}

impl App {
    /// Binds the listener and builds the routes (the sidecar is not contacted yet).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = kit::server::bind(&settings.app).await?;
        let dapr = Dapr::new(&settings.dapr)?;
        let inventory_settings = &settings.inventory;
        let outbox = Outbox::new(
            dapr.clone(),
            &inventory_settings.state_store,
            &inventory_settings.pubsub,
        );
        let state = AppState {
            inventory: Inventory::new(
                dapr.clone(),
                &inventory_settings.state_store,
                outbox.clone(),
            ),
            settings: Arc::new(inventory_settings.clone()),
        };
        let router = kit::server::app_router(
            "inventory",
            crate::routes::router(state),
            HttpMetrics::new("inventory"),
            Readiness::sidecar(&settings.dapr),
            &settings.dapr,
        );
        Ok(Self {
            listener,
            router,
            dapr,
            outbox,
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

    /// Serves until `stop` resolves, relaying the outbox meanwhile.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = kit::server::stop_on(stop);
        self.dapr.wait_until_ready(Duration::from_secs(60)).await?;
        tokio::spawn(
            self.outbox
                .clone()
                .run(Duration::from_secs(5), stop.clone().cancelled_owned()),
        );
        tracing::info!(port = self.port(), "inventory is serving");
        kit::server::serve(
            self.listener,
            self.router,
            stop.cancelled_owned(),
            Duration::from_secs(self.settings.app.drain_seconds),
        )
        .await
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
