//! Receiving events: the `/dapr/subscribe` declaration, a typed CloudEvent extractor, and the
//! SUCCESS / RETRY / DROP replies Dapr understands.

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloudevents::{AttributesReader as _, Data};
use contracts::Event;
use serde_json::json;

/// A subscription the app declares: one topic, events routed to paths by CloudEvent type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pubsub: String,
    topic: String,
    rules: Vec<(String, String)>,
    dead_letter_topic: Option<String>,
}

impl Subscription {
    /// A subscription to `topic` on `pubsub`, with no routes yet.
    pub fn new(pubsub: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            pubsub: pubsub.into(),
            topic: topic.into(),
            rules: Vec::new(),
            dead_letter_topic: None,
        }
    }

    /// Routes events of type `E` to `path`.
    pub fn route<E: Event>(mut self, path: &str) -> Self {
        debug_assert_eq!(
            E::TOPIC,
            self.topic,
            "{} is not published to {}",
            E::NAME,
            self.topic
        );
        self.rules
            .push((format!("event.type == \"{}\"", E::TYPE), path.to_owned()));
        self
    }

    /// Sends what cannot be delivered after retries to `topic`.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    fn to_json(&self) -> serde_json::Value {
        let mut subscription = json!({
            "pubsubname": self.pubsub,
            "topic": self.topic,
            "routes": {
                "rules": self.rules.iter().map(|(m, p)| json!({"match": m, "path": p})).collect::<Vec<_>>(),
                // Events of other types on the topic are acknowledged and ignored.
                "default": "/events/ignored",
            },
        });
        if let Some(topic) = &self.dead_letter_topic {
            subscription["deadLetterTopic"] = json!(topic);
        }
        subscription
    }
}

/// `GET /dapr/subscribe` for `subscriptions`, plus the route that acknowledges events of types
/// the app does not handle.
pub fn subscriptions_router(subscriptions: Vec<Subscription>) -> Router {
    let body: Vec<serde_json::Value> = subscriptions.iter().map(Subscription::to_json).collect();
    Router::new()
        .route(
            "/dapr/subscribe",
            get(move || async move { axum::Json(body.clone()) }),
        )
        .route(
            "/events/ignored",
            axum::routing::post(|| async { Reply::Success }),
        )
}

/// What the app tells Dapr about a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Handled: acknowledge it.
    Success,
    /// Not now: deliver it again.
    Retry,
    /// Never: acknowledge without handling (or dead-letter it).
    Drop,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Success => "SUCCESS",
            Self::Retry => "RETRY",
            Self::Drop => "DROP",
        };
        axum::Json(json!({ "status": status })).into_response()
    }
}

/// A delivered event of type `E`: its CloudEvent id (for de-duplication) and its payload.
#[derive(Debug, Clone)]
pub struct Received<E> {
    /// The CloudEvent id; a redelivery has the same id.
    pub id: String,
    /// The CloudEvent source (the publishing app).
    pub source: String,
    /// The payload.
    pub data: E,
}

impl<S, E> FromRequest<S> for Received<E>
where
    S: Send + Sync,
    E: Event,
{
    type Rejection = Reply;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // An event that cannot be read never will be: drop it (to the dead-letter topic).
        let event = cloudevents::Event::from_request(request, state)
            .await
            .map_err(|_| {
                tracing::warn!(
                    event = E::NAME,
                    "dropping a delivery that is not a CloudEvent"
                );
                Reply::Drop
            })?;
        if event.ty() != E::TYPE {
            tracing::warn!(
                expected = E::TYPE,
                got = event.ty(),
                "dropping an event of the wrong type"
            );
            return Err(Reply::Drop);
        }
        let parsed = match event.data() {
            Some(Data::Json(value)) => {
                serde_json::from_value::<E>(value.clone()).map_err(|e| e.to_string())
            }
            Some(Data::String(text)) => serde_json::from_str::<E>(text).map_err(|e| e.to_string()),
            Some(Data::Binary(bytes)) => {
                serde_json::from_slice::<E>(bytes).map_err(|e| e.to_string())
            }
            None => Err("the event has no data".to_owned()),
        };
        match parsed {
            Ok(data) => Ok(Self {
                id: event.id().to_owned(),
                source: event.source().to_string(),
                data,
            }),
            Err(error) => {
                tracing::warn!(event = E::NAME, %error, "dropping an event whose payload does not match its contract");
                Err(Reply::Drop)
            }
        }
    }
}
