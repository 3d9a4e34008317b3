//! Pub/sub through the sidecar, one conformance suite run against every broker: in-memory, and
//! the real local RabbitMQ and Redis, and a Kafka-protocol broker (librdkafka's mock cluster).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sidecar::Topology;
use tokio::sync::Notify;

use crate::support::{TestSidecar, eventually, http, serve, sidecar, unique};

/// How the test app answers deliveries on a path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    Success,
    /// `{"status": "RETRY"}` for the first n deliveries of each event, then success.
    RetryFirst(usize),
    RetryAlways,
    Drop,
    NotFound,
}

/// A delivery the test app received.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) event: Value,
}

/// A subscriber app: serves `/dapr/subscribe`, records deliveries, answers as told.
#[derive(Clone, Default)]
pub(crate) struct Inbox {
    subscriptions: Arc<Mutex<Value>>,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    /// Replies for the event whose `data.n` is the key, on any path (before `replies`).
    replies_by_number: Arc<Mutex<HashMap<i64, Reply>>>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    arrived: Arc<Notify>,
    delay: Arc<Mutex<Duration>>,
}

impl Inbox {
    pub(crate) fn new(subscriptions: Value) -> Self {
        let inbox = Self::default();
        *inbox.subscriptions.lock().expect("lock") = subscriptions;
        inbox
    }

    pub(crate) fn reply(&self, path: &str, reply: Reply) -> &Self {
        self.replies
            .lock()
            .expect("lock")
            .insert(path.to_owned(), reply);
        self
    }

    /// Answers the event whose `data.n` is `n` with `reply`, whatever the path says.
    pub(crate) fn reply_to_number(&self, n: i64, reply: Reply) -> &Self {
        self.replies_by_number
            .lock()
            .expect("lock")
            .insert(n, reply);
        self
    }

    pub(crate) fn slow(&self, delay: Duration) -> &Self {
        *self.delay.lock().expect("lock") = delay;
        self
    }

    /// What the app received, warm-up events left out.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| !is_warmup(&d.event))
            .cloned()
            .collect()
    }

    /// Whether a warm-up event of [`settle`] arrived from `topic`.
    fn warmed_up(&self, topic: &str) -> bool {
        self.deliveries
            .lock()
            .expect("lock")
            .iter()
            .any(|d| is_warmup(&d.event) && d.event["topic"] == topic)
    }

    /// The topics the app subscribes to.
    fn topics(&self) -> Vec<String> {
        let subscriptions = self.subscriptions.lock().expect("lock");
        let mut topics: Vec<String> = subscriptions
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["topic"].as_str().map(str::to_owned))
            .collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }

    pub(crate) fn on(&self, path: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.path == path)
            .collect()
    }

    /// Waits until `path` has at least `count` deliveries.
    pub(crate) async fn wait_for(&self, path: &str, count: usize, seconds: u64) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let arrived = self.arrived.notified();
            let found = self.on(path);
            if found.len() >= count || tokio::time::Instant::now() >= deadline {
                return found;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }

    fn answer(&self, path: &str, event: &Value) -> Reply {
        if is_warmup(event) {
            return Reply::Success;
        }
        let id = event["id"].as_str().unwrap_or("").to_owned();
        let count = {
            let mut seen = self.seen.lock().expect("lock");
            let count = seen.entry(format!("{path}#{id}")).or_default();
            *count += 1;
            *count
        };
        let by_number = event["data"]["n"].as_i64().and_then(|n| {
            self.replies_by_number
                .lock()
                .expect("lock")
                .get(&n)
                .copied()
        });
        let by_path = || {
            self.replies
                .lock()
                .expect("lock")
                .get(path)
                .copied()
                .unwrap_or(Reply::Success)
        };
        match by_number.unwrap_or_else(by_path) {
            Reply::RetryFirst(n) if count <= n => Reply::RetryAlways,
            Reply::RetryFirst(_) => Reply::Success,
            other => other,
        }
    }

    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route(
                "/dapr/subscribe",
                get(|State(inbox): State<Inbox>| async move {
                    axum::Json(inbox.subscriptions.lock().expect("lock").clone())
                }),
            )
            .fallback(receive)
            .with_state(self.clone())
    }
}

