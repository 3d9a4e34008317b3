//! `kit::outbox`: events staged in the transaction of the change they announce, published by
//! the relay once committed, and only then.

use std::time::Duration;

use contracts::{Event as _, ProductAdded, ProductSnapshot};
use kit::dapr::{Dapr, DaprError, StateOperation, Write};
use kit::outbox::Outbox;
use kit::testing::{Events, PUBSUB, STATE_STORE, Stack, Store};
use serde_json::Value;
use uuid::Uuid;

use crate::support;

fn product_added(name: &str) -> ProductAdded {
    ProductAdded {
        product: ProductSnapshot {
            id: Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            price_cents: 120,
            currency: "EUR".into(),
            category: "stationery".into(),
            stock: 1,
        },
    }
}

/// The id the outbox gave the event staged by `operations`.
fn outbox_id(operations: &[StateOperation]) -> String {
    operations
        .iter()
        .find_map(|operation| match operation {
            StateOperation::Upsert { key, .. } => key.strip_prefix("outbox:").map(str::to_owned),
            StateOperation::Delete { .. } => None,
        })
        .expect("the staged event has an entry")
}

/// A stack on `store` observing the products topic, and a client with an outbox.
async fn outbox_on(store: Store) -> (Stack, Events, Dapr, Outbox) {
    let mut stack = Stack::new(store, &[]).await.expect("a stack");
    let events = stack
        .observe(&[contracts::PRODUCTS])
        .await
        .expect("an observer");
    let dapr = support::sidecar(&mut stack, "inventory").await;
    let outbox = Outbox::new(dapr.clone(), STATE_STORE, PUBSUB);
    (stack, events, dapr, outbox)
}

/// Every PRODUCT_ADDED observed so far for the product named `name`.
fn observed(events: &Events, name: &str) -> Vec<Value> {
    events
        .all()
        .into_iter()
        .filter(|e| e["type"] == ProductAdded::TYPE && e["data"]["product"]["name"] == name)
        .collect()
}

