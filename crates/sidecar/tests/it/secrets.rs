//! The Secrets API with the local file and environment stores, and Configuration secret scopes.

use serde_json::{Value, json};

use crate::support::{TestSidecar, http, sidecar};

const SECRETS: &str =
    r#"{"db": {"user": "shop", "password": "s3cret"}, "api-key": "k-123", "port": 5432}"#;

fn file_store(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: secrets.json\n{extra}"
    )
}

async fn with_secrets(config: Option<&str>) -> TestSidecar {
    let mut builder = sidecar("orders")
        .file("secrets.json", SECRETS)
        .resource("flat.yaml", file_store("flat", ""))
        .resource(
            "multi.yaml",
            file_store("multi", "  - name: multiValued\n    value: \"true\"\n"),
        );
    if let Some(config) = config {
        builder = builder.config(config);
    }
    builder.start().await
}

async fn get(sidecar: &TestSidecar, path: &str) -> (u16, Value) {
    let response = http().get(sidecar.url(path)).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn nested_secrets_are_flattened_or_grouped() {
    let sidecar = with_secrets(None).await;
    assert_eq!(
        get(&sidecar, "/v1.0/secrets/flat/db:user").await,
        (200, json!({"db:user": "shop"}))
    );
    assert_eq!(
        get(&sidecar, "/v1.0/secrets/flat/port").await,
        (200, json!({"port": "5432"}))
    );
    assert_eq!(
        get(&sidecar, "/v1.0/secrets/multi/db").await,
        (200, json!({"user": "shop", "password": "s3cret"}))
    );
    let (status, bulk) = get(&sidecar, "/v1.0/secrets/multi/bulk").await;
    assert_eq!(status, 200);
    assert_eq!(bulk["api-key"], json!({"api-key": "k-123"}));
    assert_eq!(bulk["db"]["password"], "s3cret");
}

#[tokio::test]
async fn missing_secrets_and_stores_get_daprs_errors() {
    let sidecar = with_secrets(None).await;
    let (status, body) = get(&sidecar, "/v1.0/secrets/flat/nope").await;
    assert_eq!(status, 500);
    assert_eq!(body["errorCode"], "ERR_SECRET_GET");
    let (status, body) = get(&sidecar, "/v1.0/secrets/unknown/x").await;
    assert_eq!(status, 401);
    assert_eq!(body["errorCode"], "ERR_SECRET_STORE_NOT_FOUND");
}

const SCOPED: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: scoped}
spec:
  secrets:
    scopes:
    - storeName: flat
      defaultAccess: allow
      deniedSecrets: ["db:password"]
    - storeName: multi
      defaultAccess: deny
      allowedSecrets: ["api-key"]
"#;

#[tokio::test]
async fn secret_scopes_deny_single_reads_and_filter_bulk_reads() {
    let sidecar = with_secrets(Some(SCOPED)).await;
    let (status, body) = get(&sidecar, "/v1.0/secrets/flat/db:password").await;
    assert_eq!(status, 403);
    assert_eq!(body["errorCode"], "ERR_PERMISSION_DENIED");
    assert_eq!(get(&sidecar, "/v1.0/secrets/flat/db:user").await.0, 200);
    assert_eq!(get(&sidecar, "/v1.0/secrets/multi/db").await.0, 403);
    let (_, bulk) = get(&sidecar, "/v1.0/secrets/multi/bulk").await;
    assert_eq!(bulk, json!({"api-key": {"api-key": "k-123"}}));
}

#[tokio::test]
async fn secrets_are_read_over_grpc_with_the_same_scopes() {
    let sidecar = with_secrets(Some(SCOPED)).await;
    let mut client = sidecar.client().await;
    let secret = client.get_secret("flat", "api-key").await.expect("allowed");
    assert_eq!(
        secret.data.get("api-key").map(String::as_str),
        Some("k-123")
    );
    let denied = client
        .get_secret("flat", "db:password")
        .await
        .expect_err("denied");
    assert!(
        format!("{denied:?}").contains("PermissionDenied"),
        "{denied:?}"
    );
    let bulk = client.get_bulk_secret("multi", None).await.expect("bulk");
    assert_eq!(bulk.data.keys().collect::<Vec<_>>(), vec!["api-key"]);
}

#[tokio::test]
async fn the_env_store_reads_variables_with_its_prefix() {
    // Variables are process-wide; this name is used by no other test.
    let variable = "SIDECAR_SECRETS_TEST_PASSWORD";
    let value = std::env::var(variable).unwrap_or_default();
    let sidecar = sidecar("orders")
        .resource(
            "env.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: env\nspec:\n  type: secretstores.local.env\n  version: v1\n  metadata:\n  - name: prefix\n    value: SIDECAR_SECRETS_TEST_\n",
        )
        .start()
        .await;
    let (status, body) = get(&sidecar, "/v1.0/secrets/env/PASSWORD").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"PASSWORD": value}));
    let (status, body) = get(&sidecar, "/v1.0/secrets/env/DAPR_API_TOKEN").await;
    assert_eq!((status, body), (200, json!({"DAPR_API_TOKEN": ""})));
}

#[tokio::test]
async fn components_resolve_secret_key_refs_through_their_secret_store() {
    let sidecar = sidecar("orders")
        .file("secrets.json", SECRETS)
        .resource("flat.yaml", file_store("flat", ""))
        .resource(
            "state.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    secretKeyRef: {name: api-key}\nauth:\n  secretStore: flat\n",
        )
        .start()
        .await;
    // The connection string came from the secret: the database file is named after it.
    assert!(sidecar.dir.path().join("k-123").exists());
}