/// Whether `event` is a warm-up of [`settle`] (taken whatever the path's reply, and counted
/// nowhere).
fn is_warmup(event: &Value) -> bool {
    event["data"]["warmup"].is_i64()
}

/// Publishes warm-up events on each of `topics`, each with its own partition key, until every
/// inbox has had one from every topic: then every consumer is in place (for Kafka: the group
/// has settled and each replica owns its partitions, so that no rebalance hands a message over
/// mid-delivery later, which would deliver it twice).
pub(crate) async fn settle(publisher: &TestSidecar, topics: &[String], inboxes: &[&Inbox]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for n in 0.. {
        let waiting: Vec<&String> = topics
            .iter()
            .filter(|topic| !inboxes.iter().all(|inbox| inbox.warmed_up(topic)))
            .collect();
        if waiting.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no warm-up event reached every subscriber within 60 s on {waiting:?}"
        );
        for topic in waiting {
            let response = http()
                .post(publisher.url(&format!(
                    "/v1.0/publish/pubsub/{topic}?metadata.cloudevent.type=test.warmup&metadata.partitionKey=w{n}"
                )))
                .json(&json!({"warmup": n}))
                .send()
                .await
                .expect("publish");
            assert_eq!(response.status(), 204, "warm-up published on {topic}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn receive(State(inbox): State<Inbox>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // A bulk delivery carries entries; each gets its own status.
    let entries: Vec<(Value, Value)> = match body.get("entries").and_then(Value::as_array) {
        Some(entries) => entries
            .iter()
            .map(|e| (e["entryId"].clone(), e["event"].clone()))
            .collect(),
        None => vec![(Value::Null, body.clone())],
    };
    let mut replies = Vec::new();
    for (entry_id, event) in entries {
        replies.push((entry_id, inbox.answer(&path, &event)));
        inbox.deliveries.lock().expect("lock").push(Delivery {
            path: path.clone(),
            headers: headers.clone(),
            event,
        });
    }
    // Recorded on arrival, answered after the app's (simulated) work.
    inbox.arrived.notify_waiters();
    let delay = *inbox.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if body.get("entries").is_some() {
        let statuses: Vec<Value> = replies
            .into_iter()
            .map(|(entry_id, reply)| {
                let status = match reply {
                    Reply::Success => "SUCCESS",
                    Reply::Drop | Reply::NotFound => "DROP",
                    Reply::RetryAlways | Reply::RetryFirst(_) => "RETRY",
                };
                json!({"entryId": entry_id, "status": status})
            })
            .collect();
        return axum::Json(json!({"statuses": statuses})).into_response();
    }
    match replies
        .first()
        .map(|(_, reply)| *reply)
        .unwrap_or(Reply::Success)
    {
        Reply::Success => axum::Json(json!({"status": "SUCCESS"})).into_response(),
        Reply::RetryAlways | Reply::RetryFirst(_) => {
            axum::Json(json!({"status": "RETRY"})).into_response()
        }
        Reply::Drop => axum::Json(json!({"status": "DROP"})).into_response(),
        Reply::NotFound => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// A broker for one test, with its own data space.
pub(crate) struct Broker {
    yaml: String,
    _kafka:
        Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    _guard: Option<Cleanup>,
}

impl Broker {
    /// Whether a replica joining moves work between replicas (Kafka's rebalance): an event
    /// in flight at that moment may then be handled twice, which at-least-once allows.
    fn rebalances(&self) -> bool {
        self._kafka.is_some()
    }
}

pub(crate) struct Cleanup(pub(crate) Box<dyn FnMut() + Send>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn component(kind: &str, metadata: &[(&str, String)]) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n"
    );
    for (name, value) in metadata {
        yaml.push_str(&format!("  - name: {name}\n    value: \"{value}\"\n"));
    }
    if metadata.is_empty() {
        yaml = yaml.replace("  metadata:\n", "  metadata: []\n");
    }
    yaml
}

/// Runs `rabbitmqctl` (the tests need a vhost of their own).
fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

impl Broker {
    pub(crate) fn memory() -> Self {
        Self {
            yaml: component("pubsub.in-memory", &[]),
            _kafka: None,
            _guard: None,
        }
    }

    pub(crate) fn rabbitmq() -> Self {
        let vhost = unique("sidecar-test-");
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let cleanup = vhost.clone();
        Self {
            yaml: component(
                "pubsub.rabbitmq",
                &[
                    (
                        "connectionString",
                        format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
                    ),
                    ("durable", "true".into()),
                    ("deletedWhenUnused", "false".into()),
                    ("deliveryMode", "2".into()),
                    ("publisherConfirm", "true".into()),
                    ("requeueInFailure", "true".into()),
                    ("prefetchCount", "16".into()),
                    ("reconnectWaitSeconds", "1".into()),
                ],
            ),
            _kafka: None,
            _guard: Some(Cleanup(Box::new(move || {
                let _ = std::process::Command::new("rabbitmqctl")
                    .args(["delete_vhost", &cleanup])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }))),
        }
    }

    pub(crate) fn redis() -> Self {
        // Streams are named after the test's unique topics; the guard deletes them.
        Self {
            yaml: component(
                "pubsub.redis",
                &[
                    ("redisHost", "127.0.0.1:6379".into()),
                    ("processingTimeout", "1s".into()),
                    ("redeliverInterval", "200".into()),
                    ("concurrency", "4".into()),
                ],
            ),
            _kafka: None,
            _guard: None,
        }
    }

    pub(crate) fn kafka() -> Self {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("a mock Kafka cluster starts");
        Self {
            yaml: component(
                "pubsub.kafka",
                &[
                    ("brokers", cluster.bootstrap_servers()),
                    ("authType", "none".into()),
                    ("initialOffset", "oldest".into()),
                    ("backOffDuration", "200ms".into()),
                ],
            ),
            _kafka: Some(cluster),
            _guard: None,
        }
    }

    /// Creates topics up front where the broker needs it (Kafka, with two partitions).
    pub(crate) fn topics(&self, names: &[&str]) {
        if let Some(cluster) = &self._kafka {
            for name in names {
                cluster.create_topic(name, 2, 1).expect("topic created");
            }
        }
    }

    pub(crate) fn is_kafka(&self) -> bool {
        self._kafka.is_some()
    }
}

/// A publisher sidecar and the topic names of one test.
pub(crate) struct Scene {
    pub(crate) topology: Topology,
    pub(crate) broker: Broker,
    pub(crate) publisher: TestSidecar,
    pub(crate) prefix: String,
    _streams: crate::support::RedisKeys,
}

impl Scene {
    pub(crate) async fn new(broker: Broker) -> Self {
        let topology = Topology::in_process();
        let prefix = unique("t");
        let publisher = sidecar("publisher")
            .topology(&topology)
            .resource("pubsub.yaml", broker.yaml.clone())
            .start()
            .await;
        Self {
            topology,
            broker,
            publisher,
            _streams: crate::support::RedisKeys {
                prefix: prefix.clone(),
            },
            prefix,
        }
    }

    pub(crate) fn topic(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Starts a subscriber app with its sidecar and waits until it consumes.
    pub(crate) async fn subscriber(
        &self,
        app_id: &str,
        inbox: &Inbox,
        extra: &[(&str, &str)],
    ) -> TestSidecar {
        let port = serve(inbox.router()).await;
        let mut builder = sidecar(app_id)
            .topology(&self.topology)
            .app_port(port)
            .resource("pubsub.yaml", self.broker.yaml.clone());
        for (name, yaml) in extra {
            builder = builder.resource(name, *yaml);
        }
        let subscriber = builder.start().await;
        let url = subscriber.url("/v1.0/metadata");
        let consuming = eventually(30, || async {
            let metadata: Value = match http().get(&url).send().await {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            metadata["subscriptions"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        })
        .await;
        assert!(consuming, "the subscriber starts consuming");
        if self.broker.is_kafka() {
            // Until the consumer group has settled, a rebalance may deliver a message twice.
            settle(&self.publisher, &inbox.topics(), &[inbox]).await;
        }
        subscriber
    }

    pub(crate) async fn publish(&self, topic: &str, body: Value, query: &str) -> reqwest::Response {
        http()
            .post(
                self.publisher
                    .url(&format!("/v1.0/publish/pubsub/{topic}{query}")),
            )
            .json(&body)
            .send()
            .await
            .expect("publish")
    }
}

fn subscription(topic: &str, extra: Value) -> Value {
    let mut subscription = json!({"pubsubname": "pubsub", "topic": topic, "route": "/events"});
    if let (Value::Object(base), Value::Object(extra)) = (&mut subscription, extra) {
        base.extend(extra);
    }
    subscription
}

pub(crate) async fn the_envelope_carries_every_field_dapr_sets(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("orders");
    scene.broker.topics(&[&topic]);
    let inbox = Inbox::new(json!([subscription(&topic, json!({}))]));
    let _subscriber = scene.subscriber("orders", &inbox, &[]).await;
    let response = http()
        .post(scene.publisher.url(&format!(
            "/v1.0/publish/pubsub/{topic}?metadata.cloudevent.type=shop.order.created.v1"
        )))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&json!({"order": 42}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 204);
    let received = inbox.wait_for("/events", 1, 30).await;
    assert_eq!(received.len(), 1, "one delivery");
    let delivery = &received[0];
    assert_eq!(
        delivery.headers["content-type"],
        "application/cloudevents+json"
    );
    assert_eq!(delivery.headers["pubsubname"], "pubsub");
    let event = &delivery.event;
    assert_eq!(event["data"], json!({"order": 42}));
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["source"], "publisher");
    assert_eq!(event["type"], "shop.order.created.v1");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["topic"], topic);
    assert_eq!(event["pubsubname"], "pubsub");
    let traceparent = event["traceparent"].as_str().expect("traceparent");
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{traceparent}"
    );
    assert_eq!(event["traceid"], event["traceparent"]);
    assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(event["time"].as_str().is_some());
    let header = delivery.headers["traceparent"].to_str().expect("ascii");
    assert!(
        header.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{header}"
    );
}

pub(crate) async fn routing_rules_choose_the_path(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("orders");
    scene.broker.topics(&[&topic]);
    let inbox = Inbox::new(json!([{
        "pubsubname": "pubsub",
        "topic": topic,
        // A rule that cannot be evaluated (a field the event lacks) fails the delivery, as in
        // Dapr, so the second rule checks first that there is a total (warm-ups have none).
        "routes": {
            "rules": [
                {"match": "event.type == \"order.created\"", "path": "/created"},
                {"match": "has(event.data.total) && event.data.total > 100", "path": "/big"},
            ],
            "default": "/other",
        },
    }]));
    let _subscriber = scene.subscriber("orders", &inbox, &[]).await;
    scene
        .publish(
            &topic,
            json!({"total": 5}),
            "?metadata.cloudevent.type=order.created",
        )
        .await;
    scene.publish(&topic, json!({"total": 500}), "").await;
    scene.publish(&topic, json!({"total": 5}), "").await;
    assert_eq!(inbox.wait_for("/created", 1, 30).await.len(), 1);
    assert_eq!(inbox.wait_for("/big", 1, 30).await.len(), 1);
    assert_eq!(inbox.wait_for("/other", 1, 30).await.len(), 1);
}

pub(crate) async fn retry_redelivers_until_the_app_takes_the_message(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("orders");
    scene.broker.topics(&[&topic]);
    let inbox = Inbox::new(json!([subscription(&topic, json!({}))]));
    inbox.reply("/events", Reply::RetryFirst(2));
    let _subscriber = scene.subscriber("orders", &inbox, &[]).await;
    scene.publish(&topic, json!({"n": 1}), "").await;
    let received = inbox.wait_for("/events", 3, 30).await;
    assert_eq!(received.len(), 3, "two RETRY answers, then success");
    let ids: BTreeSet<&str> = received
        .iter()
        .filter_map(|d| d.event["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "the same event every time");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        inbox.on("/events").len(),
        3,
        "not delivered again after success"
    );
}

pub(crate) async fn drop_and_404_are_not_delivered_again(broker: Broker) {
    let scene = Scene::new(broker).await;
    let dropped = scene.topic("dropped");
    let missing = scene.topic("missing");
    scene.broker.topics(&[&dropped, &missing]);
    let inbox = Inbox::new(json!([
        {"pubsubname": "pubsub", "topic": dropped, "route": "/drop"},
        {"pubsubname": "pubsub", "topic": missing, "route": "/gone"},
    ]));
    inbox
        .reply("/drop", Reply::Drop)
        .reply("/gone", Reply::NotFound);
    let _subscriber = scene.subscriber("orders", &inbox, &[]).await;
    scene.publish(&dropped, json!({"n": 1}), "").await;
    scene.publish(&missing, json!({"n": 2}), "").await;
    assert_eq!(inbox.wait_for("/drop", 1, 30).await.len(), 1);
    assert_eq!(inbox.wait_for("/gone", 1, 30).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(inbox.on("/drop").len(), 1);
    assert_eq!(inbox.on("/gone").len(), 1);
}

const INBOUND_RETRIES: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: inbound}
spec:
  policies:
    retries:
      twice: {policy: constant, duration: 10ms, maxRetries: 2}
  targets:
    components:
      pubsub:
        inbound: {retry: twice}
"#;

pub(crate) async fn messages_go_to_the_dead_letter_topic_after_retries(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("orders");
    let dead = scene.topic("dead");
    scene.broker.topics(&[&topic, &dead]);
    let inbox = Inbox::new(json!([
        subscription(&topic, json!({"deadLetterTopic": dead})),
        {"pubsubname": "pubsub", "topic": dead, "route": "/dead"},
    ]));
    inbox.reply("/events", Reply::RetryAlways);
    let _subscriber = scene
        .subscriber("orders", &inbox, &[("resiliency.yaml", INBOUND_RETRIES)])
        .await;
    scene.publish(&topic, json!({"poison": true}), "").await;
    let dead_letters = inbox.wait_for("/dead", 1, 30).await;
    assert_eq!(
        dead_letters.len(),
        1,
        "the message reaches the dead-letter topic"
    );
    assert_eq!(dead_letters[0].event["data"], json!({"poison": true}));
    assert_eq!(
        dead_letters[0].event["topic"], topic,
        "the original envelope, unchanged"
    );
    assert_eq!(inbox.on("/events").len(), 3, "one attempt and two retries");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        inbox.on("/events").len(),
        3,
        "acknowledged once dead-lettered"
    );
}

pub(crate) async fn replicas_share_the_work_and_every_app_gets_every_event(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("orders");
    scene.broker.topics(&[&topic]);
    let subscriptions = json!([subscription(&topic, json!({}))]);
    let (first, second, audit) = (
        Inbox::new(subscriptions.clone()),
        Inbox::new(subscriptions.clone()),
        Inbox::new(subscriptions),
    );
    first.slow(Duration::from_millis(20));
    second.slow(Duration::from_millis(20));
    let _first = scene.subscriber("workers", &first, &[]).await;
    let _second = scene.subscriber("workers", &second, &[]).await;
    let _audit = scene.subscriber("audit", &audit, &[]).await;
    // A replica may join its consumer group only after a rebalance (Kafka), which takes a
    // while on a busy machine: publish in waves until both replicas have had work.
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for n in count..count + 10 {
            scene
                .publish(
                    &topic,
                    json!({"n": n}),
                    &format!("?metadata.partitionKey=key-{n}"),
                )
                .await;
        }
        count += 10;
        let shared = eventually(30, || async {
            first.on("/events").len() + second.on("/events").len() >= count
        })
        .await;
        assert!(shared, "the replicas together get everything");
        if !first.on("/events").is_empty() && !second.on("/events").is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both replicas should have worked within 60 s"
        );
    }
    assert_eq!(
        audit.wait_for("/events", count, 60).await.len(),
        count,
        "the other app gets everything"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<i64> = first
        .on("/events")
        .into_iter()
        .chain(second.on("/events"))
        .filter_map(|d| d.event["data"]["n"].as_i64())
        .collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        count,
        "every event handled: {ids:?}"
    );
    if !scene.broker.rebalances() {
        assert_eq!(ids.len(), count, "no event handled twice: {ids:?}");
    }
}

pub(crate) async fn bulk_publish_and_bulk_subscribe_deliver_every_entry(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("bulk");
    scene.broker.topics(&[&topic]);
    let inbox = Inbox::new(json!([subscription(
        &topic,
        json!({
            "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 200},
        })
    )]));
    let _subscriber = scene.subscriber("orders", &inbox, &[]).await;
    let entries: Vec<Value> = (0..5)
        .map(|n| json!({"entryId": format!("e{n}"), "event": {"n": n}, "contentType": "application/json"}))
        .collect();
    let response = http()
        .post(
            scene
                .publisher
                .url(&format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}")),
        )
        .json(&entries)
        .send()
        .await
        .expect("bulk publish");
    assert_eq!(response.status(), 204);
    let received = inbox.wait_for("/events", 5, 30).await;
    let numbers: BTreeSet<i64> = received
        .iter()
        .filter_map(|d| d.event["data"]["n"].as_i64())
        .collect();
    assert_eq!(numbers, (0..5).collect::<BTreeSet<_>>());
    assert_eq!(
        received[0].headers["content-type"], "application/json",
        "a bulk request, not single deliveries"
    );
}

/// Publishes `{"n": 0}` … `{"n": count - 1}` in one bulk request.
async fn bulk_publish(scene: &Scene, topic: &str, count: i64) {
    let entries: Vec<Value> = (0..count)
        .map(|n| json!({"entryId": format!("e{n}"), "event": {"n": n}, "contentType": "application/json"}))
        .collect();
    let response = http()
        .post(
            scene
                .publisher
                .url(&format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}")),
        )
        .json(&entries)
        .send()
        .await
        .expect("bulk publish");
    assert_eq!(response.status(), 204);
}

/// How many times each `data.n` reached `path`.
fn deliveries_by_number(inbox: &Inbox, path: &str) -> std::collections::BTreeMap<i64, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for delivery in inbox.on(path) {
        if let Some(n) = delivery.event["data"]["n"].as_i64() {
            *counts.entry(n).or_default() += 1;
        }
    }
    counts
}

