//! The sidecar's connection to its app: HTTP requests to `http://<channel address>:<app port>`,
//! the `--app-max-concurrency` limit, `APP_API_TOKEN`, and app health checks.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::options::AppHealthOptions;

/// The HTTP client every sidecar uses for its app and for other sidecars.
pub(crate) type HttpClient = Client<HttpConnector, Body>;

/// A pooled HTTP/1.1 client without redirects (3xx go back to the caller, as in daprd).
pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// Why a request could not reach the app.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppChannelError {
    /// No `--app-port` was given.
    #[error("app channel is not initialized")]
    NotConfigured,
    /// Health checks say the app is down.
    #[error("app is not in a healthy state")]
    Unhealthy,
    /// The request failed on the way.
    #[error("error invoking app channel: {0}")]
    Transport(String),
}

/// The app behind this sidecar.
pub(crate) struct AppChannel {
    client: HttpClient,
    base: Option<String>,
    app_token: Option<SecretString>,
    concurrency: Option<Arc<Semaphore>>,
    health: AppHealth,
}

/// The app's health as the checks last saw it. Without health checks the app is always healthy.
#[derive(Clone)]
pub(crate) struct AppHealth {
    healthy: Arc<AtomicBool>,
    changes: watch::Sender<bool>,
}

impl AppHealth {
    fn new(healthy: bool) -> Self {
        Self {
            healthy: Arc::new(AtomicBool::new(healthy)),
            changes: watch::Sender::new(healthy),
        }
    }

    /// Whether the app is healthy now.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// A receiver that sees every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    fn set(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::AcqRel) != healthy {
            tracing::info!(healthy, "app health changed");
            self.changes.send_replace(healthy);
        }
    }
}

impl AppChannel {
    pub(crate) fn new(
        client: HttpClient,
        channel_address: &str,
        app_port: Option<u16>,
        app_token: Option<SecretString>,
        max_concurrency: Option<usize>,
        health_checks: bool,
    ) -> Self {
        Self {
            client,
            base: app_port.map(|port| format!("http://{channel_address}:{port}")),
            app_token,
            concurrency: max_concurrency.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            // As daprd: with health checks the app starts unhealthy until the first good probe.
            health: AppHealth::new(!health_checks),
        }
    }

    /// Whether the sidecar has an app at all.
    pub(crate) fn is_configured(&self) -> bool {
        self.base.is_some()
    }

    pub(crate) fn health(&self) -> &AppHealth {
        &self.health
    }

    /// Sends `request` (whose URI holds only path and query) to the app. The response body is
    /// streamed; the concurrency permit is held until it has been read to the end.
    pub(crate) async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, AppChannelError> {
        let base = self.base.as_deref().ok_or(AppChannelError::NotConfigured)?;
        if !self.health.is_healthy() {
            return Err(AppChannelError::Unhealthy);
        }
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let uri: Uri = format!("{base}{path_and_query}")
            .parse()
            .map_err(|e| AppChannelError::Transport(format!("invalid method path: {e}")))?;
        *request.uri_mut() = uri;
        if let Some(token) = &self.app_token
            && let Ok(value) = HeaderValue::from_str(token.expose_secret())
        {
            request.headers_mut().insert("dapr-api-token", value);
        }
        let permit = match &self.concurrency {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| AppChannelError::Transport(e.to_string()))?,
            ),
            None => None,
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| AppChannelError::Transport(error_chain(&e)))?;
        Ok(response.map(|body| match permit {
            Some(permit) => Body::new(PermitBody {
                inner: body,
                _permit: permit,
            }),
            None => Body::new(body),
        }))
    }

    /// Waits until the app accepts TCP connections (daprd blocks start-up the same way).
    pub(crate) async fn wait_until_reachable(&self, cancel: &CancellationToken) {
        let Some(base) = &self.base else { return };
        let address = base.trim_start_matches("http://").to_owned();
        let mut logged = false;
        loop {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                tracing::info!(%address, "application discovered");
                return;
            }
            if !logged {
                tracing::info!(%address, "waiting for the application to listen");
                logged = true;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Probes the app every interval until `cancel`; after `threshold` failures in a row it is
    /// unhealthy, after one success healthy again.
    pub(crate) async fn run_health_checks(
        self: Arc<Self>,
        options: AppHealthOptions,
        metrics: Metrics,
        cancel: CancellationToken,
    ) {
        let Some(base) = self.base.clone() else {
            return;
        };
        let url = format!("{base}{}", options.path);
        let threshold = options.threshold.max(1);
        let failures = AtomicU32::new(threshold);
        let mut ticker = tokio::time::interval(options.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let healthy = self.probe(&url, options.timeout).await;
            metrics.health_probe(healthy);
            if healthy {
                failures.store(0, Ordering::Relaxed);
                self.health.set(true);
            } else if failures.fetch_add(1, Ordering::Relaxed) + 1 >= threshold {
                self.health.set(false);
            }
        }
    }

    async fn probe(&self, url: &str, timeout: Duration) -> bool {
        let Ok(request) = Request::get(url).body(Body::empty()) else {
            return false;
        };
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }
}

/// The text of an error and its sources, which is where hyper puts the useful part.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A response body that releases a concurrency permit when dropped.
struct PermitBody<B> {
    inner: B,
    _permit: OwnedSemaphorePermit,
}

impl<B> http_body::Body for PermitBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
