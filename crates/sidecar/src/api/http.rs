//! The Dapr HTTP API (`/v1.0/...`) and the metrics endpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ApiError;
use super::pubsub::{BulkEntry, publish_error};
use super::state::{DeleteItem, SaveItem, TransactionItem, item_metadata};
use crate::runtime::Runtime;
use crate::trace::{RequestTrace, TRACEPARENT};

/// The HTTP API router.
pub(crate) fn router(runtime: Arc<Runtime>) -> Router {
    let v1 = Router::new()
        .route("/state/{store}", post(save_state).put(save_state))
        .route(
            "/state/{store}/bulk",
            post(bulk_get_state).put(bulk_get_state),
        )
        .route(
            "/state/{store}/transaction",
            post(transact_state).put(transact_state),
        )
        .route("/state/{store}/{key}", get(get_state).delete(delete_state))
        .route("/secrets/{store}/bulk", get(bulk_get_secret))
        .route("/secrets/{store}/{key}", get(get_secret))
        .route("/invoke/{target}/method/{*method}", any(invoke_by_path))
        .route("/invoke/{target}/method/", any(invoke_by_path_root))
        .route("/metadata", get(get_metadata))
        .route("/metadata/{key}", put(put_metadata))
        .route("/healthz", get(healthz))
        .route("/healthz/outbound", get(healthz_outbound))
        .route("/shutdown", post(shutdown))
        .route(
            "/publish/bulk/{pubsub}/{*topic}",
            post(bulk_publish).put(bulk_publish),
        )
        .route("/publish/{pubsub}/{*topic}", post(publish).put(publish))
        .route(
            "/publish/{pubsub}/",
            post(publish_no_topic).put(publish_no_topic),
        )
        .route("/bindings/{name}", post(invoke_binding).put(invoke_binding));
    let v1 = v1.merge(crate::workflow::http::routes());
    let mut router = Router::new()
        .nest("/v1.0", v1)
        .nest("/v1.0-beta1", crate::workflow::http::routes())
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
            post(bulk_publish).put(bulk_publish),
        );
    for (prefix, api) in UNIMPLEMENTED {
        let api = *api;
        router = router.route(
            &format!("{prefix}/{{*rest}}"),
            any(move |request: Request| async move { not_implemented(api, request.uri().path()) }),
        );
    }
    router
        .fallback(invoke_by_header)
        .method_not_allowed_fallback(invoke_by_header)
        .layer(middleware::from_fn_with_state(
            runtime.clone(),
            authenticate,
        ))
        .layer(middleware::from_fn_with_state(runtime.clone(), observe))
        .with_state(runtime)
}

/// The largest request body the API reads into memory (daprd's `--max-body-size` default).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Dapr APIs this sidecar does not implement: a clear 501 instead of a confusing 404.
const UNIMPLEMENTED: &[(&str, &str)] = &[
    ("/v1.0/actors", "actors"),
    ("/v1.0-alpha1/workflows", "workflows"),
    ("/v1.0/configuration", "configuration"),
    ("/v1.0-alpha1/configuration", "configuration"),
    ("/v1.0-alpha1/lock", "distributed lock"),
    ("/v1.0-alpha1/unlock", "distributed lock"),
    ("/v1.0-alpha1/crypto", "cryptography"),
    ("/v1.0-alpha1/jobs", "jobs"),
    ("/v1.0-alpha1/conversation", "conversation"),
    ("/v1.0-alpha2/conversation", "conversation"),
    ("/v1.0-alpha1/state", "state query"),
    ("/v1.0-alpha1/subscribe", "streaming subscriptions"),
];

fn not_implemented(api: &str, path: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        tonic::Code::Unimplemented,
        "ERR_NOT_IMPLEMENTED",
        format!("the {api} API ({path}) is not implemented by the local sidecar"),
    )
    .into_response()
}

/// The metrics router (`GET /` and `GET /metrics`).
pub(crate) fn metrics_router(runtime: Arc<Runtime>) -> Router {
    let render = |State(runtime): State<Arc<Runtime>>| async move {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            runtime.metrics.render(),
        )
    };
    Router::new()
        .route("/", get(render))
        .route("/metrics", get(render))
        .with_state(runtime)
}