pub(crate) async fn in_a_bulk_delivery_only_the_entries_the_app_retried_come_again(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("bulk");
    scene.broker.topics(&[&topic]);
    let inbox = Inbox::new(json!([subscription(
        &topic,
        json!({
            "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 200},
        })
    )]));
    inbox
        .reply_to_number(1, Reply::RetryFirst(1))
        .reply_to_number(2, Reply::Drop);
    let _subscriber = scene.subscriber("orders", &inbox, &[]).await;

    bulk_publish(&scene, &topic, 4).await;

    let all_taken = eventually(30, || async {
        deliveries_by_number(&inbox, "/events").get(&1) == Some(&2)
    })
    .await;
    assert!(
        all_taken,
        "the retried entry comes again: {:?}",
        deliveries_by_number(&inbox, "/events")
    );
    // Long enough for every broker's redelivery (Redis: processingTimeout 1 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        deliveries_by_number(&inbox, "/events"),
        [(0, 1), (1, 2), (2, 1), (3, 1)].into(),
        "taken and dropped entries are not delivered again"
    );
}

pub(crate) async fn a_bulk_delivery_in_flight_at_shutdown_goes_to_the_next_consumer(
    broker: Broker,
) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("bulk");
    scene.broker.topics(&[&topic]);
    let subscriptions = json!([subscription(
        &topic,
        json!({
            "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 100},
        })
    )]);
    let slow = Inbox::new(subscriptions.clone());
    slow.slow(Duration::from_secs(5));
    let stopping = scene.subscriber("orders", &slow, &[]).await;
    bulk_publish(&scene, &topic, 3).await;
    // The app is still working on the (first) batch when its sidecar stops: nothing it
    // received has been answered.
    assert!(!slow.wait_for("/events", 1, 30).await.is_empty());
    stopping.sidecar.shutdown().await;

    let next = Inbox::new(subscriptions);
    let _replacement = scene.subscriber("orders", &next, &[]).await;
    let redelivered = eventually(30, || async {
        deliveries_by_number(&next, "/events").len() == 3
    })
    .await;

    assert!(
        redelivered,
        "every unacknowledged entry goes to the next consumer: {:?}",
        deliveries_by_number(&next, "/events")
    );
}

