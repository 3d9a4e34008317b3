//! The State API over HTTP and over gRPC (through the official `dapr` crate), with daprd's status
//! codes and error bodies.

use std::collections::HashMap;

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use serde_json::{Value, json};

use crate::support::{TestSidecar, http, sidecar};

async fn with_store() -> TestSidecar {
    sidecar("orders").memory_store("statestore").start().await
}

async fn save(sidecar: &TestSidecar, body: Value) -> reqwest::Response {
    http()
        .post(sidecar.url("/v1.0/state/statestore"))
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn error_body(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON error body")
}

#[tokio::test]
async fn a_saved_value_is_read_back_with_its_etag_and_a_missing_key_is_204() {
    let sidecar = with_store().await;
    let response = save(
        &sidecar,
        json!([{"key": "order-1", "value": {"total": 42, "items": ["a"]}}]),
    )
    .await;
    assert_eq!(response.status(), 204);

    let response = http()
        .get(sidecar.url("/v1.0/state/statestore/order-1"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("etag"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"items": ["a"], "total": 42}));

    let missing = http()
        .get(sidecar.url("/v1.0/state/statestore/none"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 204);
    assert!(missing.bytes().await.expect("body").is_empty());
}

fn sqlite_component(name: &str, key_prefix: Option<&str>) -> String {
    let prefix = key_prefix
        .map(|p| format!("  - name: keyPrefix\n    value: {p}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: {name}.db\n{prefix}"
    )
}

#[tokio::test]
async fn keys_are_stored_with_the_prefix_the_component_asks_for() {
    let sidecar = sidecar("orders")
        .resource("a.yaml", sqlite_component("byapp", None))
        .resource("b.yaml", sqlite_component("byname", Some("name")))
        .resource("c.yaml", sqlite_component("bare", Some("none")))
        .resource("d.yaml", sqlite_component("literal", Some("Shared")))
        .start()
        .await;
    for (store, expected) in [
        ("byapp", "orders||k"),
        ("byname", "byname||k"),
        ("bare", "k"),
        ("literal", "shared||k"),
    ] {
        let response = http()
            .post(sidecar.url(&format!("/v1.0/state/{store}")))
            .json(&json!([{"key": "k", "value": 1}]))
            .send()
            .await
            .expect("save");
        assert_eq!(response.status(), 204);
        let db = rusqlite::Connection::open(sidecar.dir.path().join(format!("{store}.db")))
            .expect("open db");
        let key: String = db
            .query_row("SELECT key FROM state", [], |row| row.get(0))
            .expect("one row");
        assert_eq!(key, expected, "{store}");
    }
}

#[tokio::test]
async fn a_stale_etag_is_409_and_a_malformed_body_is_400() {
    let sidecar = with_store().await;
    save(&sidecar, json!([{"key": "k", "value": 1}])).await;
    let etag = http()
        .get(sidecar.url("/v1.0/state/statestore/k"))
        .send()
        .await
        .expect("get")
        .headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        save(&sidecar, json!([{"key": "k", "value": 2, "etag": etag}]))
            .await
            .status(),
        204
    );
    let stale = save(&sidecar, json!([{"key": "k", "value": 3, "etag": etag}])).await;
    assert_eq!(stale.status(), 409);
    assert_eq!(error_body(stale).await["errorCode"], "ERR_STATE_SAVE");

    let malformed = http()
        .post(sidecar.url("/v1.0/state/statestore"))
        .body("[{\"key\": ")
        .send()
        .await
        .expect("post");
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        error_body(malformed).await["errorCode"],
        "ERR_MALFORMED_REQUEST"
    );

    let no_key = save(&sidecar, json!([{"value": 1}])).await;
    assert_eq!(no_key.status(), 400);
}

#[tokio::test]
async fn first_write_refuses_to_overwrite_and_delete_honours_if_match() {
    let sidecar = with_store().await;
    let first = json!([{"key": "k", "value": 1, "options": {"concurrency": "first-write"}}]);
    assert_eq!(save(&sidecar, first.clone()).await.status(), 204);
    assert_eq!(save(&sidecar, first).await.status(), 409);

    let stale = http()
        .delete(sidecar.url("/v1.0/state/statestore/k"))
        .header("If-Match", "00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .expect("delete");
    assert_eq!(stale.status(), 409);
    assert_eq!(error_body(stale).await["errorCode"], "ERR_STATE_DELETE");
    let deleted = http()
        .delete(sidecar.url("/v1.0/state/statestore/k"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
}

#[tokio::test]
async fn unknown_stores_and_illegal_keys_get_daprs_errors() {
    let sidecar = with_store().await;
    let response = http()
        .get(sidecar.url("/v1.0/state/nope/k"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 400);
    let body = error_body(response).await;
    assert_eq!(body["errorCode"], "ERR_STATE_STORE_NOT_FOUND");
    assert_eq!(body["message"], "state store nope is not found");
    assert_eq!(body["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");

    let illegal = save(&sidecar, json!([{"key": "a||b", "value": 1}])).await;
    assert_eq!(illegal.status(), 400);
    assert_eq!(
        error_body(illegal).await["errorCode"],
        "ERR_MALFORMED_REQUEST"
    );

    let none = sidecar::Sidecar::start(
        sidecar::SidecarOptions::new("bare"),
        &sidecar::Topology::in_process(),
    )
    .await
    .expect("starts");
    let response = http()
        .get(format!(
            "http://127.0.0.1:{}/v1.0/state/any/k",
            none.http_port()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 500);
    assert_eq!(
        error_body(response).await["errorCode"],
        "ERR_STATE_STORE_NOT_CONFIGURED"
    );
}

#[tokio::test]
async fn ttl_is_reported_and_enforced() {
    let sidecar = with_store().await;
    let response = save(
        &sidecar,
        json!([{"key": "k", "value": 1, "metadata": {"ttlInSeconds": "1"}}]),
    )
    .await;
    assert_eq!(response.status(), 204);
    let response = http()
        .get(sidecar.url("/v1.0/state/statestore/k"))
        .send()
        .await
        .expect("get");
    let expiry = response.headers()["metadata.ttlexpiretime"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&expiry).is_ok(),
        "{expiry}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let response = http()
        .get(sidecar.url("/v1.0/state/statestore/k"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 204);

    let bad = save(
        &sidecar,
        json!([{"key": "k", "value": 1, "metadata": {"ttlInSeconds": "soon"}}]),
    )
    .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn bulk_get_returns_data_etag_and_the_unprefixed_key() {
    let sidecar = with_store().await;
    save(
        &sidecar,
        json!([{"key": "a", "value": {"n": 1}}, {"key": "b", "value": "two"}]),
    )
    .await;
    let response = http()
        .post(sidecar.url("/v1.0/state/statestore/bulk"))
        .json(&json!({"keys": ["a", "missing", "b"], "parallelism": 2}))
        .send()
        .await
        .expect("bulk");
    assert_eq!(response.status(), 200);
    let items: Vec<Value> = response.json().await.expect("json");
    assert_eq!(items[0]["key"], "a");
    assert_eq!(items[0]["data"], json!({"n": 1}));
    assert!(items[0]["etag"].is_string());
    assert_eq!(items[1], json!({"key": "missing"}));
    assert_eq!(items[2]["data"], "two");
}

#[tokio::test]
async fn a_transaction_is_all_or_nothing_and_its_failures_are_500() {
    let sidecar = with_store().await;
    save(&sidecar, json!([{"key": "gone", "value": 1}])).await;
    let response = http()
        .post(sidecar.url("/v1.0/state/statestore/transaction"))
        .json(&json!({"operations": [
            {"operation": "upsert", "request": {"key": "new", "value": "x"}},
            {"operation": "delete", "request": {"key": "gone"}},
        ]}))
        .send()
        .await
        .expect("transaction");
    assert_eq!(response.status(), 204);
    let gone = http()
        .get(sidecar.url("/v1.0/state/statestore/gone"))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), 204);

    let failing = http()
        .post(sidecar.url("/v1.0/state/statestore/transaction"))
        .json(&json!({"operations": [
            {"operation": "upsert", "request": {"key": "other", "value": "y"}},
            {"operation": "upsert", "request": {"key": "new", "value": "z", "etag": "stale"}},
        ]}))
        .send()
        .await
        .expect("transaction");
    assert_eq!(failing.status(), 500);
    assert_eq!(
        error_body(failing).await["errorCode"],
        "ERR_STATE_TRANSACTION"
    );
    let other = http()
        .get(sidecar.url("/v1.0/state/statestore/other"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        other.status(),
        204,
        "nothing of the failed transaction was applied"
    );

    let unknown = http()
        .post(sidecar.url("/v1.0/state/statestore/transaction"))
        .json(&json!({"operations": [{"operation": "merge", "request": {"key": "x"}}]}))
        .send()
        .await
        .expect("transaction");
    assert_eq!(unknown.status(), 400);
    assert_eq!(
        error_body(unknown).await["errorCode"],
        "ERR_NOT_SUPPORTED_STATE_OPERATION"
    );
}

#[tokio::test]
async fn the_dapr_crate_saves_reads_and_deletes_state_over_grpc() {
    let sidecar = with_store().await;
    let mut client = sidecar.client().await;
    client
        .save_state("statestore", "k", b"raw bytes".to_vec(), None, None, None)
        .await
        .expect("save");
    let item = client
        .get_state("statestore", "k", None)
        .await
        .expect("get");
    assert_eq!(item.data, b"raw bytes");
    assert!(!item.etag.is_empty());

    let stale = client
        .save_state(
            "statestore",
            "k",
            b"again".to_vec(),
            Some(common::Etag {
                value: "stale".into(),
            }),
            None,
            None,
        )
        .await
        .expect_err("stale etag");
    assert!(format!("{stale:?}").contains("Aborted"), "{stale:?}");

    client
        .delete_state("statestore", "k", None)
        .await
        .expect("delete");
    let item = client
        .get_state("statestore", "k", None)
        .await
        .expect("get");
    assert!(item.data.is_empty());

    let unknown = client
        .get_state("nope", "k", None)
        .await
        .expect_err("unknown store");
    assert!(
        format!("{unknown:?}").contains("InvalidArgument"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn json_saved_over_grpc_reads_back_as_json_over_http() {
    let sidecar = with_store().await;
    let mut raw = sidecar.raw_client().await;
    raw.save_state(pb::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![common::StateItem {
            key: "k".into(),
            value: br#"{ "b": 1, "a": 2 }"#.to_vec(),
            metadata: HashMap::from([("contentType".to_owned(), "application/json".to_owned())]),
            ..Default::default()
        }],
    })
    .await
    .expect("save");
    let body = http()
        .get(sidecar.url("/v1.0/state/statestore/k"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert_eq!(body, r#"{"a":2,"b":1}"#);
}

#[tokio::test]
async fn bulk_get_and_transactions_work_through_the_raw_grpc_client() {
    let sidecar = with_store().await;
    let mut raw = sidecar.raw_client().await;
    let upsert = |key: &str, value: &[u8]| pb::TransactionalStateOperation {
        operation_type: "upsert".into(),
        request: Some(common::StateItem {
            key: key.into(),
            value: value.to_vec(),
            ..Default::default()
        }),
    };
    raw.execute_state_transaction(pb::ExecuteStateTransactionRequest {
        store_name: "statestore".into(),
        operations: vec![upsert("a", b"1"), upsert("b", b"2")],
        metadata: HashMap::new(),
    })
    .await
    .expect("transaction");
    let items = raw
        .get_bulk_state(pb::GetBulkStateRequest {
            store_name: "statestore".into(),
            keys: vec!["a".into(), "b".into(), "c".into()],
            parallelism: 0,
            metadata: HashMap::new(),
        })
        .await
        .expect("bulk")
        .into_inner()
        .items;
    let found: Vec<(String, Vec<u8>)> = items.into_iter().map(|i| (i.key, i.data)).collect();
    assert_eq!(
        found,
        vec![
            ("a".into(), b"1".to_vec()),
            ("b".into(), b"2".to_vec()),
            ("c".into(), vec![])
        ]
    );
}

#[tokio::test]
async fn the_state_api_works_on_postgres_and_redis_components_too() {
    let database = crate::support::TestDatabase::create().await;
    let app = crate::support::unique("api");
    let _redis = crate::support::RedisKeys {
        prefix: format!("{app}||"),
    };
    let sidecar = sidecar(&app)
        .resource(
            "pg.yaml",
            format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pg\nspec:\n  type: state.postgresql\n  version: v2\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n",
                database.connection_string()
            ),
        )
        .resource(
            "redis.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cache\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:6379\n",
        )
        .start()
        .await;
    for store in ["pg", "cache"] {
        let response = http()
            .post(sidecar.url(&format!("/v1.0/state/{store}")))
            .json(&json!([{"key": "k", "value": {"store": store}}]))
            .send()
            .await
            .expect("save");
        assert_eq!(response.status(), 204, "{store}");
        let body: Value = http()
            .get(sidecar.url(&format!("/v1.0/state/{store}/k")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(body, json!({"store": store}));
    }
}
