//! The gateway's HTTP surface: the proxied API under each route prefix, the aggregated OpenAPI
//! document and its docs page, all behind the per-client rate limit.

mod docs;
mod limits;
mod proxy;

use axum::Router;
use axum::middleware;
use axum::routing::{any, get};

use crate::startup::AppState;

/// Every API route. Each prefix gets routes of its own so that metrics name it; the fallback
/// forwards too (it answers 404 for paths no prefix takes).
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/api/openapi.json", get(docs::openapi))
        .route("/api/docs", get(docs::page));
    for route in state.routes.routes() {
        let prefix = route.prefix.as_str();
        router = router
            .route(prefix, any(proxy::forward))
            .route(&format!("{prefix}/{{*rest}}"), any(proxy::forward));
    }
    let mut router = router.fallback(proxy::forward);
    if let Some(limiter) = state.limiter.clone() {
        let limits = limits::Limits {
            buckets: limiter,
            proxies: state.proxies.clone(),
        };
        router = router.layer(middleware::from_fn_with_state(limits, limits::rate_limit));
    }
    router.with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use serde_json::Value;
    use tower::ServiceExt as _;

    use crate::settings::{RouteSettings, Settings};

    /// Settings whose sidecar port has nothing listening: any request that gets as far as the
    /// sidecar fails with 503, which shows what was decided before.
    fn settings() -> Settings {
        let unused = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut settings = Settings::default();
        settings.dapr.http_port = unused;
        settings
    }

    async fn send(
        settings: &Settings,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let router = crate::startup::router(settings).expect("router");
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn a_path_no_route_takes_is_a_404_problem() {
        let (status, headers, problem) = send(&settings(), get("/api/unknown/1")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(problem["status"], 404);
    }

    #[tokio::test]
    async fn a_product_write_without_a_token_is_refused_before_any_app_is_called() {
        let request = Request::post("/api/products")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .expect("request");
        let (status, headers, problem) = send(&settings(), request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(problem["detail"], "sign in to do this");
    }

    #[tokio::test]
    async fn an_authorization_header_that_is_not_a_bearer_token_is_refused() {
        for value in ["Basic YWRhOnNlY3JldA==", "Bearer ", "Bearer not-a-jwt"] {
            let request = Request::get("/api/orders")
                .header(header::AUTHORIZATION, value)
                .body(Body::empty())
                .expect("request");
            let (status, headers, _) = send(&settings(), request).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");
            assert_eq!(
                headers[header::WWW_AUTHENTICATE],
                r#"Bearer error="invalid_token""#
            );
        }
    }

    #[tokio::test]
    async fn a_path_escaping_its_prefix_is_a_bad_request() {
        let (status, _, problem) = send(&settings(), get("/api/products/..%2F..%2Finternal")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(problem["status"], 400);
    }

    #[tokio::test]
    async fn a_sidecar_that_does_not_answer_is_a_503_problem() {
        let (status, headers, problem) = send(&settings(), get("/api/orders/1")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(problem["status"], 503);
    }

    #[tokio::test]
    async fn a_body_declared_too_large_is_refused_before_the_sidecar_is_called() {
        let mut settings = settings();
        settings.gateway.body_limit_bytes = 10;
        let request = Request::post("/api/orders")
            .header(header::CONTENT_LENGTH, "11")
            .body(Body::from("01234567890"))
            .expect("request");
        let (status, headers, problem) = send(&settings, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(problem["status"], 413);
        assert_eq!(
            headers[header::CONNECTION],
            "close",
            "the unread body spoils the connection"
        );
    }

    #[tokio::test]
    async fn every_answer_carries_a_request_id_and_a_given_one_is_kept() {
        let (_, headers, _) = send(&settings(), get("/api/unknown")).await;
        let generated = headers["x-request-id"].to_str().expect("ascii");
        assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
        let request = Request::get("/healthz")
            .header("x-request-id", "given-1")
            .body(Body::empty())
            .expect("request");
        let (_, headers, _) = send(&settings(), request).await;
        assert_eq!(headers["x-request-id"], "given-1");
    }

    #[tokio::test]
    async fn health_is_not_rate_limited_but_the_api_is() {
        let mut settings = settings();
        settings.gateway.rate_limit.burst = 1;
        settings.gateway.rate_limit.per_second = 0.1;
        let router = crate::startup::router(&settings).expect("router");
        for _ in 0..3 {
            let response = router
                .clone()
                .oneshot(get("/healthz"))
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
        }
        let first = router
            .clone()
            .oneshot(get("/api/unknown"))
            .await
            .expect("infallible");
        assert_eq!(first.status(), StatusCode::NOT_FOUND);
        let second = router
            .oneshot(get("/api/unknown"))
            .await
            .expect("infallible");
        assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(second.headers()[header::RETRY_AFTER], "10");
    }

    #[tokio::test]
    async fn nested_prefixes_and_the_gateways_own_paths_coexist() {
        let mut settings = settings();
        settings.gateway.routes = vec![
            RouteSettings::new("/api", "everything", ""),
            RouteSettings::new("/api/products", "inventory", "/products"),
            RouteSettings::new("/api/docs/more", "docs", ""),
        ];
        let (status, headers, _) = send(&settings, get("/api/docs")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/html")
        );
        let (status, _, _) = send(&settings, get("/api/products/1")).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "routed, sidecar down"
        );
    }
}
