//! The workflow HTTP API (`/v1.0/workflows/dapr/...`, also under `v1.0-beta1`), with daprd's
//! status codes, response fields and error codes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use dapr_durabletask_proto as pb;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::api::ApiError;
use crate::runtime::Runtime;

/// The routes, to nest under `/v1.0` and `/v1.0-beta1`.
pub(crate) fn routes() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/workflows/{component}/{name}/start", post(start))
        .route("/workflows/{component}/{instance}", get(get_instance))
        .route(
            "/workflows/{component}/{instance}/raiseEvent/{event}",
            post(raise_event),
        )
        .route(
            "/workflows/{component}/{instance}/terminate",
            post(terminate),
        )
        .route("/workflows/{component}/{instance}/pause", post(pause))
        .route("/workflows/{component}/{instance}/resume", post(resume))
        .route("/workflows/{component}/{instance}/purge", post(purge))
}

/// daprd's longest instance id.
const MAX_INSTANCE_ID: usize = 64;

fn error(status: StatusCode, grpc: tonic::Code, code: &'static str, message: String) -> ApiError {
    ApiError::new(status, grpc, code, message)
}

fn internal(code: &'static str, message: String) -> ApiError {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        code,
        message,
    )
}

fn not_found(instance: &str) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        tonic::Code::NotFound,
        "ERR_INSTANCE_ID_NOT_FOUND",
        format!("unable to find workflow with the provided instance ID: {instance}"),
    )
}

/// Only the built-in `dapr` workflow component exists, as in daprd.
fn engine(runtime: &Runtime, component: &str) -> Result<Arc<Engine>, ApiError> {
    if component != "dapr" {
        return Err(error(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_WORKFLOW_COMPONENT_NOT_FOUND",
            format!("workflow component '{component}' does not exist"),
        ));
    }
    runtime.workflows().map_err(|e| {
        internal(
            "ERR_WORKFLOW_COMPONENT_NOT_FOUND",
            format!("the workflow engine is not available: {e}"),
        )
    })
}

/// A valid instance id: non-empty, at most 64 characters, letters, digits, `_` and `-`.
fn check_instance_id(instance: &str) -> Result<(), ApiError> {
    if instance.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_INSTANCE_ID_PROVIDED_MISSING",
            "no instance ID was provided".into(),
        ));
    }
    if instance.len() > MAX_INSTANCE_ID {
        return Err(error(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_INSTANCE_ID_TOO_LONG",
            format!("workflow instance ID exceeds the max length of {MAX_INSTANCE_ID} characters"),
        ));
    }
    if !instance
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_INSTANCE_ID_INVALID",
            format!(
                "workflow instance ID '{instance}' is invalid: only alphanumeric and underscore characters are allowed"
            ),
        ));
    }
    Ok(())
}

/// A body as the workflow's input: JSON as sent, anything else as a JSON string.
fn payload(body: &Bytes) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(body).into_owned();
    if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
        Some(text)
    } else {
        serde_json::to_string(&text).ok()
    }
}

#[derive(Deserialize)]
struct StartQuery {
    #[serde(rename = "instanceID")]
    instance_id: Option<String>,
}

#[derive(Serialize)]
struct StartResponse {
    #[serde(rename = "instanceID")]
    instance_id: String,
}

async fn start(
    State(runtime): State<Arc<Runtime>>,
    Path((component, name)): Path<(String, String)>,
    Query(query): Query<StartQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let engine = engine(&runtime, &component)?;
    let instance_id = match query.instance_id.filter(|i| !i.is_empty()) {
        Some(id) => {
            check_instance_id(&id)?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    if name.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_WORKFLOW_NAME_MISSING",
            "workflow name is not configured".into(),
        ));
    }
    let request = pb::CreateInstanceRequest {
        instance_id,
        name: name.clone(),
        input: payload(&body),
        ..pb::CreateInstanceRequest::default()
    };
    let instance_id = engine.start_instance(request).await.map_err(|e| {
        internal(
            "ERR_START_WORKFLOW",
            format!("error starting workflow '{name}': {e}"),
        )
    })?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(StartResponse { instance_id }),
    )
        .into_response())
}

/// daprd's `GetWorkflowResponse` as JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkflowJson {
    #[serde(rename = "instanceID")]
    instance_id: String,
    workflow_name: String,
    created_at: String,
    last_updated_at: String,
    runtime_status: String,
    properties: BTreeMap<String, String>,
}

fn rfc3339(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| {
            chrono::DateTime::<chrono::Utc>::from_timestamp(
                t.seconds,
                u32::try_from(t.nanos).unwrap_or(0),
            )
        })
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// `RUNNING`, `COMPLETED`, ... (the proto names without their prefix, as daprd prints them).
pub(crate) fn status_name(status: i32) -> String {
    pb::OrchestrationStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ORCHESTRATION_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| "UNKNOWN".to_owned())
}

