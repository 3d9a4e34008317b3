//! Who is calling: the optional bearer token, verified against the auth app's JWKS. The keys are
//! fetched through service invocation, cached, fetched again when the cache is old or a token
//! names an unknown key (at most once per `jwks_min_refresh_seconds`), one fetch at a time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use kit::extract::AuthUser;
use tokio::time::Instant;

use crate::domain::{AppId, KeySet, TokenError, TokenRules, tokens};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::upstream::Upstream;

/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the signing keys come from (swapped in tests).
#[async_trait::async_trait]
pub(crate) trait KeySource: Send + Sync {
    /// Fetches the current JWKS.
    async fn fetch(&self) -> Result<JwkSet, String>;
}

/// The auth app's `GET /.well-known/jwks.json`, through invocation.
pub(crate) struct JwksEndpoint {
    pub(crate) upstream: Upstream,
    pub(crate) app_id: AppId,
}

#[async_trait::async_trait]
impl KeySource for JwksEndpoint {
    #[tracing::instrument(skip(self), fields(app = %self.app_id))]
    async fn fetch(&self) -> Result<JwkSet, String> {
        self.upstream
            .get_json(
                self.app_id.as_str(),
                "/.well-known/jwks.json",
                FETCH_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())
    }
}

type Fetch = Shared<BoxFuture<'static, Result<Arc<KeySet>, String>>>;

#[derive(Default)]
struct CacheState {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    in_flight: Option<Fetch>,
}

struct CacheInner {
    source: Arc<dyn KeySource>,
    ttl: Duration,
    min_refresh: Duration,
    state: Mutex<CacheState>,
}

/// Why no key can be had for a `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The auth app does not publish it.
    Unknown,
    /// The keys cannot be fetched.
    Unavailable(String),
}

/// The auth app's signing keys, cached.
#[derive(Clone)]
pub(crate) struct KeyCache {
    inner: Arc<CacheInner>,
}

impl KeyCache {
    /// Keys from `source`, reused for `ttl`, fetched again early at most every `min_refresh`.
    pub(crate) fn new(source: Arc<dyn KeySource>, ttl: Duration, min_refresh: Duration) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                source,
                ttl,
                min_refresh,
                state: Mutex::new(CacheState::default()),
            }),
        }
    }

    /// The key named `kid`.
    pub(crate) async fn key(&self, kid: &str) -> Result<DecodingKey, KeyError> {
        let fetch = {
            let mut state = self
                .inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let fresh = state
                .fetched_at
                .is_some_and(|at| now.saturating_duration_since(at) < self.inner.ttl);
            if fresh && let Some(key) = state.keys.as_ref().and_then(|keys| keys.get(kid)) {
                return Ok(key.clone());
            }
            if let Some(fetch) = &state.in_flight {
                Some(fetch.clone())
            } else if state
                .attempted_at
                .is_none_or(|at| now.saturating_duration_since(at) >= self.inner.min_refresh)
            {
                state.attempted_at = Some(now);
                let fetch = self.start_fetch();
                state.in_flight = Some(fetch.clone());
                Some(fetch)
            } else {
                None
            }
        };
        let Some(fetch) = fetch else {
            // Too soon to ask again: what is known is what there is.
            return match self.current() {
                Some(keys) => keys.get(kid).cloned().ok_or(KeyError::Unknown),
                None => Err(KeyError::Unavailable(
                    "the last attempt to fetch them failed".into(),
                )),
            };
        };
        match fetch.await {
            Ok(keys) => keys.get(kid).cloned().ok_or(KeyError::Unknown),
            // An old key still verifies the tokens it signed while the auth app is away.
            Err(error) => self
                .current()
                .and_then(|keys| keys.get(kid).cloned())
                .ok_or(KeyError::Unavailable(error)),
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .clone()
    }

    /// One fetch, shared by every request that waits for it; it stores its own result.
    fn start_fetch(&self) -> Fetch {
        let inner = self.inner.clone();
        async move {
            let result = inner
                .source
                .fetch()
                .await
                .map(|jwks| Arc::new(KeySet::from_jwks(&jwks)));
            let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.in_flight = None;
            match &result {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "fetched the signing keys");
                    state.keys = Some(keys.clone());
                    state.fetched_at = Some(Instant::now());
                }
                Err(error) => tracing::warn!(%error, "fetching the signing keys failed"),
            }
            result
        }
        .boxed()
        .shared()
    }
}

