//! Building and running the notifications app.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use kit::dapr::Dapr;
use kit::server::{HttpMetrics, Readiness, Stop};
use tokio::net::TcpListener;

use crate::hub::Hub;
use crate::settings::{NotificationsSettings, Settings};
use crate::store::Notifications;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) notifications: Notifications,
    pub(crate) settings: Arc<NotificationsSettings>,
    pub(crate) pubsub: String,
    /// Cancelled when the app stops: open streams end then.
    pub(crate) stop: Stop,
}

/// The notifications app, bound to its port and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    dapr: Dapr,
    stop: Stop,
    settings: Settings,
}

impl App {
    /// Binds the listener and builds the routes (the sidecar is not contacted yet).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = kit::server::bind(&settings.app).await?;
        let dapr = Dapr::new(&settings.dapr)?;
        let stop = Stop::new();
        let state = AppState {
            notifications: Notifications::new(
                dapr.clone(),
                &settings.notifications,
                Hub::default(),
            ),
            settings: Arc::new(settings.notifications.clone()),
            pubsub: settings.notifications.pubsub.clone(),
            stop: stop.clone(),
        };
        let router = kit::server::app_router(
            "notifications",
            crate::routes::router(state),
            HttpMetrics::new("notifications"),
            Readiness::sidecar(&settings.dapr),
            &settings.dapr,
        );
        Ok(Self {
            listener,
            router,
            dapr,
            stop,
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

    /// Serves until `stop` resolves; open streams end then.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let streams = self.stop.clone();
        let stop = kit::server::stop_on(async move {
            stop.await;
            streams.cancel();
        });
        tokio::select! {
            ready = self.dapr.wait_until_ready(Duration::from_secs(60)) => ready?,
            () = stop.cancelled() => return Ok(()),
        }
        tracing::info!(port = self.port(), "notifications is serving");
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
