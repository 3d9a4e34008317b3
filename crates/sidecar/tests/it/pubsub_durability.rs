//! What survives: broker restarts (with a private RabbitMQ node and a private Redis server, so
//! other tests never see the restart), sidecar shutdowns, and unhealthy apps.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sidecar::Topology;

use crate::pubsub::{Inbox, Reply};
use crate::support::{TestSidecar, eventually, http, serve, sidecar, unique};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// A broker process of the test's own, stopped and started at will.
trait PrivateBroker {
    fn start(&mut self);
    fn stop(&mut self);
    fn port(&self) -> u16;
}

struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn new() -> Self {
        Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        }
    }
}

impl PrivateBroker for PrivateRedis {
    fn start(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct PrivateRabbit {
    node: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateRabbit {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("sidecar-rabbit-"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("dirs");
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        std::fs::write(dir.join("rabbitmq.conf"), "loopback_users = none\n").expect("config");
        // rabbitmq-server drops to the `rabbitmq` user: it must own its directories.
        let _ = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        Self {
            node: format!("{}@localhost", unique("sidecartest")),
            port: free_port(),
            dist_port: free_port(),
            dir,
            child: None,
        }
    }
}

impl PrivateBroker for PrivateRabbit {
    fn start(&mut self) {
        let child = std::process::Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server starts");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(broker: &mut dyn PrivateBroker) {
    broker.start();
    let port = broker.port();
    assert!(
        eventually(60, || port_open(port)).await,
        "the private broker listens"
    );
}

fn rabbit_component(port: u16) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.rabbitmq\n  version: v1\n  metadata:\n  - {{name: connectionString, value: \"amqp://guest:guest@127.0.0.1:{port}\"}}\n  - {{name: durable, value: \"true\"}}\n  - {{name: deletedWhenUnused, value: \"false\"}}\n  - {{name: deliveryMode, value: \"2\"}}\n  - {{name: publisherConfirm, value: \"true\"}}\n  - {{name: requeueInFailure, value: \"true\"}}\n  - {{name: reconnectWaitSeconds, value: \"1\"}}\n"
    )
}

fn redis_component(port: u16) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - {{name: redisHost, value: \"127.0.0.1:{port}\"}}\n  - {{name: processingTimeout, value: 2s}}\n  - {{name: redeliverInterval, value: \"500\"}}\n"
    )
}

async fn subscriber(topology: &Topology, component: &str, inbox: &Inbox) -> TestSidecar {
    let port = serve(inbox.router()).await;
    let subscriber = sidecar("orders")
        .topology(topology)
        .app_port(port)
        .resource("pubsub.yaml", component.to_owned())
        .start()
        .await;
    let url = subscriber.url("/v1.0/metadata");
    assert!(
        eventually(30, || async {
            let metadata: Value = match http().get(&url).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            metadata["subscriptions"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        })
        .await
    );
    subscriber
}

async fn publish(publisher: &TestSidecar, n: u32) -> reqwest::StatusCode {
    http()
        .post(publisher.url("/v1.0/publish/pubsub/orders"))
        .json(&json!({"n": n}))
        .send()
        .await
        .expect("publish")
        .status()
}

fn numbers(inbox: &Inbox) -> Vec<i64> {
    let mut numbers: Vec<i64> = inbox
        .on("/events")
        .iter()
        .filter_map(|d| d.event["data"]["n"].as_i64())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

/// The same story for every durable broker: published while nobody consumes, kept across a
/// broker restart, delivered afterwards; a publish while the broker is down fails; publisher and
/// subscriber reconnect on their own.
async fn nothing_is_lost_across_a_broker_restart(
    broker: &mut dyn PrivateBroker,
    component: String,
) {
    start(broker).await;
    let topology = Topology::in_process();
    let subscriptions = json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/events"}]);
    let publisher = sidecar("publisher")
        .topology(&topology)
        .resource("pubsub.yaml", component.clone())
        .start()
        .await;
    let before = Inbox::new(subscriptions.clone());
    let first = subscriber(&topology, &component, &before).await;
    assert_eq!(publish(&publisher, 1).await, 204);
    assert_eq!(before.wait_for("/events", 1, 30).await.len(), 1);
    first.sidecar.shutdown().await;

    // Nobody consumes: these wait in the broker.
    assert_eq!(publish(&publisher, 2).await, 204);
    assert_eq!(publish(&publisher, 3).await, 204);

    broker.stop();
    let refused = http()
        .post(publisher.url("/v1.0/publish/pubsub/orders"))
        .json(&json!({"n": 99}))
        .send()
        .await
        .expect("publish");
    assert_eq!(
        refused.status(),
        500,
        "a publish while the broker is down fails to the caller"
    );
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_PUBSUB_PUBLISH_MESSAGE");
    start(broker).await;

    let after = Inbox::new(subscriptions);
    let _second = subscriber(&topology, &component, &after).await;
    assert!(
        eventually(30, || async { numbers(&after).len() >= 2 }).await,
        "kept across the restart: {:?}",
        numbers(&after)
    );
    assert_eq!(numbers(&after), vec![2, 3]);
    // The publisher reconnects by itself.
    assert!(eventually(20, || async { publish(&publisher, 4).await == 204 }).await);
    assert!(eventually(30, || async { numbers(&after).contains(&4) }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_keeps_messages_across_a_broker_restart() {
    let mut broker = PrivateRabbit::new();
    let component = rabbit_component(broker.port);
    nothing_is_lost_across_a_broker_restart(&mut broker, component).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_messages_across_a_broker_restart() {
    let mut broker = PrivateRedis::new();
    let component = redis_component(broker.port);
    nothing_is_lost_across_a_broker_restart(&mut broker, component).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_sidecar_acknowledges_nothing_in_flight() {
    let broker = crate::pubsub::Broker::rabbitmq();
    let scene = crate::pubsub::Scene::new(broker).await;
    let topic = scene.topic("orders");
    let subscriptions = json!([{"pubsubname": "pubsub", "topic": topic, "route": "/events"}]);
    let slow = Inbox::new(subscriptions.clone());
    slow.slow(Duration::from_secs(5));
    let stopping = scene.subscriber("orders", &slow, &[]).await;
    scene.publish(&topic, json!({"n": 1}), "").await;
    // The app is still working on the message when its sidecar stops.
    assert_eq!(slow.wait_for("/events", 1, 30).await.len(), 1);
    stopping.sidecar.shutdown().await;

    let next = Inbox::new(subscriptions);
    let _replacement = scene.subscriber("orders", &next, &[]).await;
    let redelivered = next.wait_for("/events", 1, 30).await;

    assert_eq!(
        redelivered.len(),
        1,
        "the unacknowledged message goes to the next consumer"
    );
    assert_eq!(redelivered[0].event["data"]["n"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_delivered_while_the_app_is_unhealthy() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let inbox =
        Inbox::new(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/events"}]));
    let app = inbox.router().route(
        "/healthz",
        axum::routing::get({
            let healthy = healthy.clone();
            move || async move {
                if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let topology = Topology::in_process();
    let memory = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n";
    let publisher = sidecar("publisher")
        .topology(&topology)
        .resource("pubsub.yaml", memory)
        .start()
        .await;
    let port = serve(app).await;
    let _subscriber = sidecar("orders")
        .topology(&topology)
        .app_port(port)
        .resource("pubsub.yaml", memory)
        .resource(
            "subscription.yaml",
            "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: orders}\nspec:\n  pubsubname: pubsub\n  topic: orders\n  routes: {default: /events}\n",
        )
        .options(|o| {
            o.app_health.enabled = true;
            o.app_health.interval = Duration::from_millis(50);
            o.app_health.timeout = Duration::from_millis(50);
            o.app_health.threshold = 1;
        })
        .start()
        .await;
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let metadata_url = _subscriber.url("/v1.0/metadata");
    assert!(
        eventually(10, || async {
            let metadata: Value = http()
                .get(&metadata_url)
                .send()
                .await
                .expect("metadata")
                .json()
                .await
                .expect("json");
            metadata["subscriptions"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        })
        .await
    );
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(publish(&publisher, 1).await, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        inbox.on("/events").is_empty(),
        "held back while the app is unhealthy"
    );
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        inbox.wait_for("/events", 1, 10).await.len(),
        1,
        "delivered once healthy again"
    );
    let _ = Reply::Success;
}