fn workflow_json(state: pb::WorkflowState) -> WorkflowJson {
    let mut properties = BTreeMap::new();
    if let Some(input) = state.input {
        properties.insert("dapr.workflow.input".to_owned(), input);
    }
    if let Some(output) = state.output {
        properties.insert("dapr.workflow.output".to_owned(), output);
    }
    if let Some(custom_status) = state.custom_status {
        properties.insert("dapr.workflow.custom_status".to_owned(), custom_status);
    }
    if let Some(failure) = state.failure_details {
        properties.insert(
            "dapr.workflow.failure.error_type".to_owned(),
            failure.error_type,
        );
        properties.insert(
            "dapr.workflow.failure.error_message".to_owned(),
            failure.error_message,
        );
    }
    WorkflowJson {
        instance_id: state.instance_id,
        workflow_name: state.name,
        created_at: rfc3339(state.created_timestamp.as_ref()),
        last_updated_at: rfc3339(state.last_updated_timestamp.as_ref()),
        runtime_status: status_name(state.workflow_status),
        properties,
    }
}

async fn get_instance(
    State(runtime): State<Arc<Runtime>>,
    Path((component, instance)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let engine = engine(&runtime, &component)?;
    let state = engine
        .get_instance(&instance, true)
        .ok_or_else(|| not_found(&instance))?;
    Ok(axum::Json(workflow_json(state)).into_response())
}

/// Maps an engine error of an instance operation: a missing instance is daprd's 404, anything
/// else the operation's own 500.
fn operation_error(
    instance: &str,
    code: &'static str,
    what: &str,
) -> impl FnOnce(EngineError) -> ApiError {
    let instance = instance.to_owned();
    let what = what.to_owned();
    move |error| match error {
        EngineError::NotFound(_) => not_found(&instance),
        other => internal(code, format!("error {what} workflow '{instance}': {other}")),
    }
}

async fn raise_event(
    State(runtime): State<Arc<Runtime>>,
    Path((component, instance, event)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let engine = engine(&runtime, &component)?;
    if event.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_WORKFLOW_EVENT_NAME_MISSING",
            "missing workflow event name".into(),
        ));
    }
    engine
        .raise_event(&instance, &event, payload(&body))
        .await
        .map_err(operation_error(
            &instance,
            "ERR_RAISE_EVENT_WORKFLOW",
            "raising event on",
        ))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
struct RecursiveQuery {
    #[serde(default)]
    non_recursive: Option<bool>,
}

async fn terminate(
    State(runtime): State<Arc<Runtime>>,
    Path((component, instance)): Path<(String, String)>,
    Query(query): Query<RecursiveQuery>,
) -> Result<Response, ApiError> {
    let engine = engine(&runtime, &component)?;
    // daprd terminates child workflows too unless asked not to.
    let recursive = !query.non_recursive.unwrap_or(false);
    engine
        .terminate(&instance, None, recursive)
        .await
        .map_err(operation_error(
            &instance,
            "ERR_TERMINATE_WORKFLOW",
            "terminating",
        ))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn pause(
    State(runtime): State<Arc<Runtime>>,
    Path((component, instance)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let engine = engine(&runtime, &component)?;
    engine
        .suspend(&instance, None)
        .await
        .map_err(operation_error(&instance, "ERR_PAUSE_WORKFLOW", "pausing"))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resume(
    State(runtime): State<Arc<Runtime>>,
    Path((component, instance)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let engine = engine(&runtime, &component)?;
    engine
        .resume(&instance, None)
        .await
        .map_err(operation_error(
            &instance,
            "ERR_RESUME_WORKFLOW",
            "resuming",
        ))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn purge(
    State(runtime): State<Arc<Runtime>>,
    Path((component, instance)): Path<(String, String)>,
    Query(query): Query<RecursiveQuery>,
) -> Result<Response, ApiError> {
    let engine = engine(&runtime, &component)?;
    let recursive = !query.non_recursive.unwrap_or(false);
    let count = engine
        .purge(&instance, recursive)
        .await
        .map_err(operation_error(&instance, "ERR_PURGE_WORKFLOW", "purging"))?;
    if count == 0 {
        return Err(not_found(&instance));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_print_as_daprd_prints_them() {
        assert_eq!(
            status_name(pb::OrchestrationStatus::Running as i32),
            "RUNNING"
        );
        assert_eq!(
            status_name(pb::OrchestrationStatus::ContinuedAsNew as i32),
            "CONTINUED_AS_NEW"
        );
    }

    #[test]
    fn instance_ids_are_checked_as_daprd_checks_them() {
        assert!(check_instance_id("order_1-a").is_ok());
        assert_eq!(
            check_instance_id("a b").map_err(|e| e.code),
            Err("ERR_INSTANCE_ID_INVALID")
        );
        assert_eq!(
            check_instance_id(&"x".repeat(65)).map_err(|e| e.code),
            Err("ERR_INSTANCE_ID_TOO_LONG")
        );
    }

    #[test]
    fn bodies_that_are_not_json_become_json_strings() {
        assert_eq!(
            payload(&Bytes::from_static(b"{\"a\":1}")).as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(
            payload(&Bytes::from_static(b"hello")).as_deref(),
            Some("\"hello\"")
        );
        assert_eq!(payload(&Bytes::new()), None);
    }
}
