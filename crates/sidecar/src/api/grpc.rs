//! The Dapr gRPC API (`dapr.proto.runtime.v1.Dapr`), served with the generated server of the
//! `dapr` crate. Methods the sidecar does not implement answer `UNIMPLEMENTED` naming the method.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request as HttpRequest, State};
use axum::middleware::{self, Next};
use axum::response::Response as HttpResponse;
use bytes::Bytes;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use dapr::dapr::proto::runtime::v1::dapr_server::{Dapr, DaprServer};
use futures::stream::BoxStream;
use http_body_util::BodyExt as _;
use secrecy::ExposeSecret as _;
use tonic::{Request, Response, Status, Streaming};

use super::pubsub::BulkEntry;
use super::state::{DeleteItem, SaveItem, TransactionItem, item_metadata};
use crate::runtime::Runtime;
use crate::subscriber::SubscriptionKind;
use crate::trace::RequestTrace;

/// The gRPC API as an axum router (gRPC is HTTP/2, so one server type serves every API).
pub(crate) fn router(runtime: Arc<Runtime>) -> Router {
    tonic::service::Routes::new(DaprServer::new(GrpcApi {
        runtime: runtime.clone(),
    }))
    .add_service(crate::workflow::grpc::TaskHubService::new(runtime.clone()))
    .into_axum_router()
    .layer(middleware::from_fn_with_state(runtime, observe))
}

/// `dapr-api-token` and metrics for every call.
async fn observe(
    State(runtime): State<Arc<Runtime>>,
    mut request: HttpRequest,
    next: Next,
) -> HttpResponse {
    let method = request.uri().path().to_owned();
    if let Some(token) = &runtime.api_token {
        let given = request
            .headers()
            .get("dapr-api-token")
            .map(|v| v.as_bytes());
        if given != Some(token.expose_secret().as_bytes()) {
            let status = Status::unauthenticated("Unauthorized");
            runtime
                .metrics
                .grpc_request(&method, "Unauthenticated", std::time::Duration::ZERO);
            return status.into_http::<Body>();
        }
        request.headers_mut().remove("dapr-api-token");
    }
    let started = Instant::now();
    let trace = RequestTrace::from_headers(request.headers(), runtime.sampling_rate());
    let response = next.run(request).await;
    trace.finish(|| method.clone(), runtime.configuration.tracing.stdout);
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or("OK".to_owned(), |code| {
            format!("{:?}", tonic::Code::from_i32(code))
        });
    runtime
        .metrics
        .grpc_request(&method, &status, started.elapsed());
    response
}

struct GrpcApi {
    runtime: Arc<Runtime>,
}

impl GrpcApi {
    async fn bulk_publish(
        &self,
        request: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        let trace = RequestTrace::from_headers(
            &request.metadata().clone().into_headers(),
            self.runtime.sampling_rate(),
        );
        let request = request.into_inner();
        let entries = request
            .entries
            .into_iter()
            .map(|entry| BulkEntry {
                entry_id: entry.entry_id,
                event: Bytes::from(entry.event),
                content_type: entry.content_type,
                metadata: (!entry.metadata.is_empty())
                    .then(|| entry.metadata.into_iter().collect()),
            })
            .collect();
        let metadata = request.metadata.into_iter().collect();
        let failed = self
            .runtime
            .bulk_publish_events(
                &request.pubsub_name,
                &request.topic,
                entries,
                &metadata,
                &trace,
            )
            .await?;
        Ok(Response::new(pb::BulkPublishResponse {
            failed_entries: failed
                .into_iter()
                .map(|f| pb::BulkPublishResponseFailedEntry {
                    entry_id: f.entry_id,
                    error: f.error,
                })
                .collect(),
        }))
    }
}

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "method {method} is not implemented by the local sidecar"
    ))
}

fn concurrency(value: i32) -> Option<String> {
    match common::state_options::StateConcurrency::try_from(value) {
        Ok(common::state_options::StateConcurrency::ConcurrencyFirstWrite) => {
            Some("first-write".into())
        }
        Ok(common::state_options::StateConcurrency::ConcurrencyLastWrite) => {
            Some("last-write".into())
        }
        _ => None,
    }
}

