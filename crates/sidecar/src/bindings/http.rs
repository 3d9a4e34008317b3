//! `bindings.http`: calls a plain HTTP endpoint (`get`, `post`, `create` = POST, ...). Only
//! `http://` URLs: the local sidecar carries no TLS client for this binding.
//!
//! As components-contrib: `path` is appended to `url`, request metadata keys that start with an
//! upper-case letter become headers, the answer's status and headers come back as metadata
//! (`statusCode`, `status`, header names), and a non-2xx answer is an error unless
//! `errorIfNot2XX` is false.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;

use super::{BindingError, BindingRequest, BindingResponse, OutputBinding, request_value};
use crate::resources::{ComponentMetadata, ResourceError};

pub(super) struct HttpBinding {
    client: reqwest::Client,
    url: String,
    max_body: Option<usize>,
    error_if_not_2xx: bool,
    security_header: Option<(String, String)>,
}

impl HttpBinding {
    pub(super) fn new(metadata: &ComponentMetadata) -> Result<Self, ResourceError> {
        let url = metadata.required("url")?.to_owned();
        if !url.starts_with("http://") {
            return Err(metadata.error(
                "url",
                "the local sidecar's http binding calls http:// URLs only",
            ));
        }
        let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(15));
        if let Some(timeout) = metadata.duration("responseTimeout", Duration::from_secs(1))? {
            client = client.timeout(timeout);
        }
        let client = client
            .build()
            .map_err(|e| metadata.error("url", format!("cannot build an HTTP client: {e}")))?;
        let max_body = match metadata.parse::<i64>("maxResponseBodySize")? {
            Some(n) if n <= 0 => None,
            Some(n) => usize::try_from(n).ok(),
            None => Some(100 * 1024 * 1024),
        };
        let security_header = match (
            metadata.get("securityToken"),
            metadata.get("securityTokenHeader"),
        ) {
            (Some(token), Some(header)) => Some((header.to_owned(), token.to_owned())),
            _ => None,
        };
        Ok(Self {
            client,
            url,
            max_body,
            error_if_not_2xx: metadata.bool("errorIfNot2XX", true)?,
            security_header,
        })
    }
}

#[async_trait]
impl OutputBinding for HttpBinding {
    fn operations(&self) -> &'static [&'static str] {
        &[
            "create", "get", "head", "post", "put", "patch", "delete", "options", "trace",
        ]
    }

    async fn invoke(
        &self,
        request: BindingRequest,
    ) -> Result<Option<BindingResponse>, BindingError> {
        let method = match request.operation.as_str() {
            "create" => reqwest::Method::POST,
            other => reqwest::Method::from_bytes(other.to_ascii_uppercase().as_bytes())
                .map_err(|e| BindingError::new(format!("invalid operation {other}: {e}")))?,
        };
        let url = match request_value(&request.metadata, "path") {
            Some(path) => format!(
                "{}/{}",
                self.url.trim_end_matches('/'),
                path.trim_start_matches('/')
            ),
            None => self.url.clone(),
        };
        let with_body = matches!(
            method,
            reqwest::Method::POST | reqwest::Method::PUT | reqwest::Method::PATCH
        );
        let mut call = self.client.request(method, &url);
        if with_body {
            if !request.metadata.contains_key("Content-Type") {
                call = call.header("Content-Type", "application/json; charset=utf-8");
            }
            call = call.body(request.data.clone());
        }
        if !request.metadata.contains_key("Accept") {
            call = call.header("Accept", "application/json; charset=utf-8");
        }
        if let Some((header, token)) = &self.security_header {
            call = call.header(header, token);
        }
        for (key, value) in &request.metadata {
            if key.starts_with(|c: char| c.is_ascii_uppercase()) {
                call = call.header(key, value);
            }
        }
        for key in ["traceparent", "tracestate"] {
            if let Some(value) = request_value(&request.metadata, key) {
                call = call.header(key, value);
            }
        }
        let response = call
            .send()
            .await
            .map_err(|e| BindingError::new(crate::app_channel::error_chain(&e)))?;
        let status = response.status();
        let mut metadata = BTreeMap::from([
            ("statusCode".to_owned(), status.as_u16().to_string()),
            ("status".to_owned(), status.to_string()),
        ]);
        for name in response.headers().keys() {
            let values: Vec<&str> = response
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            metadata.insert(canonical(name.as_str()), values.join(", "));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| BindingError::new(format!("reading the response: {e}")))?;
            body.extend_from_slice(&chunk);
            if let Some(max) = self.max_body
                && body.len() >= max
            {
                body.truncate(max);
                break;
            }
        }
        let error_if_not_2xx =
            request_value(&request.metadata, "errorIfNot2XX").map_or(self.error_if_not_2xx, |v| {
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "true" | "1" | "yes" | "y" | "on" | "t"
                )
            });
        if error_if_not_2xx && !status.is_success() {
            return Err(BindingError {
                message: format!("received status code {}", status.as_u16()),
                metadata,
            });
        }
        Ok(Some(BindingResponse {
            data: Bytes::from(body),
            metadata,
        }))
    }
}

/// Go's canonical header form (`content-type` → `Content-Type`), as daprd reports headers.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
