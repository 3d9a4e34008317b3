//! The durabletask gRPC service `TaskHubSidecarService` (no proto package), served on the
//! sidecar's gRPC port next to the Dapr API. `dapr-durabletask-proto` ships client stubs only,
//! so the server side is written here: a `tower::Service` routing each method path to a
//! handler run through `tonic::server::Grpc` with the prost codec.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use dapr_durabletask_proto as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::{Request, Response, Status};

use super::engine::{Engine, EngineError, is_terminal};
use crate::runtime::Runtime;

/// The service, cheap to clone.
#[derive(Clone)]
pub(crate) struct TaskHubService {
    runtime: Arc<Runtime>,
}

impl TaskHubService {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

impl tonic::server::NamedService for TaskHubService {
    const NAME: &'static str = "TaskHubSidecarService";
}

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match error {
            EngineError::NotFound(_) => Status::not_found(message),
            EngineError::AlreadyExists(_) => Status::already_exists(message),
            EngineError::InvalidArgument(_) => Status::invalid_argument(message),
            EngineError::FailedPrecondition(_) => Status::failed_precondition(message),
            EngineError::Unavailable(_) => Status::unavailable(message),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn engine(runtime: &Runtime) -> Result<Arc<Engine>, Status> {
    runtime
        .workflows()
        .map_err(|e| Status::failed_precondition(e.to_string()))
}

/// Runs one unary method: decode `M`, call `handler`, encode `R`.
async fn unary<M, R, F, Fut>(
    request: http::Request<Body>,
    runtime: Arc<Runtime>,
    handler: F,
) -> http::Response<Body>
where
    M: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    F: FnOnce(Arc<Engine>, M) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<R, Status>> + Send + 'static,
{
    let service = tower::service_fn(move |request: Request<M>| {
        let runtime = runtime.clone();
        let handler = handler.clone();
        async move {
            let engine = engine(&runtime)?;
            handler(engine, request.into_inner())
                .await
                .map(Response::new)
        }
    });
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<R, M>::default());
    grpc.unary(service, request).await
}

impl tower::Service<http::Request<Body>> for TaskHubService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let runtime = self.runtime.clone();
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            let response = match path.trim_start_matches("/TaskHubSidecarService/") {
                "Hello" => unary(request, runtime, |_, (): ()| async { Ok(()) }).await,
                "StartInstance" => {
                    unary(request, runtime, |engine, m: pb::CreateInstanceRequest| async move {
                        let instance_id = engine.start_instance(m).await?;
                        Ok(pb::CreateInstanceResponse { instance_id })
                    })
                    .await
                }
                "GetInstance" => {
                    unary(request, runtime, |engine, m: pb::GetInstanceRequest| async move {
                        let state = engine.get_instance(&m.instance_id, m.get_inputs_and_outputs);
                        Ok(instance_response(state))
                    })
                    .await
                }
                "WaitForInstanceStart" => {
                    unary(request, runtime, |engine, m: pb::GetInstanceRequest| async move {
                        let state = engine
                            .wait_for(&m.instance_id, m.get_inputs_and_outputs, |s| {
                                s != pb::OrchestrationStatus::Pending
                            })
                            .await;
                        Ok(instance_response(state))
                    })
                    .await
                }
                "WaitForInstanceCompletion" => {
                    unary(request, runtime, |engine, m: pb::GetInstanceRequest| async move {
                        let state = engine
                            .wait_for(&m.instance_id, m.get_inputs_and_outputs, is_terminal)
                            .await;
                        Ok(instance_response(state))
                    })
                    .await
                }
                "RaiseEvent" => {
                    unary(request, runtime, |engine, m: pb::RaiseEventRequest| async move {
                        engine.raise_event(&m.instance_id, &m.name, m.input).await?;
                        Ok(pb::RaiseEventResponse {})
                    })
                    .await
                }
                "TerminateInstance" => {
                    unary(request, runtime, |engine, m: pb::TerminateRequest| async move {
                        engine.terminate(&m.instance_id, m.output, m.recursive).await?;
                        Ok(pb::TerminateResponse {})
                    })
                    .await
                }
                "SuspendInstance" => {
                    unary(request, runtime, |engine, m: pb::SuspendRequest| async move {
                        engine.suspend(&m.instance_id, m.reason).await?;
                        Ok(pb::SuspendResponse {})
                    })
                    .await
                }
                "ResumeInstance" => {
                    unary(request, runtime, |engine, m: pb::ResumeRequest| async move {
                        engine.resume(&m.instance_id, m.reason).await?;
                        Ok(pb::ResumeResponse {})
                    })
                    .await
                }
                "PurgeInstances" => {
                    unary(request, runtime, |engine, m: pb::PurgeInstancesRequest| async move {
                        let count = match m.request {
                            Some(pb::purge_instances_request::Request::InstanceId(id)) => {
                                engine.purge(&id, m.recursive).await?
                            }
                            Some(pb::purge_instances_request::Request::PurgeInstanceFilter(
                                filter,
                            )) => engine.purge_filtered(&filter).await?,
                            None => {
                                return Err(Status::invalid_argument(
                                    "an instance ID or a filter is required",
                                ));
                            }
                        };
                        Ok(pb::PurgeInstancesResponse {
                            deleted_instance_count: i32::try_from(count).unwrap_or(i32::MAX),
                            is_complete: Some(true),
                        })
                    })
                    .await
                }
                "GetInstanceHistory" => {
                    unary(request, runtime, |engine, m: pb::GetInstanceHistoryRequest| async move {
                        let events = engine
                            .history(&m.instance_id)
                            .ok_or_else(|| Status::not_found(format!("no such instance exists: {}", m.instance_id)))?;
                        Ok(pb::GetInstanceHistoryResponse { events })
                    })
                    .await
                }
                "ListInstanceIDs" => {
                    unary(request, runtime, |engine, m: pb::ListInstanceIDsRequest| async move {
                        let page_size = m.page_size.map_or(100, |s| s.max(1) as usize);
                        let (instance_ids, continuation_token) =
                            engine.list_instance_ids(m.continuation_token.as_deref(), page_size);
                        Ok(pb::ListInstanceIDsResponse {
                            instance_ids,
                            continuation_token,
                        })
                    })
                    .await
                }
                "CompleteActivityTask" => {
                    unary(request, runtime, |engine, m: pb::ActivityResponse| async move {
                        engine.complete_activity(m).await?;
                        Ok(pb::CompleteTaskResponse {})
                    })
                    .await
                }
                "CompleteOrchestratorTask" | "CompleteWorkflowTask" => {
                    unary(request, runtime, |engine, m: pb::WorkflowResponse| async move {
                        engine.complete_turn(m).await?;
                        Ok(pb::CompleteTaskResponse {})
                    })
                    .await
                }
                "GetWorkItems" => get_work_items(request, runtime).await,
                other => Status::unimplemented(format!(
                    "method {other} of TaskHubSidecarService is not implemented by the local sidecar"
                ))
                .into_http(),
            };
            Ok(response)
        })
    }
}

