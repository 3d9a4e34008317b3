//! Building and running the payments app.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use kit::dapr::Dapr;
use kit::outbox::Outbox;
use kit::server::{HttpMetrics, Readiness};
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::provider::Provider;
use crate::settings::{PaymentsSettings, Settings};
use crate::store::Payments;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) payments: Payments,
    pub(crate) dapr: Dapr,
    /// The provider's client, once its URL and key are read from the secret store.
    pub(crate) provider: Arc<OnceLock<Provider>>,
    pub(crate) settings: Arc<PaymentsSettings>,
}

/// The payments app, bound to its port and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
    outbox: Outbox,
    settings: Settings,
}

impl App {
    /// Binds the listener and builds the routes (the sidecar is not contacted yet).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = kit::server::bind(&settings.app).await?;
        let dapr = Dapr::new(&settings.dapr)?;
        let payments = &settings.payments;
        let outbox = Outbox::new(dapr.clone(), &payments.state_store, &payments.pubsub);
        let state = AppState {
            payments: Payments::new(dapr.clone(), &payments.state_store, outbox.clone()),
            dapr,
            provider: Arc::default(),
            settings: Arc::new(payments.clone()),
        };
        let router = kit::server::app_router(
            "payments",
            crate::routes::router(state.clone()),
            HttpMetrics::new("payments"),
            Readiness::sidecar(&settings.dapr),
            &settings.dapr,
        );
        Ok(Self {
            listener,
            router,
            state,
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

    /// Reads one value of the secret store.
    async fn secret(&self, key: &str) -> anyhow::Result<String> {
        let values = self
            .state
            .dapr
            .secret(&self.settings.payments.secret_store, key)
            .await
            .with_context(|| format!("cannot read the secret {key}"))?;
        values
            .get(key)
            .or_else(|| values.values().next())
            .cloned()
            .with_context(|| format!("the secret {key} is empty"))
    }

    /// Serves until `stop` resolves, relaying the outbox meanwhile.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = kit::server::stop_on(stop);
        tokio::select! {
            ready = self.state.dapr.wait_until_ready(Duration::from_secs(60)) => ready?,
            () = stop.cancelled() => return Ok(()),
        }
        let payments = &self.settings.payments;
        let url = match &payments.provider_url {
            Some(url) => url.clone(),
            None => self.secret(&payments.provider_url_secret).await?,
        };
        let key = SecretString::from(self.secret(&payments.provider_key_secret).await?);
        let provider = Provider::new(
            &url,
            key,
            Duration::from_secs(payments.provider_timeout_seconds),
            payments.provider_attempts,
            Duration::from_millis(payments.provider_retry_millis),
        )?;
        let _ = self.state.provider.set(provider);
        tokio::spawn(
            self.outbox
                .clone()
                .run(Duration::from_secs(5), stop.clone().cancelled_owned()),
        );
        tracing::info!(port = self.port(), "payments is serving");
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
