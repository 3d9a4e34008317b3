//! The publish API's errors and options, over HTTP and gRPC, and how subscriptions are listed.

use std::collections::HashMap;
use std::time::Duration;

use dapr::dapr::proto::runtime::v1 as pb;
use serde_json::{Value, json};
use sidecar::Topology;

use crate::pubsub::Inbox;
use crate::support::{TestSidecar, eventually, http, serve, sidecar};

const MEMORY: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n";

async fn publisher(topology: &Topology, component: &str) -> TestSidecar {
    sidecar("publisher")
        .topology(topology)
        .resource("pubsub.yaml", component.to_owned())
        .start()
        .await
}

async fn subscribed(topology: &Topology, inbox: &Inbox, extra: &[(&str, &str)]) -> TestSidecar {
    let port = serve(inbox.router()).await;
    let mut builder = sidecar("orders")
        .topology(topology)
        .app_port(port)
        .resource("pubsub.yaml", MEMORY);
    for (name, yaml) in extra {
        builder = builder.resource(name, *yaml);
    }
    let subscriber = builder.start().await;
    let url = subscriber.url("/v1.0/metadata");
    assert!(
        eventually(10, || async {
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
        .await
    );
    subscriber
}

async fn error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn publish_errors_follow_dapr() {
    let topology = Topology::in_process();
    let scoped = format!(
        "{MEMORY}  metadata:\n  - name: publishingScopes\n    value: \"publisher=allowed\"\n"
    );
    let publisher = publisher(&topology, &scoped).await;
    let (status, body) = error(
        http()
            .post(publisher.url("/v1.0/publish/nope/t"))
            .json(&json!({}))
            .send()
            .await
            .expect("publish"),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (404, Some("ERR_PUBSUB_NOT_FOUND"))
    );
    let (status, body) = error(
        http()
            .post(publisher.url("/v1.0/publish/pubsub/"))
            .send()
            .await
            .expect("publish"),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (404, Some("ERR_TOPIC_NAME_EMPTY"))
    );
    let (status, body) = error(
        http()
            .post(publisher.url("/v1.0/publish/pubsub/other"))
            .json(&json!({}))
            .send()
            .await
            .expect("publish"),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (403, Some("ERR_PUBSUB_FORBIDDEN"))
    );
    let (status, body) = error(
        http()
            .post(publisher.url("/v1.0/publish/pubsub/allowed"))
            .header("content-type", "application/cloudevents+json")
            .body("[not, an, event")
            .send()
            .await
            .expect("publish"),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (500, Some("ERR_PUBSUB_CLOUD_EVENTS_SER"))
    );
    let (status, body) = error(
        http()
            .post(publisher.url("/v1.0/publish/pubsub/allowed?metadata.rawPayload=perhaps"))
            .body("x")
            .send()
            .await
            .expect("publish"),
    )
    .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("ERR_PUBSUB_REQUEST_METADATA"))
    );
    let ok = http()
        .post(publisher.url("/v1.0/publish/pubsub/allowed"))
        .body("x")
        .send()
        .await
        .expect("publish");
    assert_eq!(ok.status(), 204);
}

#[tokio::test]
async fn a_cloudevent_body_is_kept_and_raw_payloads_arrive_wrapped() {
    let topology = Topology::in_process();
    let publisher = publisher(&topology, MEMORY).await;
    let inbox = Inbox::new(json!([
        {"pubsubname": "pubsub", "topic": "events", "route": "/events"},
        {"pubsubname": "pubsub", "topic": "raw", "route": "/raw", "metadata": {"rawPayload": "true"}},
    ]));
    let _subscriber = subscribed(&topology, &inbox, &[]).await;
    http()
        .post(publisher.url("/v1.0/publish/pubsub/events"))
        .header("content-type", "application/cloudevents+json")
        .json(&json!({"id": "mine-1", "source": "elsewhere", "type": "custom.type", "specversion": "1.0", "data": {"k": "v"}}))
        .send()
        .await
        .expect("publish");
    http()
        .post(publisher.url("/v1.0/publish/pubsub/raw?metadata.rawPayload=true"))
        .body("plain bytes")
        .send()
        .await
        .expect("publish");
    let kept = inbox.wait_for("/events", 1, 10).await;
    assert_eq!(kept[0].event["id"], "mine-1");
    assert_eq!(kept[0].event["source"], "elsewhere");
    assert_eq!(kept[0].event["topic"], "events");
    let raw = inbox.wait_for("/raw", 1, 10).await;
    assert_eq!(raw[0].event["data_base64"], "cGxhaW4gYnl0ZXM=");
    assert_eq!(raw[0].event["datacontenttype"], "application/octet-stream");
}