fn instance_response(state: Option<pb::WorkflowState>) -> pb::GetInstanceResponse {
    pb::GetInstanceResponse {
        exists: state.is_some(),
        workflow_state: state,
    }
}

/// The work-item stream of one worker. Dropping it (the worker went away, or the sidecar stops)
/// hands what the worker held to the others.
struct WorkStream {
    receiver: mpsc::UnboundedReceiver<Result<pb::WorkItem, Status>>,
    engine: Arc<Engine>,
    worker: u64,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Stream for WorkStream {
    type Item = Result<pb::WorkItem, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        this.receiver.poll_recv(cx)
    }
}

impl Drop for WorkStream {
    fn drop(&mut self) {
        self.engine.disconnect_worker(self.worker);
    }
}

async fn get_work_items(
    request: http::Request<Body>,
    runtime: Arc<Runtime>,
) -> http::Response<Body> {
    let service = tower::service_fn(move |_request: Request<pb::GetWorkItemsRequest>| {
        let runtime = runtime.clone();
        async move {
            let engine = engine(&runtime)?;
            let (sender, receiver) = mpsc::unbounded_channel();
            let worker = engine.connect_worker(sender);
            Ok(Response::new(WorkStream {
                receiver,
                engine,
                worker,
                stop: Box::pin(runtime.shutdown.clone().cancelled_owned()),
            }))
        }
    });
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
        pb::WorkItem,
        pb::GetWorkItemsRequest,
    >::default());
    grpc.server_streaming(service, request).await
}