/// Checks tokens.
#[derive(Clone)]
pub(crate) struct Authenticator {
    pub(crate) keys: KeyCache,
    pub(crate) rules: Arc<TokenRules>,
}

impl Authenticator {
    /// The user `token` speaks for.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn authenticate(&self, token: &str) -> Result<AuthUser, ApiError> {
        let kid = tokens::key_id(token)?;
        let key = self.keys.key(&kid).await.map_err(|error| match error {
            KeyError::Unknown => ApiError::InvalidToken(TokenError::UnknownKey),
            KeyError::Unavailable(cause) => ApiError::KeysUnavailable(cause),
        })?;
        Ok(tokens::verify(token, &key, &self.rules)?)
    }
}

/// The caller: a verified user, or nobody when no `Authorization` header was sent. A header
/// that is sent must hold a valid token, or the request is refused with 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Option<AuthUser>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Self(None));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::NotBearer)?;
        let user = state.authenticator.authenticate(token).await?;
        Ok(Self(Some(user)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tokens::tests::{KEY, jwks};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves whatever JWKS it holds and counts the fetches.
    struct FakeSource {
        jwks: Mutex<Option<JwkSet>>,
        fetches: AtomicUsize,
    }

    impl FakeSource {
        fn serving(jwks: Option<JwkSet>) -> Arc<Self> {
            Arc::new(Self {
                jwks: Mutex::new(jwks),
                fetches: AtomicUsize::new(0),
            })
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl KeySource for FakeSource {
        async fn fetch(&self) -> Result<JwkSet, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.jwks
                .lock()
                .expect("not poisoned")
                .clone()
                .ok_or_else(|| "the auth app is down".to_owned())
        }
    }

    fn cache(source: &Arc<FakeSource>) -> KeyCache {
        KeyCache::new(
            source.clone(),
            Duration::from_secs(300),
            Duration::from_secs(5),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_fetched_once_and_reused_until_they_age() {
        let (set, kid) = jwks(KEY);
        let source = FakeSource::serving(Some(set));
        let cache = cache(&source);
        let (a, b) = tokio::join!(cache.key(&kid), cache.key(&kid));
        assert!(a.is_ok() && b.is_ok());
        cache.key(&kid).await.expect("cached");
        assert_eq!(source.fetches(), 1, "concurrent first uses share one fetch");
        tokio::time::advance(Duration::from_secs(301)).await;
        cache.key(&kid).await.expect("fetched again");
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_refreshes_the_keys_at_most_once_per_interval() {
        let (set, kid) = jwks(KEY);
        let source = FakeSource::serving(Some(set));
        let cache = cache(&source);
        cache.key(&kid).await.expect("known");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cache.key("rotated").await.err(), Some(KeyError::Unknown));
        assert_eq!(source.fetches(), 2, "an unknown kid fetches again");
        assert_eq!(cache.key("other").await.err(), Some(KeyError::Unknown));
        assert_eq!(source.fetches(), 2, "but not again right away");
        cache.key(&kid).await.expect("the known key still works");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(cache.key("other").await.err(), Some(KeyError::Unknown));
        assert_eq!(source.fetches(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn known_keys_outlive_a_failing_auth_app_and_no_keys_is_unavailable() {
        let (set, kid) = jwks(KEY);
        let source = FakeSource::serving(None);
        let cache = cache(&source);
        assert!(matches!(
            cache.key(&kid).await,
            Err(KeyError::Unavailable(_))
        ));
        assert!(
            matches!(cache.key(&kid).await, Err(KeyError::Unavailable(_))),
            "throttled, still unavailable"
        );
        assert_eq!(source.fetches(), 1);
        *source.jwks.lock().expect("not poisoned") = Some(set);
        tokio::time::advance(Duration::from_secs(5)).await;
        cache.key(&kid).await.expect("fetched now");
        *source.jwks.lock().expect("not poisoned") = None;
        tokio::time::advance(Duration::from_secs(301)).await;
        cache
            .key(&kid)
            .await
            .expect("the old key is used while the app is down");
        assert_eq!(source.fetches(), 3);
    }
}
