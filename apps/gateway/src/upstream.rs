//! The gateway's side of Dapr service invocation over HTTP: requests go to
//! `/v1.0/invoke/<app>/method/<path>` on the gateway's sidecar, bodies stream both ways, and
//! the app's answer comes back as it was sent. Errors the sidecar produces itself (unknown app,
//! app unreachable, access denied) are told apart from the app's answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use kit::settings::DaprSettings;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::forwarding::downstream_headers;

/// The largest sidecar error body read to tell it from an app's answer.
const MAX_SIDECAR_ERROR: u64 = 16 * 1024;

/// Why an invocation failed before the app answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvokeError {
    /// The gateway's sidecar did not answer, or the connection broke.
    #[error("{0}")]
    Unreachable(String),
    /// The sidecar answered with an error of its own (`ERR_DIRECT_INVOKE`, ...).
    #[error("{code}: {message}")]
    Sidecar {
        /// Dapr's error code.
        code: String,
        /// Dapr's message.
        message: String,
    },
}

/// Why a JSON document could not be fetched from an app.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The invocation failed.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The app answered with another status than 2xx.
    #[error("the app answered {0}")]
    Status(StatusCode),
    /// The app's answer is not the JSON expected.
    #[error("the answer is not the expected JSON: {0}")]
    Body(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An error body of the Dapr API.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SidecarError {
    error_code: String,
    #[serde(default)]
    message: String,
}

/// Invocation through the gateway's sidecar.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: reqwest::Client,
    base: Arc<str>,
    api_token: Option<HeaderValue>,
}

impl Upstream {
    /// A client of the sidecar in `settings`.
    pub(crate) fn new(settings: &DaprSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // Redirects are the app's answer, for the client to follow: daprd returns them too.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        let api_token = settings
            .api_token
            .as_ref()
            .map(|token| {
                let mut value = HeaderValue::from_str(token.expose_secret())?;
                value.set_sensitive(true);
                Ok::<_, anyhow::Error>(value)
            })
            .transpose()?;
        Ok(Self {
            client,
            base: format!("http://{}:{}", settings.host, settings.http_port).into(),
            api_token,
        })
    }

    /// A request for `path_and_query` (starting with `/`) of app `app_id`, carrying `headers`
    /// plus the current trace context and the sidecar's API token.
    fn request(
        &self,
        method: Method,
        app_id: &str,
        path_and_query: &str,
        mut headers: HeaderMap,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}/v1.0/invoke/{app_id}/method{path_and_query}", self.base);
        // Without a span of its own (no tracing set up) the client's trace context stays.
        kit::telemetry::inject_current(&mut headers);
        if let Some(token) = &self.api_token {
            headers.insert("dapr-api-token", token.clone());
        }
        self.client.request(method, url).headers(headers)
    }

    /// Sends a client's request to an app and streams the answer back.
    pub(crate) async fn forward(
        &self,
        app_id: &str,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Option<reqwest::Body>,
    ) -> Result<Response, InvokeError> {
        let mut request = self.request(method, app_id, path_and_query, headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| InvokeError::Unreachable(error_chain(&e)))?;
        into_response(response).await
    }

    /// Fetches a JSON document from an app, waiting at most `timeout`.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        app_id: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, FetchError> {
        let fetch = async {
            let response = self
                .request(Method::GET, app_id, path, HeaderMap::new())
                .header(header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| InvokeError::Unreachable(error_chain(&e)))?;
            let response = into_response(response).await?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status()));
            }
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .map_err(|e| FetchError::Body(e.to_string()))?;
            serde_json::from_slice(&bytes).map_err(|e| FetchError::Body(e.to_string()))
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }
}

/// The app's answer as a response for the client, or the sidecar's own error.
async fn into_response(response: reqwest::Response) -> Result<Response, InvokeError> {
    let status = response.status();
    let headers = downstream_headers(response.headers().clone());
    if might_be_sidecar_error(status, &headers) {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| InvokeError::Unreachable(error_chain(&e)))?;
        if let Ok(error) = serde_json::from_slice::<SidecarError>(&bytes)
            && error.error_code.starts_with("ERR_")
        {
            return Err(InvokeError::Sidecar {
                code: error.error_code,
                message: error.message,
            });
        }
        return Ok(build(status, headers, Body::from(bytes)));
    }
    Ok(build(
        status,
        headers,
        Body::from_stream(response.bytes_stream()),
    ))
}

/// Dapr reports its own failures as small `application/json` bodies with an `errorCode`; the
/// shop's apps answer errors with `application/problem+json`, so this rarely reads an app's body.
fn might_be_sidecar_error(status: StatusCode, headers: &HeaderMap) -> bool {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|length| length <= MAX_SIDECAR_ERROR);
    (status.is_client_error() || status.is_server_error()) && json && small
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// An error and its causes on one line (reqwest's own message is terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