/// RabbitMQ hands a subscription at most its prefetch (16 here) before one is settled, so a
/// batch of 16 cannot grow: it goes out at once instead of waiting out `maxAwaitDurationMs`.
pub(crate) async fn a_bulk_batch_as_large_as_the_prefetch_goes_out_without_waiting(broker: Broker) {
    let scene = Scene::new(broker).await;
    let topic = scene.topic("bulk");
    let inbox = Inbox::new(json!([subscription(
        &topic,
        json!({
            "bulkSubscribe": {"enabled": true, "maxMessagesCount": 100, "maxAwaitDurationMs": 120_000},
        })
    )]));
    let _subscriber = scene.subscriber("orders", &inbox, &[]).await;

    bulk_publish(&scene, &topic, 40).await;

    // Only the last, partial batch (40 = 16 + 16 + 8) waits for its time.
    let delivered = eventually(60, || async {
        deliveries_by_number(&inbox, "/events").len() >= 32
    })
    .await;
    assert!(
        delivered,
        "two full batches arrive long before the two minutes are up: {:?}",
        deliveries_by_number(&inbox, "/events")
    );
}

macro_rules! pubsub_conformance {
    ($name:ident, $broker:path, [$($case:ident),* $(,)?]) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($broker()).await;
                }
            )*
        }
    };
}

