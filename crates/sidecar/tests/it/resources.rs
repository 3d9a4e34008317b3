//! Start-up fails, naming the file, the resource and the field, for every broken resource.

use crate::support::sidecar;

async fn start_error(file: &str, yaml: &str) -> String {
    match sidecar("orders").resource(file, yaml).try_start().await {
        Ok(_) => panic!("{file} should not load"),
        Err(error) => format!("{error:#}"),
    }
}

fn component(spec: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn invalid_yaml_names_the_file() {
    let error = start_error(
        "broken.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: [Component\n",
    )
    .await;
    assert!(error.contains("broken.yaml"), "{error}");
    assert!(error.contains("invalid YAML"), "{error}");
}

#[tokio::test]
async fn an_unknown_component_type_names_the_resource_and_field() {
    let error = start_error(
        "state.yaml",
        &component("  type: state.cassandra\n  version: v1\n"),
    )
    .await;
    assert!(error.contains("state.yaml"), "{error}");
    assert!(error.contains("Component/statestore"), "{error}");
    assert!(error.contains("spec.type"), "{error}");
    assert!(error.contains("state.cassandra"), "{error}");
}

#[tokio::test]
async fn a_missing_required_metadata_field_is_named() {
    let error = start_error(
        "state.yaml",
        &component("  type: state.sqlite\n  version: v1\n  metadata: []\n"),
    )
    .await;
    assert!(error.contains("Component/statestore"), "{error}");
    assert!(error.contains("spec.metadata.connectionString"), "{error}");
    assert!(error.contains("required"), "{error}");
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_named() {
    let error = start_error(
        "state.yaml",
        &component("  type: state.in-memory\n  version: v1\n  metadata: {a: 1}\n"),
    )
    .await;
    assert!(error.contains("spec.metadata"), "{error}");
}

#[tokio::test]
async fn a_postgres_store_without_version_v2_is_refused_with_the_reason() {
    let error = start_error(
        "pg.yaml",
        &component("  type: state.postgresql\n  metadata:\n  - name: connectionString\n    value: host=127.0.0.1 user=postgres\n"),
    )
    .await;
    assert!(error.contains("spec.version"), "{error}");
    assert!(error.contains("v2"), "{error}");
}

#[tokio::test]
async fn a_secret_ref_to_a_missing_store_is_named() {
    let error = start_error(
        "state.yaml",
        &format!(
            "{}auth:\n  secretStore: vault\n",
            component("  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    secretKeyRef: {name: db}\n")
        ),
    )
    .await;
    assert!(error.contains("auth.secretStore"), "{error}");
    assert!(error.contains("vault"), "{error}");
}

#[tokio::test]
async fn two_components_with_one_name_are_refused() {
    let yaml = component("  type: state.in-memory\n  version: v1\n");
    let result = sidecar("orders")
        .resource("a.yaml", yaml.clone())
        .resource("b.yaml", yaml)
        .try_start()
        .await;
    let error = format!("{:#}", result.err().expect("duplicate names are refused"));
    assert!(
        error.contains("b.yaml") && error.contains("a.yaml"),
        "{error}"
    );
    assert!(error.contains("metadata.name"), "{error}");
}

#[tokio::test]
async fn an_unreachable_store_fails_start_up_unless_errors_are_ignored() {
    let unreachable = "  type: state.redis\n  version: v1\n  initTimeout: 3s\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:1\n";
    let error = start_error("cache.yaml", &component(unreachable)).await;
    assert!(error.contains("Component/statestore"), "{error}");
    let tolerant = component(&format!("{unreachable}  ignoreErrors: true\n"));
    let started = sidecar("orders")
        .resource("cache.yaml", tolerant)
        .try_start()
        .await;
    assert!(
        started.is_ok(),
        "ignoreErrors lets the sidecar start without the component"
    );
}

#[tokio::test]
async fn resources_scoped_to_other_apps_and_other_documents_are_skipped() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: unrelated}}\n---\n{}scopes: [inventory]\n---\n",
        component("  type: state.cassandra\n  version: v1\n")
    );
    let started = sidecar("orders")
        .resource("mixed.yaml", yaml)
        .try_start()
        .await;
    assert!(
        started.is_ok(),
        "the unknown type is scoped to another app and never loaded"
    );
}

#[tokio::test]
async fn a_bad_resiliency_policy_and_a_bad_subscription_are_named() {
    let resiliency = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n  policies:\n    retries:\n      r1: {policy: sometimes}\n";
    let error = start_error("resiliency.yaml", resiliency).await;
    assert!(error.contains("Resiliency/r"), "{error}");
    assert!(error.contains("spec.policies.retries.r1.policy"), "{error}");

    let subscription = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec:\n  pubsubname: pubsub\n  topic: orders\n";
    let error = start_error("sub.yaml", subscription).await;
    assert!(error.contains("Subscription/s"), "{error}");
    assert!(error.contains("spec.routes"), "{error}");
}

#[tokio::test]
async fn a_bad_configuration_is_named() {
    let result = sidecar("orders")
        .config("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  tracing: {samplingRate: often}\n")
        .try_start()
        .await;
    let error = format!("{:#}", result.err().expect("refused"));
    assert!(error.contains("Configuration/c"), "{error}");
    assert!(error.contains("spec.tracing.samplingRate"), "{error}");
}
