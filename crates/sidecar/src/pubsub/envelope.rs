//! CloudEvents as daprd builds them on publish and reads them on delivery.
//!
//! On publish a plain body is wrapped in an envelope (`id`, `source`, `type`, `specversion`,
//! `datacontenttype`, `data` or `data_base64`, `topic`, `pubsubname`, `traceid`, `traceparent`,
//! `tracestate`, `time`, and `expiration` for a TTL the broker cannot enforce). A body sent as
//! `application/cloudevents+json` is kept and completed. Keys come out sorted, as Go's
//! `json.Marshal` writes maps. A JSON body is embedded as it was sent; daprd decodes and
//! re-encodes it, which sorts its keys and rounds numbers to doubles, so the two differ only in
//! whitespace, key order and integers beyond 2^53.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Content type of a CloudEvent in structured mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// The type Dapr gives events it wraps.
pub const DEFAULT_TYPE: &str = "com.dapr.event.sent";

/// What the publisher knows about an event.
#[derive(Debug, Clone)]
pub struct EnvelopeInput<'a> {
    /// The publishing app (the CloudEvent `source`).
    pub source: &'a str,
    /// The pub/sub component.
    pub pubsub: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The request's `Content-Type` (empty = `text/plain`).
    pub content_type: &'a str,
    /// The body.
    pub data: &'a [u8],
    /// `traceparent` of the publishing request.
    pub traceparent: &'a str,
    /// `tracestate` of the publishing request.
    pub tracestate: &'a str,
    /// Publish metadata (`cloudevent.*` overrides, `ttlInSeconds`).
    pub metadata: &'a BTreeMap<String, String>,
}

/// Why a body could not become an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot create cloudevent: {0}")]
pub struct EnvelopeError(pub String);

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a content type is a structured CloudEvent.
pub fn is_cloud_event(content_type: &str) -> bool {
    media_type(content_type) == CLOUDEVENTS_JSON
}

fn metadata_value<'a>(metadata: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `ttlInSeconds` (or `ttl`): a Go duration or whole seconds; `None` when absent or invalid.
pub fn message_ttl(metadata: &BTreeMap<String, String>) -> Option<Duration> {
    let text =
        metadata_value(metadata, "ttl").or_else(|| metadata_value(metadata, "ttlInSeconds"))?;
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return (seconds > 0).then(|| Duration::from_secs(seconds));
    }
    crate::resources::duration::parse(text)
        .ok()
        .filter(|d| !d.is_zero())
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Builds the envelope for a publish. `broker_ttl` says whether the component enforces TTLs
/// itself (then no `expiration` is written).
pub fn build(input: &EnvelopeInput<'_>, broker_ttl: bool) -> Result<Bytes, EnvelopeError> {
    let expiration = message_ttl(input.metadata)
        .filter(|_| !broker_ttl)
        .map(|ttl| {
            let expires =
                Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
            expires.to_rfc3339_opts(SecondsFormat::Secs, true)
        });
    let written = if is_cloud_event(input.content_type) {
        let mut event = complete(input)?;
        if let Some(expiration) = expiration {
            event.insert("expiration".into(), Value::String(expiration));
        }
        serde_json::to_vec(&Value::Object(event))
    } else {
        let mut event = wrap(input);
        if let Some(expiration) = expiration {
            event.insert("expiration", Field::Text(expiration.into()));
        }
        serde_json::to_vec(&event)
    };
    written
        .map(Bytes::from)
        .map_err(|e| EnvelopeError(e.to_string()))
}

/// A value of a wrapped envelope: text, or the body's own JSON, written as it came (a
/// publish is not parsed into a tree only to be written out again).
enum Field<'a> {
    Text(Cow<'a, str>),
    Json(&'a RawValue),
}

impl Serialize for Field<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Json(raw) => raw.serialize(serializer),
        }
    }
}

