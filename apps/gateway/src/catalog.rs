//! The aggregated OpenAPI document: every routed app's `GET /openapi.json`, fetched through
//! invocation in parallel, merged, and reused for a while.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::domain::openapi::{self, AppDocument};
use crate::domain::{AppId, RouteTable};
use crate::upstream::Upstream;

/// How long one app may take to send its document.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// A document missing some apps is reused at most this long, so they appear soon after they start.
const INCOMPLETE_TTL: Duration = Duration::from_secs(5);

struct Cached {
    document: Arc<Value>,
    expires: Instant,
}

/// Builds and caches the public OpenAPI document.
#[derive(Clone)]
pub(crate) struct Catalog {
    upstream: Upstream,
    routes: Arc<RouteTable>,
    ttl: Duration,
    cached: Arc<Mutex<Option<Cached>>>,
}

impl Catalog {
    /// A catalog of the apps in `routes`, reused for `ttl`.
    pub(crate) fn new(upstream: Upstream, routes: Arc<RouteTable>, ttl: Duration) -> Self {
        Self {
            upstream,
            routes,
            ttl,
            cached: Arc::default(),
        }
    }

    /// The document, from the cache when it is recent enough.
    pub(crate) async fn document(&self) -> Arc<Value> {
        let now = Instant::now();
        if let Some(cached) = &*self.cached.lock().unwrap_or_else(PoisonError::into_inner)
            && cached.expires > now
        {
            return cached.document.clone();
        }
        let (document, complete) = self.build().await;
        let document = Arc::new(document);
        let ttl = if complete {
            self.ttl
        } else {
            self.ttl.min(INCOMPLETE_TTL)
        };
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            document: document.clone(),
            expires: Instant::now() + ttl,
        });
        document
    }

    /// Fetches every app's document and merges them; says whether every app answered.
    #[tracing::instrument(skip(self))]
    async fn build(&self) -> (Value, bool) {
        let apps = self.routes.apps();
        let fetched = futures::future::join_all(apps.iter().map(|app| self.fetch(app))).await;
        let mut documents = Vec::new();
        let mut missing = Vec::new();
        for (app_id, document) in apps.iter().zip(fetched) {
            match document {
                Some(document) => documents.push(AppDocument {
                    app_id: app_id.clone(),
                    document,
                }),
                None => missing.push(app_id.clone()),
            }
        }
        let complete = missing.is_empty();
        (openapi::merge(&self.routes, &documents, &missing), complete)
    }

    #[tracing::instrument(skip(self), fields(app = %app_id))]
    async fn fetch(&self, app_id: &AppId) -> Option<Value> {
        match self
            .upstream
            .get_json::<Value>(app_id.as_str(), "/openapi.json", FETCH_TIMEOUT)
            .await
        {
            Ok(document) if is_openapi_3(&document) => Some(document),
            Ok(_) => {
                tracing::warn!("the answer is not an OpenAPI 3 document; left out");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "no OpenAPI document; left out");
                None
            }
        }
    }
}

/// Whether `document` looks like an OpenAPI 3 document (and not, say, an app's 200 for any path).
fn is_openapi_3(document: &Value) -> bool {
    document["openapi"]
        .as_str()
        .is_some_and(|version| version.starts_with("3."))
        && document["paths"].is_object()
}