/// Stages `event` with a write of `key`, and commits both.
async fn commit_with(
    dapr: &Dapr,
    outbox: &Outbox,
    key: &str,
    event: &ProductAdded,
) -> Result<String, DaprError> {
    let mut operations = vec![StateOperation::upsert(
        key,
        &event.product,
        Write::always(),
    )?];
    let mut staged = outbox.stage(key, event).await?;
    let id = outbox_id(&staged.operations);
    operations.extend(staged.take_operations());
    dapr.transact(STATE_STORE, operations).await?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_event_is_published_once_with_the_outbox_id() {
    for store in Store::ALL {
        let (stack, events, dapr, outbox) = outbox_on(store).await;
        let name = support::unique("pencil-");
        let id = commit_with(&dapr, &outbox, "product", &product_added(&name))
            .await
            .expect("committed");

        let first = outbox.relay().await.expect("relayed");
        let second = outbox.relay().await.expect("relayed");

        assert_eq!((first, second), (1, 0), "{store:?}");
        let event = events
            .wait_for(ProductAdded::TYPE, Duration::from_secs(5), |data| {
                data["product"]["name"] == name.as_str()
            })
            .await
            .expect("published");
        assert_eq!(event["id"], id.as_str(), "{store:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(observed(&events, &name).len(), 1, "{store:?}: once");
        let entry = dapr
            .get_state::<Value>(STATE_STORE, &format!("outbox:{id}"))
            .await
            .expect("a read");
        assert_eq!(entry, None, "{store:?}: removed once published");
        stack.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_staged_in_a_transaction_that_conflicts_is_never_published() {
    let (stack, events, dapr, outbox) = outbox_on(Store::Sqlite).await;
    let name = support::unique("pencil-");
    let event = product_added(&name);
    dapr.save_state(STATE_STORE, "product", &event.product, Write::always())
        .await
        .expect("saved");
    let stale = dapr
        .get_state::<Value>(STATE_STORE, "product")
        .await
        .expect("a read")
        .expect("stored")
        .etag;
    dapr.save_state(STATE_STORE, "product", &event.product, Write::always())
        .await
        .expect("someone else wrote");

    let mut operations = vec![
        StateOperation::upsert("product", &event.product, Write::if_match(stale))
            .expect("an operation"),
    ];
    let mut staged = outbox.stage("product", &event).await.expect("staged");
    operations.extend(staged.take_operations());
    let committed = dapr.transact(STATE_STORE, operations).await;
    drop(staged);
    let relayed = outbox.relay().await.expect("relayed");

    assert!(
        matches!(committed, Err(DaprError::Conflict(_))),
        "{committed:?}"
    );
    assert_eq!(relayed, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(observed(&events, &name).is_empty(), "{:?}", events.all());
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_events_two_replicas_stage_at_once_only_the_first_committed_goes_through() {
    for store in Store::ALL {
        let (stack, events, dapr, outbox) = outbox_on(store).await;
        // Another replica of the app: an outbox of its own on the same store.
        let replica = Outbox::new(dapr.clone(), STATE_STORE, PUBSUB);
        // First with no outbox index yet, then with the one the first relay left.
        for round in ["no index", "an index"] {
            let (first, second) = (support::unique("first-"), support::unique("second-"));
            // Both read the shard's index before either commits.
            let mut staged_first = outbox
                .stage("product", &product_added(&first))
                .await
                .expect("staged");
            let mut staged_second = replica
                .stage("product", &product_added(&second))
                .await
                .expect("staged");

            let second_commit = dapr
                .transact(STATE_STORE, staged_second.take_operations())
                .await;
            let first_commit = dapr
                .transact(STATE_STORE, staged_first.take_operations())
                .await;
            drop((staged_first, staged_second));
            let relayed = outbox.relay().await.expect("relayed");

            assert!(
                second_commit.is_ok(),
                "{store:?}, {round}: {second_commit:?}"
            );
            assert!(
                matches!(first_commit, Err(DaprError::Conflict(_))),
                "{store:?}, {round}: {first_commit:?}"
            );
            assert_eq!(relayed, 1, "{store:?}, {round}");
            events
                .wait_for(ProductAdded::TYPE, Duration::from_secs(5), |data| {
                    data["product"]["name"] == second.as_str()
                })
                .await
                .expect("published");
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(observed(&events, &first).is_empty(), "{store:?}, {round}");
        }
        stack.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_one_replica_take_turns_and_an_entitys_events_keep_their_order() {
    let (stack, events, dapr, outbox) = outbox_on(Store::Sqlite).await;
    let prefix = support::unique("pencil-");
    // Twenty writers at once, all about one product (one shard): in one replica they wait for
    // their turn instead of conflicting.
    let writers: Vec<_> = (0..20)
        .map(|n| {
            let (dapr, outbox) = (dapr.clone(), outbox.clone());
            let name = format!("{prefix}-{n:02}");
            tokio::spawn(async move {
                commit_with(&dapr, &outbox, "product", &product_added(&name)).await
            })
        })
        .collect();
    for writer in writers {
        writer
            .await
            .expect("a writer")
            .expect("committed without a conflict");
    }
    // Then five events of another product, one after the other.
    for n in 0..5 {
        commit_with(
            &dapr,
            &outbox,
            "other",
            &product_added(&format!("{prefix}-order-{n}")),
        )
        .await
        .expect("committed");
    }

    let relayed = outbox.relay().await.expect("relayed");

    assert_eq!(relayed, 25);
    let names = || -> Vec<String> {
        events
            .all()
            .into_iter()
            .filter_map(|e| e["data"]["product"]["name"].as_str().map(str::to_owned))
            .filter(|name| name.starts_with(&format!("{prefix}-order-")))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while names().len() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected: Vec<String> = (0..5).map(|n| format!("{prefix}-order-{n}")).collect();
    assert_eq!(names(), expected, "published in the order committed");
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_by_a_failed_publish_are_published_by_a_later_relay() {
    let (stack, events, dapr, outbox) = outbox_on(Store::Sqlite).await;
    let misconfigured = Outbox::new(dapr.clone(), STATE_STORE, "no-such-pubsub");
    let name = support::unique("pencil-");
    let id = commit_with(&dapr, &misconfigured, "product", &product_added(&name))
        .await
        .expect("committed");

    let failed = misconfigured.relay().await;
    let relayed = outbox.relay().await.expect("relayed");

    assert!(matches!(failed, Err(DaprError::Failed(_))), "{failed:?}");
    assert_eq!(relayed, 1);
    let event = events
        .wait_for(ProductAdded::TYPE, Duration::from_secs(5), |data| {
            data["product"]["name"] == name.as_str()
        })
        .await
        .expect("published");
    assert_eq!(event["id"], id.as_str());
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_relay_publishes_until_stopped() {
    let (stack, events, dapr, outbox) = outbox_on(Store::Memory).await;
    let stop = kit::server::Stop::new();
    let relay = tokio::spawn(
        outbox
            .clone()
            .run(Duration::from_millis(50), stop.clone().cancelled_owned()),
    );
    let name = support::unique("pencil-");

    commit_with(&dapr, &outbox, "product", &product_added(&name))
        .await
        .expect("committed");

    events
        .wait_for(ProductAdded::TYPE, Duration::from_secs(5), |data| {
            data["product"]["name"] == name.as_str()
        })
        .await
        .expect("published without an explicit relay");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), relay)
        .await
        .expect("the relay stops")
        .expect("the relay task");
    stack.shutdown().await.expect("clean shutdown");
}
