//! `kit::dapr`: the state, pub/sub, secrets, bindings and invocation clients, against real local
//! sidecars (state on every store the project ships).

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use kit::dapr::{Dapr, DaprError, StateOperation, Write};
use kit::testing::{PUBSUB, SECRET_STORE, STATE_STORE, Stack, Store};
use reqwest::Method;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{self, TestApp, client, on_every_store, unique};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Basket {
    owner: String,
    items: u32,
}

fn basket(items: u32) -> Basket {
    Basket {
        owner: "ada".into(),
        items,
    }
}

async fn read(dapr: &Dapr, key: &str) -> Option<(Basket, String)> {
    dapr.get_state::<Basket>(STATE_STORE, key)
        .await
        .expect("a read")
        .map(|v| (v.value, v.etag))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_round_trips_with_a_new_etag_on_every_write() {
    on_every_store(|store, dapr| async move {
        let key = unique("basket-");
        assert_eq!(read(&dapr, &key).await, None, "{store:?}: nothing yet");

        dapr.save_state(STATE_STORE, &key, &basket(1), Write::always())
            .await
            .expect("saved");
        let (first, first_etag) = read(&dapr, &key).await.expect("stored");
        dapr.save_state(STATE_STORE, &key, &basket(2), Write::always())
            .await
            .expect("saved again");
        let (second, second_etag) = read(&dapr, &key).await.expect("stored");

        assert_eq!(first, basket(1), "{store:?}");
        assert_eq!(second, basket(2), "{store:?}");
        assert!(!first_etag.is_empty(), "{store:?}: an etag");
        assert_ne!(first_etag, second_etag, "{store:?}: a new etag per write");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_or_delete_at_a_stale_etag_is_a_conflict() {
    on_every_store(|store, dapr| async move {
        let key = unique("basket-");
        dapr.save_state(STATE_STORE, &key, &basket(1), Write::always())
            .await
            .expect("saved");
        let (_, stale) = read(&dapr, &key).await.expect("stored");
        dapr.save_state(STATE_STORE, &key, &basket(2), Write::if_match(&stale))
            .await
            .expect("the etag matches");
        let (_, current) = read(&dapr, &key).await.expect("stored");

        let write = dapr
            .save_state(STATE_STORE, &key, &basket(3), Write::if_match(&stale))
            .await;
        let delete = dapr.delete_state(STATE_STORE, &key, Some(&stale)).await;

        assert!(
            matches!(write, Err(DaprError::Conflict(_))),
            "{store:?}: {write:?}"
        );
        assert!(
            matches!(delete, Err(DaprError::Conflict(_))),
            "{store:?}: {delete:?}"
        );
        assert_eq!(
            read(&dapr, &key).await.map(|v| v.0),
            Some(basket(2)),
            "{store:?}"
        );
        dapr.delete_state(STATE_STORE, &key, Some(&current))
            .await
            .expect("the etag matches");
        assert_eq!(read(&dapr, &key).await, None, "{store:?}: deleted");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_only_write_fails_when_the_key_exists() {
    on_every_store(|store, dapr| async move {
        let key = unique("basket-");

        dapr.save_state(STATE_STORE, &key, &basket(1), Write::create_only())
            .await
            .expect("a new key");
        let again = dapr
            .save_state(STATE_STORE, &key, &basket(2), Write::create_only())
            .await;

        assert!(
            matches!(again, Err(DaprError::Conflict(_))),
            "{store:?}: {again:?}"
        );
        assert_eq!(
            read(&dapr, &key).await.map(|v| v.0),
            Some(basket(1)),
            "{store:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_with_a_ttl_expires() {
    on_every_store(|store, dapr| async move {
        let key = unique("basket-");

        dapr.save_state(
            STATE_STORE,
            &key,
            &basket(1),
            Write::always().with_ttl(Duration::from_secs(1)),
        )
        .await
        .expect("saved");

        assert!(
            read(&dapr, &key).await.is_some(),
            "{store:?}: there at first"
        );
        let gone = support::eventually(Duration::from_secs(5), || async {
            read(&dapr, &key).await.is_none().then_some(())
        })
        .await;
        assert!(gone.is_some(), "{store:?}: expired");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reads_answer_in_the_order_asked_with_none_for_missing_keys() {
    on_every_store(|store, dapr| async move {
        let (a, b, missing) = (unique("a-"), unique("b-"), unique("missing-"));
        for (key, items) in [(&a, 1), (&b, 2)] {
            dapr.save_state(STATE_STORE, key, &basket(items), Write::always())
                .await
                .expect("saved");
        }
        let (_, b_etag) = read(&dapr, &b).await.expect("stored");

        let found = dapr
            .get_bulk_state::<Basket>(STATE_STORE, &[b.clone(), missing, a.clone()])
            .await
            .expect("a bulk read");
        let none = dapr
            .get_bulk_state::<Basket>(STATE_STORE, &[])
            .await
            .expect("nothing to read");

        let values: Vec<Option<u32>> = found
            .iter()
            .map(|v| v.as_ref().map(|v| v.value.items))
            .collect();
        assert_eq!(values, [Some(2), None, Some(1)], "{store:?}");
        assert_eq!(
            found[0].as_ref().map(|v| v.etag.as_str()),
            Some(b_etag.as_str()),
            "{store:?}"
        );
        assert!(none.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_of_another_shape_is_corrupt() {
    let (stack, dapr) = client(Store::Memory, "state-client").await;
    dapr.save_state(
        STATE_STORE,
        "basket",
        &json!(["not", "a", "basket"]),
        Write::always(),
    )
    .await
    .expect("saved");

    let read = dapr.get_state::<Basket>(STATE_STORE, "basket").await;

    assert!(matches!(read, Err(DaprError::Corrupt(_))), "{read:?}");
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_applies_every_operation_or_none() {
    on_every_store(|store, dapr| async move {
        let (kept, removed, added) = (unique("kept-"), unique("removed-"), unique("added-"));
        for key in [&kept, &removed] {
            dapr.save_state(STATE_STORE, key, &basket(1), Write::always())
                .await
                .expect("saved");
        }
        let (_, kept_etag) = read(&dapr, &kept).await.expect("stored");
        let (_, removed_etag) = read(&dapr, &removed).await.expect("stored");

        dapr.transact(
            STATE_STORE,
            vec![
                StateOperation::upsert(&kept, &basket(10), Write::if_match(&kept_etag))
                    .expect("an operation"),
                StateOperation::Delete {
                    key: removed.clone(),
                    etag: Some(removed_etag),
                },
            ],
        )
        .await
        .expect("committed");
        assert_eq!(
            read(&dapr, &kept).await.map(|v| v.0),
            Some(basket(10)),
            "{store:?}"
        );
        assert_eq!(read(&dapr, &removed).await, None, "{store:?}");

        // `kept_etag` is stale now: nothing of this transaction may happen.
        for stale in [
            StateOperation::upsert(&kept, &basket(11), Write::if_match(&kept_etag))
                .expect("an operation"),
            StateOperation::Delete {
                key: kept.clone(),
                etag: Some(kept_etag.clone()),
            },
            StateOperation::upsert(&kept, &basket(12), Write::create_only()).expect("an operation"),
        ] {
            let result = dapr
                .transact(
                    STATE_STORE,
                    vec![
                        StateOperation::upsert(&added, &basket(3), Write::always())
                            .expect("an operation"),
                        stale.clone(),
                    ],
                )
                .await;

            assert!(
                matches!(result, Err(DaprError::Conflict(_))),
                "{store:?}: {stale:?} gave {result:?}"
            );
            assert_eq!(read(&dapr, &added).await, None, "{store:?}: {stale:?}");
            assert_eq!(
                read(&dapr, &kept).await.map(|v| v.0),
                Some(basket(10)),
                "{store:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_store_is_a_failure_not_a_conflict() {
    let (stack, dapr) = client(Store::Memory, "state-client").await;

    let read = dapr.get_state::<Basket>("no-such-store", "basket").await;
    let write = dapr
        .save_state("no-such-store", "basket", &basket(1), Write::always())
        .await;

    assert!(matches!(read, Err(DaprError::Failed(_))), "{read:?}");
    assert!(matches!(write, Err(DaprError::Failed(_))), "{write:?}");
    stack.shutdown().await.expect("clean shutdown");
}

fn user_registered() -> contracts::UserRegistered {
    contracts::UserRegistered {
        user_id: uuid::Uuid::new_v4(),
        email: "ada@shop.test".into(),
        name: "Ada".into(),
        registered_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_published_as_a_cloudevent_of_its_contract_type() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let events = stack
        .observe(&[contracts::USERS])
        .await
        .expect("an observer");
    let dapr = support::sidecar(&mut stack, "publisher").await;
    let event = user_registered();

    dapr.publish(PUBSUB, &event).await.expect("published");

    let received = events
        .wait_for("shop.user.registered.v1", Duration::from_secs(5), |_| true)
        .await
        .expect("delivered");
    assert_eq!(
        received["data"],
        serde_json::to_value(&event).expect("JSON")
    );
    assert_eq!(received["datacontenttype"], "application/json");
    assert_eq!(received["source"], "publisher");
    assert_eq!(received["topic"], "users");
    assert_eq!(received["pubsubname"], PUBSUB);
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_publishing_sets_the_cloudevent_attributes_given() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let events = stack.observe(&["audit"]).await.expect("an observer");
    let dapr = support::sidecar(&mut stack, "publisher").await;

    dapr.publish_raw(
        PUBSUB,
        "audit",
        &json!({"action": "login"}),
        HashMap::from([
            ("cloudevent.type".to_owned(), "shop.audit.v1".to_owned()),
            ("cloudevent.id".to_owned(), "audit-1".to_owned()),
        ]),
    )
    .await
    .expect("published");

    let received = events
        .wait_for("shop.audit.v1", Duration::from_secs(5), |_| true)
        .await
        .expect("delivered");
    assert_eq!(received["id"], "audit-1");
    assert_eq!(received["data"], json!({"action": "login"}));
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_an_unknown_pubsub_fails() {
    let (stack, dapr) = client(Store::Memory, "publisher").await;

    let result = dapr.publish("no-such-pubsub", &user_registered()).await;

    assert!(matches!(result, Err(DaprError::Failed(_))), "{result:?}");
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_from_the_secret_store() {
    let mut stack = Stack::new(Store::Memory, &[("db-password", "hunter2")])
        .await
        .expect("a stack");
    let dapr = support::sidecar(&mut stack, "secret-reader").await;

    let secret = dapr
        .secret(SECRET_STORE, "db-password")
        .await
        .expect("a secret");
    let missing = dapr.secret(SECRET_STORE, "no-such-secret").await;

    assert_eq!(
        secret,
        HashMap::from([("db-password".to_owned(), "hunter2".to_owned())])
    );
    assert!(matches!(missing, Err(DaprError::Failed(_))), "{missing:?}");
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_binding_is_invoked_with_its_operation_data_and_metadata() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    stack
        .add_component(
            "files",
            "bindings.localstorage",
            &[("rootPath", "files".into())],
        )
        .expect("a binding");
    let dapr = support::sidecar(&mut stack, "archiver").await;
    let file = HashMap::from([("fileName".to_owned(), "receipts/1.json".to_owned())]);
    let receipt = br#"{"order":1,"total_cents":1250}"#.to_vec();

    dapr.invoke_binding("files", "create", receipt.clone(), file.clone())
        .await
        .expect("created");
    let read_back = dapr
        .invoke_binding("files", "get", Vec::new(), file)
        .await
        .expect("read");
    let unknown = dapr
        .invoke_binding("no-such-binding", "get", Vec::new(), HashMap::new())
        .await;

    assert_eq!(read_back, receipt);
    assert_eq!(
        std::fs::read(stack.dir().join("files/receipts/1.json")).expect("the file"),
        receipt
    );
    assert!(matches!(unknown, Err(DaprError::Failed(_))), "{unknown:?}");
    stack.shutdown().await.expect("clean shutdown");
}

/// What an invoked app saw: caller, path parameter, query and body.
fn echo() -> Router {
    Router::new()
        .route(
            "/echo/{name}",
            get(
                |Path(name): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap| async move {
                    axum::Json(json!({
                        "name": name,
                        "query": query,
                        "caller": headers.get("dapr-caller-app-id").and_then(|v| v.to_str().ok()),
                    }))
                },
            ),
        )
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/moved",
            get(|| async {
                (StatusCode::FOUND, [("location", "/echo/elsewhere")]).into_response()
            }),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_reaches_the_app_through_both_sidecars() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let (bound, settings) = stack.bind("echo").await.expect("a sidecar");
    stack
        .run(bound, Box::new(TestApp::new(echo(), &settings).await))
        .await
        .expect("the app runs");
    let dapr = support::sidecar(&mut stack, "shop-caller").await;

    let got = dapr
        .invoke(Method::GET, "echo", "/echo/pencil?colour=red")
        .send()
        .await
        .expect("a response");
    let posted = dapr
        .invoke(Method::POST, "echo", "echo")
        .body("a body")
        .send()
        .await
        .expect("a response");
    let moved = dapr
        .invoke(Method::GET, "echo", "/moved")
        .send()
        .await
        .expect("a response");
    let unknown = dapr
        .invoke(Method::GET, "no-such-app", "/echo/x")
        .send()
        .await
        .expect("a response");

    assert_eq!(got.status(), 200);
    assert_eq!(
        got.json::<serde_json::Value>().await.expect("JSON"),
        json!({"name": "pencil", "query": "colour=red", "caller": "shop-caller"})
    );
    assert_eq!(posted.text().await.expect("a body"), "a body");
    // The app's redirect is its answer, for whoever called: not followed.
    assert_eq!(moved.status(), 302);
    assert_eq!(moved.headers()["location"], "/echo/elsewhere");
    assert!(unknown.status().is_client_error() || unknown.status().is_server_error());
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_carries_the_dapr_api_token() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let (bound, settings) = stack.bind("echo").await.expect("a sidecar");
    stack
        .run(bound, Box::new(TestApp::new(echo(), &settings).await))
        .await
        .expect("the app runs");
    let token = SecretString::from(unique("api-token-"));
    let (bound, with_token) = stack
        .bind_with("guarded", |options| options.api_token = Some(token))
        .await
        .expect("a sidecar");
    stack.start(bound).await.expect("the sidecar starts");
    let without_token = kit::settings::DaprSettings {
        api_token: None,
        ..with_token.clone()
    };
    let dapr = Dapr::new(&with_token).expect("a client");
    let stranger = Dapr::new(&without_token).expect("a client");
    dapr.wait_until_ready(Duration::from_secs(10))
        .await
        .expect("the sidecar answers");

    let saved = dapr
        .save_state(STATE_STORE, "basket", &basket(1), Write::always())
        .await;
    let invoked = dapr
        .invoke(Method::GET, "echo", "/echo/pencil")
        .send()
        .await
        .expect("a response");
    let refused_state = stranger.get_state::<Basket>(STATE_STORE, "basket").await;
    let refused_invoke = stranger
        .invoke(Method::GET, "echo", "/echo/pencil")
        .send()
        .await
        .expect("a response");

    assert!(saved.is_ok(), "{saved:?}");
    assert_eq!(invoked.status(), 200);
    assert!(
        matches!(&refused_state, Err(DaprError::Failed(m)) if m.contains("Unauthenticated")),
        "{refused_state:?}"
    );
    assert_eq!(refused_invoke.status(), 401);
    stack.shutdown().await.expect("clean shutdown");
}