fn consistency(value: i32) -> Option<String> {
    match common::state_options::StateConsistency::try_from(value) {
        Ok(common::state_options::StateConsistency::ConsistencyEventual) => Some("eventual".into()),
        Ok(common::state_options::StateConsistency::ConsistencyStrong) => Some("strong".into()),
        _ => None,
    }
}

/// A gRPC state item as a save. As daprd: bytes sent with `contentType: application/json` are
/// decoded and stored as (re-encoded) JSON; anything else is stored as given.
fn save_item(item: common::StateItem) -> SaveItem {
    let json = item
        .metadata
        .get("contentType")
        .is_some_and(|t| t == "application/json");
    let value = match json.then(|| serde_json::from_slice::<serde_json::Value>(&item.value)) {
        Some(Ok(value)) => {
            serde_json::to_vec(&value).map_or_else(|_| Bytes::from(item.value.clone()), Bytes::from)
        }
        _ => Bytes::from(item.value),
    };
    let options = item.options.unwrap_or_default();
    SaveItem {
        key: item.key,
        value,
        etag: item.etag.map(|e| e.value),
        metadata: item.metadata,
        concurrency: concurrency(options.concurrency),
        consistency: consistency(options.consistency),
    }
}

fn delete_item(item: common::StateItem) -> DeleteItem {
    let options = item.options.unwrap_or_default();
    DeleteItem {
        key: item.key,
        etag: item.etag.map(|e| e.value),
        concurrency: concurrency(options.concurrency),
        consistency: consistency(options.consistency),
    }
}

/// daprd's mapping from an HTTP status to a gRPC code for invocation answers.
fn code_from_http(status: http::StatusCode) -> tonic::Code {
    match status.as_u16() {
        200..=399 => tonic::Code::Ok,
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::Aborted,
        429 => tonic::Code::ResourceExhausted,
        499 => tonic::Code::Cancelled,
        501 => tonic::Code::Unimplemented,
        503 => tonic::Code::Unavailable,
        504 => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::Unknown,
    }
}

fn verb(extension: Option<&common::HttpExtension>) -> http::Method {
    use common::http_extension::Verb;
    match extension.and_then(|e| Verb::try_from(e.verb).ok()) {
        Some(Verb::Get) => http::Method::GET,
        Some(Verb::Head) => http::Method::HEAD,
        Some(Verb::Put) => http::Method::PUT,
        Some(Verb::Delete) => http::Method::DELETE,
        Some(Verb::Options) => http::Method::OPTIONS,
        Some(Verb::Trace) => http::Method::TRACE,
        Some(Verb::Patch) => http::Method::PATCH,
        _ => http::Method::POST,
    }
}

#[tonic::async_trait]
impl Dapr for GrpcApi {
    type SubscribeTopicEventsAlpha1Stream =
        BoxStream<'static, Result<pb::SubscribeTopicEventsResponseAlpha1, Status>>;
    type SubscribeConfigurationAlpha1Stream =
        BoxStream<'static, Result<pb::SubscribeConfigurationResponse, Status>>;
    type SubscribeConfigurationStream =
        BoxStream<'static, Result<pb::SubscribeConfigurationResponse, Status>>;
    type EncryptAlpha1Stream = BoxStream<'static, Result<pb::EncryptResponse, Status>>;
    type DecryptAlpha1Stream = BoxStream<'static, Result<pb::DecryptResponse, Status>>;