/// Wraps a plain body. The map keeps the keys sorted, as Go writes them.
fn wrap<'a>(input: &EnvelopeInput<'a>) -> BTreeMap<&'static str, Field<'a>> {
    let content_type = if input.content_type.is_empty() {
        "text/plain"
    } else {
        input.content_type
    };
    let media = media_type(content_type);
    let metadata = input.metadata;
    let text = |key: &str, default: Cow<'a, str>| -> Field<'a> {
        Field::Text(
            metadata_value(metadata, &format!("cloudevent.{key}")).map_or(default, Cow::Borrowed),
        )
    };
    let mut event = BTreeMap::new();
    event.insert(
        "id",
        text("id", Cow::Owned(uuid::Uuid::new_v4().to_string())),
    );
    let source = if input.source.is_empty() {
        "Dapr"
    } else {
        input.source
    };
    event.insert("source", text("source", Cow::Borrowed(source)));
    event.insert("type", text("type", Cow::Borrowed(DEFAULT_TYPE)));
    event.insert("specversion", Field::Text(Cow::Borrowed("1.0")));
    event.insert("datacontenttype", Field::Text(Cow::Borrowed(content_type)));
    let as_text = || Field::Text(String::from_utf8_lossy(input.data));
    match media.as_str() {
        // JSON that does not parse is carried as text, as daprd does.
        "application/json" => {
            let data = serde_json::from_slice::<&RawValue>(input.data)
                .map_or_else(|_| as_text(), Field::Json);
            event.insert("data", data);
        }
        "application/octet-stream"
        | "application/x-protobuf"
        | "application/cloudevents+protobuf" => {
            event.insert(
                "data_base64",
                Field::Text(Cow::Owned(
                    base64::engine::general_purpose::STANDARD.encode(input.data),
                )),
            );
        }
        _ => {
            event.insert("data", as_text());
        }
    }
    event.insert("topic", Field::Text(Cow::Borrowed(input.topic)));
    event.insert("pubsubname", Field::Text(Cow::Borrowed(input.pubsub)));
    let traceparent = metadata_value(metadata, "cloudevent.traceparent")
        .or_else(|| metadata_value(metadata, "cloudevent.traceid"))
        .unwrap_or(input.traceparent);
    event.insert("traceid", Field::Text(Cow::Borrowed(traceparent)));
    event.insert("traceparent", Field::Text(Cow::Borrowed(traceparent)));
    event.insert(
        "tracestate",
        text("tracestate", Cow::Borrowed(input.tracestate)),
    );
    event.insert("time", Field::Text(Cow::Owned(now_rfc3339())));
    if let Some(subject) = metadata_value(metadata, "cloudevent.subject") {
        event.insert("subject", Field::Text(Cow::Borrowed(subject)));
    }
    event
}

/// Completes a body that is already a CloudEvent: `topic` and `pubsubname` are set, missing
/// required attributes get Dapr's defaults, and the trace is added when the event has none.
fn complete(input: &EnvelopeInput<'_>) -> Result<Map<String, Value>, EnvelopeError> {
    let value: Value =
        serde_json::from_slice(input.data).map_err(|e| EnvelopeError(e.to_string()))?;
    let Value::Object(mut event) = value else {
        return Err(EnvelopeError("the body is not a JSON object".into()));
    };
    let missing = |event: &Map<String, Value>, key: &str| event.get(key).is_none_or(Value::is_null);
    if missing(&event, "time") {
        event.insert("time".into(), Value::String(now_rfc3339()));
    }
    if missing(&event, "traceid") {
        event.insert(
            "traceid".into(),
            Value::String(input.traceparent.to_owned()),
        );
        event.insert(
            "traceparent".into(),
            Value::String(input.traceparent.to_owned()),
        );
    }
    if missing(&event, "tracestate") {
        event.insert(
            "tracestate".into(),
            Value::String(input.tracestate.to_owned()),
        );
    }
    event.insert("topic".into(), Value::String(input.topic.to_owned()));
    event.insert("pubsubname".into(), Value::String(input.pubsub.to_owned()));
    for (key, default) in [
        ("source", "Dapr"),
        ("type", DEFAULT_TYPE),
        ("specversion", "1.0"),
    ] {
        if missing(&event, key) {
            event.insert(key.into(), Value::String(default.into()));
        }
    }
    Ok(event)
}

