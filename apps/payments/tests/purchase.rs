//! A whole purchase with the real apps behind their sidecars: inventory, orders (with the
//! sidecar's workflow engine) and payments, the provider mocked with wiremock. Checks that the
//! apps agree on the order's payable view and the PAYMENT_* and ORDER_* events.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::time::Duration;

use kit::testing::{Caller, Stack, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Shop {
    stack: Stack,
    gateway: Caller,
    provider: MockServer,
}

impl Shop {
    async fn start(payment_timeout_seconds: u64) -> Self {
        let provider = MockServer::start().await;
        let mut stack = Stack::new(
            Store::Sqlite,
            &[("paygate-url", &provider.uri()), ("paygate-api-key", "key")],
        )
        .await
        .unwrap();
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
        let app = shop_inventory::App::build(shop_inventory::Settings {
            dapr,
            ..Default::default()
        })
        .await
        .unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        let (bound, dapr) = stack.bind("orders").await.unwrap();
        let app = shop_orders::App::build(shop_orders::Settings {
            dapr,
            orders: shop_orders::settings::OrdersSettings {
                payment_timeout_seconds,
                poll_millis: 20,
                activity_first_retry_millis: 100,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        let (bound, dapr) = stack.bind("payments").await.unwrap();
        let app = shop_payments::App::build(shop_payments::Settings {
            dapr,
            ..Default::default()
        })
        .await
        .unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        let gateway = stack.caller("gateway").await.unwrap();
        Self {
            stack,
            gateway,
            provider,
        }
    }

    async fn call(
        &self,
        user: Uuid,
        role: &str,
        method: Method,
        app: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .gateway
            .invoke(method, app, path)
            .header("x-shop-user-id", user.to_string())
            .header("x-shop-user-email", "ada@example.com")
            .header("x-shop-user-role", role)
            .header("idempotency-key", Uuid::new_v4().to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn product(&self, stock: i64) -> String {
        let (status, product) = self
            .call(
                Uuid::new_v4(),
                "admin",
                Method::POST,
                "inventory",
                "/products",
                Some(json!({"name": "Mug", "price_cents": 1250, "currency": "EUR", "category": "kitchen", "stock": stock})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{product}");
        product["id"].as_str().unwrap().to_owned()
    }

    async fn stock(&self, product: &str) -> i64 {
        let (_, product) = self
            .call(
                Uuid::new_v4(),
                "customer",
                Method::GET,
                "inventory",
                &format!("/products/{product}"),
                None,
            )
            .await;
        product["stock"].as_i64().unwrap()
    }

    async fn order_becomes(&self, user: Uuid, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, order) = self
                .call(
                    user,
                    "customer",
                    Method::GET,
                    "orders",
                    &format!("/orders/{id}"),
                    None,
                )
                .await;
            if order["status"] == status {
                return order;
            }
            assert!(tokio::time::Instant::now() < deadline, "{order}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn charge(status: &str, failure_code: Option<&str>) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_json(json!({"id": "ch_1", "status": status, "failure_code": failure_code}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_card_confirms_the_order_and_a_declined_one_cancels_it() {
    let shop = Shop::start(900).await;
    let product = shop.product(5).await;
    let ada = Uuid::new_v4();

    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("succeeded", None))
        .up_to_n_times(1)
        .mount(&shop.provider)
        .await;
    let (status, order) = shop
        .call(
            ada,
            "customer",
            Method::POST,
            "orders",
            "/orders",
            Some(json!({"items": [{"product_id": product, "quantity": 2}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().unwrap().to_owned();
    let card =
        json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"});
    let (status, payment) = shop
        .call(
            ada,
            "customer",
            Method::POST,
            "payments",
            "/payments",
            Some(json!({"order_id": id, "card": card})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["amount_cents"], 2500, "the order's amount");
    shop.order_becomes(ada, &id, "CONFIRMED").await;
    assert_eq!(shop.stock(&product).await, 3);

    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("failed", Some("card_declined")))
        .mount(&shop.provider)
        .await;
    let (_, order) = shop
        .call(
            ada,
            "customer",
            Method::POST,
            "orders",
            "/orders",
            Some(json!({"items": [{"product_id": product, "quantity": 1}]})),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.stock(&product).await, 2);
    let (status, payment) = shop
        .call(
            ada,
            "customer",
            Method::POST,
            "payments",
            "/payments",
            Some(json!({"order_id": id, "card": card})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["status"], "FAILED");
    let cancelled = shop.order_becomes(ada, &id, "CANCELLED").await;
    assert_eq!(cancelled["cancellation_reason"], "payment_failed");
    assert_eq!(shop.stock(&product).await, 3);
    shop.stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_lands_after_the_deadline_is_refunded() {
    let shop = Shop::start(3).await;
    let product = shop.product(5).await;
    let ada = Uuid::new_v4();
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(charge("succeeded", None).set_delay(Duration::from_secs(4)))
        .mount(&shop.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "re_1"})))
        .mount(&shop.provider)
        .await;
    let (_, order) = shop
        .call(
            ada,
            "customer",
            Method::POST,
            "orders",
            "/orders",
            Some(json!({"items": [{"product_id": product, "quantity": 1}]})),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    let card =
        json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"});
    // The order times out while the provider takes its time.
    let (status, payment) = shop
        .call(
            ada,
            "customer",
            Method::POST,
            "payments",
            "/payments",
            Some(json!({"order_id": id, "card": card})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["status"], "SUCCEEDED");
    shop.order_becomes(ada, &id, "CANCELLED").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let refunds = shop
            .provider
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == "/v1/refunds")
            .count();
        if refunds > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no refund");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shop.stock(&product).await, 5, "the stock is back");
    shop.stack.shutdown().await.unwrap();
}
