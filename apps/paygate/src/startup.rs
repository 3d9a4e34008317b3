//! Building and running the simulator.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use kit::server::{HttpMetrics, Readiness};
use kit::settings::DaprSettings;
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::settings::Settings;
use crate::simulation::Conditions;
use crate::store::Ledger;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) api_key: Arc<SecretString>,
    pub(crate) ledger: Ledger,
    pub(crate) conditions: Conditions,
}

/// The simulator, bound to its port and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    settings: Settings,
}

impl App {
    /// Binds the listener and builds the routes.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let paygate = &settings.paygate;
        let api_key = paygate
            .api_key
            .clone()
            .context("paygate.api_key is required")?;
        let state = AppState {
            api_key: Arc::new(api_key),
            ledger: Ledger::new(paygate.max_charges, paygate.max_idempotency_keys),
            conditions: Conditions::new(paygate),
        };
        let listener = kit::server::bind(&settings.app).await?;
        // Outside the mesh: no sidecar to wait for, and no app API token (the API key guards
        // the API instead).
        let router = kit::server::app_router(
            "paygate",
            crate::routes::router(state),
            HttpMetrics::new("paygate"),
            Readiness::serving(),
            &DaprSettings::default(),
        );
        Ok(Self {
            listener,
            router,
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

    /// Serves until `stop` resolves.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "paygate is serving");
        kit::server::serve(
            self.listener,
            self.router,
            stop,
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
