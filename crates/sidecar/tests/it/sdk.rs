//! The official Dapr SDKs for Python and JavaScript, run against the sidecar.
//!
//! `.ci/run` installs the pinned SDKs and points `SIDECAR_SDK_PYTHON` (an interpreter with the
//! `dapr` package) and `SIDECAR_SDK_NODE` (a directory whose `node_modules` holds `@dapr/dapr`)
//! at them. Without those variables the tests are skipped locally, and fail under `CI`.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use serde_json::json;
use sidecar::Topology;

use crate::support::{TestSidecar, serve, sidecar};

const SECRETS: &str = r#"{"api-key": "k-123"}"#;

/// An `echo` app and a sidecar (`sdk-client`) with a state store and a secret store.
async fn topology() -> (TestSidecar, TestSidecar) {
    let echo = Router::new().fallback(any(|request: Request| async move {
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let body = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        axum::Json(json!({"method": method, "uri": uri, "body": String::from_utf8_lossy(&body)}))
    }));
    let topology = Topology::in_process();
    let port = serve(echo).await;
    let echo = sidecar("echo")
        .topology(&topology)
        .app_port(port)
        .start()
        .await;
    let client = sidecar("sdk-client")
        .topology(&topology)
        .memory_store("statestore")
        .file("secrets.json", SECRETS)
        .resource(
            "secrets.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: secretstore\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: secrets.json\n",
        )
        .start()
        .await;
    (client, echo)
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// The configured tool, or `None` (skip) outside CI.
fn configured(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{variable} must be set under CI (.ci/run sets it)")
        }
        _ => {
            eprintln!("skipped: {variable} is not set; run .ci/run to install the SDKs");
            None
        }
    }
}

async fn run(mut command: tokio::process::Command, sidecar: &TestSidecar) {
    let ports = sidecar.sidecar.ports();
    let output = command
        .env("DAPR_HTTP_PORT", ports.http.to_string())
        .env("DAPR_GRPC_PORT", ports.grpc.to_string())
        .env("EXPECTED_APP_ID", "sdk-client")
        .env_remove("DAPR_API_TOKEN")
        .env_remove("DAPR_GRPC_ENDPOINT")
        .env_remove("DAPR_HTTP_ENDPOINT")
        .output()
        .await
        .expect("the SDK script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(": ok"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_works_against_the_sidecar() {
    let Some(python) = configured("SIDECAR_SDK_PYTHON") else {
        return;
    };
    let (client, _echo) = topology().await;
    let mut command = tokio::process::Command::new(python);
    command.arg(sdk_dir().join("python_sdk.py"));
    run(command, &client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_works_against_the_sidecar() {
    let Some(node_dir) = configured("SIDECAR_SDK_NODE") else {
        return;
    };
    let (client, _echo) = topology().await;
    // ES modules resolve packages from the script's own directory upwards.
    let script = Path::new(&node_dir).join("js_sdk.mjs");
    std::fs::copy(sdk_dir().join("js_sdk.mjs"), &script)
        .expect("copy the script next to node_modules");
    let mut command = tokio::process::Command::new("node");
    command.arg(&script);
    run(command, &client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_workflow_sdk_runs_workflows_on_the_sidecar() {
    let Some(python) = configured("SIDECAR_SDK_PYTHON") else {
        return;
    };
    let client = sidecar("sdk-client")
        .resource(
            "workflowstore.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: workflowstore\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: workflows.db\n  - name: actorStateStore\n    value: \"true\"\n",
        )
        .start()
        .await;
    let mut command = tokio::process::Command::new(python);
    command.arg(sdk_dir().join("python_workflow.py"));
    run(command, &client).await;
}