/// The envelope Dapr makes up on delivery for a subscription with `rawPayload: true`.
pub fn from_raw_payload(
    data: &[u8],
    pubsub: &str,
    topic: &str,
    traceparent: Option<&str>,
) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert(
        "data_base64".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
    );
    event.insert(
        "datacontenttype".into(),
        Value::String("application/octet-stream".into()),
    );
    event.insert("id".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    event.insert("pubsubname".into(), Value::String(pubsub.to_owned()));
    event.insert("source".into(), Value::String("Dapr".into()));
    event.insert("specversion".into(), Value::String("1.0".into()));
    event.insert("topic".into(), Value::String(topic.to_owned()));
    event.insert("type".into(), Value::String(DEFAULT_TYPE.into()));
    if let Some(traceparent) = traceparent {
        event.insert("traceid".into(), Value::String(traceparent.to_owned()));
        event.insert("traceparent".into(), Value::String(traceparent.to_owned()));
    }
    event
}

/// What delivery needs from an envelope: when it expires and its trace context. Reading only
/// these (everything else is skipped, not built into a tree) spares a delivery from parsing
/// each event into a map it does not look at; routing rules read the whole event when a
/// subscription has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeHead {
    /// `expiration` (RFC 3339), for TTLs the broker does not enforce.
    pub expiration: Option<String>,
    /// `traceparent`.
    pub traceparent: Option<String>,
    /// `tracestate`.
    pub tracestate: Option<String>,
}

impl EnvelopeHead {
    /// Reads the head of an envelope; fails unless the bytes are one JSON object.
    pub fn read(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The head of an envelope already parsed.
    pub fn of(event: &Map<String, Value>) -> Self {
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            expiration: text("expiration"),
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
        }
    }

    /// Whether the envelope's `expiration` has passed.
    pub fn has_expired(&self) -> bool {
        self.expiration
            .as_deref()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .is_some_and(|expires| expires < Utc::now())
    }
}