/// `dapr-api-token` check when `DAPR_API_TOKEN` is set; only the health endpoints are exempt.
async fn authenticate(
    State(runtime): State<Arc<Runtime>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = &runtime.api_token else {
        return next.run(request).await;
    };
    let path = request.uri().path().trim_matches('/');
    let exempt = request.method() == Method::GET
        && (path == "v1.0/healthz" || path == "v1.0/healthz/outbound");
    if !exempt {
        let given = request
            .headers()
            .get("dapr-api-token")
            .map(|v| v.as_bytes());
        if given != Some(token.expose_secret().as_bytes()) {
            // daprd answers with plain text here, not a JSON error.
            return (StatusCode::UNAUTHORIZED, "invalid api token\n").into_response();
        }
    }
    request.headers_mut().remove("dapr-api-token");
    next.run(request).await
}

/// Trace context and metrics for every API call.
async fn observe(
    State(runtime): State<Arc<Runtime>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let path = metric_path(
        request.uri().path(),
        request.extensions().get::<MatchedPath>(),
    );
    let healthz = request.uri().path().contains("/healthz");
    let trace = RequestTrace::from_headers(request.headers(), runtime.sampling_rate());
    request.extensions_mut().insert(trace.clone());
    let span = tracing::debug_span!(
        "dapr_http_api",
        app_id = %runtime.app_id,
        method = %method,
        path = %request.uri().path(),
        trace_id = %trace.span.trace_id_hex(),
    );
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if !healthz && !response.headers().contains_key(TRACEPARENT) {
        trace.inject(response.headers_mut());
    }
    let status = response.status().as_u16();
    trace.finish(
        || format!("{method} {path}"),
        runtime.configuration.tracing.stdout,
    );
    runtime
        .metrics
        .http_request(&method, &path, status, started.elapsed());
    tracing::debug!(app_id = %runtime.app_id, %method, %path, status, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "HTTP API called");
    response
}

/// The path label: store and app names kept, keys and methods dropped (bounded cardinality).
fn metric_path(path: &str, _matched: Option<&MatchedPath>) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [version, "invoke", app, "method", ..] => format!("/{version}/invoke/{app}/method"),
        [
            version,
            api @ ("state" | "secrets" | "publish" | "bindings"),
            name,
            ..,
        ] => {
            format!("/{version}/{api}/{name}")
        }
        [version, api, ..] => format!("/{version}/{api}"),
        _ => path.to_owned(),
    }
}

/// `metadata.<key>=<value>` query parameters, as daprd reads them.
fn query_metadata(query: &HashMap<String, String>) -> HashMap<String, String> {
    query
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata.")
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect()
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("failed deserializing HTTP body: {e}")))
}

#[derive(Deserialize)]
struct HttpSaveItem {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    options: Option<HttpStateOptions>,
}

#[derive(Deserialize, Default)]
struct HttpStateOptions {
    #[serde(default)]
    concurrency: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

/// The stored form of an HTTP state value: compact JSON with sorted keys, as daprd re-encodes
/// the `value` it decoded (a missing value is `null`).
fn json_value(raw: Option<&RawValue>) -> Result<Bytes, ApiError> {
    let Some(raw) = raw else {
        return Ok(Bytes::from_static(b"null"));
    };
    let value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::malformed(format!("invalid value: {e}")))?;
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| ApiError::malformed(format!("invalid value: {e}")))
}

fn save_item(item: HttpSaveItem, query: &HashMap<String, String>) -> Result<SaveItem, ApiError> {
    let mut metadata = item.metadata.unwrap_or_default();
    metadata.extend(query.iter().map(|(k, v)| (k.clone(), v.clone())));
    let options = item.options.unwrap_or_default();
    Ok(SaveItem {
        value: json_value(item.value.as_deref())?,
        key: item.key,
        etag: item.etag,
        metadata,
        concurrency: options.concurrency,
        consistency: options.consistency,
    })
}

