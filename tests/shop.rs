//! The shop end to end, through the gateway only: the embedded default (`components/local`) and
//! the server sets (`components/rabbitmq`: the local PostgreSQL and RabbitMQ;
//! `components/kafka`: the local PostgreSQL and librdkafka's mock Kafka cluster). Purchases go
//! through the real payment provider simulator the launcher starts; mail reaches an SMTP server
//! of the test's own (or, on the embedded default, the files the mail binding writes).

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop_e2e::{ADMIN_EMAIL, ADMIN_PASSWORD, Answer, ComponentSet, Email, TestShop};

/// How long a test waits for an event's effect. Generous, because it is paid only by a failure:
/// on Kafka the first events after start-up can wait for a rebalance (each subscription is a
/// consumer of the app's group, and every consumer that joins moves the group's partitions
/// again), which on a loaded machine took over 15 s once.
const EVENT_WAIT: Duration = Duration::from_secs(60);

fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple())
}

fn product(name: &str, category: &str, stock: i64) -> Value {
    json!({
        "name": name,
        "description": format!("A {name} for tests."),
        "price_cents": 990,
        "currency": "EUR",
        "category": category,
        "stock": stock,
    })
}

/// Registration, login, products and their events, as a customer and an admin see them.
async fn journey(set: ComponentSet) {
    let shop = TestShop::start(set).await.unwrap();

    // A customer registers (once), logs in, and sees themselves.
    let email = unique_email("ada");
    let registration = json!({"email": email, "password": "s3cret-pass", "name": "Ada"});
    let created = shop
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(registration.clone()),
        )
        .await
        .unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{set:?}: {created:?}");
    let user_id = created.body["id"].as_str().unwrap().to_owned();
    let again = shop
        .call(Method::POST, "/api/auth/register", None, Some(registration))
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.is_problem());
    let wrong = shop
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": "wrong-password"})),
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let customer = shop.login(&email, "s3cret-pass").await.unwrap();
    let me = shop
        .call(Method::GET, "/api/auth/me", Some(&customer), None)
        .await
        .unwrap();
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.body["id"], user_id.as_str());
    assert_eq!(me.body["role"], "customer");
    let anonymous = shop
        .call(Method::GET, "/api/auth/me", None, None)
        .await
        .unwrap();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    shop.events
        .wait_for("shop.user.registered.v1", EVENT_WAIT, |d| {
            d["user_id"] == user_id.as_str()
        })
        .await
        .unwrap();

    // The registration reaches the notifications app: a welcome in the customer's history,
    // and in nobody else's.
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    let welcome = loop {
        let history = shop
            .call(Method::GET, "/api/notifications", Some(&customer), None)
            .await
            .unwrap();
        assert_eq!(history.status, StatusCode::OK, "{set:?}: {history:?}");
        if let Some(welcome) = history.body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|n| n["kind"] == "welcome"))
        {
            break welcome.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{set:?}: no welcome notification: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(welcome["title"], "Welcome to the shop, Ada!");
    // The live stream through the gateway, with the token: a browser coming back with an id
    // the history no longer holds is given the whole history again, the welcome first.
    let mut stream = shop
        .request(Method::GET, "/api/notifications/stream")
        .bearer_auth(&customer)
        .header("last-event-id", uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut received = String::new();
    while !received.contains("\n\n") {
        let chunk = tokio::time::timeout(EVENT_WAIT, stream.chunk())
            .await
            .expect("an event arrives")
            .unwrap()
            .expect("the stream stays open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first_id = format!("id: {}", welcome["id"].as_str().unwrap());
    assert!(
        received.contains(&first_id) && received.contains("event: notification"),
        "{received}"
    );
    drop(stream);
    let anonymous = shop
        .call(Method::GET, "/api/notifications", None, None)
        .await
        .unwrap();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // The admin manages products; the customer may not.
    let admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    let admins = shop
        .call(Method::GET, "/api/notifications", Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(admins.status, StatusCode::OK);
    assert!(
        !admins.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == welcome["id"]),
        "{admins:?}"
    );
    let refused = shop
        .call(
            Method::POST,
            "/api/products",
            Some(&customer),
            Some(product("Mug", "kitchen", 3)),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    let refused = shop
        .call(
            Method::POST,
            "/api/products",
            None,
            Some(product("Mug", "kitchen", 3)),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let mut ids = Vec::new();
    for (name, category) in [
        ("Mug", "kitchen"),
        ("Spade", "garden"),
        ("Kettle", "kitchen"),
    ] {
        let added = shop
            .call(
                Method::POST,
                "/api/products",
                Some(&admin),
                Some(product(name, category, 3)),
            )
            .await
            .unwrap();
        assert_eq!(added.status, StatusCode::CREATED, "{set:?}: {added:?}");
        ids.push(added.body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        shop.events
            .wait_for("shop.product.added.v1", EVENT_WAIT, |d| {
                d["product"]["id"] == id.as_str()
            })
            .await
            .unwrap();
    }
    let updated = shop
        .call(
            Method::PUT,
            &format!("/api/products/{}", ids[0]),
            Some(&admin),
            Some(product("Big mug", "kitchen", 9)),
        )
        .await
        .unwrap();
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    shop.events
        .wait_for("shop.product.updated.v1", EVENT_WAIT, |d| {
            d["product"]["id"] == ids[0].as_str() && d["product"]["stock"] == 9
        })
        .await
        .unwrap();

    // Anyone lists them, a page at a time.
    let mut seen = Vec::new();
    let mut path = "/api/products?limit=2".to_owned();
    loop {
        let page = shop.call(Method::GET, &path, None, None).await.unwrap();
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/products?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let kitchen = shop
        .call(Method::GET, "/api/products?category=kitchen", None, None)
        .await
        .unwrap();
    assert_eq!(kitchen.body["items"].as_array().unwrap().len(), 2);

    let deleted = shop
        .call(
            Method::DELETE,
            &format!("/api/products/{}", ids[1]),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    let gone = shop
        .call(
            Method::GET,
            &format!("/api/products/{}", ids[1]),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    shop.events
        .wait_for("shop.product.deleted.v1", EVENT_WAIT, |d| {
            d["product_id"] == ids[1].as_str()
        })
        .await
        .unwrap();

    purchase(&shop, set, &admin, &customer, &user_id, &email).await;
    shop.stop().await.unwrap();
}

/// The card of the paygate (the real simulator, started by the launcher) that always succeeds.
const GOOD_CARD: &str = "4242424242424242";
/// The card the paygate always declines.
const DECLINED_CARD: &str = "4000000000000002";

fn card(number: &str) -> Value {
    json!({"number": number, "exp_month": 12, "exp_year": 2099, "cvc": "123"})
}

/// A product's stock, as anyone reads it.
async fn stock(shop: &TestShop, product: &str) -> i64 {
    let answer = shop
        .call(Method::GET, &format!("/api/products/{product}"), None, None)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.body["stock"].as_i64().unwrap()
}

/// Reads the order until it has `status`, within [`EVENT_WAIT`].
async fn order_becomes(shop: &TestShop, token: &str, order: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let answer = shop
            .call(
                Method::GET,
                &format!("/api/orders/{order}"),
                Some(token),
                None,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        if answer.body["status"] == status {
            return answer.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order} is not {status}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `stock` until it is `expected`, within [`EVENT_WAIT`] (the workflow commits or
/// releases the reservation after it answers).
async fn stock_becomes(shop: &TestShop, product: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let now = stock(shop, product).await;
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stock of {product} is {now}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the customer's notifications until those of `order` include every kind of `kinds`;
/// returns the order's notifications, oldest first.
async fn notified(shop: &TestShop, token: &str, order: &str, kinds: &[&str]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let history = shop
            .call(
                Method::GET,
                "/api/notifications?limit=100",
                Some(token),
                None,
            )
            .await
            .unwrap();
        assert_eq!(history.status, StatusCode::OK, "{history:?}");
        // The history lists the newest first.
        let mine: Vec<Value> = history.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .filter(|n| n["order_id"] == order)
            .cloned()
            .collect();
        let missing: Vec<&&str> = kinds
            .iter()
            .filter(|kind| !mine.iter().any(|n| n["kind"] == **kind))
            .collect();
        if missing.is_empty() {
            return mine;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {missing:?} notification for order {order}: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The titles of notifications.
fn titles(notifications: &[Value]) -> Vec<String> {
    notifications
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until a mail with each of `subjects` has reached the customer (`recipients`: their
/// address, or their user id where mail is stored as files); returns the mails with those
/// subjects, in the order they arrived.
async fn mailed(shop: &TestShop, recipients: &[&str], subjects: &[String]) -> Vec<Email> {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let mails: Vec<Email> = shop
            .emails()
            .into_iter()
            .filter(|mail| {
                recipients.contains(&mail.to.as_str()) && subjects.contains(&mail.subject)
            })
            .collect();
        if subjects
            .iter()
            .all(|subject| mails.iter().any(|mail| mail.subject == *subject))
        {
            return mails;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every mail of {subjects:?} arrived: {:?}",
            shop.emails()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A customer's live notification stream (server-sent events), read an event at a time.
struct Live {
    response: reqwest::Response,
    buffer: String,
}

impl Live {
    /// Opens the stream: from now on, nothing of the history before.
    async fn open(shop: &TestShop, token: &str) -> Self {
        let response = shop
            .request(Method::GET, "/api/notifications/stream")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next notification the stream pushes (keep-alive comments skipped).
    async fn next(&mut self) -> Value {
        loop {
            if let Some((event, rest)) = self.buffer.split_once("\n\n") {
                let event = event.to_owned();
                self.buffer = rest.to_owned();
                if let Some(data) = event.lines().find_map(|line| line.strip_prefix("data:")) {
                    return serde_json::from_str(data.trim()).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(EVENT_WAIT, self.response.chunk())
                .await
                .expect("a notification is pushed in time")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until `count` notifications of `order` have come; returns them in stream order.
    async fn of_order(&mut self, order: &str, count: usize) -> Vec<Value> {
        let mut found = Vec::new();
        while found.len() < count {
            let notification = self.next().await;
            if notification["order_id"] == order {
                found.push(notification);
            }
        }
        found
    }
}

/// Places an order of `quantity` of `product` with `key` as its `Idempotency-Key`.
async fn place(shop: &TestShop, token: &str, key: &str, product: &str, quantity: i64) -> Answer {
    shop.send(
        shop.request(Method::POST, "/api/orders")
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"items": [{"product_id": product, "quantity": quantity}]})),
    )
    .await
    .unwrap()
}

/// Pays `order` with card `number` through the gateway.
async fn pay(shop: &TestShop, token: &str, order: &str, number: &str) -> Answer {
    shop.call(
        Method::POST,
        "/api/payments",
        Some(token),
        Some(json!({"order_id": order, "card": card(number)})),
    )
    .await
    .unwrap()
}

/// A purchase through the gateway, the orders workflow, the payments app and the paygate: a
/// good card confirms the order and takes the stock; a declined one cancels the order and
/// gives the stock back; the customer is told; another customer cannot see or pay the order.
async fn purchase(
    shop: &TestShop,
    set: ComponentSet,
    admin: &str,
    customer: &str,
    user: &str,
    address: &str,
) {
    let added = shop
        .call(
            Method::POST,
            "/api/products",
            Some(admin),
            Some(product("Lamp", "home", 5)),
        )
        .await
        .unwrap();
    assert_eq!(added.status, StatusCode::CREATED, "{set:?}: {added:?}");
    let lamp = added.body["id"].as_str().unwrap().to_owned();

    // The customer's browser follows their notifications live.
    let mut live = Live::open(shop, customer).await;
    let recipients = [user, address];

    // An order, placed twice with one Idempotency-Key (a client retrying): one order.
    let key = uuid::Uuid::new_v4().to_string();
    let placed = place(shop, customer, &key, &lamp, 2).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{set:?}: {placed:?}");
    assert_eq!(placed.body["status"], "PENDING_PAYMENT", "{placed:?}");
    assert_eq!(placed.body["total_cents"], 2 * 990);
    assert_eq!(placed.body["currency"], "EUR");
    let order = placed.body["id"].as_str().unwrap().to_owned();
    let retried = place(shop, customer, &key, &lamp, 2).await;
    assert!(retried.status.is_success(), "{set:?}: {retried:?}");
    assert_eq!(retried.body["id"], order.as_str(), "the same order");
    let mine = shop
        .call(Method::GET, "/api/orders", Some(customer), None)
        .await
        .unwrap();
    assert_eq!(mine.status, StatusCode::OK, "{mine:?}");
    let listed: Vec<&Value> = mine.body["items"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1, "one order for two requests: {mine:?}");
    assert_eq!(listed[0]["id"], order.as_str());
    // The stock is reserved while the order waits for its payment.
    stock_becomes(shop, &lamp, 3).await;
    shop.events
        .wait_for("shop.order.created.v1", EVENT_WAIT, |d| {
            d["order_id"] == order.as_str() && d["user_id"] == user
        })
        .await
        .unwrap();

    // Another customer can neither see nor pay it: to them it does not exist.
    let eve = unique_email("eve");
    let registered = shop
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": eve, "password": "s3cret-pass", "name": "Eve"})),
        )
        .await
        .unwrap();
    assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
    let eve = shop.login(&eve, "s3cret-pass").await.unwrap();
    let seen = shop
        .call(
            Method::GET,
            &format!("/api/orders/{order}"),
            Some(&eve),
            None,
        )
        .await
        .unwrap();
    assert_eq!(seen.status, StatusCode::NOT_FOUND, "{set:?}: {seen:?}");
    let theirs = shop
        .call(Method::GET, "/api/orders", Some(&eve), None)
        .await
        .unwrap();
    assert_eq!(theirs.body["items"], json!([]), "{theirs:?}");
    let paid_by_eve = pay(shop, &eve, &order, GOOD_CARD).await;
    assert_eq!(
        paid_by_eve.status,
        StatusCode::NOT_FOUND,
        "{set:?}: {paid_by_eve:?}"
    );
    assert_eq!(
        order_becomes(shop, customer, &order, "PENDING_PAYMENT").await["id"],
        order.as_str()
    );

    // The customer is told (and mailed) that the order is placed before they pay.
    let placed_note = notified(shop, customer, &order, &["order_created"]).await;
    mailed(shop, &recipients, &titles(&placed_note)).await;

    // Paid with the good card at the paygate: confirmed, and the stock stays taken.
    let paid = pay(shop, customer, &order, GOOD_CARD).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{set:?}: {paid:?}");
    assert_eq!(paid.body["status"], "SUCCEEDED", "{paid:?}");
    assert_eq!(paid.body["amount_cents"], 2 * 990, "the order's amount");
    let confirmed = order_becomes(shop, customer, &order, "CONFIRMED").await;
    assert_eq!(confirmed["total_cents"], 2 * 990);
    shop.events
        .wait_for("shop.payment.successful.v1", EVENT_WAIT, |d| {
            d["order_id"] == order.as_str() && d["card_last4"] == "4242"
        })
        .await
        .unwrap();
    shop.events
        .wait_for("shop.order.confirmed.v1", EVENT_WAIT, |d| {
            d["order_id"] == order.as_str()
        })
        .await
        .unwrap();
    assert_eq!(
        stock(shop, &lamp).await,
        3,
        "a confirmed order keeps its stock"
    );
    let history = notified(
        shop,
        customer,
        &order,
        &["order_created", "payment_succeeded", "order_confirmed"],
    )
    .await;
    // Live, in the history's order, the placement first; one mail for each, the placement's
    // first.
    let pushed = live.of_order(&order, 3).await;
    assert_eq!(pushed, history, "{set:?}: the stream follows the history");
    assert_eq!(pushed[0]["kind"], "order_created", "{set:?}: {pushed:?}");
    let subjects = titles(&history);
    let mails = mailed(shop, &recipients, &subjects).await;
    for subject in &subjects {
        assert_eq!(
            mails.iter().filter(|mail| mail.subject == *subject).count(),
            1,
            "{set:?}: one mail of {subject:?}: {mails:?}"
        );
    }
    assert_eq!(mails[0].subject, subjects[0], "{set:?}: {mails:?}");

    // A second order, paid with a declined card: cancelled, its stock given back.
    let placed = place(shop, customer, &uuid::Uuid::new_v4().to_string(), &lamp, 1).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{set:?}: {placed:?}");
    let second = placed.body["id"].as_str().unwrap().to_owned();
    assert_ne!(second, order);
    stock_becomes(shop, &lamp, 2).await;
    let refused = pay(shop, customer, &second, DECLINED_CARD).await;
    assert!(refused.status.is_success(), "{set:?}: {refused:?}");
    assert_eq!(refused.body["status"], "FAILED", "{refused:?}");
    let cancelled = order_becomes(shop, customer, &second, "CANCELLED").await;
    assert_eq!(
        cancelled["cancellation_reason"], "payment_failed",
        "{cancelled}"
    );
    stock_becomes(shop, &lamp, 3).await;
    shop.events
        .wait_for("shop.payment.failed.v1", EVENT_WAIT, |d| {
            d["order_id"] == second.as_str() && d["reason"] == "card_declined"
        })
        .await
        .unwrap();
    shop.events
        .wait_for("shop.order.cancelled.v1", EVENT_WAIT, |d| {
            d["order_id"] == second.as_str() && d["reason"] == "payment_failed"
        })
        .await
        .unwrap();
    let history = notified(
        shop,
        customer,
        &second,
        &["order_created", "payment_failed", "order_cancelled"],
    )
    .await;
    let pushed = live.of_order(&second, 3).await;
    assert_eq!(pushed, history, "{set:?}: the stream follows the history");
    let mails = mailed(shop, &recipients, &titles(&history)).await;
    assert_eq!(mails.len(), 3, "{set:?}: one mail each: {mails:?}");
}

/// Registers a customer called `name` and logs them in; returns the token.
async fn signed_up(shop: &TestShop, name: &str) -> String {
    let email = unique_email(&name.to_ascii_lowercase());
    let created = shop
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": email, "password": "s3cret-pass", "name": name})),
        )
        .await
        .unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    shop.login(&email, "s3cret-pass").await.unwrap()
}

/// Adds a product (as the admin `admin`) with `stock`; returns its id.
async fn stocked(shop: &TestShop, admin: &str, name: &str, stock: i64) -> String {
    let added = shop
        .call(
            Method::POST,
            "/api/products",
            Some(admin),
            Some(product(name, "home", stock)),
        )
        .await
        .unwrap();
    assert_eq!(added.status, StatusCode::CREATED, "{added:?}");
    added.body["id"].as_str().unwrap().to_owned()
}

/// How long an order waits for its payment in [`unpaid_and_cancelled`]: short, yet long
/// enough for the cancelled order to be cancelled by its customer first.
const PAYMENT_TIMEOUT: &str = "6";

/// An order nobody pays is cancelled when its payment is due, and one its customer cancels is
/// cancelled at once; both give their stock back.
async fn unpaid_and_cancelled(set: ComponentSet) {
    let shop = TestShop::start_with(
        set,
        &[(
            "SHOP_ORDERS_ORDERS__PAYMENT_TIMEOUT_SECONDS",
            PAYMENT_TIMEOUT,
        )],
    )
    .await
    .unwrap();
    let admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    let customer = signed_up(&shop, "Bob").await;
    let chair = stocked(&shop, &admin, "Chair", 4).await;

    let key = uuid::Uuid::new_v4().to_string();
    let placed = place(&shop, &customer, &key, &chair, 1).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{set:?}: {placed:?}");
    let cancelled = placed.body["id"].as_str().unwrap().to_owned();
    let answer = shop
        .call(
            Method::POST,
            &format!("/api/orders/{cancelled}/cancel"),
            Some(&customer),
            None,
        )
        .await
        .unwrap();
    assert!(answer.status.is_success(), "{set:?}: {answer:?}");
    let placed = place(
        &shop,
        &customer,
        &uuid::Uuid::new_v4().to_string(),
        &chair,
        2,
    )
    .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{set:?}: {placed:?}");
    let unpaid = placed.body["id"].as_str().unwrap().to_owned();

    let order = order_becomes(&shop, &customer, &cancelled, "CANCELLED").await;
    assert_eq!(
        order["cancellation_reason"], "cancelled_by_customer",
        "{order}"
    );
    let order = order_becomes(&shop, &customer, &unpaid, "CANCELLED").await;
    assert_eq!(order["cancellation_reason"], "payment_timeout", "{order}");
    stock_becomes(&shop, &chair, 4).await;
    for (order, reason) in [
        (&cancelled, "cancelled_by_customer"),
        (&unpaid, "payment_timeout"),
    ] {
        shop.events
            .wait_for("shop.order.cancelled.v1", EVENT_WAIT, |d| {
                d["order_id"] == order.as_str() && d["reason"] == reason
            })
            .await
            .unwrap();
        notified(
            &shop,
            &customer,
            order,
            &["order_created", "order_cancelled"],
        )
        .await;
    }
    shop.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_and_cancelled_orders_give_their_stock_back_on_the_embedded_default() {
    tokio::time::timeout(TEST_LIMIT, unpaid_and_cancelled(ComponentSet::Local))
        .await
        .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_and_cancelled_orders_give_their_stock_back_on_postgres_and_rabbitmq() {
    tokio::time::timeout(TEST_LIMIT, unpaid_and_cancelled(ComponentSet::RabbitMq))
        .await
        .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_and_cancelled_orders_give_their_stock_back_on_postgres_and_kafka() {
    tokio::time::timeout(TEST_LIMIT, unpaid_and_cancelled(ComponentSet::Kafka))
        .await
        .expect("the test finishes in time");
}

/// Places an order, retrying while the shop asks to (503 while the stock check runs, 429 from
/// the gateway's rate limit) with the same `Idempotency-Key`, as a client should.
async fn place_until_answered(shop: &TestShop, token: &str, product: &str) -> Answer {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = tokio::time::Instant::now() + TEST_LIMIT;
    loop {
        let answer = place(shop, token, &key, product, 1).await;
        let again = answer.status == StatusCode::SERVICE_UNAVAILABLE
            || answer.status == StatusCode::TOO_MANY_REQUESTS;
        if !again {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 100 orders at once for a product with 20 in stock, from five customers: exactly 20 get the
/// stock, the rest are rejected as out of stock, and the stock ends where the paid orders leave
/// it once the others are cancelled.
async fn no_oversell(set: ComponentSet) {
    const STOCK: i64 = 20;
    const ORDERS: usize = 100;
    const PAID: usize = 5;
    let shop = std::sync::Arc::new(TestShop::start(set).await.unwrap());
    let admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    let added = shop
        .call(
            Method::POST,
            "/api/products",
            Some(&admin),
            Some(product("Lamp", "home", STOCK)),
        )
        .await
        .unwrap();
    assert_eq!(added.status, StatusCode::CREATED, "{set:?}: {added:?}");
    let lamp = added.body["id"].as_str().unwrap().to_owned();
    let mut customers = Vec::new();
    for n in 0..5 {
        let email = unique_email(&format!("buyer{n}"));
        let created = shop
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "s3cret-pass", "name": "Buyer"})),
            )
            .await
            .unwrap();
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        customers.push(shop.login(&email, "s3cret-pass").await.unwrap());
    }

    let mut buyers = tokio::task::JoinSet::new();
    for n in 0..ORDERS {
        let (shop, lamp) = (shop.clone(), lamp.clone());
        let token = customers[n % customers.len()].clone();
        buyers.spawn(async move {
            let answer = place_until_answered(&shop, &token, &lamp).await;
            (token, answer)
        });
    }
    let mut accepted = Vec::new();
    let mut rejected = 0;
    while let Some(joined) = buyers.join_next().await {
        let (token, answer) = joined.unwrap();
        assert_eq!(answer.status, StatusCode::CREATED, "{set:?}: {answer:?}");
        match answer.body["status"].as_str().unwrap() {
            "PENDING_PAYMENT" => {
                accepted.push((token, answer.body["id"].as_str().unwrap().to_owned()))
            }
            "REJECTED" => {
                assert_eq!(
                    answer.body["rejection"]["reason"], "out_of_stock",
                    "{answer:?}"
                );
                rejected += 1;
            }
            other => panic!("{set:?}: unexpected status {other}: {answer:?}"),
        }
    }
    assert_eq!(accepted.len(), STOCK as usize, "{set:?}");
    assert_eq!(rejected, ORDERS - STOCK as usize, "{set:?}");
    stock_becomes(&shop, &lamp, 0).await;

    for (token, order) in &accepted[..PAID] {
        let paid = pay(&shop, token, order, "4242424242424242").await;
        assert_eq!(paid.status, StatusCode::CREATED, "{set:?}: {paid:?}");
    }
    for (token, order) in &accepted[PAID..] {
        let answer = shop
            .call(
                Method::POST,
                &format!("/api/orders/{order}/cancel"),
                Some(token),
                None,
            )
            .await
            .unwrap();
        assert!(answer.status.is_success(), "{set:?}: {answer:?}");
    }
    for (token, order) in &accepted[..PAID] {
        order_becomes(&shop, token, order, "CONFIRMED").await;
    }
    for (token, order) in &accepted[PAID..] {
        order_becomes(&shop, token, order, "CANCELLED").await;
    }
    stock_becomes(&shop, &lamp, STOCK - PAID as i64).await;
    std::sync::Arc::into_inner(shop)
        .unwrap()
        .stop()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_buyers_of_twenty_lamps_get_exactly_twenty_on_the_embedded_default() {
    tokio::time::timeout(TEST_LIMIT, no_oversell(ComponentSet::Local))
        .await
        .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_buyers_of_twenty_lamps_get_exactly_twenty_on_postgres_and_rabbitmq() {
    tokio::time::timeout(TEST_LIMIT, no_oversell(ComponentSet::RabbitMq))
        .await
        .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_buyers_of_twenty_lamps_get_exactly_twenty_on_postgres_and_kafka() {
    tokio::time::timeout(TEST_LIMIT, no_oversell(ComponentSet::Kafka))
        .await
        .expect("the test finishes in time");
}

/// A hung shop fails its test instead of hanging the suite.
const TEST_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_on_the_embedded_default() {
    tokio::time::timeout(TEST_LIMIT, journey(ComponentSet::Local))
        .await
        .expect("the journey finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_on_postgres_and_rabbitmq() {
    tokio::time::timeout(TEST_LIMIT, journey(ComponentSet::RabbitMq))
        .await
        .expect("the journey finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_on_postgres_and_kafka() {
    tokio::time::timeout(TEST_LIMIT, journey(ComponentSet::Kafka))
        .await
        .expect("the journey finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_problem_naming_the_field_and_nothing_is_stored() {
    tokio::time::timeout(TEST_LIMIT, bad_input())
        .await
        .expect("the test finishes in time");
}

async fn bad_input() {
    let shop = TestShop::start(ComponentSet::Local).await.unwrap();
    let admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();

    let malformed = shop
        .send(
            shop.request(Method::POST, "/api/products")
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{\"name\": \"Mug\", "),
        )
        .await
        .unwrap();
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{malformed:?}");
    assert!(malformed.is_problem());

    for (key, value) in [
        ("price_cents", json!(-5)),
        ("stock", json!(-1)),
        ("stock", json!("many")),
        ("currency", json!(42)),
    ] {
        let mut body = product("Mug", "kitchen", 1);
        body[key] = value.clone();
        let answer = shop
            .call(Method::POST, "/api/products", Some(&admin), Some(body))
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{key}={value}: {answer:?}"
        );
        assert!(answer.is_problem());
        assert_eq!(answer.field(), key, "{answer:?}");
    }
    let missing = shop
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": unique_email("x"), "name": "X"})),
        )
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.field(), "password");

    let huge = "x".repeat(2 * 1024 * 1024);
    let oversized = shop
        .call(
            Method::POST,
            "/api/products",
            Some(&admin),
            Some(json!({"name": "Mug", "description": huge})),
        )
        .await
        .unwrap();
    assert_eq!(
        oversized.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        oversized.status
    );
    assert!(oversized.is_problem());

    let unknown = uuid::Uuid::new_v4();
    for method in [Method::GET, Method::DELETE] {
        let answer = shop
            .call(
                method.clone(),
                &format!("/api/products/{unknown}"),
                Some(&admin),
                None,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method}");
        assert!(answer.is_problem());
    }
    let listing = shop
        .call(Method::GET, "/api/products", None, None)
        .await
        .unwrap();
    assert_eq!(listing.body["items"], json!([]), "nothing was stored");

    let forged = shop
        .call(Method::GET, "/api/auth/me", Some("not.a.token"), None)
        .await
        .unwrap();
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(forged.is_problem());
    shop.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_and_the_merged_openapi_document_are_served() {
    tokio::time::timeout(TEST_LIMIT, docs())
        .await
        .expect("the test finishes in time");
}

async fn docs() {
    let shop = TestShop::start(ComponentSet::Local).await.unwrap();
    let document = shop
        .call(Method::GET, "/api/openapi.json", None, None)
        .await
        .unwrap();
    assert_eq!(document.status, StatusCode::OK);
    let paths = document.body["paths"].as_object().unwrap();
    for path in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/products",
        "/api/products/{id}",
        "/api/notifications",
        "/api/notifications/stream",
    ] {
        assert!(paths.contains_key(path), "{path} in {:?}", paths.keys());
    }
    assert!(
        !paths.keys().any(|p| p.contains("reservations")),
        "internal routes stay hidden"
    );
    let page = shop
        .send(shop.request(Method::GET, "/api/docs"))
        .await
        .unwrap();
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    shop.stop().await.unwrap();
}

/// The orders app and its sidecar stop while an order waits for its payment, and start again:
/// the order's workflow is still there, and paying the order confirms it.
async fn orders_restart(set: ComponentSet) {
    let mut shop = TestShop::start(set).await.unwrap();
    let admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    let customer = signed_up(&shop, "Cleo").await;
    let lamp = stocked(&shop, &admin, "Lamp", 3).await;
    let placed = place(
        &shop,
        &customer,
        &uuid::Uuid::new_v4().to_string(),
        &lamp,
        1,
    )
    .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{set:?}: {placed:?}");
    let order = placed.body["id"].as_str().unwrap().to_owned();
    stock_becomes(&shop, &lamp, 2).await;

    shop.restart("orders").await.unwrap();

    assert_eq!(
        order_becomes(&shop, &customer, &order, "PENDING_PAYMENT").await["id"],
        order.as_str(),
        "{set:?}: the order outlives the restart"
    );
    let paid = pay(&shop, &customer, &order, GOOD_CARD).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{set:?}: {paid:?}");
    let confirmed = order_becomes(&shop, &customer, &order, "CONFIRMED").await;
    assert_eq!(confirmed["total_cents"], 990, "{confirmed}");
    assert_eq!(
        stock(&shop, &lamp).await,
        2,
        "the confirmed order keeps its stock"
    );
    shop.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_completes_after_the_orders_app_restarts_on_the_embedded_default() {
    tokio::time::timeout(TEST_LIMIT, orders_restart(ComponentSet::Local))
        .await
        .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_completes_after_the_orders_app_restarts_on_postgres_and_rabbitmq() {
    tokio::time::timeout(TEST_LIMIT, orders_restart(ComponentSet::RabbitMq))
        .await
        .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_completes_after_the_orders_app_restarts_on_postgres_and_kafka() {
    tokio::time::timeout(TEST_LIMIT, orders_restart(ComponentSet::Kafka))
        .await
        .expect("the test finishes in time");
}
