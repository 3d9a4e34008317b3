//! The orders app behind a real local sidecar, with the real inventory app behind its own and
//! the sidecars' workflow engine: customers' calls come through a "gateway" sidecar, payment
//! events are published by a "payments" sidecar, and an observer records the ORDER_* events.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::collections::HashMap;
use std::time::Duration;

use contracts::{DeclineReason, Event, PaymentFailed, PaymentSuccessful};
use kit::dapr::Dapr;
use kit::testing::{Caller, Events, PUBSUB, Stack, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop_orders::settings::OrdersSettings;
use shop_orders::{App, Settings};
use uuid::Uuid;

/// The app id allowed to read reservations besides the orders app, to check them.
const AUDITOR: &str = "auditor";

struct Shop {
    stack: Stack,
    gateway: Caller,
    auditor: Caller,
    payments: Dapr,
    events: Events,
}

/// A customer (or admin) as the gateway vouches for them.
#[derive(Clone)]
struct User {
    id: Uuid,
    role: &'static str,
}

impl User {
    fn customer() -> Self {
        Self {
            id: Uuid::new_v4(),
            role: "customer",
        }
    }

    fn admin() -> Self {
        Self {
            id: Uuid::new_v4(),
            role: "admin",
        }
    }
}

impl Shop {
    /// The shop on SQLite, with `configure` applied to the orders app's settings.
    async fn start(configure: impl FnOnce(&mut OrdersSettings)) -> Self {
        Self::start_on(Store::Sqlite, configure).await
    }

    /// The shop on `store`, with `configure` applied to the orders app's settings.
    async fn start_on(store: Store, configure: impl FnOnce(&mut OrdersSettings)) -> Self {
        let mut stack = Self::infrastructure(store).await;
        let events = stack.observe(&[contracts::ORDERS]).await.unwrap();
        let (bound, dapr) = stack.bind("orders").await.unwrap();
        let app = App::build(orders_settings(dapr, configure)).await.unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        Self::callers(stack, events).await
    }

    /// The stack with its components and the inventory app running.
    async fn infrastructure(store: Store) -> Stack {
        let mut stack = Stack::new(store, &[]).await.unwrap();
        // As in components/: the workflow engine persists in a state store marked as the
        // actor state store.
        stack
            .add_component(
                "workflowstore",
                "state.sqlite",
                &[
                    ("connectionString", "workflows.db".into()),
                    ("actorStateStore", "true".into()),
                ],
            )
            .unwrap();
        let (bound, dapr) = stack.bind("inventory").await.unwrap();
        let mut inventory = shop_inventory::Settings {
            dapr,
            ..shop_inventory::Settings::default()
        };
        inventory
            .inventory
            .reservation_callers
            .push(AUDITOR.to_owned());
        let app = shop_inventory::App::build(inventory).await.unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        stack
    }

    /// The callers and the payment events' publisher, around a running stack.
    async fn callers(mut stack: Stack, events: Events) -> Self {
        let (bound, dapr) = stack.bind("payments").await.unwrap();
        stack.start(bound).await.unwrap();
        let payments = Dapr::new(&dapr).unwrap();
        let gateway = stack.caller("gateway").await.unwrap();
        let auditor = stack.caller(AUDITOR).await.unwrap();
        Self {
            stack,
            gateway,
            auditor,
            payments,
            events,
        }
    }

    fn request(
        &self,
        user: &User,
        app: &str,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.gateway
            .invoke(method, app, path)
            .header("x-shop-user-id", user.id.to_string())
            .header("x-shop-user-email", format!("{}@example.com", user.id))
            .header("x-shop-user-role", user.role)
    }

    async fn add_product(&self, stock: i64, price_cents: i64) -> String {
        let response = self
            .request(&User::admin(), "inventory", Method::POST, "/products")
            .json(&json!({
                "name": "Mug", "description": "Holds coffee.", "price_cents": price_cents,
                "currency": "EUR", "category": "kitchen", "stock": stock,
            }))
            .send()
            .await
            .unwrap();
        let (status, product) = read(response).await;
        assert_eq!(status, StatusCode::CREATED, "{product}");
        product["id"].as_str().unwrap().to_owned()
    }

    async fn stock(&self, product: &str) -> i64 {
        let response = self
            .request(
                &User::customer(),
                "inventory",
                Method::GET,
                &format!("/products/{product}"),
            )
            .send()
            .await
            .unwrap();
        let (status, product) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{product}");
        product["stock"].as_i64().unwrap()
    }

    async fn reservation(&self, order: &str) -> String {
        let response = self
            .auditor
            .invoke(Method::GET, "inventory", &format!("/reservations/{order}"))
            .send()
            .await
            .unwrap();
        let (status, reservation) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{reservation}");
        reservation["status"].as_str().unwrap().to_owned()
    }

    async fn place(&self, user: &User, key: &str, items: Value) -> (StatusCode, Value) {
        let response = self
            .request(user, "orders", Method::POST, "/orders")
            .header("idempotency-key", key)
            .json(&json!({ "items": items }))
            .send()
            .await
            .unwrap();
        read(response).await
    }

    async fn call(&self, user: &User, method: Method, path: &str) -> (StatusCode, Value) {
        read(
            self.request(user, "orders", method, path)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The order once its status is `status` (the workflow settles it in the background).
    async fn order_when(&self, user: &User, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (code, order) = self.call(user, Method::GET, &format!("/orders/{id}")).await;
            assert_eq!(code, StatusCode::OK, "{order}");
            if order["status"] == status {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {id} is still {} instead of {status}",
                order["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn publish<E: Event>(&self, event: &E, id: &str) {
        let metadata = HashMap::from([
            ("cloudevent.type".to_owned(), E::TYPE.to_owned()),
            ("cloudevent.id".to_owned(), id.to_owned()),
        ]);
        self.payments
            .publish_raw(
                PUBSUB,
                E::TOPIC,
                &serde_json::to_value(event).unwrap(),
                metadata,
            )
            .await
            .unwrap();
    }

    fn paid(&self, user: &User, order: &Value) -> PaymentSuccessful {
        PaymentSuccessful {
            payment_id: Uuid::new_v4(),
            order_id: order["id"].as_str().unwrap().parse().unwrap(),
            user_id: user.id,
            user_email: format!("{}@example.com", user.id),
            amount_cents: order["total_cents"].as_i64().unwrap(),
            currency: order["currency"].as_str().unwrap().to_owned(),
            card_last4: "4242".into(),
            paid_at: chrono::Utc::now(),
        }
    }

    fn declined(&self, user: &User, order: &Value) -> PaymentFailed {
        PaymentFailed {
            payment_id: Uuid::new_v4(),
            order_id: order["id"].as_str().unwrap().parse().unwrap(),
            user_id: user.id,
            user_email: format!("{}@example.com", user.id),
            amount_cents: order["total_cents"].as_i64().unwrap(),
            currency: order["currency"].as_str().unwrap().to_owned(),
            reason: DeclineReason::CardDeclined,
            failed_at: chrono::Utc::now(),
        }
    }

    async fn event(&self, kind: &str, order: &str) -> Value {
        self.events
            .wait_for(kind, Duration::from_secs(30), |data| {
                data["order_id"] == order
            })
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.stack.shutdown().await.unwrap();
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let text = response.text().await.unwrap();
    if !status.is_success() {
        assert!(problem, "errors are problem+json: {status} {text}");
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The orders app's settings for tests: quick retries and polls.
fn orders_settings(
    dapr: kit::settings::DaprSettings,
    configure: impl FnOnce(&mut OrdersSettings),
) -> Settings {
    let mut orders = OrdersSettings {
        placement_wait_seconds: 20,
        poll_millis: 20,
        activity_first_retry_millis: 100,
        activity_max_retry_seconds: 1,
        ..OrdersSettings::default()
    };
    configure(&mut orders);
    Settings {
        dapr,
        orders,
        ..Settings::default()
    }
}

fn key() -> String {
    Uuid::new_v4().to_string()
}

fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_takes_stock_and_a_payment_confirms_it_and_commits_the_stock() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(5, 1250).await;
    let ada = User::customer();

    let (status, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 2}]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "PENDING_PAYMENT");
    assert_eq!(order["total_cents"], 2500, "prices come from the inventory");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["items"][0]["unit_price_cents"], 1250);
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.stock(&product).await, 3, "the stock is taken");
    let created = shop.event("shop.order.created.v1", &id).await;
    assert_eq!(created["id"], format!("{id}.created"));
    assert_eq!(created["data"]["total_cents"], 2500);

    shop.publish(&shop.paid(&ada, &order), "payment-1").await;
    let confirmed = shop.order_when(&ada, &id, "CONFIRMED").await;
    assert_eq!(confirmed["total_cents"], 2500);
    shop.event("shop.order.confirmed.v1", &id).await;
    assert_eq!(shop.reservation(&id).await, "committed");
    assert_eq!(shop.stock(&product).await, 3, "sold stock stays taken");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_payment_event_changes_nothing() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(5, 1000).await;
    let ada = User::customer();
    let (_, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 1}]),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    let payment = shop.paid(&ada, &order);
    shop.publish(&payment, "payment-1").await;
    shop.publish(&payment, "payment-1").await;
    shop.order_when(&ada, &id, "CONFIRMED").await;
    // A late decline for a confirmed order is ignored too.
    shop.publish(&shop.declined(&ada, &order), "payment-2")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shop.order_when(&ada, &id, "CONFIRMED").await;
    let confirmations = shop
        .events
        .all()
        .into_iter()
        .filter(|e| e["type"] == "shop.order.confirmed.v1" && e["data"]["order_id"] == id.as_str())
        .count();
    assert_eq!(confirmations, 1);
    assert!(
        !shop
            .events
            .all()
            .iter()
            .any(|e| e["type"] == "shop.order.cancelled.v1"),
        "nothing was cancelled"
    );
    assert_eq!(shop.stock(&product).await, 4);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_cancels_the_order_and_gives_the_stock_back() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(5, 1250).await;
    let ada = User::customer();
    let (_, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 2}]),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.stock(&product).await, 3);

    shop.publish(&shop.declined(&ada, &order), "payment-1")
        .await;
    let cancelled = shop.order_when(&ada, &id, "CANCELLED").await;
    assert_eq!(cancelled["cancellation_reason"], "payment_failed");
    let event = shop.event("shop.order.cancelled.v1", &id).await;
    assert_eq!(event["data"]["reason"], "payment_failed");
    assert_eq!(shop.stock(&product).await, 5, "the stock is back");
    assert_eq!(shop.reservation(&id).await, "released");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_is_cancelled_when_the_payment_is_overdue() {
    let shop = Shop::start(|orders| orders.payment_timeout_seconds = 2).await;
    let product = shop.add_product(5, 1250).await;
    let ada = User::customer();
    let (_, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 1}]),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.stock(&product).await, 4);
    let cancelled = shop.order_when(&ada, &id, "CANCELLED").await;
    assert_eq!(cancelled["cancellation_reason"], "payment_timeout");
    assert_eq!(shop.stock(&product).await, 5);
    // A payment after the deadline does not revive the order.
    shop.publish(&shop.paid(&ada, &order), "late").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shop.order_when(&ada, &id, "CANCELLED").await;
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cancels_a_pending_order_once() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(5, 1250).await;
    let ada = User::customer();
    let (_, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 3}]),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.stock(&product).await, 2);

    let (status, cancelled) = shop
        .call(&ada, Method::POST, &format!("/orders/{id}/cancel"))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["cancellation_reason"], "cancelled_by_customer");
    assert_eq!(shop.stock(&product).await, 5);
    shop.event("shop.order.cancelled.v1", &id).await;

    let (status, problem) = shop
        .call(&ada, Method::POST, &format!("/orders/{id}/cancel"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_the_inventory_cannot_fill_are_rejected_with_the_reason() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(2, 1250).await;
    let ada = User::customer();

    let (status, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 3}]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "REJECTED");
    assert_eq!(order["rejection"]["reason"], "out_of_stock");
    assert_eq!(order["rejection"]["product_id"], product.as_str());
    assert_eq!(shop.stock(&product).await, 2, "nothing taken");

    let unknown = Uuid::now_v7().to_string();
    let (_, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 1}, {"product_id": unknown, "quantity": 1}]),
        )
        .await;
    assert_eq!(order["status"], "REJECTED");
    assert_eq!(order["rejection"]["reason"], "unknown_product");
    assert_eq!(order["rejection"]["product_id"], unknown.as_str());
    assert_eq!(shop.stock(&product).await, 2, "all or nothing");
    let id = order["id"].as_str().unwrap();
    let (status, _) = shop
        .call(&ada, Method::POST, &format!("/orders/{id}/cancel"))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a rejected order is not pending"
    );
    assert!(
        !shop
            .events
            .all()
            .iter()
            .any(|e| e["type"] == "shop.order.created.v1"),
        "rejected orders are not announced"
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_place_one_order() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(10, 500).await;
    let ada = User::customer();
    let key = key();
    let items = json!([{"product_id": product, "quantity": 2}]);

    let attempts = (0..8).map(|_| shop.place(&ada, &key, items.clone()));
    let answers = futures::future::join_all(attempts).await;
    let mut ids: Vec<String> = answers
        .iter()
        .map(|(status, order)| {
            assert_eq!(*status, StatusCode::CREATED, "{order}");
            order["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one order: {ids:?}");
    assert_eq!(shop.stock(&product).await, 8, "stock taken once");

    let (status, problem) = shop
        .place(&ada, &key, json!([{"product_id": product, "quantity": 3}]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(field(&problem), "Idempotency-Key");

    // The same key from someone else is their own order.
    let (status, other) = shop.place(&User::customer(), &key, items).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_ne!(other["id"], ids[0].as_str());
    assert_eq!(shop.stock(&product).await, 6);
    let (_, listed) = shop.call(&ada, Method::GET, "/orders").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_an_admin_sees_or_cancels_an_order() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(10, 500).await;
    let ada = User::customer();
    let bob = User::customer();
    let mut placed = Vec::new();
    for _ in 0..3 {
        let (_, order) = shop
            .place(
                &ada,
                &key(),
                json!([{"product_id": product, "quantity": 1}]),
            )
            .await;
        placed.push(order["id"].as_str().unwrap().to_owned());
    }
    let id = &placed[0];

    let (status, _) = shop.call(&bob, Method::GET, &format!("/orders/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = shop
        .call(&bob, Method::POST, &format!("/orders/{id}/cancel"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = shop.call(&bob, Method::GET, "/orders").await;
    assert_eq!(listed["items"], json!([]));
    let (status, seen) = shop
        .call(&User::admin(), Method::GET, &format!("/orders/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");

    // Mine, newest first, a page at a time.
    let (_, first) = shop.call(&ada, Method::GET, "/orders?limit=2").await;
    let first_ids: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(first_ids, vec![placed[2].as_str(), placed[1].as_str()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = shop
        .call(
            &ada,
            Method::GET,
            &format!("/orders?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(second["items"][0]["id"], placed[0].as_str());
    assert!(second.get("next_cursor").is_none(), "{second}");

    let (status, _) = read(
        shop.gateway
            .invoke(Method::GET, "orders", &format!("/orders/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no user, no orders");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_place_nothing() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(10, 500).await;
    let ada = User::customer();
    let line = |quantity: i64| json!({"product_id": product, "quantity": quantity});

    let response = shop
        .request(&ada, "orders", Method::POST, "/orders")
        .json(&json!({"items": [line(1)]}))
        .send()
        .await
        .unwrap();
    let (status, problem) = read(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field(&problem), "Idempotency-Key");

    for (items, expected) in [
        (json!([]), "items"),
        (json!([line(0)]), "items[0].quantity"),
        (
            json!([line(1), {"product_id": Uuid::now_v7(), "quantity": 1001}]),
            "items[1].quantity",
        ),
        (json!([line(1), line(2)]), "items[1].product_id"),
        (
            json!([{"product_id": "not-a-uuid", "quantity": 1}]),
            "items[0].product_id",
        ),
        (json!([{"product_id": product}]), "items[0].quantity"),
        (
            json!([{"product_id": product, "quantity": 1, "price_cents": 1}]),
            "items[0].price_cents",
        ),
    ] {
        let (status, problem) = shop.place(&ada, &key(), items.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{items}: {problem}"
        );
        assert_eq!(field(&problem), expected, "{items}: {problem}");
    }
    let (status, problem) = shop.place(&ada, "has spaces", json!([line(1)])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(field(&problem), "Idempotency-Key");
    let response = shop
        .request(&ada, "orders", Method::POST, "/orders")
        .header("idempotency-key", key())
        .header("content-type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(read(response).await.0, StatusCode::BAD_REQUEST);
    let (status, problem) = shop.call(&ada, Method::GET, "/orders?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field(&problem), "limit");
    let (status, problem) = shop.call(&ada, Method::GET, "/orders?cursor=x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field(&problem), "cursor");

    let (_, listed) = shop.call(&ada, Method::GET, "/orders").await;
    assert_eq!(listed["items"], json!([]), "nothing placed");
    assert_eq!(shop.stock(&product).await, 10);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_confirmed_and_committed_on_postgres() {
    an_order_is_confirmed_and_committed_on(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_confirmed_and_committed_on_redis() {
    an_order_is_confirmed_and_committed_on(Store::Redis).await;
}

async fn an_order_is_confirmed_and_committed_on(store: Store) {
    let shop = Shop::start_on(store, |_| {}).await;
    let product = shop.add_product(5, 700).await;
    let ada = User::customer();
    let (status, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 5}]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["total_cents"], 3500);
    let id = order["id"].as_str().unwrap().to_owned();
    let (_, rejected) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 1}]),
        )
        .await;
    assert_eq!(rejected["status"], "REJECTED", "the stock is all taken");
    shop.publish(&shop.paid(&ada, &order), "payment-1").await;
    shop.order_when(&ada, &id, "CONFIRMED").await;
    assert_eq!(shop.reservation(&id).await, "committed");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_completes_after_the_orders_app_restarts() {
    let mut stack = Shop::infrastructure(Store::Sqlite).await;
    let events = stack.observe(&[contracts::ORDERS]).await.unwrap();
    let (bound, dapr) = stack.bind("orders").await.unwrap();
    let settings = orders_settings(dapr, |_| {});
    let first = App::build(settings.clone()).await.unwrap();
    let port = first.port();
    stack.start(bound.with_app_port(port)).await.unwrap();
    let stop = kit::server::Stop::new();
    let running = tokio::spawn(kit::server::Service::run(Box::new(first), stop.clone()));
    let shop = Shop::callers(stack, events).await;
    let product = shop.add_product(5, 1250).await;
    let ada = User::customer();
    // The app may still be connecting its workflow worker: retry with the same key.
    let key = key();
    let order = loop {
        let (status, order) = shop
            .place(&ada, &key, json!([{"product_id": product, "quantity": 2}]))
            .await;
        if status == StatusCode::CREATED {
            break order;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{order}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = order["id"].as_str().unwrap().to_owned();
    shop.event("shop.order.created.v1", &id).await;

    // The app stops while the workflow waits for the payment; a new one takes over.
    stop.cancel();
    running.await.unwrap().unwrap();
    let second = App::build(Settings {
        app: kit::settings::AppSettings {
            port,
            ..settings.app.clone()
        },
        ..settings
    })
    .await
    .unwrap();
    let stop = kit::server::Stop::new();
    let running = tokio::spawn(kit::server::Service::run(Box::new(second), stop.clone()));

    shop.publish(&shop.paid(&ada, &order), "payment-1").await;
    shop.order_when(&ada, &id, "CONFIRMED").await;
    shop.event("shop.order.confirmed.v1", &id).await;
    assert_eq!(shop.reservation(&id).await, "committed");
    stop.cancel();
    running.await.unwrap().unwrap();
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payments_app_reads_what_an_order_costs_and_nobody_else_does() {
    let mut shop = Shop::start(|_| {}).await;
    let product = shop.add_product(5, 1250).await;
    let ada = User::customer();
    let (_, order) = shop
        .place(
            &ada,
            &key(),
            json!([{"product_id": product, "quantity": 2}]),
        )
        .await;
    let id = order["id"].as_str().unwrap();
    let payments = shop.stack.caller("payments").await.unwrap();
    let (status, payable) = read(
        payments
            .invoke(Method::GET, "orders", &format!("/payable-orders/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{payable}");
    assert_eq!(payable["user_id"], ada.id.to_string());
    assert_eq!(payable["status"], "PENDING_PAYMENT");
    assert_eq!(payable["total_cents"], 2500);
    assert_eq!(payable["currency"], "EUR");
    let (status, _) = read(
        payments
            .invoke(
                Method::GET,
                "orders",
                &format!("/payable-orders/{}", Uuid::now_v7()),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = read(
        shop.request(
            &ada,
            "orders",
            Method::GET,
            &format!("/payable-orders/{id}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "not for the gateway's callers"
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_buyers_never_get_more_than_the_stock() {
    let shop = Shop::start(|_| {}).await;
    let product = shop.add_product(10, 500).await;
    let buyers: Vec<User> = (0..30).map(|_| User::customer()).collect();
    let orders = buyers.iter().map(|buyer| {
        shop.place(
            buyer,
            "one-mug",
            json!([{"product_id": product, "quantity": 1}]),
        )
    });
    let answers = futures::future::join_all(orders).await;
    let mut pending = 0;
    let mut rejected = 0;
    for (status, order) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{order}");
        match order["status"].as_str() {
            Some("PENDING_PAYMENT") => pending += 1,
            Some("REJECTED") => {
                assert_eq!(order["rejection"]["reason"], "out_of_stock");
                rejected += 1;
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!((pending, rejected), (10, 20));
    assert_eq!(shop.stock(&product).await, 0);
    shop.stop().await;
}

/// The store's own writes, which the activities and `POST /orders` repeat when retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_claimed_once_and_a_view_stored_again_keeps_the_first() {
    use shop_orders::domain::{IdempotencyKey, Items, OrderId, OrderStatus, StoredOrder};
    use shop_orders::error::ApiError;
    use shop_orders::store::{Claim, Orders};

    let mut stack = Stack::new(Store::Sqlite, &[]).await.unwrap();
    let (bound, dapr) = stack.bind("orders").await.unwrap();
    stack.start(bound).await.unwrap();
    let orders = Orders::new(
        Dapr::new(&dapr).unwrap(),
        kit::testing::STATE_STORE,
        Duration::from_millis(20),
    );
    let ada = Uuid::new_v4();
    let key = IdempotencyKey::parse("retry-me").unwrap();
    let items = Items::parse(&[(Uuid::new_v4(), 2)], 10).unwrap();
    let other_items = Items::parse(&[(Uuid::new_v4(), 1)], 10).unwrap();

    let first = OrderId::generate();
    let claim = orders.claim(ada, &key, first, &items).await.unwrap();
    assert_eq!(claim, Claim::New(first));
    let again = orders.claim(ada, &key, OrderId::generate(), &items).await;
    assert_eq!(again.unwrap(), Claim::Existing(first));
    let reused = orders
        .claim(ada, &key, OrderId::generate(), &other_items)
        .await;
    assert!(matches!(reused, Err(ApiError::KeyReused)), "{reused:?}");
    let someone_else = OrderId::generate();
    let theirs = orders
        .claim(Uuid::new_v4(), &key, someone_else, &items)
        .await;
    assert_eq!(theirs.unwrap(), Claim::New(someone_else));

    let now = chrono::Utc::now();
    let view = StoredOrder {
        id: first,
        user_id: ada,
        user_email: "ada@example.com".into(),
        status: OrderStatus::PendingPayment,
        lines: StoredOrder::unpriced(&items),
        total_cents: 1000,
        currency: Some("EUR".into()),
        rejection: None,
        cancellation: None,
        payment_id: None,
        placed_at: now,
        payment_due_at: now,
        updated_at: now,
    };
    assert_eq!(orders.open(&view).await.unwrap(), view);
    // A second run of the activity (its first result was lost) finds the first view.
    let rerun = StoredOrder {
        status: OrderStatus::Rejected,
        total_cents: 0,
        ..view.clone()
    };
    assert_eq!(orders.open(&rerun).await.unwrap(), view);
    assert_eq!(orders.get(first).await.unwrap().unwrap().value, view);
    let page = orders.list(ada, None, 10).await.unwrap();
    assert_eq!(page.orders, vec![view], "listed once");
    stack.shutdown().await.unwrap();
}
