//! The inventory app behind a real local sidecar, on each state store the project ships: the
//! gateway's and the orders app's calls come through sidecars of their own, as in production.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::time::Duration;

use kit::testing::{Caller, Events, Stack, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop_inventory::{App, Settings};
use uuid::Uuid;

struct Inventory {
    stack: Stack,
    gateway: Caller,
    orders: Caller,
    events: Events,
}

/// Who the gateway says is calling.
#[derive(Clone, Copy)]
enum As {
    Anonymous,
    Customer,
    Admin,
}

impl Inventory {
    async fn start(store: Store) -> Self {
        let mut stack = Stack::new(store, &[]).await.unwrap();
        let events = stack.observe(&["products"]).await.unwrap();
        let (bound, dapr) = stack.bind("inventory").await.unwrap();
        let app = App::build(Settings {
            dapr,
            ..Settings::default()
        })
        .await
        .unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        let gateway = stack.caller("gateway").await.unwrap();
        let orders = stack.caller("orders").await.unwrap();
        Self {
            stack,
            gateway,
            orders,
            events,
        }
    }

    async fn call(
        &self,
        who: As,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.gateway.invoke(method, "inventory", path);
        let role = match who {
            As::Anonymous => None,
            As::Customer => Some("customer"),
            As::Admin => Some("admin"),
        };
        if let Some(role) = role {
            request = request
                .header("x-shop-user-id", Uuid::new_v4().to_string())
                .header("x-shop-user-email", format!("{role}@example.com"))
                .header("x-shop-user-role", role);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    async fn add(&self, product: Value) -> Value {
        let (status, product) = self
            .call(As::Admin, Method::POST, "/products", Some(product))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{product}");
        product
    }

    async fn reserve(&self, order: Uuid, items: Value) -> (StatusCode, Value) {
        let response = self
            .orders
            .invoke(Method::POST, "inventory", "/reservations")
            .json(&json!({"order_id": order, "items": items}))
            .send()
            .await
            .unwrap();
        read(response).await
    }

    async fn stock(&self, id: &str) -> i64 {
        let (status, product) = self
            .call(As::Anonymous, Method::GET, &format!("/products/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{product}");
        product["stock"].as_i64().unwrap()
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

fn mug(stock: i64) -> Value {
    json!({
        "name": "Mug",
        "description": "Holds coffee.",
        "price_cents": 1250,
        "currency": "EUR",
        "category": "kitchen",
        "stock": stock,
    })
}

fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_update_and_delete_products_and_each_change_is_announced() {
    let inventory = Inventory::start(Store::Sqlite).await;
    let product = inventory.add(mug(5)).await;
    let id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(product["price_cents"], 1250);
    let added = inventory
        .events
        .wait_for("shop.product.added.v1", Duration::from_secs(10), |d| {
            d["product"]["id"] == id.as_str()
        })
        .await
        .unwrap();
    assert_eq!(added["data"]["product"]["stock"], 5);

    let mut changed = mug(7);
    changed["name"] = json!("Big mug");
    let (status, updated) = inventory
        .call(
            As::Admin,
            Method::PUT,
            &format!("/products/{id}"),
            Some(changed),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Big mug");
    assert_eq!(inventory.stock(&id).await, 7);
    inventory
        .events
        .wait_for("shop.product.updated.v1", Duration::from_secs(10), |d| {
            d["product"]["name"] == "Big mug"
        })
        .await
        .unwrap();

    let (status, _) = inventory
        .call(As::Admin, Method::DELETE, &format!("/products/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = inventory
        .call(As::Anonymous, Method::GET, &format!("/products/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    inventory
        .events
        .wait_for("shop.product.deleted.v1", Duration::from_secs(10), |d| {
            d["product_id"] == id.as_str()
        })
        .await
        .unwrap();
    inventory.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_change_products() {
    let mut inventory = Inventory::start(Store::Memory).await;
    let id = inventory.add(mug(5)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for who in [As::Anonymous, As::Customer] {
        let expected = match who {
            As::Anonymous => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        };
        let (status, _) = inventory
            .call(who, Method::POST, "/products", Some(mug(1)))
            .await;
        assert_eq!(status, expected);
        let (status, _) = inventory
            .call(who, Method::PUT, &format!("/products/{id}"), Some(mug(1)))
            .await;
        assert_eq!(status, expected);
        let (status, _) = inventory
            .call(who, Method::DELETE, &format!("/products/{id}"), None)
            .await;
        assert_eq!(status, expected);
    }
    assert_eq!(inventory.stock(&id).await, 5, "nothing changed");
    // Identity headers mean nothing from another app than the gateway.
    let intruder = inventory.stack.caller("payments").await.unwrap();
    let response = intruder
        .invoke(Method::POST, "inventory", "/products")
        .header("x-shop-user-id", Uuid::new_v4().to_string())
        .header("x-shop-user-email", "admin@example.com")
        .header("x-shop-user-role", "admin")
        .json(&mug(1))
        .send()
        .await
        .unwrap();
    assert_eq!(read(response).await.0, StatusCode::UNAUTHORIZED);
    inventory.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_products_name_the_field_and_store_nothing() {
    let inventory = Inventory::start(Store::Sqlite).await;
    let cases = [
        ("price_cents", json!(-1)),
        ("stock", json!(-3)),
        ("stock", json!("ten")),
        ("currency", json!("euro")),
        ("category", json!("Kitchen Stuff")),
        ("name", json!("")),
    ];
    for (key, value) in cases {
        let mut product = mug(1);
        product[key] = value.clone();
        let (status, problem) = inventory
            .call(As::Admin, Method::POST, "/products", Some(product))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{key}={value}: {problem}"
        );
        assert_eq!(field(&problem), key, "{problem}");
    }
    let mut missing = mug(1);
    missing.as_object_mut().unwrap().remove("price_cents");
    let (status, problem) = inventory
        .call(As::Admin, Method::POST, "/products", Some(missing))
        .await;
    assert_eq!(
        (status, field(&problem)),
        (StatusCode::UNPROCESSABLE_ENTITY, "price_cents")
    );
    let mut unknown = mug(1);
    unknown["colour"] = json!("red");
    let (status, problem) = inventory
        .call(As::Admin, Method::POST, "/products", Some(unknown))
        .await;
    assert_eq!(
        (status, field(&problem)),
        (StatusCode::UNPROCESSABLE_ENTITY, "colour")
    );
    let response = inventory
        .gateway
        .invoke(Method::POST, "inventory", "/products")
        .header("x-shop-user-id", Uuid::new_v4().to_string())
        .header("x-shop-user-email", "admin@example.com")
        .header("x-shop-user-role", "admin")
        .header("content-type", "application/json")
        .body("{\"name\": \"Mug\",")
        .send()
        .await
        .unwrap();
    assert_eq!(read(response).await.0, StatusCode::BAD_REQUEST);
    let (status, page) = inventory
        .call(As::Anonymous, Method::GET, "/products", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"], json!([]), "nothing was stored");

    let unknown = Uuid::new_v4();
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(mug(1))),
        (Method::DELETE, None),
    ] {
        let (status, _) = inventory
            .call(
                As::Admin,
                method.clone(),
                &format!("/products/{unknown}"),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    let (status, _) = inventory
        .call(As::Anonymous, Method::GET, "/products/not-a-uuid", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for query in [
        "limit=0",
        "limit=1000",
        "limit=x",
        "cursor=nope",
        "category=Bad%20One",
    ] {
        let (status, problem) = inventory
            .call(
                As::Anonymous,
                Method::GET,
                &format!("/products?{query}"),
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
        assert_eq!(field(&problem), query.split('=').next().unwrap());
    }
    inventory.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_through_every_product_and_filter_by_category_on_every_store() {
    for store in Store::ALL {
        let inventory = Inventory::start(store).await;
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut product = mug(i);
            product["category"] = json!(if i % 2 == 0 { "kitchen" } else { "garden" });
            ids.push(
                inventory.add(product).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let mut seen = Vec::new();
        let mut path = "/products?limit=3".to_owned();
        loop {
            let (status, page) = inventory
                .call(As::Anonymous, Method::GET, &path, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{store:?}: {page}");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 3);
            seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/products?limit=3&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen, ids, "{store:?}: every product once, oldest first");
        let (_, garden) = inventory
            .call(
                As::Anonymous,
                Method::GET,
                "/products?category=garden&limit=50",
                None,
            )
            .await;
        let garden: Vec<&str> = garden["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(garden, [&ids[1], &ids[3], &ids[5]], "{store:?}");
        inventory.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_reservations_against_a_stock_of_ten_never_oversell_on_every_store() {
    for store in Store::ALL {
        let inventory = Inventory::start(store).await;
        let id = inventory.add(mug(10)).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let attempts = (0..50).map(|_| {
            let inventory = &inventory;
            let id = id.clone();
            async move {
                inventory
                    .reserve(Uuid::new_v4(), json!([{"product_id": id, "quantity": 1}]))
                    .await
            }
        });
        let outcomes = futures::future::join_all(attempts).await;
        let created = outcomes
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count();
        let refused: Vec<&Value> = outcomes
            .iter()
            .filter(|(s, _)| *s != StatusCode::CREATED)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(created, 10, "{store:?}: {refused:?}");
        assert!(
            outcomes
                .iter()
                .all(|(s, _)| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
            "{store:?}: the rest are out of stock, not errors: {refused:?}"
        );
        assert_eq!(inventory.stock(&id).await, 0, "{store:?}");
        inventory.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_atomic_idempotent_and_only_for_the_orders_app() {
    let inventory = Inventory::start(Store::Sqlite).await;
    let plenty = inventory.add(mug(5)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let scarce = inventory.add(mug(1)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // All or nothing: the second line cannot be served, so the first is not taken either.
    let (status, problem) = inventory
        .reserve(
            Uuid::new_v4(),
            json!([{"product_id": plenty, "quantity": 2}, {"product_id": scarce, "quantity": 2}]),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(field(&problem), "items[1].quantity");
    assert_eq!(inventory.stock(&plenty).await, 5);

    // The same order twice takes the stock once.
    let order = Uuid::new_v4();
    let items = json!([{"product_id": plenty, "quantity": 2}]);
    let (status, first) = inventory.reserve(order, items.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["total_cents"], 2500);
    let (status, again) = inventory.reserve(order, items).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    assert_eq!(inventory.stock(&plenty).await, 3);

    // Released stock comes back, once.
    for _ in 0..2 {
        let response = inventory
            .orders
            .invoke(
                Method::POST,
                "inventory",
                &format!("/reservations/{order}/release"),
            )
            .send()
            .await
            .unwrap();
        let (status, released) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{released}");
        assert_eq!(released["status"], "released");
    }
    assert_eq!(inventory.stock(&plenty).await, 5);

    // Bad lines name their field.
    for (items, expected) in [
        (json!([]), "items"),
        (
            json!([{"product_id": plenty, "quantity": 0}]),
            "items[0].quantity",
        ),
        (
            json!([{"product_id": plenty, "quantity": -1}]),
            "items[0].quantity",
        ),
        (
            json!([{"product_id": Uuid::new_v4(), "quantity": 1}]),
            "items[0].product_id",
        ),
        (
            json!([{"product_id": plenty, "quantity": 1}, {"product_id": plenty, "quantity": 1}]),
            "items[1].product_id",
        ),
    ] {
        let (status, problem) = inventory.reserve(Uuid::new_v4(), items.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{items}: {problem}"
        );
        assert_eq!(field(&problem), expected, "{problem}");
    }

    // The gateway (and so the public) cannot reserve.
    let response = inventory
        .gateway
        .invoke(Method::POST, "inventory", "/reservations")
        .json(
            &json!({"order_id": Uuid::new_v4(), "items": [{"product_id": plenty, "quantity": 1}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(read(response).await.0, StatusCode::FORBIDDEN);
    assert_eq!(inventory.stock(&plenty).await, 5);
    inventory.stop().await;
}
