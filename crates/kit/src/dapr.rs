//! The app's view of its sidecar: state, pub/sub, secrets and bindings over gRPC (the `dapr`
//! crate's generated client, which has transactions and bulk reads), service invocation over
//! HTTP (so bodies stream). Every call carries the current trace and `DAPR_API_TOKEN`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contracts::Event;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::settings::DaprSettings;

/// Why a call to the sidecar failed.
#[derive(Debug, thiserror::Error)]
pub enum DaprError {
    /// The ETag did not match (someone else wrote first) or a create-only write found the key.
    #[error("conflicting write: {0}")]
    Conflict(String),
    /// The stored value is not what the app expects.
    #[error("stored value is not valid: {0}")]
    Corrupt(String),
    /// The sidecar refused or failed the call.
    #[error("{0}")]
    Failed(String),
}

impl From<tonic::Status> for DaprError {
    fn from(status: tonic::Status) -> Self {
        // Dapr reports ETag mismatches as ABORTED, and inside transactions as INTERNAL with the
        // store's "possible etag mismatch" message.
        let message = status.message().to_owned();
        if status.code() == tonic::Code::Aborted || message.contains("etag mismatch") {
            Self::Conflict(message)
        } else {
            Self::Failed(format!("{:?}: {message}", status.code()))
        }
    }
}

/// Waits a little before retrying a write that lost an ETag race: longer with each attempt (up
/// to 50 ms) and with jitter, so that contenders do not collide again in step.
pub async fn back_off(attempt: u32) {
    use rand::RngExt as _;
    let ceiling = 2u64.saturating_pow(attempt.min(6)).min(50);
    let millis = rand::rng().random_range(1..=ceiling.max(1));
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// A stored value with the ETag it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its ETag, for the next conditional write.
    pub etag: String,
}

impl Versioned<serde_json::Value> {
    /// The value read as `T`: one bulk read of keys that hold different types reads them as
    /// JSON first.
    pub fn decode<T: DeserializeOwned>(self, key: &str) -> Result<Versioned<T>, DaprError> {
        Ok(Versioned {
            value: serde_json::from_value(self.value).map_err(|e| corrupt(key, &e))?,
            etag: self.etag,
        })
    }
}

/// How a write is conditioned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Write {
    /// Succeed only if the stored ETag is this one.
    pub etag: Option<String>,
    /// Without an ETag: create only, fail if the key exists.
    pub create_only: bool,
    /// Expire after this long.
    pub ttl: Option<Duration>,
}

impl Write {
    /// Unconditional.
    pub fn always() -> Self {
        Self::default()
    }

    /// Only if the value is still at `etag`.
    pub fn if_match(etag: impl Into<String>) -> Self {
        Self {
            etag: Some(etag.into()),
            ..Self::default()
        }
    }

    /// Only if the key does not exist.
    pub fn create_only() -> Self {
        Self {
            create_only: true,
            ..Self::default()
        }
    }

    /// Expire after `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// One operation of a state transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOperation {
    /// Write a JSON value.
    Upsert {
        /// The key.
        key: String,
        /// The value, already JSON.
        value: Vec<u8>,
        /// Conditions.
        write: Write,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        /// Delete only at this ETag.
        etag: Option<String>,
    },
}

impl StateOperation {
    /// An upsert of `value` as JSON.
    pub fn upsert<T: Serialize>(
        key: impl Into<String>,
        value: &T,
        write: Write,
    ) -> Result<Self, DaprError> {
        Ok(Self::Upsert {
            key: key.into(),
            value: serde_json::to_vec(value).map_err(|e| DaprError::Failed(e.to_string()))?,
            write,
        })
    }
}

/// The sidecar clients of one app.
#[derive(Clone)]
pub struct Dapr {
    inner: Arc<Inner>,
}

struct Inner {
    grpc: DaprClient<Channel>,
    http: reqwest::Client,
    http_base: String,
    api_token: Option<SecretString>,
}

fn state_item(key: String, value: Vec<u8>, write: &Write) -> common::StateItem {
    let mut metadata = HashMap::from([("contentType".to_owned(), "application/json".to_owned())]);
    if let Some(ttl) = write.ttl {
        metadata.insert("ttlInSeconds".into(), ttl.as_secs().max(1).to_string());
    }
    common::StateItem {
        key,
        value,
        etag: write.etag.clone().map(|value| common::Etag { value }),
        metadata,
        options: Some(common::StateOptions {
            concurrency: if write.create_only || write.etag.is_some() {
                common::state_options::StateConcurrency::ConcurrencyFirstWrite as i32
            } else {
                common::state_options::StateConcurrency::ConcurrencyLastWrite as i32
            },
            consistency: common::state_options::StateConsistency::ConsistencyStrong as i32,
        }),
    }
}

