//! One conformance suite, run against every state store: in-memory, SQLite, and the real local
//! PostgreSQL and Redis. Each test has its own data space (database, key prefix, or file).

use std::time::Duration;

use bytes::Bytes;
use sidecar::state::{Concurrency, DeleteRequest, Operation, SetRequest, StateError};

use crate::support::TestStore;

fn key(store: &TestStore, name: &str) -> String {
    format!("{}||{name}", store.prefix)
}

fn set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.to_owned(),
        value: Bytes::from(value.to_owned()),
        etag: None,
        concurrency: Concurrency::LastWrite,
        ttl: None,
    }
}

fn delete(key: &str) -> DeleteRequest {
    DeleteRequest {
        key: key.to_owned(),
        etag: None,
        concurrency: Concurrency::LastWrite,
    }
}

async fn value(store: &TestStore, key: &str) -> Option<Bytes> {
    store
        .store
        .get(key)
        .await
        .expect("get works")
        .map(|item| item.value)
}

pub(crate) async fn a_missing_key_reads_as_none(store: TestStore) {
    assert_eq!(
        store
            .store
            .get(&key(&store, "nothing"))
            .await
            .expect("get works"),
        None
    );
}

pub(crate) async fn a_saved_value_reads_back_with_an_etag(store: TestStore) {
    let k = key(&store, "a");
    store
        .store
        .set(&set(&k, r#"{"n":1}"#))
        .await
        .expect("set works");
    let item = store
        .store
        .get(&k)
        .await
        .expect("get works")
        .expect("item exists");
    assert_eq!(item.value, Bytes::from_static(br#"{"n":1}"#));
    assert!(!item.etag.is_empty());
    assert_eq!(item.expire_time, None);
}

pub(crate) async fn every_write_changes_the_etag(store: TestStore) {
    let k = key(&store, "a");
    store.store.set(&set(&k, "1")).await.expect("set works");
    let first = store
        .store
        .get(&k)
        .await
        .expect("get")
        .expect("exists")
        .etag;
    store.store.set(&set(&k, "2")).await.expect("set works");
    let second = store.store.get(&k).await.expect("get").expect("exists");
    assert_ne!(first, second.etag);
    assert_eq!(second.value, Bytes::from_static(b"2"));
}

pub(crate) async fn a_write_with_the_current_etag_succeeds(store: TestStore) {
    let k = key(&store, "a");
    store.store.set(&set(&k, "1")).await.expect("set works");
    let etag = store
        .store
        .get(&k)
        .await
        .expect("get")
        .expect("exists")
        .etag;
    let request = SetRequest {
        etag: Some(etag),
        ..set(&k, "2")
    };
    store.store.set(&request).await.expect("matching etag wins");
    assert_eq!(value(&store, &k).await, Some(Bytes::from_static(b"2")));
}

pub(crate) async fn a_write_with_a_stale_etag_fails_and_changes_nothing(store: TestStore) {
    let k = key(&store, "a");
    store.store.set(&set(&k, "1")).await.expect("set works");
    let stale = store
        .store
        .get(&k)
        .await
        .expect("get")
        .expect("exists")
        .etag;
    store.store.set(&set(&k, "2")).await.expect("set works");
    for concurrency in [Concurrency::FirstWrite, Concurrency::LastWrite] {
        let request = SetRequest {
            etag: Some(stale.clone()),
            concurrency,
            ..set(&k, "3")
        };
        let error = store
            .store
            .set(&request)
            .await
            .expect_err("stale etag loses");
        assert!(matches!(error, StateError::EtagMismatch(_)), "{error}");
    }
    assert_eq!(value(&store, &k).await, Some(Bytes::from_static(b"2")));
}

pub(crate) async fn a_write_with_an_etag_to_a_missing_key_fails(store: TestStore) {
    let k = key(&store, "missing");
    store.store.set(&set(&k, "1")).await.expect("set works");
    let etag = store
        .store
        .get(&k)
        .await
        .expect("get")
        .expect("exists")
        .etag;
    store.store.delete(&delete(&k)).await.expect("delete works");
    let request = SetRequest {
        etag: Some(etag),
        ..set(&k, "2")
    };
    let error = store
        .store
        .set(&request)
        .await
        .expect_err("no item to match");
    assert!(matches!(error, StateError::EtagMismatch(_)), "{error}");
    assert_eq!(value(&store, &k).await, None);
}

pub(crate) async fn a_malformed_etag_is_refused(store: TestStore) {
    let k = key(&store, "a");
    store.store.set(&set(&k, "1")).await.expect("set works");
    let request = SetRequest {
        etag: Some("not-an-etag-of-this-store".into()),
        ..set(&k, "2")
    };
    let error = store
        .store
        .set(&request)
        .await
        .expect_err("malformed etag fails");
    assert!(
        matches!(
            error,
            StateError::InvalidEtag(_) | StateError::EtagMismatch(_)
        ),
        "{error}"
    );
    assert_eq!(value(&store, &k).await, Some(Bytes::from_static(b"1")));
}

pub(crate) async fn first_write_without_an_etag_only_creates(store: TestStore) {
    let k = key(&store, "a");
    let create = SetRequest {
        concurrency: Concurrency::FirstWrite,
        ..set(&k, "1")
    };
    store.store.set(&create).await.expect("first create works");
    let again = SetRequest {
        concurrency: Concurrency::FirstWrite,
        ..set(&k, "2")
    };
    let error = store
        .store
        .set(&again)
        .await
        .expect_err("second create fails");
    assert!(matches!(error, StateError::EtagMismatch(_)), "{error}");
    assert_eq!(value(&store, &k).await, Some(Bytes::from_static(b"1")));
}

pub(crate) async fn deleting_a_missing_key_succeeds(store: TestStore) {
    store
        .store
        .delete(&delete(&key(&store, "nothing")))
        .await
        .expect("no-op delete");
}

pub(crate) async fn a_delete_with_a_stale_etag_keeps_the_item(store: TestStore) {
    let k = key(&store, "a");
    store.store.set(&set(&k, "1")).await.expect("set works");
    let stale = store
        .store
        .get(&k)
        .await
        .expect("get")
        .expect("exists")
        .etag;
    store.store.set(&set(&k, "2")).await.expect("set works");
    let request = DeleteRequest {
        etag: Some(stale),
        ..delete(&k)
    };
    let error = store
        .store
        .delete(&request)
        .await
        .expect_err("stale delete fails");
    assert!(matches!(error, StateError::EtagMismatch(_)), "{error}");
    assert_eq!(value(&store, &k).await, Some(Bytes::from_static(b"2")));
}

pub(crate) async fn a_delete_with_the_current_etag_removes_the_item(store: TestStore) {
    let k = key(&store, "a");
    store.store.set(&set(&k, "1")).await.expect("set works");
    let etag = store
        .store
        .get(&k)
        .await
        .expect("get")
        .expect("exists")
        .etag;
    let request = DeleteRequest {
        etag: Some(etag),
        ..delete(&k)
    };
    store
        .store
        .delete(&request)
        .await
        .expect("matching delete works");
    assert_eq!(value(&store, &k).await, None);
}

pub(crate) async fn items_expire_after_their_ttl(store: TestStore) {
    let k = key(&store, "ttl");
    let request = SetRequest {
        ttl: Some(Duration::from_secs(2)),
        ..set(&k, "1")
    };
    store.store.set(&request).await.expect("set works");
    let item = store
        .store
        .get(&k)
        .await
        .expect("get")
        .expect("alive before the TTL");
    let expires = item.expire_time.expect("the expiry is reported");
    let remaining = expires - chrono::Utc::now();
    assert!(
        remaining <= chrono::Duration::seconds(3),
        "expires in {remaining}"
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(value(&store, &k).await, None, "gone after the TTL");
}

pub(crate) async fn a_write_without_ttl_clears_an_earlier_ttl(store: TestStore) {
    let k = key(&store, "ttl");
    let request = SetRequest {
        ttl: Some(Duration::from_secs(60)),
        ..set(&k, "1")
    };
    store.store.set(&request).await.expect("set works");
    store.store.set(&set(&k, "2")).await.expect("set works");
    let item = store.store.get(&k).await.expect("get").expect("exists");
    assert_eq!(item.expire_time, None);
}

pub(crate) async fn binary_values_round_trip(store: TestStore) {
    let k = key(&store, "bin");
    let bytes = Bytes::from_static(&[0, 159, 146, 150, 255, 10]);
    let request = SetRequest {
        value: bytes.clone(),
        ..set(&k, "")
    };
    store.store.set(&request).await.expect("set works");
    assert_eq!(value(&store, &k).await, Some(bytes));
}

pub(crate) async fn bulk_get_returns_each_key_in_order(store: TestStore) {
    let (a, b, missing) = (key(&store, "a"), key(&store, "b"), key(&store, "missing"));
    store.store.set(&set(&a, "1")).await.expect("set works");
    store.store.set(&set(&b, "2")).await.expect("set works");
    let items = store
        .store
        .bulk_get(&[b.clone(), missing, a.clone()])
        .await
        .expect("bulk get works");
    let values: Vec<Option<Bytes>> = items.into_iter().map(|i| i.map(|i| i.value)).collect();
    assert_eq!(
        values,
        vec![
            Some(Bytes::from_static(b"2")),
            None,
            Some(Bytes::from_static(b"1"))
        ]
    );
}

pub(crate) async fn a_transaction_applies_every_operation(store: TestStore) {
    let (a, b) = (key(&store, "a"), key(&store, "b"));
    store.store.set(&set(&b, "old")).await.expect("set works");
    store
        .store
        .transact(&[Operation::Set(set(&a, "1")), Operation::Delete(delete(&b))])
        .await
        .expect("transaction works");
    assert_eq!(value(&store, &a).await, Some(Bytes::from_static(b"1")));
    assert_eq!(value(&store, &b).await, None);
}

pub(crate) async fn a_transaction_with_a_stale_etag_applies_nothing(store: TestStore) {
    let (a, b) = (key(&store, "a"), key(&store, "b"));
    store.store.set(&set(&a, "1")).await.expect("set works");
    store.store.set(&set(&b, "1")).await.expect("set works");
    let stale = store
        .store
        .get(&b)
        .await
        .expect("get")
        .expect("exists")
        .etag;
    store.store.set(&set(&b, "2")).await.expect("set works");
    let error = store
        .store
        .transact(&[
            Operation::Set(set(&a, "changed")),
            Operation::Set(SetRequest {
                etag: Some(stale),
                ..set(&b, "changed")
            }),
        ])
        .await
        .expect_err("the stale etag fails the transaction");
    assert!(matches!(error, StateError::EtagMismatch(_)), "{error}");
    assert_eq!(
        value(&store, &a).await,
        Some(Bytes::from_static(b"1")),
        "nothing applied"
    );
    assert_eq!(value(&store, &b).await, Some(Bytes::from_static(b"2")));
}

/// Optimistic concurrency under load: many writers race on one counter; every increment that
/// reports success is counted exactly once.
pub(crate) async fn concurrent_etag_writers_never_lose_an_update(store: TestStore) {
    let k = key(&store, "counter");
    store.store.set(&set(&k, "0")).await.expect("set works");
    let store = std::sync::Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0;
            for _ in 0..5 {
                let item = store.store.get(&k).await.expect("get").expect("exists");
                let n: u64 = std::str::from_utf8(&item.value)
                    .expect("utf8")
                    .parse()
                    .expect("number");
                let request = SetRequest {
                    etag: Some(item.etag),
                    ..set(&k, &(n + 1).to_string())
                };
                match store.store.set(&request).await {
                    Ok(()) => wins += 1,
                    Err(StateError::EtagMismatch(_)) => {}
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            wins
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += task.await.expect("task finishes");
    }
    let final_value = value(&store, &k).await.expect("exists");
    assert_eq!(final_value, Bytes::from(wins.to_string()));
    assert!(wins > 0);
}

macro_rules! conformance {
    ($name:ident, $factory:path, [$($case:ident),* $(,)?]) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($factory().await).await;
                }
            )*
        }
    };
}

macro_rules! every_store {
    ($($case:ident),* $(,)?) => {
        conformance!(in_memory, crate::support::memory_store, [$($case),*]);
        conformance!(sqlite, crate::support::sqlite_store, [$($case),*]);
        conformance!(postgres, crate::support::postgres_store, [$($case),*]);
        conformance!(redis, crate::support::redis_store, [$($case),*]);
    };
}

every_store!(
    a_missing_key_reads_as_none,
    a_saved_value_reads_back_with_an_etag,
    every_write_changes_the_etag,
    a_write_with_the_current_etag_succeeds,
    a_write_with_a_stale_etag_fails_and_changes_nothing,
    a_write_with_an_etag_to_a_missing_key_fails,
    a_malformed_etag_is_refused,
    first_write_without_an_etag_only_creates,
    deleting_a_missing_key_succeeds,
    a_delete_with_a_stale_etag_keeps_the_item,
    a_delete_with_the_current_etag_removes_the_item,
    items_expire_after_their_ttl,
    a_write_without_ttl_clears_an_earlier_ttl,
    binary_values_round_trip,
    bulk_get_returns_each_key_in_order,
    a_transaction_applies_every_operation,
    a_transaction_with_a_stale_etag_applies_nothing,
    concurrent_etag_writers_never_lose_an_update,
);
