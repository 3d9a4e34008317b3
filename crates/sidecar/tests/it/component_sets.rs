//! The component sets under `components/`: each loads, and one scenario gives the same result
//! whichever broker set carries it (only the directory changes).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};
use sidecar::Topology;

use crate::pubsub::{Inbox, settle};
use crate::support::{TestDatabase, TestSidecar, eventually, http, serve, sidecar, unique};

fn set_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../components")
        .join(name)
}

/// What the scenario observed, compared across sets.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    created: BTreeSet<i64>,
    cancelled: BTreeSet<i64>,
    audited: BTreeSet<i64>,
    audited_twice: bool,
    state: Value,
}

struct Set {
    name: &'static str,
    secrets: Value,
    topic_prefix: String,
    _database: Option<TestDatabase>,
    _kafka:
        Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    _vhost: Option<sidecar::testing::TestVhost>,
    _redis: Option<crate::support::RedisKeys>,
}

async fn prepare(name: &'static str) -> Set {
    let topic_prefix = unique("scenario");
    let mut secrets = json!({"smtp-host": "127.0.0.1", "smtp-port": "2525"});
    let mut set = Set {
        name,
        secrets: Value::Null,
        topic_prefix: topic_prefix.clone(),
        _database: None,
        _kafka: None,
        _vhost: None,
        _redis: None,
    };
    match name {
        "rabbitmq" | "kafka" => {
            let database = TestDatabase::create().await;
            secrets["postgres-url"] = json!(database.connection_string());
            set._database = Some(database);
        }
        _ => {}
    }
    match name {
        "rabbitmq" => {
            let vhost = sidecar::testing::TestVhost::create();
            secrets["rabbitmq-url"] = json!(vhost.url());
            set._vhost = Some(vhost);
        }
        "kafka" => {
            let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
            cluster
                .create_topic(&format!("{topic_prefix}-orders"), 2, 1)
                .expect("topic");
            secrets["kafka-brokers"] = json!(cluster.bootstrap_servers());
            set._kafka = Some(cluster);
        }
        "redis" => {
            secrets["redis-host"] = json!("127.0.0.1:6379");
            set._redis = Some(crate::support::RedisKeys {
                prefix: topic_prefix.clone(),
            });
        }
        _ => {}
    }
    set.secrets = secrets;
    set
}

async fn start(set: &Set, topology: &Topology, app_id: &str, app_port: Option<u16>) -> TestSidecar {
    let mut builder = sidecar(app_id)
        .topology(topology)
        .file(".data/secrets.json", set.secrets.to_string())
        .options(|o| o.resources_paths.push(set_dir(set.name)));
    if let Some(port) = app_port {
        builder = builder.app_port(port);
    }
    let started = builder.start().await;
    if app_port.is_some() {
        let url = started.url("/v1.0/metadata");
        assert!(
            eventually(30, || async {
                let metadata: Value = http()
                    .get(&url)
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
            .await,
            "{} consumes",
            set.name
        );
    }
    started
}

async fn run_scenario(set: &Set) -> Outcome {
    let topology = Topology::in_process();
    let topic = format!("{}-orders", set.topic_prefix);
    let notifications = Inbox::new(json!([{
        "pubsubname": "pubsub",
        "topic": topic,
        "routes": {"rules": [{"match": "event.type == \"order.created\"", "path": "/created"}], "default": "/cancelled"},
    }]));
    let audit = Inbox::new(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/audit"}]));
    let audit_replica =
        Inbox::new(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/audit"}]));
    let orders = start(set, &topology, "orders", None).await;
    let _notifications = start(
        set,
        &topology,
        "notifications",
        Some(serve(notifications.router()).await),
    )
    .await;
    let _audit = start(set, &topology, "audit", Some(serve(audit.router()).await)).await;
    let _audit_replica = start(
        set,
        &topology,
        "audit",
        Some(serve(audit_replica.router()).await),
    )
    .await;
    // Every subscriber, both audit replicas included, in place before the scenario starts.
    settle(
        &orders,
        std::slice::from_ref(&topic),
        &[&notifications, &audit, &audit_replica],
    )
    .await;
    for n in 0..6 {
        let kind = if n % 2 == 0 {
            "order.created"
        } else {
            "order.cancelled"
        };
        let response = http()
            .post(orders.url(&format!("/v1.0/publish/pubsub/{topic}?metadata.cloudevent.type={kind}&metadata.partitionKey=o{n}")))
            .json(&json!({"order": n}))
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), 204, "{}", set.name);
    }
    let save = http()
        .post(orders.url("/v1.0/state/statestore"))
        .json(&json!([{"key": "order-1", "value": {"status": "PENDING_PAYMENT"}}]))
        .send()
        .await
        .expect("save");
    assert_eq!(save.status(), 204, "{}", set.name);
    let state: Value = http()
        .get(orders.url("/v1.0/state/statestore/order-1"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    // The scenario's events, by number.
    let numbers = |deliveries: Vec<crate::pubsub::Delivery>| -> Vec<i64> {
        deliveries
            .iter()
            .filter_map(|d| d.event["data"]["order"].as_i64())
            .collect()
    };
    let arrived = eventually(60, || {
        let count = numbers(notifications.on("/created")).len()
            + numbers(notifications.on("/cancelled")).len()
            + numbers(audit.on("/audit")).len()
            + numbers(audit_replica.on("/audit")).len();
        async move { count >= 12 }
    })
    .await;
    assert!(arrived, "{}: not every event arrived within 60 s", set.name);
    // Time for a duplicate to show up, if the set delivered one.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let audited: Vec<i64> = numbers(audit.on("/audit"))
        .into_iter()
        .chain(numbers(audit_replica.on("/audit")))
        .collect();
    Outcome {
        created: numbers(notifications.on("/created")).into_iter().collect(),
        cancelled: numbers(notifications.on("/cancelled"))
            .into_iter()
            .collect(),
        audited_twice: audited.len() != audited.iter().collect::<BTreeSet<_>>().len(),
        audited: audited.into_iter().collect(),
        state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scenario_gives_the_same_result_on_every_component_set() {
    let expected = Outcome {
        created: [0, 2, 4].into(),
        cancelled: [1, 3, 5].into(),
        audited: (0..6).collect(),
        audited_twice: false,
        state: json!({"status": "PENDING_PAYMENT"}),
    };
    for name in ["local", "rabbitmq", "kafka", "redis"] {
        let set = prepare(name).await;
        let outcome = run_scenario(&set).await;
        assert_eq!(outcome, expected, "component set {name}");
    }
}