macro_rules! every_broker {
    ($($case:ident),* $(,)?) => {
        pubsub_conformance!(in_memory, super::Broker::memory, [$($case),*]);
        pubsub_conformance!(rabbitmq, super::Broker::rabbitmq, [$($case),*]);
        pubsub_conformance!(kafka, super::Broker::kafka, [$($case),*]);
        pubsub_conformance!(redis, super::Broker::redis, [$($case),*]);
    };
}

every_broker!(
    the_envelope_carries_every_field_dapr_sets,
    routing_rules_choose_the_path,
    retry_redelivers_until_the_app_takes_the_message,
    drop_and_404_are_not_delivered_again,
    messages_go_to_the_dead_letter_topic_after_retries,
    replicas_share_the_work_and_every_app_gets_every_event,
    bulk_publish_and_bulk_subscribe_deliver_every_entry,
    in_a_bulk_delivery_only_the_entries_the_app_retried_come_again,
);

// Kafka left out: its consumer group takes a session timeout to hand the partition over.
pubsub_conformance!(
    in_memory_shutdown,
    super::Broker::memory,
    [a_bulk_delivery_in_flight_at_shutdown_goes_to_the_next_consumer]
);
pubsub_conformance!(
    rabbitmq_shutdown,
    super::Broker::rabbitmq,
    [a_bulk_delivery_in_flight_at_shutdown_goes_to_the_next_consumer]
);
pubsub_conformance!(
    rabbitmq_prefetch,
    super::Broker::rabbitmq,
    [a_bulk_batch_as_large_as_the_prefetch_goes_out_without_waiting]
);
pubsub_conformance!(
    redis_shutdown,
    super::Broker::redis,
    [a_bulk_delivery_in_flight_at_shutdown_goes_to_the_next_consumer]
);
