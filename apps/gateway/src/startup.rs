//! Building and running the gateway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method, header};
use kit::dapr::Dapr;
use kit::server::{HttpMetrics, Readiness};
use tokio::net::TcpListener;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::catalog::Catalog;
use crate::domain::{AppId, Origins, RouteTable, TokenBuckets, TokenRules, TrustedProxies};
use crate::identity::{Authenticator, JwksEndpoint, KeyCache};
use crate::settings::Settings;
use crate::upstream::Upstream;

/// The header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) upstream: Upstream,
    pub(crate) authenticator: Authenticator,
    pub(crate) catalog: Catalog,
    pub(crate) limiter: Option<Arc<TokenBuckets>>,
    pub(crate) proxies: Arc<TrustedProxies>,
    pub(crate) body_limit: u64,
}

impl AppState {
    /// The state for `settings`; nothing is contacted yet.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let gateway = &settings.gateway;
        let routes = Arc::new(RouteTable::parse(&gateway.routes, &gateway.internal_paths)?);
        let upstream = Upstream::new(&settings.dapr)?;
        let source = JwksEndpoint {
            upstream: upstream.clone(),
            app_id: AppId::parse(&gateway.auth_app_id).map_err(anyhow::Error::msg)?,
        };
        let keys = KeyCache::new(
            Arc::new(source),
            Duration::from_secs(gateway.jwks_cache_seconds),
            Duration::from_secs(gateway.jwks_min_refresh_seconds),
        );
        let rate = &gateway.rate_limit;
        Ok(Self {
            catalog: Catalog::new(
                upstream.clone(),
                routes.clone(),
                Duration::from_secs(gateway.openapi_cache_seconds),
            ),
            routes,
            upstream,
            authenticator: Authenticator {
                keys,
                rules: Arc::new(TokenRules::new(&gateway.issuer, &gateway.audience)),
            },
            limiter: rate
                .enabled
                .then(|| Arc::new(TokenBuckets::new(rate.per_second, rate.burst))),
            proxies: Arc::new(
                TrustedProxies::parse(&gateway.trusted_proxies).map_err(anyhow::Error::msg)?,
            ),
            body_limit: gateway.body_limit_bytes,
        })
    }
}

/// Every route of the gateway with the layers around them: the API (rate limited), health,
/// readiness and metrics, then CORS and request ids around everything.
pub fn router(settings: &Settings) -> anyhow::Result<Router> {
    let state = AppState::new(settings)?;
    // The gateway is called by clients, not by its sidecar: `APP_API_TOKEN` does not apply.
    let mut dapr = settings.dapr.clone();
    dapr.app_api_token = None;
    let app = kit::server::app_router(
        "gateway",
        crate::routes::router(state),
        HttpMetrics::new("gateway"),
        Readiness::sidecar(&settings.dapr),
        &dapr,
    );
    let request_id = HeaderName::from_static(REQUEST_ID);
    Ok(app
        .layer(cors(
            &Origins::parse(&settings.gateway.cors_origins).map_err(anyhow::Error::msg)?,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid)))
}

fn cors(origins: &Origins) -> CorsLayer {
    let allow_origin = match origins {
        Origins::Any => AllowOrigin::any(),
        Origins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static(REQUEST_ID),
            header::RETRY_AFTER,
            header::LOCATION,
            header::ETAG,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(600))
}

/// The gateway, bound to its port and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    dapr: Dapr,
    settings: Settings,
}

impl App {
    /// Binds the listener and builds the routes. Nothing talks to the sidecar yet, so the
    /// sidecar can be started after this.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let router = router(&settings)?;
        let listener = kit::server::bind(&settings.app).await?;
        let dapr = Dapr::new(&settings.dapr)?;
        Ok(Self {
            listener,
            router,
            dapr,
            settings,
        })
    }

    /// The port the gateway listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Runs until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(kit::server::shutdown_signal()).await
    }

    /// Waits for the sidecar, then serves until `stop` resolves.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = kit::server::stop_on(stop);
        tokio::select! {
            ready = self.dapr.wait_until_ready(Duration::from_secs(60)) => ready?,
            () = stop.cancelled() => return Ok(()),
        }
        tracing::info!(port = self.port(), "gateway is serving");
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
