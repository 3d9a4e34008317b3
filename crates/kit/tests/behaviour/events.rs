//! `kit::events`: the `/dapr/subscribe` declaration, the CloudEvent extractor and the replies,
//! checked against what a real sidecar does with them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse as _;
use axum::routing::post;
use contracts::{Event as _, ProductAdded, ProductDeleted, ProductSnapshot};
use kit::dapr::Dapr;
use kit::events::{Received, Reply, Subscription, subscriptions_router};
use kit::settings::DaprSettings;
use kit::testing::{PUBSUB, Stack, Store};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{self, TestApp, read, request, sample, samples, wait_until_subscribed};

fn product_added() -> ProductAdded {
    ProductAdded {
        product: ProductSnapshot {
            id: uuid::Uuid::new_v4(),
            name: "Pencil".into(),
            description: "HB".into(),
            price_cents: 120,
            currency: "EUR".into(),
            category: "stationery".into(),
            stock: 40,
        },
    }
}

fn product_deleted() -> ProductDeleted {
    ProductDeleted {
        product_id: uuid::Uuid::new_v4(),
    }
}

/// One event a handler of a test app received.
#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    route: &'static str,
    id: String,
    source: String,
    data: Value,
}

/// What the handlers of a test app received, in order.
#[derive(Clone, Default)]
struct Deliveries {
    inner: Arc<Mutex<Vec<Delivery>>>,
}

impl Deliveries {
    fn record<E: serde::Serialize>(&self, route: &'static str, event: &Received<E>) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Delivery {
                route,
                id: event.id.clone(),
                source: event.source.clone(),
                data: serde_json::to_value(&event.data).unwrap_or_default(),
            });
    }

    /// How many times the event `id` reached `route`.
    fn count(&self, route: &str, id: &str) -> usize {
        self.all()
            .iter()
            .filter(|d| d.route == route && d.id == id)
            .count()
    }

    fn all(&self) -> Vec<Delivery> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn wait_for(&self, route: &str, id: &str, count: usize) {
        let reached = support::eventually(Duration::from_secs(5), || async {
            (self.count(route, id) >= count).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "{id} did not reach {route} {count} time(s): {:?}",
            self.all()
        );
    }
}

/// An app subscribed to `products`: PRODUCT_ADDED answered with `on_added`, PRODUCT_DELETED
/// with `on_deleted` (the delivery number, from 1, is passed in).
fn products_app(
    subscription: Subscription,
    deliveries: &Deliveries,
    on_added: fn(usize) -> Reply,
    on_deleted: fn(usize) -> Reply,
) -> Router {
    let (added, deleted) = (deliveries.clone(), deliveries.clone());
    Router::new()
        .route(
            "/events/product-added",
            post(move |event: Received<ProductAdded>| async move {
                added.record("added", &event);
                on_added(added.count("added", &event.id))
            }),
        )
        .route(
            "/events/product-deleted",
            post(move |event: Received<ProductDeleted>| async move {
                deleted.record("deleted", &event);
                on_deleted(deleted.count("deleted", &event.id))
            }),
        )
        .merge(subscriptions_router(vec![subscription]))
}

fn products() -> Subscription {
    Subscription::new(PUBSUB, contracts::PRODUCTS)
        .route::<ProductAdded>("/events/product-added")
        .route::<ProductDeleted>("/events/product-deleted")
}

/// A stack running `app` as `catalog-reader`, subscribed, and a publisher's client.
async fn running(app: Router) -> (Stack, DaprSettings, String, Dapr) {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let (bound, settings) = stack.bind("catalog-reader").await.expect("a sidecar");
    let base = stack
        .run(bound, Box::new(TestApp::new(app, &settings).await))
        .await
        .expect("the app runs");
    wait_until_subscribed(&settings, 1).await;
    let publisher = support::sidecar(&mut stack, "inventory").await;
    (stack, settings, base, publisher)
}

async fn publish_with_id<E: contracts::Event>(dapr: &Dapr, event: &E, id: &str) {
    publish_as(
        dapr,
        E::TYPE,
        &serde_json::to_value(event).expect("JSON"),
        id,
    )
    .await;
}