#[tokio::test]
async fn expired_events_are_never_delivered() {
    let topology = Topology::in_process();
    let publisher = publisher(&topology, MEMORY).await;
    let inbox =
        Inbox::new(json!([{"pubsubname": "pubsub", "topic": "events", "route": "/events"}]));
    inbox.slow(Duration::from_millis(1500));
    let _subscriber = subscribed(&topology, &inbox, &[]).await;
    // The first event keeps the (serial) subscriber busy while the second one expires.
    http()
        .post(publisher.url("/v1.0/publish/pubsub/events"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .expect("publish");
    http()
        .post(publisher.url("/v1.0/publish/pubsub/events?metadata.ttlInSeconds=1"))
        .json(&json!({"n": 2}))
        .send()
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let numbers: Vec<i64> = inbox
        .on("/events")
        .iter()
        .filter_map(|d| d.event["data"]["n"].as_i64())
        .collect();
    assert_eq!(numbers, vec![1]);
}

const DECLARATIVE: &str = r#"
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: declared}
spec:
  pubsubname: pubsub
  topic: declared
  routes:
    rules:
    - {match: 'event.type == "special"', path: /special}
    default: /declared
  deadLetterTopic: poison
scopes: [orders]
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: someone-else}
spec:
  pubsubname: pubsub
  topic: elsewhere
  routes: {default: /elsewhere}
scopes: [inventory]
"#;

