//! The payments app behind a real local sidecar: customers' calls come through a "gateway"
//! sidecar, the orders app is a stand-in behind its own sidecar (it answers what an order
//! costs), the payment provider is a wiremock server, and an observer records PAYMENT_*.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::{CancellationReason, Event, OrderCancelled};
use kit::dapr::Dapr;
use kit::server::{Service, Stop};
use kit::testing::{Caller, Events, PUBSUB, Stack, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop_payments::settings::PaymentsSettings;
use shop_payments::{App, Settings};
use uuid::Uuid;
use wiremock::matchers::{body_partial_json, header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "test-provider-key";

/// The orders app as the payments app sees it: what each order costs and who owns it.
#[derive(Clone, Default)]
struct OrdersStandIn {
    orders: Arc<Mutex<HashMap<Uuid, Value>>>,
}

struct OrdersApp {
    listener: tokio::net::TcpListener,
    orders: OrdersStandIn,
}

impl Service for OrdersApp {
    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    fn run(self: Box<Self>, stop: Stop) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        let orders = self.orders.clone();
        let router = axum::Router::new()
            .route(
                "/payable-orders/{id}",
                axum::routing::get(move |axum::extract::Path(id): axum::extract::Path<Uuid>| {
                    let orders = orders.clone();
                    async move {
                        match orders.orders.lock().unwrap().get(&id) {
                            Some(order) => axum::Json(order.clone()).into_response(),
                            None => StatusCode::NOT_FOUND.into_response(),
                        }
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        Box::pin(async move {
            axum::serve(self.listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await?;
            Ok(())
        })
    }
}

use axum::response::IntoResponse as _;

struct Shop {
    stack: Stack,
    gateway: Caller,
    publisher: Dapr,
    orders: OrdersStandIn,
    provider: MockServer,
    events: Events,
}

impl Shop {
    async fn start() -> Self {
        let provider = MockServer::start().await;
        let mut stack = Stack::new(
            Store::Sqlite,
            &[
                ("paygate-url", &provider.uri()),
                ("paygate-api-key", API_KEY),
            ],
        )
        .await
        .unwrap();
        let events = stack.observe(&[contracts::PAYMENTS]).await.unwrap();
        let orders = OrdersStandIn::default();
        let (bound, _) = stack.bind("orders").await.unwrap();
        let app = OrdersApp {
            listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            orders: orders.clone(),
        };
        stack.run(bound, Box::new(app)).await.unwrap();
        let (bound, dapr) = stack.bind("payments").await.unwrap();
        let app = App::build(Settings {
            dapr,
            payments: PaymentsSettings {
                provider_retry_millis: 10,
                ..PaymentsSettings::default()
            },
            ..Settings::default()
        })
        .await
        .unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        let (bound, dapr) = stack.bind("publisher").await.unwrap();
        stack.start(bound).await.unwrap();
        let publisher = Dapr::new(&dapr).unwrap();
        let gateway = stack.caller("gateway").await.unwrap();
        Self {
            stack,
            gateway,
            publisher,
            orders,
            provider,
            events,
        }
    }

    /// An order of `user` for `total_cents` EUR, in `status`.
    fn order(&self, user: Uuid, total_cents: i64, status: &str) -> Uuid {
        let id = Uuid::now_v7();
        self.orders.orders.lock().unwrap().insert(
            id,
            json!({
                "id": id, "user_id": user, "user_email": "ada@example.com", "status": status,
                "total_cents": total_cents, "currency": "EUR",
                "payment_due_at": "2030-01-01T00:00:00Z",
            }),
        );
        id
    }

    async fn pay(&self, user: Uuid, body: Value) -> (StatusCode, Value) {
        let response = self
            .gateway
            .invoke(Method::POST, "payments", "/payments")
            .header("x-shop-user-id", user.to_string())
            .header("x-shop-user-email", "ada@example.com")
            .header("x-shop-user-role", "customer")
            .json(&body)
            .send()
            .await
            .unwrap();
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

    async fn publish<E: Event>(&self, event: &E, id: &str) {
        let metadata = HashMap::from([
            ("cloudevent.type".to_owned(), E::TYPE.to_owned()),
            ("cloudevent.id".to_owned(), id.to_owned()),
        ]);
        self.publisher
            .publish_raw(
                PUBSUB,
                E::TOPIC,
                &serde_json::to_value(event).unwrap(),
                metadata,
            )
            .await
            .unwrap();
    }

    async fn calls_to(&self, route: &str) -> Vec<wiremock::Request> {
        self.provider
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == route)
            .collect()
    }

    async fn stop(self) {
        self.stack.shutdown().await.unwrap();
    }
}

fn card(number: &str) -> Value {
    json!({"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"})
}

fn charge(status: &str, failure_code: Option<&str>) -> ResponseTemplate {
    let mut body = json!({"id": "ch_1", "status": status, "amount_cents": 2500, "currency": "EUR", "card_last4": "4242"});
    if let Some(code) = failure_code {
        body["failure_code"] = json!(code);
    }
    ResponseTemplate::new(201).set_body_json(body)
}

fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_card_is_charged_the_orders_amount_once_and_announced() {
    let shop = Shop::start().await;
    let ada = Uuid::new_v4();
    let order = shop.order(ada, 2500, "PENDING_PAYMENT");
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(header_exists("idempotency-key"))
        .and(body_partial_json(
            json!({"amount_cents": 2500, "currency": "EUR"}),
        ))
        .respond_with(charge("succeeded", None))
        .expect(1)
        .mount(&shop.provider)
        .await;

    let (status, payment) = shop
        .pay(
            ada,
            json!({"order_id": order, "card": card("4242 4242 4242 4242")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["status"], "SUCCEEDED");
    assert_eq!(payment["amount_cents"], 2500);
    assert_eq!(payment["card_last4"], "4242");
    let event = shop
        .events
        .wait_for("shop.payment.successful.v1", Duration::from_secs(10), |d| {
            d["order_id"] == order.to_string()
        })
        .await
        .unwrap();
    assert_eq!(event["data"]["amount_cents"], 2500);
    assert_eq!(event["data"]["card_last4"], "4242");

    // Paying again is the same payment, not a second charge.
    let (status, again) = shop
        .pay(
            ada,
            json!({"order_id": order, "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], payment["id"]);
    let charges = shop.calls_to("/v1/charges").await;
    assert_eq!(charges.len(), 1);
    assert_eq!(
        charges[0].headers.get("idempotency-key").unwrap(),
        payment["id"].as_str().unwrap()
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_announced_with_the_reason() {
    let shop = Shop::start().await;
    let ada = Uuid::new_v4();
    let order = shop.order(ada, 2500, "PENDING_PAYMENT");
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("failed", Some("insufficient_funds")))
        .expect(1)
        .mount(&shop.provider)
        .await;
    let (status, payment) = shop
        .pay(
            ada,
            json!({"order_id": order, "card": card("4000000000009995")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["status"], "FAILED");
    assert_eq!(payment["failure_reason"], "insufficient_funds");
    let event = shop
        .events
        .wait_for("shop.payment.failed.v1", Duration::from_secs(10), |d| {
            d["order_id"] == order.to_string()
        })
        .await
        .unwrap();
    assert_eq!(event["data"]["reason"], "insufficient_funds");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failure_is_retried_with_the_same_idempotency_key() {
    let shop = Shop::start().await;
    let ada = Uuid::new_v4();
    let order = shop.order(ada, 2500, "PENDING_PAYMENT");
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&shop.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("succeeded", None))
        .expect(1)
        .mount(&shop.provider)
        .await;
    let (status, payment) = shop
        .pay(
            ada,
            json!({"order_id": order, "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["status"], "SUCCEEDED");
    let keys: Vec<String> = shop
        .calls_to("/v1/charges")
        .await
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "a retry reuses the key");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_pays_and_only_a_pending_order() {
    let shop = Shop::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("succeeded", None))
        .expect(0)
        .mount(&shop.provider)
        .await;
    let ada = Uuid::new_v4();
    let order = shop.order(ada, 2500, "PENDING_PAYMENT");
    let (status, _) = shop
        .pay(
            Uuid::new_v4(),
            json!({"order_id": order, "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not someone else's order");
    let (status, _) = shop
        .pay(
            ada,
            json!({"order_id": Uuid::now_v7(), "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let confirmed = shop.order(ada, 2500, "CONFIRMED");
    let (status, _) = shop
        .pay(
            ada,
            json!({"order_id": confirmed, "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, problem) = shop
        .pay(
            ada,
            json!({"order_id": order, "amount_cents": 1, "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the client names no amount"
    );
    assert_eq!(field(&problem), "amount_cents");
    for (card, expected) in [
        (card("4242424242424241"), "card.number"),
        (
            json!({"number": "4242424242424242", "exp_month": 0, "exp_year": 2030, "cvc": "123"}),
            "card.exp_month",
        ),
        (
            json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2030, "cvc": "1"}),
            "card.cvc",
        ),
        (
            json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2030}),
            "card.cvc",
        ),
    ] {
        let (status, problem) = shop
            .pay(ada, json!({"order_id": order, "card": card}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(field(&problem), expected, "{problem}");
    }
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_for_an_order_cancelled_meanwhile_is_refunded_once() {
    let shop = Shop::start().await;
    let ada = Uuid::new_v4();
    let order = shop.order(ada, 2500, "PENDING_PAYMENT");
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("succeeded", None))
        .mount(&shop.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(body_partial_json(json!({"charge_id": "ch_1"})))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "re_1", "charge_id": "ch_1", "status": "succeeded"})),
        )
        .expect(1..=2)
        .mount(&shop.provider)
        .await;
    let (_, payment) = shop
        .pay(
            ada,
            json!({"order_id": order, "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(payment["status"], "SUCCEEDED");

    let cancelled = OrderCancelled {
        order_id: order,
        user_id: ada,
        user_email: "ada@example.com".into(),
        reason: CancellationReason::PaymentTimeout,
        cancelled_at: chrono::Utc::now(),
    };
    shop.publish(&cancelled, "cancel-1").await;
    shop.publish(&cancelled, "cancel-1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shop.calls_to("/v1/refunds").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no refund");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, again) = shop
        .pay(
            ada,
            json!({"order_id": order, "card": card("4242424242424242")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"], "REFUNDED");
    // Two deliveries handled at once may both ask: with one idempotency key, which the
    // provider turns into one refund.
    let keys: Vec<String> = shop
        .calls_to("/v1/refunds")
        .await
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        keys.iter()
            .all(|k| *k == format!("refund-{}", payment["id"].as_str().unwrap())),
        "{keys:?}"
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_of_one_order_are_one_payment() {
    let shop = Shop::start().await;
    let ada = Uuid::new_v4();
    let order = shop.order(ada, 2500, "PENDING_PAYMENT");
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("succeeded", None).set_delay(Duration::from_millis(100)))
        .mount(&shop.provider)
        .await;
    let attempts = (0..6).map(|_| {
        shop.pay(
            ada,
            json!({"order_id": order, "card": card("4242424242424242")}),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let mut ids: Vec<String> = answers
        .iter()
        .map(|(status, payment)| {
            assert!(status.is_success(), "{status} {payment}");
            assert_eq!(payment["status"], "SUCCEEDED");
            payment["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one payment: {ids:?}");
    for call in shop.calls_to("/v1/charges").await {
        assert_eq!(
            call.headers.get("idempotency-key").unwrap(),
            ids[0].as_str(),
            "every charge attempt is the same charge for the provider"
        );
    }
    shop.events
        .wait_for("shop.payment.successful.v1", Duration::from_secs(10), |d| {
            d["order_id"] == order.to_string()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let announced = shop
        .events
        .all()
        .into_iter()
        .filter(|e| e["type"] == "shop.payment.successful.v1")
        .count();
    assert_eq!(announced, 1);
    shop.stop().await;
}