fn decode<T: DeserializeOwned>(key: &str, data: &[u8]) -> Result<T, DaprError> {
    serde_json::from_slice(data).map_err(|e| corrupt(key, &e))
}

/// The error for a stored value at `key` that is not what it should be.
fn corrupt(key: &str, error: &serde_json::Error) -> DaprError {
    DaprError::Corrupt(format!("{key}: {error}"))
}

impl Dapr {
    /// Clients for the sidecar in `settings`; the gRPC connection is made on first use.
    pub fn new(settings: &DaprSettings) -> anyhow::Result<Self> {
        let channel =
            Channel::from_shared(format!("http://{}:{}", settings.host, settings.grpc_port))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .connect_lazy();
        Ok(Self {
            inner: Arc::new(Inner {
                grpc: DaprClient::new(channel),
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    // An app's redirect is its answer to the caller, not for the client to follow.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?,
                http_base: format!("http://{}:{}", settings.host, settings.http_port),
                api_token: settings.api_token.clone(),
            }),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.inner.api_token
            && let Ok(value) = token.expose_secret().parse()
        {
            request.metadata_mut().insert("dapr-api-token", value);
        }
        if let Some(traceparent) = crate::telemetry::current_traceparent()
            && let Ok(value) = traceparent.parse()
        {
            request.metadata_mut().insert("traceparent", value);
        }
        request
    }

    fn grpc(&self) -> DaprClient<Channel> {
        self.inner.grpc.clone()
    }

    /// Reads a JSON value.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn get_state<T: DeserializeOwned>(
        &self,
        store: &str,
        key: &str,
    ) -> Result<Option<Versioned<T>>, DaprError> {
        let response = self
            .grpc()
            .get_state(self.request(pb::GetStateRequest {
                store_name: store.to_owned(),
                key: key.to_owned(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        if response.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(Versioned {
            value: decode(key, &response.data)?,
            etag: response.etag,
        }))
    }

    /// Reads several JSON values; missing keys are `None`, in the order asked.
    #[tracing::instrument(skip(self, keys), level = "debug", fields(count = keys.len()))]
    pub async fn get_bulk_state<T: DeserializeOwned>(
        &self,
        store: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Versioned<T>>>, DaprError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let response = self
            .grpc()
            .get_bulk_state(self.request(pb::GetBulkStateRequest {
                store_name: store.to_owned(),
                keys: keys.to_vec(),
                parallelism: 8,
                metadata: HashMap::new(),
            }))
            .await?
            .into_inner();
        let mut by_key: HashMap<String, pb::BulkStateItem> = response
            .items
            .into_iter()
            .map(|item| (item.key.clone(), item))
            .collect();
        keys.iter()
            .map(|key| match by_key.remove(key) {
                Some(item) if !item.error.is_empty() => Err(DaprError::Failed(item.error)),
                Some(item) if !item.data.is_empty() => Ok(Some(Versioned {
                    value: decode(key, &item.data)?,
                    etag: item.etag,
                })),
                _ => Ok(None),
            })
            .collect()
    }

    /// Writes a JSON value.
    #[tracing::instrument(skip(self, value), level = "debug")]
    pub async fn save_state<T: Serialize>(
        &self,
        store: &str,
        key: &str,
        value: &T,
        write: Write,
    ) -> Result<(), DaprError> {
        let bytes = serde_json::to_vec(value).map_err(|e| DaprError::Failed(e.to_string()))?;
        self.grpc()
            .save_state(self.request(pb::SaveStateRequest {
                store_name: store.to_owned(),
                states: vec![state_item(key.to_owned(), bytes, &write)],
            }))
            .await?;
        Ok(())
    }

    /// Deletes a key.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn delete_state(
        &self,
        store: &str,
        key: &str,
        etag: Option<&str>,
    ) -> Result<(), DaprError> {
        self.grpc()
            .delete_state(self.request(pb::DeleteStateRequest {
                store_name: store.to_owned(),
                key: key.to_owned(),
                etag: etag.map(|value| common::Etag {
                    value: value.to_owned(),
                }),
                ..Default::default()
            }))
            .await?;
        Ok(())
    }

    /// Applies every operation or none.
    #[tracing::instrument(skip(self, operations), level = "debug", fields(count = operations.len()))]
    pub async fn transact(
        &self,
        store: &str,
        operations: Vec<StateOperation>,
    ) -> Result<(), DaprError> {
        let operations = operations
            .into_iter()
            .map(|operation| match operation {
                StateOperation::Upsert { key, value, write } => pb::TransactionalStateOperation {
                    operation_type: "upsert".into(),
                    request: Some(state_item(key, value, &write)),
                },
                StateOperation::Delete { key, etag } => pb::TransactionalStateOperation {
                    operation_type: "delete".into(),
                    request: Some(common::StateItem {
                        key,
                        etag: etag.map(|value| common::Etag { value }),
                        ..Default::default()
                    }),
                },
            })
            .collect();
        self.grpc()
            .execute_state_transaction(self.request(pb::ExecuteStateTransactionRequest {
                store_name: store.to_owned(),
                operations,
                metadata: HashMap::new(),
            }))
            .await?;
        Ok(())
    }

    /// Publishes an event as JSON, with its CloudEvent type and the current trace.
    #[tracing::instrument(skip(self, event), fields(event = E::NAME, topic = E::TOPIC))]
    pub async fn publish<E: Event>(&self, pubsub: &str, event: &E) -> Result<(), DaprError> {
        let data = serde_json::to_vec(event).map_err(|e| DaprError::Failed(e.to_string()))?;
        self.grpc()
            .publish_event(self.request(pb::PublishEventRequest {
                pubsub_name: pubsub.to_owned(),
                topic: E::TOPIC.to_owned(),
                data,
                data_content_type: "application/json".into(),
                metadata: HashMap::from([("cloudevent.type".to_owned(), E::TYPE.to_owned())]),
            }))
            .await?;
        Ok(())
    }

    /// Publishes `data` as JSON to `topic` with explicit CloudEvent metadata (`cloudevent.type`,
    /// `cloudevent.id`, ...).
    #[tracing::instrument(skip(self, data, metadata))]
    pub async fn publish_raw(
        &self,
        pubsub: &str,
        topic: &str,
        data: &serde_json::Value,
        metadata: HashMap<String, String>,
    ) -> Result<(), DaprError> {
        let data = serde_json::to_vec(data).map_err(|e| DaprError::Failed(e.to_string()))?;
        self.grpc()
            .publish_event(self.request(pb::PublishEventRequest {
                pubsub_name: pubsub.to_owned(),
                topic: topic.to_owned(),
                data,
                data_content_type: "application/json".into(),
                metadata,
            }))
            .await?;
        Ok(())
    }

    /// Reads a secret (a map, since a secret may hold several values).
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn secret(
        &self,
        store: &str,
        key: &str,
    ) -> Result<HashMap<String, String>, DaprError> {
        Ok(self
            .grpc()
            .get_secret(self.request(pb::GetSecretRequest {
                store_name: store.to_owned(),
                key: key.to_owned(),
                metadata: HashMap::new(),
            }))
            .await?
            .into_inner()
            .data)
    }

    /// Calls an output binding.
    #[tracing::instrument(skip(self, data, metadata))]
    pub async fn invoke_binding(
        &self,
        name: &str,
        operation: &str,
        data: Vec<u8>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<u8>, DaprError> {
        Ok(self
            .grpc()
            .invoke_binding(self.request(pb::InvokeBindingRequest {
                name: name.to_owned(),
                data,
                metadata,
                operation: operation.to_owned(),
            }))
            .await?
            .into_inner()
            .data)
    }

    /// A request to `path` of app `app_id` through service invocation, with the trace and
    /// token set; the body and the answer stream.
    pub fn invoke(
        &self,
        method: reqwest::Method,
        app_id: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/v1.0/invoke/{app_id}/method/{}",
            self.inner.http_base,
            path.trim_start_matches('/')
        );
        let mut headers = http::HeaderMap::new();
        crate::telemetry::inject_current(&mut headers);
        if let Some(token) = &self.inner.api_token
            && let Ok(value) = token.expose_secret().parse()
        {
            headers.insert("dapr-api-token", value);
        }
        self.inner.http.request(method, url).headers(headers)
    }

    /// Waits until the sidecar's API answers (`/v1.0/healthz/outbound`), as the Dapr SDKs do
    /// before their first call.
    pub async fn wait_until_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/v1.0/healthz/outbound", self.inner.http_base);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.inner.http.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                _ if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!(
                        "the Dapr sidecar at {} did not become ready within {timeout:?}",
                        self.inner.http_base
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The HTTP client used for invocation (for callers building their own requests).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// `http://host:port` of the sidecar's HTTP API.
    pub fn http_base(&self) -> &str {
        &self.inner.http_base
    }
}
