//! The notifications app behind a real local sidecar: events published through another
//! sidecar, email written by the `bindings.localstorage` output binding, and the API called
//! through a sidecar of the gateway's app id, as in production.

#![allow(clippy::unwrap_used, reason = "tests stop at the first failure")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use contracts::{
    CancellationReason, DeclineReason, Event, OrderCancelled, OrderConfirmed, OrderCreated,
    OrderLine, PaymentFailed, PaymentSuccessful, UserRegistered,
};
use futures::StreamExt as _;
use kit::dapr::Dapr;
use kit::testing::{Caller, PUBSUB, Stack, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop_notifications::settings::NotificationsSettings;
use shop_notifications::{App, Settings};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

struct Shop {
    stack: Stack,
    publisher: Dapr,
    gateway: Caller,
    mail: PathBuf,
}

/// Where the `email` binding sends mail.
enum Mailer {
    /// `bindings.localstorage`: files under `mail/`.
    Files,
    /// `bindings.http` to a test server that counts what it receives.
    Server(MailServer),
}

/// A stand-in mail service: fails the first `fail_first` sends with 500, takes `delay` over
/// each, and counts attempts and the sends it accepted.
#[derive(Clone)]
struct MailServer {
    url: String,
    attempts: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl MailServer {
    async fn start(fail_first: usize, delay: Duration) -> Self {
        let attempts = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (counted, taken) = (attempts.clone(), accepted.clone());
        let router = axum::Router::new().route(
            "/",
            axum::routing::post(move || {
                let (counted, taken) = (counted.clone(), taken.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    if counted.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    taken.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            attempts,
            accepted,
        }
    }
}

impl Shop {
    async fn start(store: Store) -> Self {
        Self::start_with(store, Mailer::Files).await
    }

    async fn start_with(store: Store, mailer: Mailer) -> Self {
        let mut stack = Stack::new(store, &[]).await.unwrap();
        match mailer {
            Mailer::Files => stack
                .add_component(
                    "email",
                    "bindings.localstorage",
                    &[("rootPath", "mail".into())],
                )
                .unwrap(),
            Mailer::Server(server) => stack
                .add_component("email", "bindings.http", &[("url", server.url)])
                .unwrap(),
        }
        let (bound, dapr) = stack.bind("publisher").await.unwrap();
        stack.start(bound).await.unwrap();
        let publisher = Dapr::new(&dapr).unwrap();
        let (bound, dapr) = stack.bind("notifications").await.unwrap();
        let metadata = format!("http://127.0.0.1:{}/v1.0/metadata", dapr.http_port);
        let notifications = NotificationsSettings {
            keep_alive_seconds: 1,
            ..NotificationsSettings::default()
        };
        let app = App::build(Settings {
            dapr,
            notifications,
            ..Settings::default()
        })
        .await
        .unwrap();
        stack.run(bound, Box::new(app)).await.unwrap();
        // Events published before the sidecar subscribed would be missed.
        let subscribed = eventually(|| async {
            let metadata: Value = reqwest::get(&metadata).await.ok()?.json().await.ok()?;
            (metadata["subscriptions"].as_array()?.len() >= 3).then_some(())
        })
        .await;
        assert!(
            subscribed.is_some(),
            "the app subscribes to users, orders and payments"
        );
        let gateway = stack.caller("gateway").await.unwrap();
        let mail = stack.dir().join("mail");
        Self {
            stack,
            publisher,
            gateway,
            mail,
        }
    }

    /// Publishes `event` with CloudEvent id `id`, as the producers' outboxes do.
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

    /// A request through the gateway's sidecar, as `user` when given.
    fn request(&self, user: Option<Uuid>, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.gateway.invoke(method, "notifications", path);
        if let Some(user) = user {
            request = request
                .header("x-shop-user-id", user.to_string())
                .header("x-shop-user-email", "someone@example.com")
                .header("x-shop-user-role", "customer");
        }
        request
    }

    async fn get(&self, user: Option<Uuid>, path: &str) -> (StatusCode, Value) {
        let response = self.request(user, Method::GET, path).send().await.unwrap();
        let status = response.status();
        if !status.is_success() {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The user's whole history, newest first.
    async fn history(&self, user: Uuid) -> Vec<Value> {
        let (status, page) = self.get(Some(user), "/notifications?limit=100").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().unwrap().clone()
    }

    /// Waits until the user's history holds `count` notifications.
    async fn wait_for_history(&self, user: Uuid, count: usize) -> Vec<Value> {
        let history = eventually(|| async {
            let history = self.history(user).await;
            (history.len() >= count).then_some(history)
        })
        .await;
        history.unwrap_or_else(|| panic!("{user} never had {count} notifications"))
    }

    /// The emails written for `user`, by file name.
    fn mails(&self, user: Uuid) -> HashMap<String, String> {
        let Ok(entries) = std::fs::read_dir(self.mail.join(user.to_string())) else {
            return HashMap::new();
        };
        entries
            .map(|entry| {
                let path = entry.unwrap().path();
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect()
    }

    async fn stop(self) {
        self.stack.shutdown().await.unwrap();
    }
}

async fn eventually<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn registered(user: Uuid, name: &str) -> UserRegistered {
    UserRegistered {
        user_id: user,
        email: format!("{}@example.com", name.to_lowercase()),
        name: name.into(),
        registered_at: Utc::now(),
    }
}

fn created(user: Uuid, order: Uuid) -> OrderCreated {
    OrderCreated {
        order_id: order,
        user_id: user,
        user_email: "ada@example.com".into(),
        items: vec![OrderLine {
            product_id: Uuid::new_v4(),
            name: "Mug".into(),
            quantity: 2,
            unit_price_cents: 625,
        }],
        total_cents: 1250,
        currency: "EUR".into(),
        payment_due_at: Utc::now(),
        created_at: Utc::now(),
    }
}

fn new_id() -> String {
    Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_sends_one_email_and_adds_one_notification_to_the_history() {
    let shop = Shop::start(Store::Sqlite).await;
    let user = Uuid::new_v4();
    let order = Uuid::new_v4();
    shop.publish(&registered(user, "Ada"), &new_id()).await;
    let welcome = shop.wait_for_history(user, 1).await;
    assert_eq!(welcome[0]["kind"], "welcome");
    assert_eq!(welcome[0]["title"], "Welcome to the shop, Ada!");

    shop.publish(&created(user, order), &new_id()).await;
    shop.publish(
        &OrderConfirmed {
            order_id: order,
            user_id: user,
            user_email: "ada@example.com".into(),
            total_cents: 1250,
            currency: "EUR".into(),
            confirmed_at: Utc::now(),
        },
        &new_id(),
    )
    .await;
    shop.publish(
        &OrderCancelled {
            order_id: order,
            user_id: user,
            user_email: "ada@example.com".into(),
            reason: CancellationReason::PaymentTimeout,
            cancelled_at: Utc::now(),
        },
        &new_id(),
    )
    .await;
    shop.publish(
        &PaymentSuccessful {
            payment_id: Uuid::new_v4(),
            order_id: order,
            user_id: user,
            user_email: "ada@example.com".into(),
            amount_cents: 1250,
            currency: "EUR".into(),
            card_last4: "4242".into(),
            paid_at: Utc::now(),
        },
        &new_id(),
    )
    .await;
    shop.publish(
        &PaymentFailed {
            payment_id: Uuid::new_v4(),
            order_id: order,
            user_id: user,
            user_email: "ada@example.com".into(),
            amount_cents: 1250,
            currency: "EUR".into(),
            reason: DeclineReason::InsufficientFunds,
            failed_at: Utc::now(),
        },
        &new_id(),
    )
    .await;

    let history = shop.wait_for_history(user, 6).await;
    let mut kinds: Vec<&str> = history
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "order_cancelled",
            "order_confirmed",
            "order_created",
            "payment_failed",
            "payment_succeeded",
            "welcome"
        ]
    );
    let by_kind = |kind: &str| history.iter().find(|n| n["kind"] == kind).unwrap().clone();
    let order_created = by_kind("order_created");
    assert_eq!(order_created["order_id"], order.to_string());
    let text = order_created["message"].as_str().unwrap();
    assert!(
        text.starts_with("Hi Ada,"),
        "greeted by the registered name: {text}"
    );
    assert!(
        text.contains("2 × Mug") && text.contains("12.50 EUR"),
        "{text}"
    );
    assert!(
        by_kind("payment_failed")["message"]
            .as_str()
            .unwrap()
            .contains("insufficient funds")
    );
    assert!(
        by_kind("order_cancelled")["message"]
            .as_str()
            .unwrap()
            .contains("in time")
    );

    // One email per notification, named after it, saying what it says.
    let mails = eventually(|| async {
        let mails = shop.mails(user);
        (mails.len() >= 6).then_some(mails)
    })
    .await
    .expect("six emails");
    assert_eq!(mails.len(), 6, "{:?}", mails.keys());
    for notification in &history {
        let file = format!("{}.html", notification["id"].as_str().unwrap());
        let mail = mails
            .get(&file)
            .unwrap_or_else(|| panic!("{file} in {:?}", mails.keys()));
        let title = notification["title"].as_str().unwrap();
        assert!(mail.contains(&format!("<title>{title}</title>")), "{mail}");
    }
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_not_notified_twice() {
    let shop = Shop::start(Store::Sqlite).await;
    let user = Uuid::new_v4();
    let event = registered(user, "Bob");
    let id = new_id();
    shop.publish(&event, &id).await;
    shop.wait_for_history(user, 1).await;
    shop.publish(&event, &id).await;
    // An event after the redelivery, on the same topic: once it is handled, give the
    // redelivery a moment more, then count.
    shop.publish(&created(user, Uuid::new_v4()), &new_id())
        .await;
    shop.wait_for_history(user, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let history = shop.history(user).await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        history.iter().filter(|n| n["kind"] == "welcome").count(),
        1,
        "{history:?}"
    );
    assert_eq!(shop.mails(user).len(), 2);
    shop.stop().await;
}

/// Delivers `event` with id `id` straight to the app through invocation (as the sidecar
/// delivers it), and returns the app's reply.
async fn deliver(shop: &Shop, event: &UserRegistered, id: &str) -> Value {
    let envelope = json!({
        "specversion": "1.0",
        "id": id,
        "source": "auth",
        "type": UserRegistered::TYPE,
        "datacontenttype": "application/json",
        "data": event,
    });
    let response = shop
        .gateway
        .invoke(Method::POST, "notifications", "/events/user-registered")
        .header("content-type", "application/cloudevents+json")
        .body(envelope.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_event_notify_and_mail_once_on_every_store() {
    for store in Store::ALL {
        // Sending takes a while, so that the other deliveries arrive during the send.
        let mail = MailServer::start(0, Duration::from_millis(300)).await;
        let shop = Shop::start_with(store, Mailer::Server(mail.clone())).await;
        let user = Uuid::new_v4();
        let event = registered(user, "Cy");
        let id = new_id();
        let replies = futures::future::join_all((0..5).map(|_| deliver(&shop, &event, &id))).await;
        // One delivery sends; the others are told to come back (RETRY) while it does.
        assert!(
            replies.iter().any(|r| r["status"] == "SUCCESS")
                && replies
                    .iter()
                    .all(|r| r["status"] == "SUCCESS" || r["status"] == "RETRY"),
            "{store:?}: {replies:?}"
        );
        let again = deliver(&shop, &event, &id).await;
        assert_eq!(again["status"], "SUCCESS", "{store:?}");
        let history = shop.history(user).await;
        assert_eq!(history.len(), 1, "{store:?}: {history:?}");
        assert_eq!(
            mail.attempts.load(Ordering::SeqCst),
            1,
            "{store:?}: one email sent"
        );
        // Another id is another event.
        let other = deliver(&shop, &registered(user, "Cy"), &new_id()).await;
        assert_eq!(other["status"], "SUCCESS");
        assert_eq!(shop.history(user).await.len(), 2, "{store:?}");
        assert_eq!(mail.attempts.load(Ordering::SeqCst), 2, "{store:?}");
        shop.stop().await;
    }
}

/// One server-sent event, or a comment.
#[derive(Debug, Clone, PartialEq, Default)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: Option<Value>,
    comment: Option<String>,
}

/// Reads a `text/event-stream` body into events as they arrive.
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event or comment, waiting at most `WAIT`.
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut sse = Sse::default();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        sse.comment = Some(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.trim_start();
                        match field {
                            "id" => sse.id = Some(value.to_owned()),
                            "event" => sse.event = Some(value.to_owned()),
                            "data" => sse.data = Some(serde_json::from_str(value).unwrap()),
                            _ => {}
                        }
                    }
                }
                return sse;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("the stream goes on")
                .expect("the stream is open")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next notification, skipping keep-alive comments.
    async fn notification(&mut self) -> Sse {
        loop {
            let sse = self.next().await;
            if sse.comment.is_none() {
                assert_eq!(sse.event.as_deref(), Some("notification"), "{sse:?}");
                return sse;
            }
        }
    }
}

async fn open_stream(shop: &Shop, user: Uuid, last_event_id: Option<&str>) -> SseReader {
    let mut request = shop
        .request(Some(user), Method::GET, "/notifications/stream")
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    SseReader::new(request.send().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_pushes_notifications_live_and_resumes_after_the_last_event_id() {
    let shop = Shop::start(Store::Sqlite).await;
    let user = Uuid::new_v4();
    shop.publish(&registered(user, "Dee"), &new_id()).await;
    shop.wait_for_history(user, 1).await;

    // A new stream shows what happens from now on, not the past.
    let mut stream = open_stream(&shop, user, None).await;
    let first_order = Uuid::new_v4();
    shop.publish(&created(user, first_order), &new_id()).await;
    let live = stream.notification().await;
    let data = live.data.clone().unwrap();
    assert_eq!(data["kind"], "order_created");
    assert_eq!(data["order_id"], first_order.to_string());
    assert_eq!(live.id.as_deref(), data["id"].as_str());
    // Idle, it says it is alive.
    let idle = stream.next().await;
    assert_eq!(idle.comment.as_deref(), Some("keep-alive"), "{idle:?}");
    drop(stream);

    // Two more while the browser is away; it comes back with the last id it saw.
    let (second, third) = (Uuid::new_v4(), Uuid::new_v4());
    shop.publish(&created(user, second), &new_id()).await;
    shop.wait_for_history(user, 3).await;
    shop.publish(&created(user, third), &new_id()).await;
    shop.wait_for_history(user, 4).await;
    let mut resumed = open_stream(&shop, user, live.id.as_deref()).await;
    let replayed: Vec<Value> = vec![
        resumed.notification().await.data.unwrap()["order_id"].clone(),
        resumed.notification().await.data.unwrap()["order_id"].clone(),
    ];
    assert_eq!(
        replayed,
        [json!(second.to_string()), json!(third.to_string())]
    );
    // And it goes on live.
    let fourth = Uuid::new_v4();
    shop.publish(&created(user, fourth), &new_id()).await;
    assert_eq!(
        resumed.notification().await.data.unwrap()["order_id"],
        fourth.to_string()
    );
    drop(resumed);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_sees_another_users_notifications() {
    let mut shop = Shop::start(Store::Sqlite).await;
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut bobs_stream = open_stream(&shop, bob, None).await;
    shop.publish(&registered(ada, "Ada"), &new_id()).await;
    shop.wait_for_history(ada, 1).await;
    shop.publish(&registered(bob, "Bob"), &new_id()).await;
    let first = bobs_stream.notification().await.data.unwrap();
    assert_eq!(
        first["title"], "Welcome to the shop, Bob!",
        "Ada's never reaches Bob"
    );
    let bobs = shop.wait_for_history(bob, 1).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["title"], "Welcome to the shop, Bob!");
    // Resuming after Ada's notification id shows Bob only his own.
    let adas = shop.history(ada).await;
    let mut resumed = open_stream(&shop, bob, adas[0]["id"].as_str()).await;
    assert_eq!(
        resumed.notification().await.data.unwrap()["title"],
        "Welcome to the shop, Bob!"
    );
    drop(resumed);

    // Without the gateway's word, there is no user.
    let (status, _) = shop.get(None, "/notifications").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let intruder = shop.stack.caller("orders").await.unwrap();
    let response = intruder
        .invoke(Method::GET, "notifications", "/notifications")
        .header("x-shop-user-id", ada.to_string())
        .header("x-shop-user-email", "ada@example.com")
        .header("x-shop-user-role", "customer")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_pages_newest_first_and_bad_parameters_name_themselves() {
    let shop = Shop::start(Store::Memory).await;
    let user = Uuid::new_v4();
    for n in 0..5 {
        shop.publish(&created(user, Uuid::new_v4()), &new_id())
            .await;
        shop.wait_for_history(user, n + 1).await;
    }
    let all = shop.history(user).await;
    let mut seen = Vec::new();
    let mut path = "/notifications?limit=2".to_owned();
    loop {
        let (status, page) = shop.get(Some(user), &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/notifications?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let times: Vec<&str> = all
        .iter()
        .map(|n| n["created_at"].as_str().unwrap())
        .collect();
    let mut newest_first = times.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first);

    for (path, field) in [
        ("/notifications?limit=0", "limit"),
        ("/notifications?limit=many", "limit"),
        ("/notifications?cursor=nope", "cursor"),
    ] {
        let (status, problem) = shop.get(Some(user), path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(problem["errors"][0]["field"], field, "{path}");
    }
    let response = shop
        .request(Some(user), Method::GET, "/notifications/stream")
        .header("last-event-id", "not-an-id")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Last-Event-ID");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_that_fails_is_sent_by_a_redelivery_without_notifying_twice() {
    // The mail service fails twice, then works.
    let mail = MailServer::start(2, Duration::ZERO).await;
    let shop = Shop::start_with(Store::Sqlite, Mailer::Server(mail.clone())).await;
    let user = Uuid::new_v4();
    let mut stream = open_stream(&shop, user, None).await;
    let event = registered(user, "Eve");
    let id = new_id();
    let first = deliver(&shop, &event, &id).await;
    assert_eq!(
        first["status"], "RETRY",
        "the sidecar is asked to deliver it again"
    );
    let live = stream.notification().await;
    assert_eq!(live.data.unwrap()["kind"], "welcome");
    let second = deliver(&shop, &event, &id).await;
    assert_eq!(second["status"], "RETRY", "the email is still pending");
    let third = deliver(&shop, &event, &id).await;
    assert_eq!(third["status"], "SUCCESS", "the email went out");
    let fourth = deliver(&shop, &event, &id).await;
    assert_eq!(fourth["status"], "SUCCESS");
    assert_eq!(mail.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(mail.accepted.load(Ordering::SeqCst), 1, "sent once");
    assert_eq!(shop.history(user).await.len(), 1, "stored once");
    // Nothing more on the stream: the next thing it shows is a keep-alive.
    let next = stream.next().await;
    assert_eq!(next.comment.as_deref(), Some("keep-alive"), "{next:?}");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_the_app_stops() {
    let shop = Shop::start(Store::Memory).await;
    let mut stream = open_stream(&shop, Uuid::new_v4(), None).await;
    let started = std::time::Instant::now();
    // The drain deadline is 10 s: a stream left open would hold the stop that long.
    tokio::time::timeout(Duration::from_secs(5), shop.stop())
        .await
        .expect("the app stops without waiting for its streams");
    assert!(started.elapsed() < Duration::from_secs(5));
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.body.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends");
}