async fn publish_as(dapr: &Dapr, cloud_event_type: &str, data: &Value, id: &str) {
    dapr.publish_raw(
        PUBSUB,
        contracts::PRODUCTS,
        data,
        HashMap::from([
            ("cloudevent.type".to_owned(), cloud_event_type.to_owned()),
            ("cloudevent.id".to_owned(), id.to_owned()),
        ]),
    )
    .await
    .expect("published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriptions_are_declared_as_dapr_reads_them() {
    let app = subscriptions_router(vec![
        products().dead_letter_topic("products-dead"),
        Subscription::new("orders-pubsub", contracts::USERS)
            .route::<contracts::UserRegistered>("/events/user-registered"),
    ]);

    let (status, _, body) = read(
        app.oneshot(request("GET", "/dapr/subscribe", &[], ""))
            .await
            .expect("a response"),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([
            {
                "pubsubname": "pubsub",
                "topic": "products",
                "routes": {
                    "rules": [
                        {"match": "event.type == \"shop.product.added.v1\"", "path": "/events/product-added"},
                        {"match": "event.type == \"shop.product.deleted.v1\"", "path": "/events/product-deleted"},
                    ],
                    "default": "/events/ignored",
                },
                "deadLetterTopic": "products-dead",
            },
            {
                "pubsubname": "orders-pubsub",
                "topic": "users",
                "routes": {
                    "rules": [
                        {"match": "event.type == \"shop.user.registered.v1\"", "path": "/events/user-registered"},
                    ],
                    "default": "/events/ignored",
                },
            },
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_the_status_bodies_dapr_reads() {
    for (reply, status) in [
        (Reply::Success, "SUCCESS"),
        (Reply::Retry, "RETRY"),
        (Reply::Drop, "DROP"),
    ] {
        let (code, content_type, body) = read(reply.into_response()).await;

        assert_eq!(code, 200, "{reply:?}");
        assert_eq!(content_type, "application/json", "{reply:?}");
        assert_eq!(body, json!({ "status": status }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_route_of_their_type_with_their_attributes() {
    let deliveries = Deliveries::default();
    let app = products_app(
        products(),
        &deliveries,
        |_| Reply::Success,
        |_| Reply::Success,
    );
    let (stack, _, _, publisher) = running(app).await;
    let (added, deleted) = (product_added(), product_deleted());

    publish_with_id(&publisher, &added, "added-1").await;
    publish_with_id(&publisher, &deleted, "deleted-1").await;
    // Through `Dapr::publish` too: the sidecar picks the id.
    publisher
        .publish(PUBSUB, &product_deleted())
        .await
        .expect("published");

    deliveries.wait_for("added", "added-1", 1).await;
    deliveries.wait_for("deleted", "deleted-1", 1).await;
    let reached = support::eventually(Duration::from_secs(5), || async {
        (deliveries.all().len() >= 3).then_some(())
    })
    .await;
    assert!(reached.is_some(), "{:?}", deliveries.all());
    let all = deliveries.all();
    let find = |id: &str| all.iter().find(|d| d.id == id).cloned();
    assert_eq!(
        find("added-1"),
        Some(Delivery {
            route: "added",
            id: "added-1".to_owned(),
            source: "inventory".to_owned(),
            data: serde_json::to_value(&added).expect("JSON"),
        })
    );
    assert_eq!(
        find("deleted-1").map(|d| (d.route, d.data)),
        Some(("deleted", serde_json::to_value(&deleted).expect("JSON")))
    );
    assert!(
        all.iter()
            .all(|d| !d.id.is_empty() && d.source == "inventory"),
        "{all:?}"
    );
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_unknown_types_are_acknowledged_and_ignored() {
    let deliveries = Deliveries::default();
    let app = products_app(
        products(),
        &deliveries,
        |_| Reply::Success,
        |_| Reply::Success,
    );
    let (stack, _, base, publisher) = running(app).await;
    let ignored = || async {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        sample(
            &samples(&text),
            "shop_http_requests_total",
            &[("route", "/events/ignored"), ("status", "200")],
        )
    };

    publish_as(
        &publisher,
        "shop.product.discontinued.v9",
        &json!({"product_id": "x"}),
        "unknown-1",
    )
    .await;

    let delivered = support::eventually(Duration::from_secs(5), ignored).await;
    assert_eq!(delivered, Some(1.0));
    // Acknowledged: the sidecar redelivers what is not within 100 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ignored().await, Some(1.0), "delivered once");
    assert!(deliveries.all().is_empty(), "{:?}", deliveries.all());
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_delivered_again_and_a_drop_is_not() {
    let deliveries = Deliveries::default();
    let app = products_app(
        products(),
        &deliveries,
        |delivery| {
            if delivery < 3 {
                Reply::Retry
            } else {
                Reply::Success
            }
        },
        |_| Reply::Drop,
    );
    let (stack, _, _, publisher) = running(app).await;

    publish_with_id(&publisher, &product_added(), "retried").await;
    publish_with_id(&publisher, &product_deleted(), "dropped").await;

    deliveries.wait_for("added", "retried", 3).await;
    deliveries.wait_for("deleted", "dropped", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        deliveries.count("added", "retried"),
        3,
        "acknowledged at last"
    );
    assert_eq!(deliveries.count("deleted", "dropped"), 1, "never again");
    stack.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_event_goes_to_the_dead_letter_topic() {
    let mut stack = Stack::new(Store::Memory, &[]).await.expect("a stack");
    let dead = stack
        .observe(&["products-dead"])
        .await
        .expect("an observer");
    let deliveries = Deliveries::default();
    let app = products_app(
        products().dead_letter_topic("products-dead"),
        &deliveries,
        |_| Reply::Success,
        |_| Reply::Drop,
    );
    let (bound, settings) = stack.bind("catalog-reader").await.expect("a sidecar");
    stack
        .run(bound, Box::new(TestApp::new(app, &settings).await))
        .await
        .expect("the app runs");
    wait_until_subscribed(&settings, 1).await;
    let publisher = support::sidecar(&mut stack, "inventory").await;

    publish_with_id(&publisher, &product_deleted(), "dead-1").await;

    let dead_letter = dead
        .wait_for(ProductDeleted::TYPE, Duration::from_secs(5), |_| true)
        .await
        .expect("dead-lettered");
    assert_eq!(dead_letter["id"], "dead-1");
    assert_eq!(deliveries.count("deleted", "dead-1"), 1);
    stack.shutdown().await.expect("clean shutdown");
}

/// A structured CloudEvent as the sidecar delivers it.
fn cloud_event(ty: &str, data: &Value) -> String {
    json!({
        "specversion": "1.0",
        "id": "evt-7",
        "source": "inventory",
        "type": ty,
        "datacontenttype": "application/json",
        "topic": "products",
        "pubsubname": "pubsub",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "data": data,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_cannot_be_read_as_the_event_are_dropped() {
    let deliveries = Deliveries::default();
    let app = products_app(
        products(),
        &deliveries,
        |_| Reply::Success,
        |_| Reply::Success,
    );
    let added = serde_json::to_value(product_added()).expect("JSON");
    let structured = [("content-type", "application/cloudevents+json")];
    let cases = [
        (
            "a valid event",
            cloud_event(ProductAdded::TYPE, &added),
            "SUCCESS",
        ),
        (
            // PRODUCT_UPDATED has the payload of PRODUCT_ADDED: only the type tells them apart.
            "an event of another type",
            cloud_event(contracts::ProductUpdated::TYPE, &added),
            "DROP",
        ),
        (
            "a payload that breaks the contract",
            cloud_event(ProductAdded::TYPE, &json!({"product": {"name": "Pencil"}})),
            "DROP",
        ),
        (
            "not a CloudEvent",
            json!({"product": added}).to_string(),
            "DROP",
        ),
    ];
    for (case, body, expected) in cases {
        let response = app
            .clone()
            .oneshot(request("POST", "/events/product-added", &structured, &body))
            .await
            .expect("a response");

        let (status, _, reply) = read(response).await;
        assert_eq!(status, 200, "{case}");
        assert_eq!(reply, json!({ "status": expected }), "{case}");
    }
    assert_eq!(
        deliveries.count("added", "evt-7"),
        1,
        "only the valid one was handled"
    );
}