async fn save_state(
    State(runtime): State<Arc<Runtime>>,
    Path(store): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let result = async {
        let items: Vec<HttpSaveItem> =
            serde_json::from_slice(&body).map_err(|e| ApiError::malformed(e.to_string()))?;
        let query = query_metadata(&query);
        let items = items
            .into_iter()
            .map(|item| save_item(item, &query))
            .collect::<Result<Vec<_>, _>>()?;
        runtime.save_state(&store, items).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn get_state(
    State(runtime): State<Arc<Runtime>>,
    Path((store, key)): Path<(String, String)>,
) -> Response {
    match runtime.get_state(&store, &key).await {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(item)) => {
            let mut response = Response::new(Body::from(item.value.clone()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(etag) = HeaderValue::from_str(&item.etag) {
                headers.insert(header::ETAG, etag);
            }
            for (key, value) in item_metadata(&item) {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::try_from(format!("metadata.{key}")),
                    HeaderValue::from_str(&value),
                ) {
                    headers.insert(name, value);
                }
            }
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn delete_state(
    State(runtime): State<Arc<Runtime>>,
    Path((store, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let etag = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let item = DeleteItem {
        key,
        etag,
        concurrency: query.get("concurrency").cloned(),
        consistency: query.get("consistency").cloned(),
    };
    match runtime.delete_state(&store, item).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
struct BulkGetRequest {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default, rename = "parallelism")]
    _parallelism: Option<u32>,
    #[serde(default, rename = "metadata")]
    _metadata: Option<HashMap<String, String>>,
}

async fn bulk_get_state(
    State(runtime): State<Arc<Runtime>>,
    Path(store): Path<String>,
    body: Bytes,
) -> Response {
    let result = async {
        let request: BulkGetRequest = parse_json(&body)?;
        runtime.bulk_get_state(&store, request.keys).await
    }
    .await;
    match result {
        Ok(items) => {
            let items: Vec<serde_json::Value> = items
                .into_iter()
                .map(|bulk| {
                    let mut entry = serde_json::json!({ "key": bulk.key });
                    if let Some(item) = bulk.item {
                        entry["data"] = serde_json::from_slice(&item.value).unwrap_or_else(|_| {
                            // Binary values saved over gRPC are not JSON: hand them out as base64.
                            serde_json::Value::String(
                                base64::engine::general_purpose::STANDARD.encode(&item.value),
                            )
                        });
                        entry["etag"] = serde_json::Value::String(item.etag.clone());
                        let metadata = item_metadata(&item);
                        if !metadata.is_empty() {
                            entry["metadata"] = serde_json::json!(metadata);
                        }
                    }
                    entry
                })
                .collect();
            Json(items).into_response()
        }
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
struct TransactionRequest {
    #[serde(default)]
    operations: Vec<TransactionOperation>,
    #[serde(default, rename = "metadata")]
    _metadata: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct TransactionOperation {
    operation: String,
    request: HttpSaveItem,
}

async fn transact_state(
    State(runtime): State<Arc<Runtime>>,
    Path(store): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let result = async {
        // The store is checked before the body, as daprd does.
        runtime.state_store(&store)?;
        let request: TransactionRequest = parse_json(&body)?;
        let query = query_metadata(&query);
        let items = request
            .operations
            .into_iter()
            .map(|op| match op.operation.as_str() {
                "upsert" => save_item(op.request, &query).map(TransactionItem::Upsert),
                "delete" => {
                    let options = op.request.options.unwrap_or_default();
                    Ok(TransactionItem::Delete(DeleteItem {
                        key: op.request.key,
                        etag: op.request.etag,
                        concurrency: options.concurrency,
                        consistency: options.consistency,
                    }))
                }
                other => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    tonic::Code::Unimplemented,
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    format!("operation type {other} not supported"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        runtime.transact_state(&store, items).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn get_secret(
    State(runtime): State<Arc<Runtime>>,
    Path((store, key)): Path<(String, String)>,
) -> Response {
    match runtime.get_secret(&store, &key) {
        Ok(secret) => Json(secret).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn bulk_get_secret(
    State(runtime): State<Arc<Runtime>>,
    Path(store): Path<String>,
) -> Response {
    match runtime.bulk_get_secret(&store) {
        Ok(secrets) => Json(secrets).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn get_metadata(State(runtime): State<Arc<Runtime>>) -> Response {
    Json(runtime.metadata()).into_response()
}

async fn put_metadata(
    State(runtime): State<Arc<Runtime>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    runtime.set_metadata(key, String::from_utf8_lossy(&body).into_owned());
    StatusCode::NO_CONTENT.into_response()
}

async fn healthz(
    State(runtime): State<Arc<Runtime>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !runtime.ready.load(Ordering::Acquire) {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Unavailable,
            "ERR_HEALTH_NOT_READY",
            "dapr is not ready: [runtime]",
        )
        .into_response();
    }
    if query.get("appid").is_some_and(|id| id != &runtime.app_id) {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Unavailable,
            "ERR_HEALTH_APPID_NOT_MATCH",
            "dapr app-id does not match",
        )
        .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn healthz_outbound(State(runtime): State<Arc<Runtime>>) -> Response {
    if runtime.outbound_ready.load(Ordering::Acquire) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Unavailable,
            "ERR_OUTBOUND_HEALTH_NOT_READY",
            "dapr outbound is not ready",
        )
        .into_response()
    }
}

async fn shutdown(State(runtime): State<Arc<Runtime>>) -> Response {
    tracing::info!(app_id = %runtime.app_id, "shutdown requested through the API");
    runtime.shutdown.cancel();
    StatusCode::NO_CONTENT.into_response()
}

fn query_metadata_sorted(query: &HashMap<String, String>) -> BTreeMap<String, String> {
    query_metadata(query).into_iter().collect()
}

async fn publish(
    State(runtime): State<Arc<Runtime>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let trace = request_trace(&request, &runtime);
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(error) => return publish_error(&pubsub, &topic, &error.to_string()).into_response(),
    };
    match runtime
        .publish_event(
            &pubsub,
            &topic,
            &body,
            &content_type,
            query_metadata_sorted(&query),
            &trace,
        )
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn publish_no_topic(
    State(runtime): State<Arc<Runtime>>,
    Path(pubsub): Path<String>,
    request: Request,
) -> Response {
    let trace = request_trace(&request, &runtime);
    match runtime
        .publish_event(&pubsub, "", &[], "", BTreeMap::new(), &trace)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpBulkEntry<'a> {
    #[serde(default)]
    entry_id: String,
    /// The event as sent: JSON events are passed on as they are, not parsed into a tree.
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// daprd's `ConvertEventToBytes`: how a bulk entry's JSON `event` becomes bytes, by content type.
fn entry_bytes(entry: &HttpBulkEntry<'_>) -> Option<Bytes> {
    let media = entry
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = || {
        entry
            .event
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    };
    match media.as_str() {
        "application/octet-stream" => base64::engine::general_purpose::STANDARD
            .decode(text()?)
            .ok()
            .map(Bytes::from),
        media if media.starts_with("text/") || media == "application/xml" => {
            text().map(Bytes::from)
        }
        "application/json" | "application/cloudevents+json" => Some(match entry.event {
            Some(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
            None => Bytes::from_static(b"null"),
        }),
        _ => None,
    }
}

async fn bulk_publish(
    State(runtime): State<Arc<Runtime>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let trace = request_trace(&request, &runtime);
    let result = async {
        let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
            .await
            .map_err(|e| ApiError::malformed(e.to_string()))?;
        let entries: Vec<HttpBulkEntry> = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                "ERR_PUBSUB_EVENTS_SER",
                format!("error when unmarshaling the request for topic {topic} pubsub {pubsub}: {e}"),
            )
        })?;
        let entries = entries
            .into_iter()
            .map(|entry| {
                let event = entry_bytes(&entry).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        tonic::Code::InvalidArgument,
                        "ERR_PUBSUB_EVENTS_SER",
                        format!(
                            "error when marshalling cloud event envelope for topic {topic} pubsub {pubsub}: error: mismatch between contentType and event"
                        ),
                    )
                })?;
                Ok(BulkEntry {
                    entry_id: entry.entry_id,
                    event,
                    content_type: entry.content_type,
                    metadata: entry.metadata,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        runtime
            .bulk_publish_events(&pubsub, &topic, entries, &query_metadata_sorted(&query), &trace)
            .await
    }
    .await;
    match result {
        Ok(failed) if failed.is_empty() => StatusCode::NO_CONTENT.into_response(),
        // daprd's answer to a partial failure is not its usual error shape.
        Ok(failed) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({
                "failedEntries": failed
                    .iter()
                    .map(|f| serde_json::json!({"entryId": f.entry_id, "error": f.error}))
                    .collect::<Vec<_>>(),
                "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
            })),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
struct HttpBindingRequest {
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    operation: String,
}

async fn invoke_binding(
    State(runtime): State<Arc<Runtime>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let trace = request_trace(&request, &runtime);
    let parsed = async {
        let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
            .await
            .map_err(|e| ApiError::malformed(e.to_string()))?;
        let request: HttpBindingRequest = parse_json(&body)?;
        // As daprd: `data` reaches the component as its JSON encoding (a string keeps its quotes).
        let data = json_value(request.data.as_deref())?;
        Ok::<_, ApiError>((
            data,
            request.metadata.unwrap_or_default(),
            request.operation,
        ))
    }
    .await;
    let (data, metadata, operation) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let (mut response, metadata) = match runtime
        .invoke_binding(&name, data, metadata, operation, &trace)
        .await
    {
        Ok(Some(answer)) => {
            let mut response = Response::new(Body::from(answer.data));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (response, answer.metadata)
        }
        Ok(None) => (StatusCode::NO_CONTENT.into_response(), BTreeMap::new()),
        Err(failure) => (failure.error.into_response(), failure.metadata),
    };
    for (key, value) in metadata {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(format!("metadata.{key}").to_ascii_lowercase()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn request_trace(request: &Request, runtime: &Runtime) -> RequestTrace {
    request
        .extensions()
        .get::<RequestTrace>()
        .cloned()
        .unwrap_or_else(|| RequestTrace::from_headers(request.headers(), runtime.sampling_rate()))
}

async fn invoke_by_path(
    State(runtime): State<Arc<Runtime>>,
    Path((target, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let trace = request_trace(&request, &runtime);
    runtime.invoke(&target, &method, request, &trace).await
}

async fn invoke_by_path_root(
    State(runtime): State<Arc<Runtime>>,
    Path(target): Path<String>,
    request: Request,
) -> Response {
    let trace = request_trace(&request, &runtime);
    runtime.invoke(&target, "", request, &trace).await
}

/// daprd's fallback: with a `dapr-app-id` header any other request is an invocation whose
/// method is the whole path; without it, a 404.
async fn invoke_by_header(State(runtime): State<Arc<Runtime>>, request: Request) -> Response {
    let target = request
        .headers()
        .get("dapr-app-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match target {
        Some(target) => {
            let method = crate::invoke::percent_decode(request.uri().path());
            let trace = request_trace(&request, &runtime);
            runtime.invoke(&target, &method, request, &trace).await
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "ERR_DIRECT_INVOKE",
            "failed getting app id either from the URL path or the header dapr-app-id",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_paths_drop_keys_but_keep_component_names() {
        assert_eq!(
            metric_path("/v1.0/state/store/key-1", None),
            "/v1.0/state/store"
        );
        assert_eq!(
            metric_path("/v1.0/invoke/orders/method/o/1", None),
            "/v1.0/invoke/orders/method"
        );
        assert_eq!(metric_path("/v1.0/metadata", None), "/v1.0/metadata");
    }

    #[test]
    fn state_values_are_stored_as_compact_json_with_sorted_keys() {
        let raw = RawValue::from_string(r#"{ "b": 1, "a": [true, null] }"#.into()).expect("raw");
        assert_eq!(
            json_value(Some(&raw)).expect("valid"),
            Bytes::from_static(br#"{"a":[true,null],"b":1}"#)
        );
        assert_eq!(
            json_value(None).expect("valid"),
            Bytes::from_static(b"null")
        );
    }
}