impl<'de> serde::Deserialize<'de> for EnvelopeHead {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Expiration,
            Traceparent,
            Tracestate,
            #[serde(other)]
            Other,
        }

        struct HeadVisitor;

        impl<'de> serde::de::Visitor<'de> for HeadVisitor {
            type Value = EnvelopeHead;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a CloudEvent (a JSON object)")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EnvelopeHead, A::Error> {
                let mut head = EnvelopeHead::default();
                // As with a parsed map, a repeated attribute's last value counts, and one that
                // is not a string is as good as absent.
                while let Some(field) = map.next_key::<Field>()? {
                    let slot = match field {
                        Field::Expiration => &mut head.expiration,
                        Field::Traceparent => &mut head.traceparent,
                        Field::Tracestate => &mut head.tracestate,
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = match map.next_value::<Value>()? {
                        Value::String(text) => Some(text),
                        _ => None,
                    };
                }
                Ok(head)
            }
        }

        deserializer.deserialize_map(HeadVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        content_type: &'a str,
        data: &'a [u8],
        metadata: &'a BTreeMap<String, String>,
    ) -> EnvelopeInput<'a> {
        EnvelopeInput {
            source: "orders",
            pubsub: "pubsub",
            topic: "order-created",
            content_type,
            data,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            tracestate: "",
            metadata,
        }
    }

    fn parse(bytes: &Bytes) -> Map<String, Value> {
        match serde_json::from_slice(bytes).expect("JSON") {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_json_body_is_wrapped_with_every_field_dapr_sets() {
        let metadata = BTreeMap::new();
        let event = parse(
            &build(
                &input("application/json", br#"{"id": 7}"#, &metadata),
                false,
            )
            .expect("builds"),
        );
        assert_eq!(event["data"], serde_json::json!({"id": 7}));
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["source"], "orders");
        assert_eq!(event["type"], DEFAULT_TYPE);
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["topic"], "order-created");
        assert_eq!(event["pubsubname"], "pubsub");
        assert_eq!(event["traceid"], event["traceparent"]);
        assert!(uuid::Uuid::parse_str(event["id"].as_str().expect("id")).is_ok());
        assert!(DateTime::parse_from_rfc3339(event["time"].as_str().expect("time")).is_ok());
        assert!(event.get("expiration").is_none());
    }

    #[test]
    fn text_stays_text_and_binary_becomes_base64() {
        let metadata = BTreeMap::new();
        let text = parse(&build(&input("", b"hello", &metadata), false).expect("builds"));
        assert_eq!(text["data"], "hello");
        assert_eq!(text["datacontenttype"], "text/plain");
        let binary = parse(
            &build(
                &input("application/octet-stream", &[0, 255], &metadata),
                false,
            )
            .expect("builds"),
        );
        assert_eq!(binary["data_base64"], "AP8=");
        assert!(binary.get("data").is_none());
    }

    #[test]
    fn cloudevent_metadata_overrides_the_defaults() {
        let metadata = BTreeMap::from([
            ("cloudevent.id".to_owned(), "evt-1".to_owned()),
            (
                "cloudevent.type".to_owned(),
                "shop.order.created.v1".to_owned(),
            ),
            ("cloudevent.topic".to_owned(), "ignored".to_owned()),
        ]);
        let event =
            parse(&build(&input("application/json", b"{}", &metadata), false).expect("builds"));
        assert_eq!(event["id"], "evt-1");
        assert_eq!(event["type"], "shop.order.created.v1");
        assert_eq!(event["topic"], "order-created");
    }

    #[test]
    fn a_cloudevent_body_is_kept_and_completed() {
        let metadata = BTreeMap::new();
        let body = br#"{"id":"mine","specversion":"1.0","source":"me","type":"t","data":{"a":1},"topic":"x"}"#;
        let event =
            parse(&build(&input(CLOUDEVENTS_JSON, body, &metadata), false).expect("builds"));
        assert_eq!(event["id"], "mine");
        assert_eq!(event["source"], "me");
        assert_eq!(
            event["topic"], "order-created",
            "topic is always the one published to"
        );
        assert_eq!(event["pubsubname"], "pubsub");
        assert!(event.contains_key("traceparent"));
        assert!(build(&input(CLOUDEVENTS_JSON, b"[1]", &metadata), false).is_err());
    }

    #[test]
    fn a_ttl_the_broker_cannot_enforce_becomes_an_expiration() {
        let metadata = BTreeMap::from([("ttlInSeconds".to_owned(), "60".to_owned())]);
        let event = parse(&build(&input("text/plain", b"x", &metadata), false).expect("builds"));
        let expiration = DateTime::parse_from_rfc3339(event["expiration"].as_str().expect("set"))
            .expect("RFC 3339");
        assert!(expiration > Utc::now());
        assert!(!EnvelopeHead::of(&event).has_expired());
        let native = parse(&build(&input("text/plain", b"x", &metadata), true).expect("builds"));
        assert!(native.get("expiration").is_none());
        let mut old = event.clone();
        old.insert(
            "expiration".into(),
            Value::String("2001-01-01T00:00:00Z".into()),
        );
        assert!(EnvelopeHead::of(&old).has_expired());
        let bytes = serde_json::to_vec(&old).expect("JSON");
        assert_eq!(
            EnvelopeHead::read(&bytes),
            Ok(EnvelopeHead::of(&old)),
            "reading only the head finds what the parsed map holds"
        );
        assert!(EnvelopeHead::read(&bytes).expect("an object").has_expired());
    }

    #[test]
    fn the_head_is_read_from_an_object_only() {
        let head = EnvelopeHead::read(
            br#"{"data":{"traceparent":"inner"},"traceparent":"00-a-b-01","tracestate":7,"id":"x"}"#,
        )
        .expect("an object");
        assert_eq!(head.traceparent.as_deref(), Some("00-a-b-01"));
        assert_eq!(head.tracestate, None, "a number is no tracestate");
        assert_eq!(head.expiration, None);
        assert!(EnvelopeHead::read(br#"["00-a-b-01"]"#).is_err());
        assert!(EnvelopeHead::read(b"{\"id\":").is_err());
        assert!(EnvelopeHead::read(b"{} trailing").is_err());
    }
}
