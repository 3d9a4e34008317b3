//! The HTTP side every app shares: binding, `/healthz`, `/readyz`, `/metrics`, request tracing
//! and metrics, the `APP_API_TOKEN` check, and graceful shutdown with a drain deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::problem::Problem;
use crate::settings::{AppSettings, DaprSettings};

/// Binds the app's listener (port 0 picks a free port).
pub async fn bind(settings: &AppSettings) -> anyhow::Result<TcpListener> {
    let address = format!("{}:{}", settings.host, settings.port);
    TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

/// Per-app HTTP metrics: requests and latency by method, route (the matched pattern, never the
/// raw path, so ids do not make new series) and status.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl HttpMetrics {
    /// A fresh registry for `app`.
    pub fn new(app: &str) -> Self {
        let registry = Registry::new_custom(
            Some("shop".into()),
            Some([("app".to_owned(), app.to_owned())].into()),
        )
        .unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests handled, by route and status.",
            ),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("well-formed metric: {e}"));
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency, by route and status.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("well-formed metric: {e}"));
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(latency.clone()));
        Self {
            registry,
            requests,
            latency,
        }
    }

    /// The registry, for app-specific metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// Checks an app runs before it reports ready: by default, that its sidecar answers.
#[derive(Clone)]
pub struct Readiness {
    client: reqwest::Client,
    /// The sidecar's health URL; none for an app outside the mesh.
    sidecar: Option<String>,
}

impl Readiness {
    /// Ready when the sidecar at `dapr` answers `/v1.0/healthz/outbound`.
    pub fn sidecar(dapr: &DaprSettings) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            sidecar: Some(format!(
                "http://{}:{}/v1.0/healthz/outbound",
                dapr.host, dapr.http_port
            )),
        }
    }

    /// Ready as soon as it serves: for an app with no sidecar (the payment provider simulator).
    pub fn serving() -> Self {
        Self {
            client: reqwest::Client::new(),
            sidecar: None,
        }
    }

    async fn check(&self) -> Result<(), String> {
        let Some(sidecar) = &self.sidecar else {
            return Ok(());
        };
        match self.client.get(sidecar).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the sidecar is not ready ({})", response.status())),
            Err(error) => Err(format!("the sidecar does not answer: {error}")),
        }
    }
}

#[derive(Clone)]
struct Common {
    app: &'static str,
    metrics: HttpMetrics,
    readiness: Readiness,
    app_token: Option<Arc<SecretString>>,
}

/// Wraps an app's routes with what every app has: `/healthz`, `/readyz`, `/metrics`, a span
/// per request continuing the caller's trace, request metrics, and the `APP_API_TOKEN` check.
pub fn app_router(
    app: &'static str,
    routes: Router,
    metrics: HttpMetrics,
    readiness: Readiness,
    dapr: &DaprSettings,
) -> Router {
    let common = Common {
        app,
        metrics,
        readiness,
        app_token: dapr.app_api_token.clone().map(Arc::new),
    };
    routes
        .route_layer(middleware::from_fn_with_state(
            common.clone(),
            check_app_token,
        ))
        .route("/healthz", get(|| async { StatusCode::NO_CONTENT }))
        .route("/readyz", get(readyz).with_state(common.clone()))
        .route("/metrics", get(render_metrics).with_state(common.clone()))
        .layer(middleware::from_fn_with_state(common, observe))
}

async fn readyz(State(common): State<Common>) -> Response {
    match common.readiness.check().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(reason) => Problem::unavailable(reason).into_response(),
    }
}

async fn render_metrics(State(common): State<Common>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        common.metrics.render(),
    )
        .into_response()
}

/// With `APP_API_TOKEN` set, only callers that know it (the sidecar) get through.
async fn check_app_token(State(common): State<Common>, request: Request, next: Next) -> Response {
    if let Some(token) = &common.app_token {
        let given = request
            .headers()
            .get("dapr-api-token")
            .map(|v| v.as_bytes());
        if given != Some(token.expose_secret().as_bytes()) {
            return Problem::unauthorized("missing or wrong app API token").into_response();
        }
    }
    next.run(request).await
}

async fn observe(State(common): State<Common>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let quiet = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics");
    let span = tracing::info_span!(
        "request",
        app = common.app,
        method = %method,
        route = %route,
        trace_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    if let Some(id) = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        span.record("request_id", id);
    }
    crate::telemetry::continue_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let labels = [method.as_str(), route.as_str(), &status.to_string()];
    common.metrics.requests.with_label_values(&labels).inc();
    common
        .metrics
        .latency
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
    if !quiet {
        span.in_scope(|| {
            tracing::info!(
                status,
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                "handled"
            );
        });
    }
    response
}

/// Serves `router` until `stop` resolves, then gives in-flight requests `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> anyhow::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    // No Nagle: a small answer written in parts would otherwise wait for the peer's delayed
    // ACK (40 ms on Linux) whenever the connection is quiet. Go, and so daprd, does the same.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        stop.await;
        let _ = stopping_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result.context("the HTTP server failed"),
        _ = stopping_rx => {}
    }
    match tokio::time::timeout(drain, server).await {
        Ok(result) => result.context("the HTTP server failed"),
        Err(_) => {
            tracing::warn!(
                ?drain,
                "requests still running after the drain deadline; stopping anyway"
            );
            Ok(())
        }
    }
}

/// A stop request that any number of tasks can wait for.
pub type Stop = tokio_util::sync::CancellationToken;

/// An app bound to its port and ready to serve; whoever runs it (its `main`, the launcher, a
/// test) learns the port first, so that the app's sidecar can be pointed at it.
pub trait Service: Send + 'static {
    /// The port the app listens on.
    fn port(&self) -> u16;

    /// Runs the app until `stop` is cancelled, then drains it.
    fn run(self: Box<Self>, stop: Stop) -> futures::future::BoxFuture<'static, anyhow::Result<()>>;
}

/// A [`Stop`] cancelled when `signal` resolves.
pub fn stop_on(signal: impl Future<Output = ()> + Send + 'static) -> Stop {
    let stop = Stop::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    stop
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