#[tokio::test]
async fn declarative_and_programmatic_subscriptions_are_listed_in_metadata() {
    let topology = Topology::in_process();
    let publisher = publisher(&topology, MEMORY).await;
    let inbox =
        Inbox::new(json!([{"pubsubname": "pubsub", "topic": "programmatic", "route": "/p"}]));
    let subscriber = subscribed(&topology, &inbox, &[("subscriptions.yaml", DECLARATIVE)]).await;
    let metadata: Value = http()
        .get(subscriber.url("/v1.0/metadata"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(
        metadata["subscriptions"],
        json!([
            {"pubsubname": "pubsub", "topic": "declared", "rules": [{"match": "event.type == \"special\"", "path": "/special"}, {"path": "/declared"}], "deadLetterTopic": "poison", "type": "DECLARATIVE"},
            {"pubsubname": "pubsub", "topic": "programmatic", "rules": [{"path": "/p"}], "deadLetterTopic": "", "type": "PROGRAMMATIC"},
        ])
    );
    let components = metadata["components"].as_array().expect("components");
    assert!(components.iter().any(|c| c["type"] == "pubsub.in-memory"));
    http()
        .post(publisher.url("/v1.0/publish/pubsub/declared?metadata.cloudevent.type=special"))
        .json(&json!({}))
        .send()
        .await
        .expect("publish");
    assert_eq!(inbox.wait_for("/special", 1, 10).await.len(), 1);

    let mut client = subscriber.client().await;
    let grpc = client.get_metadata().await.expect("metadata over gRPC");
    assert_eq!(grpc.subscriptions.len(), 2);
    assert_eq!(
        grpc.subscriptions[0].r#type,
        pb::PubsubSubscriptionType::Declarative as i32
    );
}

#[tokio::test]
async fn the_dapr_crate_publishes_and_bulk_publishes_over_grpc() {
    let topology = Topology::in_process();
    let publisher = publisher(&topology, MEMORY).await;
    let inbox =
        Inbox::new(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]));
    let _subscriber = subscribed(&topology, &inbox, &[]).await;
    let mut client = publisher.client().await;
    client
        .publish_event(
            "pubsub",
            "orders",
            "application/json",
            br#"{"via":"grpc"}"#.to_vec(),
            None,
        )
        .await
        .expect("publish");
    let mut raw = publisher.raw_client().await;
    let response = raw
        .bulk_publish_event(pb::BulkPublishRequest {
            pubsub_name: "pubsub".into(),
            topic: "orders".into(),
            entries: (0..3)
                .map(|n| pb::BulkPublishRequestEntry {
                    entry_id: format!("e{n}"),
                    event: format!("{{\"bulk\":{n}}}").into_bytes(),
                    content_type: "application/json".into(),
                    metadata: HashMap::new(),
                })
                .collect(),
            metadata: HashMap::new(),
        })
        .await
        .expect("bulk publish")
        .into_inner();
    assert!(response.failed_entries.is_empty());
    let received = inbox.wait_for("/orders", 4, 10).await;
    assert_eq!(received.len(), 4);
    assert_eq!(received[0].event["data"], json!({"via": "grpc"}));
    let unknown = client
        .publish_event("nope", "orders", "text/plain", b"x".to_vec(), None)
        .await
        .expect_err("unknown pubsub");
    assert!(
        format!("{unknown:?}").contains("InvalidArgument"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn bulk_publish_validates_its_entries() {
    let topology = Topology::in_process();
    let publisher = publisher(&topology, MEMORY).await;
    let url = publisher.url("/v1.0-alpha1/publish/bulk/pubsub/orders");
    for entries in [
        json!([{"entryId": "a", "event": {}, "contentType": "application/json"}, {"entryId": "a", "event": {}, "contentType": "application/json"}]),
        json!([{"event": {}, "contentType": "application/json"}]),
        json!([{"entryId": "a", "event": 5, "contentType": "text/plain"}]),
    ] {
        let (status, body) = error(
            http()
                .post(&url)
                .json(&entries)
                .send()
                .await
                .expect("publish"),
        )
        .await;
        assert_eq!(
            (status, body["errorCode"].as_str()),
            (400, Some("ERR_PUBSUB_EVENTS_SER")),
            "{entries}"
        );
    }
    let ok = http()
        .post(&url)
        .json(
            &json!([{"entryId": "a", "event": "aGk=", "contentType": "application/octet-stream"}]),
        )
        .send()
        .await
        .expect("publish");
    assert_eq!(ok.status(), 204);
}

#[tokio::test]
async fn every_entry_of_a_bulk_publish_redis_refuses_is_reported_failed() {
    // A stream key that holds a plain string: Redis refuses every XADD of the pipeline.
    let _keys = crate::support::RedisKeys {
        prefix: crate::support::unique("wrongtype"),
    };
    let topic = format!("{}-orders", _keys.prefix);
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let _: () = redis::cmd("SET")
        .arg(&topic)
        .arg("not a stream")
        .query_async(&mut connection)
        .await
        .expect("SET");
    let topology = Topology::in_process();
    let redis = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:6379\n";
    let publisher = publisher(&topology, redis).await;

    let (status, body) = error(
        http()
            .post(publisher.url(&format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}")))
            .json(&json!([
                {"entryId": "a", "event": {"n": 1}, "contentType": "application/json"},
                {"entryId": "b", "event": "two", "contentType": "text/plain"},
            ]))
            .send()
            .await
            .expect("publish"),
    )
    .await;

    assert_eq!(status, 500, "{body}");
    assert_eq!(body["errorCode"], "ERR_PUBSUB_PUBLISH_MESSAGE");
    let failed = body["failedEntries"].as_array().expect("failedEntries");
    let ids: Vec<&str> = failed
        .iter()
        .filter_map(|f| f["entryId"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b"], "{body}");
    assert!(
        failed
            .iter()
            .all(|f| f["error"].as_str().is_some_and(|e| e.contains("WRONGTYPE"))),
        "each entry carries Redis's reason: {body}"
    );
}