    async fn invoke_service(
        &self,
        request: Request<pb::InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        let trace = RequestTrace::from_headers(
            &request.metadata().clone().into_headers(),
            self.runtime.sampling_rate(),
        );
        let request = request.into_inner();
        let message = request.message.unwrap_or_default();
        let path = match message
            .http_extension
            .as_ref()
            .map(|e| e.querystring.as_str())
        {
            Some(query) if !query.is_empty() => {
                format!("/{}?{query}", message.method.trim_start_matches('/'))
            }
            _ => format!("/{}", message.method.trim_start_matches('/')),
        };
        let body = message.data.map(|any| any.value).unwrap_or_default();
        let mut builder = http::Request::builder()
            .method(verb(message.http_extension.as_ref()))
            .uri(path)
            .header(http::header::CONTENT_LENGTH, body.len());
        if !message.content_type.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, &message.content_type);
        }
        let http_request = builder
            .body(Body::from(body))
            .map_err(|e| Status::invalid_argument(format!("invalid invocation: {e}")))?;
        let response = self
            .runtime
            .invoke(&request.id, &message.method, http_request, &trace)
            .await;
        let status = response.status();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Status::internal(format!("reading the response: {e}")))?
            .to_bytes();
        if !(200..400).contains(&status.as_u16()) {
            return Err(Status::new(
                code_from_http(status),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        Ok(Response::new(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: body.to_vec(),
            }),
            content_type,
        }))
    }

    async fn get_state(
        &self,
        request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        let request = request.into_inner();
        let item = self
            .runtime
            .get_state(&request.store_name, &request.key)
            .await?;
        Ok(Response::new(match item {
            Some(item) => pb::GetStateResponse {
                metadata: item_metadata(&item),
                data: item.value.to_vec(),
                etag: item.etag,
            },
            None => pb::GetStateResponse::default(),
        }))
    }

    async fn get_bulk_state(
        &self,
        request: Request<pb::GetBulkStateRequest>,
    ) -> Result<Response<pb::GetBulkStateResponse>, Status> {
        let request = request.into_inner();
        let items = self
            .runtime
            .bulk_get_state(&request.store_name, request.keys)
            .await?;
        Ok(Response::new(pb::GetBulkStateResponse {
            items: items
                .into_iter()
                .map(|bulk| match bulk.item {
                    Some(item) => pb::BulkStateItem {
                        key: bulk.key,
                        metadata: item_metadata(&item),
                        data: item.value.to_vec(),
                        etag: item.etag,
                        error: String::new(),
                    },
                    None => pb::BulkStateItem {
                        key: bulk.key,
                        ..Default::default()
                    },
                })
                .collect(),
        }))
    }

    async fn save_state(
        &self,
        request: Request<pb::SaveStateRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        if request.states.iter().any(|s| s.key.is_empty()) {
            return Err(Status::invalid_argument("state key cannot be empty"));
        }
        let items = request.states.into_iter().map(save_item).collect();
        self.runtime.save_state(&request.store_name, items).await?;
        Ok(Response::new(()))
    }

    async fn delete_state(
        &self,
        request: Request<pb::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let options = request.options.unwrap_or_default();
        let item = DeleteItem {
            key: request.key,
            etag: request.etag.map(|e| e.value),
            concurrency: concurrency(options.concurrency),
            consistency: consistency(options.consistency),
        };
        self.runtime.delete_state(&request.store_name, item).await?;
        Ok(Response::new(()))
    }

    async fn delete_bulk_state(
        &self,
        request: Request<pb::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        for item in request.states {
            self.runtime
                .delete_state(&request.store_name, delete_item(item))
                .await?;
        }
        Ok(Response::new(()))
    }

    async fn execute_state_transaction(
        &self,
        request: Request<pb::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        self.runtime.state_store(&request.store_name)?;
        let items = request
            .operations
            .into_iter()
            .map(|operation| {
                let item = operation.request.unwrap_or_default();
                match operation.operation_type.as_str() {
                    "upsert" => Ok(TransactionItem::Upsert(save_item(item))),
                    "delete" => Ok(TransactionItem::Delete(delete_item(item))),
                    other => Err(Status::unimplemented(format!(
                        "operation type {other} not supported"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.runtime
            .transact_state(&request.store_name, items)
            .await?;
        Ok(Response::new(()))
    }

    async fn get_secret(
        &self,
        request: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::GetSecretResponse>, Status> {
        let request = request.into_inner();
        let secret = self.runtime.get_secret(&request.store_name, &request.key)?;
        Ok(Response::new(pb::GetSecretResponse {
            data: secret.into_iter().collect(),
        }))
    }

    async fn get_bulk_secret(
        &self,
        request: Request<pb::GetBulkSecretRequest>,
    ) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        let request = request.into_inner();
        let secrets = self.runtime.bulk_get_secret(&request.store_name)?;
        Ok(Response::new(pb::GetBulkSecretResponse {
            data: secrets
                .into_iter()
                .map(|(name, values)| {
                    (
                        name,
                        pb::SecretResponse {
                            secrets: values.into_iter().collect(),
                        },
                    )
                })
                .collect(),
        }))
    }

    async fn get_metadata(
        &self,
        _: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let metadata = self.runtime.metadata();
        let app = metadata.app_connection_properties;
        Ok(Response::new(pb::GetMetadataResponse {
            id: metadata.id,
            runtime_version: metadata.runtime_version,
            enabled_features: metadata.enabled_features,
            registered_components: metadata
                .components
                .into_iter()
                .map(|c| pb::RegisteredComponents {
                    name: c.name,
                    r#type: c.component_type,
                    version: c.version,
                    capabilities: c.capabilities,
                })
                .collect(),
            extended_metadata: metadata.extended.into_iter().collect::<HashMap<_, _>>(),
            subscriptions: metadata
                .subscriptions
                .into_iter()
                .map(|s| pb::PubsubSubscription {
                    pubsub_name: s.pubsubname,
                    topic: s.topic,
                    metadata: s.metadata.into_iter().collect(),
                    rules: Some(pb::PubsubSubscriptionRules {
                        rules: s
                            .rules
                            .into_iter()
                            .map(|r| pb::PubsubSubscriptionRule {
                                r#match: r.match_expr,
                                path: r.path,
                            })
                            .collect(),
                    }),
                    dead_letter_topic: s.dead_letter_topic,
                    r#type: match s.kind {
                        SubscriptionKind::Declarative => {
                            pb::PubsubSubscriptionType::Declarative as i32
                        }
                        SubscriptionKind::Programmatic => {
                            pb::PubsubSubscriptionType::Programmatic as i32
                        }
                    },
                })
                .collect(),
            app_connection_properties: Some(pb::AppConnectionProperties {
                port: app.port.map_or(0, i32::from),
                protocol: app.protocol,
                channel_address: app.channel_address,
                max_concurrency: app
                    .max_concurrency
                    .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
                health: app.health.map(|h| pb::AppConnectionHealthProperties {
                    health_check_path: h.health_check_path,
                    health_probe_interval: h.health_probe_interval,
                    health_probe_timeout: h.health_probe_timeout,
                    health_threshold: i32::try_from(h.health_threshold).unwrap_or(i32::MAX),
                }),
            }),
            actor_runtime: Some(pb::ActorRuntime {
                runtime_status: pb::actor_runtime::ActorRuntimeStatus::Disabled as i32,
                host_ready: metadata.actor_runtime.host_ready,
                ..Default::default()
            }),
            workflows: metadata.workflows.map(|w| pb::MetadataWorkflows {
                connected_workers: w.connected_workers,
            }),
            ..Default::default()
        }))
    }

    async fn set_metadata(
        &self,
        request: Request<pb::SetMetadataRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        self.runtime.set_metadata(request.key, request.value);
        Ok(Response::new(()))
    }

    async fn publish_event(
        &self,
        request: Request<pb::PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        let trace = RequestTrace::from_headers(
            &request.metadata().clone().into_headers(),
            self.runtime.sampling_rate(),
        );
        let request = request.into_inner();
        if request.pubsub_name.is_empty() {
            return Err(Status::invalid_argument("pubsub name is empty"));
        }
        self.runtime
            .publish_event(
                &request.pubsub_name,
                &request.topic,
                &request.data,
                &request.data_content_type,
                request.metadata.into_iter().collect(),
                &trace,
            )
            .await?;
        Ok(Response::new(()))
    }

    async fn bulk_publish_event(
        &self,
        request: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        self.bulk_publish(request).await
    }

    async fn bulk_publish_event_alpha1(
        &self,
        request: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        self.bulk_publish(request).await
    }

    async fn invoke_binding(
        &self,
        request: Request<pb::InvokeBindingRequest>,
    ) -> Result<Response<pb::InvokeBindingResponse>, Status> {
        let trace = RequestTrace::from_headers(
            &request.metadata().clone().into_headers(),
            self.runtime.sampling_rate(),
        );
        let request = request.into_inner();
        let response = self
            .runtime
            .invoke_binding(
                &request.name,
                Bytes::from(request.data),
                request.metadata.into_iter().collect(),
                request.operation,
                &trace,
            )
            .await
            .map_err(|failure| Status::from(failure.error))?;
        Ok(Response::new(match response {
            Some(response) => pb::InvokeBindingResponse {
                data: response.data.to_vec(),
                metadata: response.metadata.into_iter().collect(),
            },
            None => pb::InvokeBindingResponse::default(),
        }))
    }

    async fn shutdown(&self, _: Request<pb::ShutdownRequest>) -> Result<Response<()>, Status> {
        tracing::info!(app_id = %self.runtime.app_id, "shutdown requested through the gRPC API");
        self.runtime.shutdown.cancel();
        Ok(Response::new(()))
    }

    // Everything below is part of the Dapr API but not of what the shop needs.
    async fn query_state_alpha1(
        &self,
        _: Request<pb::QueryStateRequest>,
    ) -> Result<Response<pb::QueryStateResponse>, Status> {
        Err(unimplemented("QueryStateAlpha1"))
    }
    async fn subscribe_topic_events_alpha1(
        &self,
        _: Request<Streaming<pb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        Err(unimplemented("SubscribeTopicEventsAlpha1"))
    }
    async fn register_actor_timer(
        &self,
        _: Request<pb::RegisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("RegisterActorTimer"))
    }
    async fn unregister_actor_timer(
        &self,
        _: Request<pb::UnregisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("UnregisterActorTimer"))
    }
    async fn register_actor_reminder(
        &self,
        _: Request<pb::RegisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("RegisterActorReminder"))
    }
    async fn unregister_actor_reminder(
        &self,
        _: Request<pb::UnregisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("UnregisterActorReminder"))
    }
    async fn unregister_actor_reminders_by_type(
        &self,
        _: Request<pb::UnregisterActorRemindersByTypeRequest>,
    ) -> Result<Response<pb::UnregisterActorRemindersByTypeResponse>, Status> {
        Err(unimplemented("UnregisterActorRemindersByType"))
    }
    async fn list_actor_reminders(
        &self,
        _: Request<pb::ListActorRemindersRequest>,
    ) -> Result<Response<pb::ListActorRemindersResponse>, Status> {
        Err(unimplemented("ListActorReminders"))
    }
    async fn get_actor_state(
        &self,
        _: Request<pb::GetActorStateRequest>,
    ) -> Result<Response<pb::GetActorStateResponse>, Status> {
        Err(unimplemented("GetActorState"))
    }
    async fn get_actor_reminder(
        &self,
        _: Request<pb::GetActorReminderRequest>,
    ) -> Result<Response<pb::GetActorReminderResponse>, Status> {
        Err(unimplemented("GetActorReminder"))
    }
    async fn execute_actor_state_transaction(
        &self,
        _: Request<pb::ExecuteActorStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("ExecuteActorStateTransaction"))
    }
    async fn invoke_actor(
        &self,
        _: Request<pb::InvokeActorRequest>,
    ) -> Result<Response<pb::InvokeActorResponse>, Status> {
        Err(unimplemented("InvokeActor"))
    }
    async fn get_configuration_alpha1(
        &self,
        _: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        Err(unimplemented("GetConfigurationAlpha1"))
    }
    async fn get_configuration(
        &self,
        _: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        Err(unimplemented("GetConfiguration"))
    }
    async fn subscribe_configuration_alpha1(
        &self,
        _: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationAlpha1Stream>, Status> {
        Err(unimplemented("SubscribeConfigurationAlpha1"))
    }
    async fn subscribe_configuration(
        &self,
        _: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationStream>, Status> {
        Err(unimplemented("SubscribeConfiguration"))
    }
    async fn unsubscribe_configuration_alpha1(
        &self,
        _: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Err(unimplemented("UnsubscribeConfigurationAlpha1"))
    }
    async fn unsubscribe_configuration(
        &self,
        _: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Err(unimplemented("UnsubscribeConfiguration"))
    }
    async fn try_lock_alpha1(
        &self,
        _: Request<pb::TryLockRequest>,
    ) -> Result<Response<pb::TryLockResponse>, Status> {
        Err(unimplemented("TryLockAlpha1"))
    }
    async fn unlock_alpha1(
        &self,
        _: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        Err(unimplemented("UnlockAlpha1"))
    }
    async fn encrypt_alpha1(
        &self,
        _: Request<Streaming<pb::EncryptRequest>>,
    ) -> Result<Response<Self::EncryptAlpha1Stream>, Status> {
        Err(unimplemented("EncryptAlpha1"))
    }
    async fn decrypt_alpha1(
        &self,
        _: Request<Streaming<pb::DecryptRequest>>,
    ) -> Result<Response<Self::DecryptAlpha1Stream>, Status> {
        Err(unimplemented("DecryptAlpha1"))
    }
    async fn subtle_get_key_alpha1(
        &self,
        _: Request<pb::SubtleGetKeyRequest>,
    ) -> Result<Response<pb::SubtleGetKeyResponse>, Status> {
        Err(unimplemented("SubtleGetKeyAlpha1"))
    }
    async fn subtle_encrypt_alpha1(
        &self,
        _: Request<pb::SubtleEncryptRequest>,
    ) -> Result<Response<pb::SubtleEncryptResponse>, Status> {
        Err(unimplemented("SubtleEncryptAlpha1"))
    }
    async fn subtle_decrypt_alpha1(
        &self,
        _: Request<pb::SubtleDecryptRequest>,
    ) -> Result<Response<pb::SubtleDecryptResponse>, Status> {
        Err(unimplemented("SubtleDecryptAlpha1"))
    }
    async fn subtle_wrap_key_alpha1(
        &self,
        _: Request<pb::SubtleWrapKeyRequest>,
    ) -> Result<Response<pb::SubtleWrapKeyResponse>, Status> {
        Err(unimplemented("SubtleWrapKeyAlpha1"))
    }
    async fn subtle_unwrap_key_alpha1(
        &self,
        _: Request<pb::SubtleUnwrapKeyRequest>,
    ) -> Result<Response<pb::SubtleUnwrapKeyResponse>, Status> {
        Err(unimplemented("SubtleUnwrapKeyAlpha1"))
    }
    async fn subtle_sign_alpha1(
        &self,
        _: Request<pb::SubtleSignRequest>,
    ) -> Result<Response<pb::SubtleSignResponse>, Status> {
        Err(unimplemented("SubtleSignAlpha1"))
    }
    async fn subtle_verify_alpha1(
        &self,
        _: Request<pb::SubtleVerifyRequest>,
    ) -> Result<Response<pb::SubtleVerifyResponse>, Status> {
        Err(unimplemented("SubtleVerifyAlpha1"))
    }
    async fn start_workflow_alpha1(
        &self,
        _: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        Err(unimplemented("StartWorkflowAlpha1"))
    }
    async fn get_workflow_alpha1(
        &self,
        _: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        Err(unimplemented("GetWorkflowAlpha1"))
    }
    async fn purge_workflow_alpha1(
        &self,
        _: Request<pb::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("PurgeWorkflowAlpha1"))
    }
    async fn terminate_workflow_alpha1(
        &self,
        _: Request<pb::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("TerminateWorkflowAlpha1"))
    }
    async fn pause_workflow_alpha1(
        &self,
        _: Request<pb::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("PauseWorkflowAlpha1"))
    }
    async fn resume_workflow_alpha1(
        &self,
        _: Request<pb::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("ResumeWorkflowAlpha1"))
    }
    async fn raise_event_workflow_alpha1(
        &self,
        _: Request<pb::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("RaiseEventWorkflowAlpha1"))
    }
    async fn start_workflow_beta1(
        &self,
        _: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        Err(unimplemented("StartWorkflowBeta1"))
    }
    async fn get_workflow_beta1(
        &self,
        _: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        Err(unimplemented("GetWorkflowBeta1"))
    }
    async fn purge_workflow_beta1(
        &self,
        _: Request<pb::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("PurgeWorkflowBeta1"))
    }
    async fn terminate_workflow_beta1(
        &self,
        _: Request<pb::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("TerminateWorkflowBeta1"))
    }
    async fn pause_workflow_beta1(
        &self,
        _: Request<pb::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("PauseWorkflowBeta1"))
    }
    async fn resume_workflow_beta1(
        &self,
        _: Request<pb::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("ResumeWorkflowBeta1"))
    }
    async fn raise_event_workflow_beta1(
        &self,
        _: Request<pb::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("RaiseEventWorkflowBeta1"))
    }
    async fn schedule_job_alpha1(
        &self,
        _: Request<pb::ScheduleJobRequest>,
    ) -> Result<Response<pb::ScheduleJobResponse>, Status> {
        Err(unimplemented("ScheduleJobAlpha1"))
    }
    async fn schedule_job(
        &self,
        _: Request<pb::ScheduleJobRequest>,
    ) -> Result<Response<pb::ScheduleJobResponse>, Status> {
        Err(unimplemented("ScheduleJob"))
    }
    async fn get_job_alpha1(
        &self,
        _: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        Err(unimplemented("GetJobAlpha1"))
    }
    async fn get_job(
        &self,
        _: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        Err(unimplemented("GetJob"))
    }
    async fn delete_job_alpha1(
        &self,
        _: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        Err(unimplemented("DeleteJobAlpha1"))
    }
    async fn delete_job(
        &self,
        _: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        Err(unimplemented("DeleteJob"))
    }
    async fn delete_jobs_by_prefix_alpha1(
        &self,
        _: Request<pb::DeleteJobsByPrefixRequestAlpha1>,
    ) -> Result<Response<pb::DeleteJobsByPrefixResponseAlpha1>, Status> {
        Err(unimplemented("DeleteJobsByPrefixAlpha1"))
    }
    async fn delete_jobs_by_prefix(
        &self,
        _: Request<pb::DeleteJobsByPrefixRequest>,
    ) -> Result<Response<pb::DeleteJobsByPrefixResponse>, Status> {
        Err(unimplemented("DeleteJobsByPrefix"))
    }
    async fn list_jobs_alpha1(
        &self,
        _: Request<pb::ListJobsRequestAlpha1>,
    ) -> Result<Response<pb::ListJobsResponseAlpha1>, Status> {
        Err(unimplemented("ListJobsAlpha1"))
    }
    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(unimplemented("ListJobs"))
    }
    async fn converse_alpha1(
        &self,
        _: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::ConversationResponse>, Status> {
        Err(unimplemented("ConverseAlpha1"))
    }
    async fn converse_alpha2(
        &self,
        _: Request<pb::ConversationRequestAlpha2>,
    ) -> Result<Response<pb::ConversationResponseAlpha2>, Status> {
        Err(unimplemented("ConverseAlpha2"))
    }
    async fn create_index_alpha1(
        &self,
        _: Request<pb::CreateIndexRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("CreateIndexAlpha1"))
    }
    async fn get_index_alpha1(
        &self,
        _: Request<pb::GetIndexRequestAlpha1>,
    ) -> Result<Response<pb::GetIndexResponseAlpha1>, Status> {
        Err(unimplemented("GetIndexAlpha1"))
    }
    async fn list_indexes_alpha1(
        &self,
        _: Request<pb::ListIndexesRequestAlpha1>,
    ) -> Result<Response<pb::ListIndexesResponseAlpha1>, Status> {
        Err(unimplemented("ListIndexesAlpha1"))
    }
    async fn delete_index_alpha1(
        &self,
        _: Request<pb::DeleteIndexRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("DeleteIndexAlpha1"))
    }
    async fn index_documents_alpha1(
        &self,
        _: Request<pb::IndexDocumentsRequestAlpha1>,
    ) -> Result<Response<pb::IndexDocumentsResponseAlpha1>, Status> {
        Err(unimplemented("IndexDocumentsAlpha1"))
    }
    async fn get_documents_alpha1(
        &self,
        _: Request<pb::GetDocumentsRequestAlpha1>,
    ) -> Result<Response<pb::GetDocumentsResponseAlpha1>, Status> {
        Err(unimplemented("GetDocumentsAlpha1"))
    }
    async fn delete_documents_alpha1(
        &self,
        _: Request<pb::DeleteDocumentsRequestAlpha1>,
    ) -> Result<Response<pb::DeleteDocumentsResponseAlpha1>, Status> {
        Err(unimplemented("DeleteDocumentsAlpha1"))
    }
    async fn search_alpha1(
        &self,
        _: Request<pb::SearchRequestAlpha1>,
    ) -> Result<Response<pb::SearchResponseAlpha1>, Status> {
        Err(unimplemented("SearchAlpha1"))
    }
    async fn create_collection_alpha1(
        &self,
        _: Request<pb::CreateCollectionRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("CreateCollectionAlpha1"))
    }
    async fn get_collection_alpha1(
        &self,
        _: Request<pb::GetCollectionRequestAlpha1>,
    ) -> Result<Response<pb::GetCollectionResponseAlpha1>, Status> {
        Err(unimplemented("GetCollectionAlpha1"))
    }
    async fn list_collections_alpha1(
        &self,
        _: Request<pb::ListCollectionsRequestAlpha1>,
    ) -> Result<Response<pb::ListCollectionsResponseAlpha1>, Status> {
        Err(unimplemented("ListCollectionsAlpha1"))
    }
    async fn delete_collection_alpha1(
        &self,
        _: Request<pb::DeleteCollectionRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("DeleteCollectionAlpha1"))
    }
    async fn upsert_vectors_alpha1(
        &self,
        _: Request<pb::UpsertVectorsRequestAlpha1>,
    ) -> Result<Response<pb::UpsertVectorsResponseAlpha1>, Status> {
        Err(unimplemented("UpsertVectorsAlpha1"))
    }
    async fn delete_vectors_alpha1(
        &self,
        _: Request<pb::DeleteVectorsRequestAlpha1>,
    ) -> Result<Response<pb::DeleteVectorsResponseAlpha1>, Status> {
        Err(unimplemented("DeleteVectorsAlpha1"))
    }
    async fn get_vectors_alpha1(
        &self,
        _: Request<pb::GetVectorsRequestAlpha1>,
    ) -> Result<Response<pb::GetVectorsResponseAlpha1>, Status> {
        Err(unimplemented("GetVectorsAlpha1"))
    }
    async fn query_vectors_alpha1(
        &self,
        _: Request<pb::QueryVectorsRequestAlpha1>,
    ) -> Result<Response<pb::QueryVectorsResponseAlpha1>, Status> {
        Err(unimplemented("QueryVectorsAlpha1"))
    }
    async fn batch_query_vectors_alpha1(
        &self,
        _: Request<pb::BatchQueryVectorsRequestAlpha1>,
    ) -> Result<Response<pb::BatchQueryVectorsResponseAlpha1>, Status> {
        Err(unimplemented("BatchQueryVectorsAlpha1"))
    }
}
