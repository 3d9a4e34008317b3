//! Delivering pub/sub messages to the app: subscriptions (declarative and programmatic), routing
//! with CEL rules, Dapr's reply rules, inbound resiliency, dead-letter topics and bulk delivery.
//!
//! A message is acknowledged to its broker only when the app took it (or asked to drop it, or it
//! went to the dead-letter topic); failures go back to the broker, and on shutdown everything in
//! flight is released unacknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pubsub::envelope::{self, CLOUDEVENTS_JSON, EnvelopeHead};
use crate::pubsub::{
    BatchLimits, BulkHandler, Handler, HandlerError, Message, PublishRequest, SubscribeRequest,
};
use crate::resiliency::{self, BreakerRejection};
use crate::resources::{BulkSubscribe, RouteRule, SubscriptionDef, TargetPolicies};
use crate::runtime::Runtime;

/// Where a subscription came from, as the metadata API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum SubscriptionKind {
    Declarative,
    Programmatic,
}

/// A subscription the sidecar knows about.
#[derive(Debug, Clone)]
pub(crate) struct KnownSubscription {
    pub(crate) def: SubscriptionDef,
    pub(crate) kind: SubscriptionKind,
}

/// An entry of `GET /dapr/subscribe`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProgrammaticSubscription {
    #[serde(alias = "pubsubName", alias = "pubSubName")]
    pubsubname: String,
    topic: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    routes: Option<ProgrammaticRoutes>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
    #[serde(default)]
    bulk_subscribe: Option<BulkSubscribe>,
}

#[derive(Debug, Deserialize)]
struct ProgrammaticRoutes {
    #[serde(default)]
    rules: Vec<RouteRule>,
    #[serde(default)]
    default: Option<String>,
}

impl ProgrammaticSubscription {
    fn into_def(self) -> Option<SubscriptionDef> {
        let (rules, default_route) = match self.routes {
            Some(routes) => (
                routes.rules,
                routes.default.filter(|d| !d.is_empty()).or(self.route),
            ),
            None => (Vec::new(), self.route),
        };
        let default_route = default_route.filter(|d| !d.is_empty());
        if rules.is_empty() && default_route.is_none() {
            tracing::warn!(topic = %self.topic, "subscription has no routes; ignoring it");
            return None;
        }
        Some(SubscriptionDef {
            name: String::new(),
            pubsub_name: self.pubsubname,
            topic: self.topic,
            rules,
            default_route,
            dead_letter_topic: self.dead_letter_topic.filter(|t| !t.is_empty()),
            metadata: self.metadata,
            bulk_subscribe: self.bulk_subscribe,
            scopes: Vec::new(),
            source: None,
        })
    }
}

/// A route with its compiled CEL expression.
struct Route {
    program: Option<cel::Program>,
    expression: String,
    path: String,
}

/// A subscription ready to deliver.
struct Compiled {
    pubsub: String,
    topic: String,
    routes: Vec<Route>,
    dead_letter_topic: Option<String>,
    raw_payload: bool,
}

/// What the app said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Success,
    Drop,
    /// Try again; the HTTP status, if the app answered one.
    Retry(Option<u16>),
}

impl Runtime {
    /// Reads the app's programmatic subscriptions, merges them with the declarative ones and
    /// starts consuming. Called once the app is reachable (and healthy, with health checks).
    pub(crate) async fn start_subscriptions(self: &Arc<Self>) {
        if self.components.pubsubs.is_empty() {
            return;
        }
        let mut known: Vec<KnownSubscription> = self
            .declarative_subscriptions
            .iter()
            .map(|def| KnownSubscription {
                def: def.clone(),
                kind: SubscriptionKind::Declarative,
            })
            .collect();
        for def in self.programmatic_subscriptions().await {
            let programmatic = KnownSubscription {
                def,
                kind: SubscriptionKind::Programmatic,
            };
            // A programmatic subscription replaces a declarative one for the same topic.
            match known.iter_mut().find(|k| {
                k.def.pubsub_name == programmatic.def.pubsub_name
                    && k.def.topic == programmatic.def.topic
            }) {
                Some(existing) => *existing = programmatic,
                None => known.push(programmatic),
            }
        }
        for subscription in &known {
            if let Err(error) = self.subscribe(&subscription.def).await {
                tracing::error!(
                    pubsub = %subscription.def.pubsub_name,
                    topic = %subscription.def.topic,
                    error = %format!("{error:#}"),
                    "subscription not started"
                );
            }
        }
        // Listed once every subscription was attempted, so the metadata API also tells when
        // consuming has begun.
        *self
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner()) = known;
    }

    /// `GET /dapr/subscribe`; transport errors are retried a few times, a 404 means none.
    async fn programmatic_subscriptions(&self) -> Vec<SubscriptionDef> {
        if !self.app.is_configured() {
            return Vec::new();
        }
        let mut delay = Duration::from_millis(500);
        for attempt in 0..4 {
            let request = Request::get("/dapr/subscribe")
                .header("content-type", "application/json")
                .header("dapr-app-id", self.app_id.as_str())
                .body(Body::empty());
            let Ok(request) = request else {
                return Vec::new();
            };
            match self.app.send(request).await {
                Ok(response) if response.status() == StatusCode::OK => {
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if body.is_empty() {
                        return Vec::new();
                    }
                    return match serde_json::from_slice::<Vec<ProgrammaticSubscription>>(&body) {
                        Ok(entries) => entries
                            .into_iter()
                            .filter_map(ProgrammaticSubscription::into_def)
                            .collect(),
                        Err(error) => {
                            tracing::error!(%error, "error getting topics from app: /dapr/subscribe answered invalid JSON");
                            Vec::new()
                        }
                    };
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    tracing::debug!("the app did not subscribe to any topic");
                    return Vec::new();
                }
                Ok(response) => {
                    tracing::error!(status = %response.status(), "app returned an error status from the subscription endpoint");
                    return Vec::new();
                }
                Err(error) if attempt < 3 => {
                    tracing::debug!(%error, "asking the app for its subscriptions failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.mul_f64(1.5).min(Duration::from_secs(1));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot ask the app for its subscriptions");
                }
            }
        }
        Vec::new()
    }

    async fn subscribe(self: &Arc<Self>, def: &SubscriptionDef) -> anyhow::Result<()> {
        let component = self
            .components
            .pubsubs
            .get(&def.pubsub_name)
            .ok_or_else(|| anyhow::anyhow!("pubsub {} is not found", def.pubsub_name))?;
        if !component.scopes.may_subscribe(&def.topic) {
            anyhow::bail!(
                "subscription to topic {} is not allowed by the component's scopes",
                def.topic
            );
        }
        let mut routes = Vec::new();
        for rule in &def.rules {
            let expression = rule.match_expr.trim().to_owned();
            let program =
                if expression.is_empty() {
                    None
                } else {
                    Some(cel::Program::compile(&expression).map_err(|e| {
                        anyhow::anyhow!("invalid match expression {expression:?}: {e}")
                    })?)
                };
            routes.push(Route {
                program,
                expression,
                path: rule.path.clone(),
            });
        }
        if let Some(default) = &def.default_route {
            routes.push(Route {
                program: None,
                expression: String::new(),
                path: default.clone(),
            });
        }
        let raw_payload = def
            .metadata
            .get("rawPayload")
            .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "T" | "TRUE" | "True"));
        let compiled = Arc::new(Compiled {
            pubsub: def.pubsub_name.clone(),
            topic: def.topic.clone(),
            routes,
            dead_letter_topic: def.dead_letter_topic.clone(),
            raw_payload,
        });
        let request = SubscribeRequest {
            topic: def.topic.clone(),
            metadata: def.metadata.clone(),
        };
        let stop = self.shutdown.child_token();
        match def.bulk_subscribe.as_ref().filter(|b| b.enabled) {
            None => {
                let runtime = self.clone();
                let handler: Handler = Arc::new(move |message| {
                    let (runtime, compiled) = (runtime.clone(), compiled.clone());
                    Box::pin(async move { runtime.handle(&compiled, message).await })
                });
                component.pubsub.subscribe(request, handler, stop).await?;
            }
            Some(bulk) => {
                let limits = BatchLimits::new(bulk.max_messages_count, bulk.max_await_duration_ms);
                let runtime = self.clone();
                let handler: BulkHandler = Arc::new(move |messages| {
                    let (runtime, compiled) = (runtime.clone(), compiled.clone());
                    Box::pin(async move { runtime.deliver_batch(&compiled, &messages).await })
                });
                component
                    .pubsub
                    .bulk_subscribe(request, limits, handler, stop)
                    .await?;
            }
        }
        tracing::info!(pubsub = %def.pubsub_name, topic = %def.topic, "subscribed");
        Ok(())
    }

    /// Waits until the app is healthy; `Err` when the sidecar stops first.
    async fn until_app_healthy(&self) -> Result<(), HandlerError> {
        let mut health = self.app.health().subscribe();
        loop {
            if self.shutdown.is_cancelled() {
                return Err(HandlerError::Shutdown);
            }
            if *health.borrow_and_update() {
                return Ok(());
            }
            tokio::select! {
                changed = health.changed() => if changed.is_err() { return Err(HandlerError::Shutdown) },
                () = self.shutdown.cancelled() => return Err(HandlerError::Shutdown),
            }
        }
    }

    /// One message, start to finish.
    async fn handle(&self, subscription: &Compiled, message: Message) -> Result<(), HandlerError> {
        self.until_app_healthy().await?;
        let event = match self.prepare(subscription, &message) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(topic = %subscription.topic, %error, "cannot read the message as a CloudEvent");
                return self.dead_letter_or_retry(subscription, &message).await;
            }
        };
        if event.head.has_expired() {
            tracing::warn!(topic = %subscription.topic, "dropping expired pub/sub event");
            return self.dead_letter_or_drop(subscription, &message).await;
        }
        let path = match route(subscription, &event.body) {
            Ok(Some(path)) => path,
            Ok(None) => {
                tracing::debug!(topic = %subscription.topic, "no route matched; dropping the event");
                return self.dead_letter_or_drop(subscription, &message).await;
            }
            Err(error) => {
                tracing::warn!(topic = %subscription.topic, %error, "evaluating the routing rules failed");
                return self.dead_letter_or_retry(subscription, &message).await;
            }
        };
        let policies = self
            .policies
            .component(&subscription.pubsub)
            .map(|p| &p.inbound);
        let outcome = self
            .with_inbound_policy(subscription, policies, || {
                self.deliver(subscription, &message, &event, &path)
            })
            .await?;
        match outcome {
            Outcome::Success => Ok(()),
            Outcome::Drop => self.dead_letter_or_drop(subscription, &message).await,
            Outcome::Retry(_) => self.dead_letter_or_retry(subscription, &message).await,
        }
    }

    /// Runs `attempt` under the component's inbound policy (retries, timeout, breaker).
    async fn with_inbound_policy<F, Fut>(
        &self,
        subscription: &Compiled,
        policies: Option<&TargetPolicies>,
        mut attempt: F,
    ) -> Result<Outcome, HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Outcome, HandlerError>>,
    {
        let breaker = policies
            .and_then(|p| p.circuit_breaker.as_ref())
            .map(|policy| {
                self.policies.breaker(
                    &format!("{}:{}", subscription.pubsub, subscription.topic),
                    policy,
                )
            });
        let retry = policies.and_then(|p| p.retry.as_ref());
        let timeout = policies.and_then(|p| p.timeout);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = match breaker.as_ref().map(|b| b.acquire()) {
                Some(Err(BreakerRejection::Open | BreakerRejection::TooManyRequests)) => {
                    Outcome::Retry(None)
                }
                _ => {
                    let outcome = match timeout {
                        Some(limit) => tokio::time::timeout(limit, attempt())
                            .await
                            .unwrap_or(Ok(Outcome::Retry(None)))?,
                        None => attempt().await?,
                    };
                    if let Some(breaker) = &breaker {
                        breaker.record(!matches!(outcome, Outcome::Retry(_)));
                    }
                    outcome
                }
            };
            let Outcome::Retry(status) = &outcome else {
                return Ok(outcome);
            };
            let Some(policy) = retry else {
                return Ok(outcome);
            };
            let matched = status.is_none_or(|code| policy.matching.retries_http(code));
            if !matched || policy.max_retries.is_some_and(|max| attempts > max) {
                return Ok(outcome);
            }
            tokio::select! {
                () = tokio::time::sleep(resiliency::retry_delay(&policy.backoff, attempts)) => {}
                () = self.shutdown.cancelled() => return Err(HandlerError::Shutdown),
            }
        }
    }

    /// The envelope the app receives, and what delivery reads from it.
    fn prepare(&self, subscription: &Compiled, message: &Message) -> Result<PreparedEvent, String> {
        if subscription.raw_payload {
            let traceparent = message.metadata.get("traceparent").map(String::as_str);
            let cloud_event = envelope::from_raw_payload(
                &message.data,
                &subscription.pubsub,
                &subscription.topic,
                traceparent,
            );
            let head = EnvelopeHead::of(&cloud_event);
            let body =
                serde_json::to_vec(&Value::Object(cloud_event)).map_err(|e| e.to_string())?;
            return Ok(PreparedEvent {
                head,
                body: Bytes::from(body),
            });
        }
        Ok(PreparedEvent {
            head: EnvelopeHead::read(&message.data)?,
            body: message.data.clone(),
        })
    }

    /// Posts the event to the app once and reads its answer.
    async fn deliver(
        &self,
        subscription: &Compiled,
        message: &Message,
        event: &PreparedEvent,
        path: &str,
    ) -> Result<Outcome, HandlerError> {
        let mut request = Request::post(normalize_path(path));
        let headers = request.headers_mut().expect("a fresh builder has headers");
        for (key, value) in &message.metadata {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(key.to_ascii_lowercase()),
                HeaderValue::from_str(value),
            ) && !matches!(
                name.as_str(),
                "content-type" | "content-length" | "traceparent" | "tracestate"
            ) {
                headers.insert(name, value);
            }
        }
        headers.insert(
            "pubsubname",
            HeaderValue::from_str(&subscription.pubsub).map_err(|_| HandlerError::Retry)?,
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(CLOUDEVENTS_JSON),
        );
        for (key, value) in [
            ("traceparent", &event.head.traceparent),
            ("tracestate", &event.head.tracestate),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty())
                && let Ok(value) = HeaderValue::from_str(value)
            {
                headers.insert(key, value);
            }
        }
        let Ok(request) = request.body(Body::from(event.body.clone())) else {
            return Ok(Outcome::Retry(None));
        };
        let answer = async {
            let response = match self.app.send(request).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::warn!(topic = %subscription.topic, %error, "delivering to the app failed");
                    return Outcome::Retry(None);
                }
            };
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            classify(status, &body)
        };
        // In flight when the sidecar stops: released, never acknowledged.
        tokio::select! {
            outcome = answer => Ok(outcome),
            () = self.shutdown.cancelled() => Err(HandlerError::Shutdown),
        }
    }

    async fn dead_letter_or_drop(
        &self,
        subscription: &Compiled,
        message: &Message,
    ) -> Result<(), HandlerError> {
        if subscription.dead_letter_topic.is_some() {
            return self.dead_letter_or_retry(subscription, message).await;
        }
        Ok(())
    }

    /// Publishes the original message to the dead-letter topic (then it counts as handled), or
    /// hands it back to the broker.
    async fn dead_letter_or_retry(
        &self,
        subscription: &Compiled,
        message: &Message,
    ) -> Result<(), HandlerError> {
        let Some(topic) = &subscription.dead_letter_topic else {
            return Err(HandlerError::Retry);
        };
        let Some(component) = self.components.pubsubs.get(&subscription.pubsub) else {
            return Err(HandlerError::Retry);
        };
        if !component.scopes.may_publish(topic) {
            tracing::warn!(
                topic,
                "the dead-letter topic is not allowed by the component's scopes"
            );
            return Err(HandlerError::Retry);
        }
        let mut metadata = message.metadata.clone();
        metadata.insert("pubsubName".into(), subscription.pubsub.clone());
        let request = PublishRequest {
            topic: topic.clone(),
            data: message.data.clone(),
            metadata,
        };
        match component.pubsub.publish(&request).await {
            Ok(()) => {
                tracing::warn!(topic = %subscription.topic, dead_letter_topic = %topic, "message sent to the dead-letter topic");
                Ok(())
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "publishing to the dead-letter topic failed");
                Err(HandlerError::Retry)
            }
        }
    }

    /// One bulk delivery: entries are grouped by route and posted together.
    async fn deliver_batch(
        &self,
        subscription: &Compiled,
        messages: &[Message],
    ) -> Vec<Result<(), HandlerError>> {
        if let Err(error) = self.until_app_healthy().await {
            return vec![Err(error); messages.len()];
        }
        let mut results: Vec<Option<Result<(), HandlerError>>> = vec![None; messages.len()];
        let mut by_path: BTreeMap<String, Vec<(usize, PreparedEvent)>> = BTreeMap::new();
        for (index, message) in messages.iter().enumerate() {
            let prepared = self.prepare(subscription, message);
            let result = match prepared {
                Err(_) => Some(self.dead_letter_or_retry(subscription, message).await),
                Ok(event) if event.head.has_expired() => {
                    Some(self.dead_letter_or_drop(subscription, message).await)
                }
                Ok(event) => match route(subscription, &event.body) {
                    Ok(Some(path)) => {
                        by_path.entry(path).or_default().push((index, event));
                        None
                    }
                    Ok(None) => Some(self.dead_letter_or_drop(subscription, message).await),
                    Err(_) => Some(self.dead_letter_or_retry(subscription, message).await),
                },
            };
            results[index] = result;
        }
        let retry = self
            .policies
            .component(&subscription.pubsub)
            .and_then(|p| p.inbound.retry.as_ref());
        for (path, entries) in by_path {
            let ids: Vec<String> = entries
                .iter()
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect();
            let mut outcomes = vec![Outcome::Retry(None); entries.len()];
            let mut pending: Vec<usize> = (0..entries.len()).collect();
            let mut attempts = 0u32;
            // Only the entries that failed are sent again, as daprd's bulk resiliency does.
            let delivered = loop {
                attempts += 1;
                let batch: Vec<(String, &PreparedEvent, &Message)> = pending
                    .iter()
                    .map(|&i| (ids[i].clone(), &entries[i].1, &messages[entries[i].0]))
                    .collect();
                let answers = match self.post_bulk(subscription, &path, &batch).await {
                    Ok(answers) => answers,
                    Err(error) => break Err(error),
                };
                for (&slot, answer) in pending.iter().zip(answers) {
                    outcomes[slot] = answer;
                }
                pending.retain(|&slot| matches!(outcomes[slot], Outcome::Retry(_)));
                let Some(policy) = retry else { break Ok(()) };
                if pending.is_empty() || policy.max_retries.is_some_and(|max| attempts > max) {
                    break Ok(());
                }
                tokio::select! {
                    () = tokio::time::sleep(resiliency::retry_delay(&policy.backoff, attempts)) => {}
                    () = self.shutdown.cancelled() => break Err(HandlerError::Shutdown),
                }
            };
            if let Err(error) = delivered {
                for (index, _) in &entries {
                    results[*index] = Some(Err(error));
                }
                continue;
            }
            for ((index, _), outcome) in entries.iter().zip(outcomes) {
                let message = &messages[*index];
                results[*index] = Some(match outcome {
                    Outcome::Success => Ok(()),
                    Outcome::Drop => self.dead_letter_or_drop(subscription, message).await,
                    Outcome::Retry(_) => self.dead_letter_or_retry(subscription, message).await,
                });
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(HandlerError::Retry)))
            .collect()
    }

    /// Posts a batch; returns one outcome per entry.
    async fn post_bulk(
        &self,
        subscription: &Compiled,
        path: &str,
        entries: &[(String, &PreparedEvent, &Message)],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let body = bulk_body(subscription, entries);
        let request = Request::post(normalize_path(path))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("pubsubname", subscription.pubsub.as_str())
            .body(Body::from(body));
        let Ok(request) = request else {
            return Ok(vec![Outcome::Retry(None); entries.len()]);
        };
        let answer = async {
            let response = match self.app.send(request).await {
                Ok(response) => response,
                Err(_) => return vec![Outcome::Retry(None); entries.len()],
            };
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            bulk_outcomes(status, &body, entries.iter().map(|(id, _, _)| id.as_str()))
        };
        tokio::select! {
            outcomes = answer => Ok(outcomes),
            () = self.shutdown.cancelled() => Err(HandlerError::Shutdown),
        }
    }
}

/// The body of a bulk delivery (daprd's `BulkSubscribeEnvelope`). Each entry's `event` is the
/// envelope's own bytes, written as they are: [`Runtime::prepare`] has read them as a JSON
/// object already, so they need not be parsed into a tree and written out again.
fn bulk_body(subscription: &Compiled, entries: &[(String, &PreparedEvent, &Message)]) -> Vec<u8> {
    let event_bytes: usize = entries.iter().map(|(_, event, _)| event.body.len()).sum();
    let mut body = Vec::with_capacity(event_bytes + entries.len() * 128 + 256);
    body.extend_from_slice(b"{\"entries\":[");
    for (n, (id, event, message)) in entries.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"contentType\":");
        push_json(&mut body, &CLOUDEVENTS_JSON);
        body.extend_from_slice(b",\"entryId\":");
        push_json(&mut body, id);
        body.extend_from_slice(b",\"event\":");
        body.extend_from_slice(&event.body);
        body.extend_from_slice(b",\"metadata\":");
        push_json(&mut body, &message.metadata);
        body.push(b'}');
    }
    body.extend_from_slice(b"],\"id\":");
    push_json(&mut body, &uuid::Uuid::new_v4().to_string());
    body.extend_from_slice(b",\"metadata\":{\"pubsubName\":");
    push_json(&mut body, &subscription.pubsub);
    body.extend_from_slice(b"},\"pubsubname\":");
    push_json(&mut body, &subscription.pubsub);
    body.extend_from_slice(b",\"topic\":");
    push_json(&mut body, &subscription.topic);
    body.extend_from_slice(b",\"type\":\"com.dapr.event.sent.bulk\"}");
    body
}

/// Appends `value` as JSON.
fn push_json<T: Serialize + ?Sized>(body: &mut Vec<u8>, value: &T) {
    // Strings and maps of strings into a Vec: serde_json cannot fail on these.
    let _ = serde_json::to_writer(&mut *body, value);
}

/// An envelope ready for delivery.
struct PreparedEvent {
    /// What delivery reads from it.
    head: EnvelopeHead,
    /// The envelope as the app receives it: one JSON object.
    body: Bytes,
}

/// The first route whose rule holds (an empty rule always holds). The event is parsed for the
/// rules only when there is a rule to evaluate, and then once.
fn route(subscription: &Compiled, event: &[u8]) -> Result<Option<String>, String> {
    let mut fields: Option<cel::Value> = None;
    for route in &subscription.routes {
        let Some(program) = &route.program else {
            return Ok(Some(route.path.clone()));
        };
        let value = match &fields {
            Some(value) => value.clone(),
            None => {
                let parsed: Value = serde_json::from_slice(event).map_err(|e| e.to_string())?;
                let value = cel::to_value(parsed).map_err(|e| e.to_string())?;
                fields.insert(value).clone()
            }
        };
        let mut context = cel::Context::default();
        context.add_variable_from_value("event", value);
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => return Ok(Some(route.path.clone())),
            Ok(cel::Value::Bool(false)) => {}
            Ok(_) => {
                return Err(format!(
                    "the result of match expression {} was not a boolean",
                    route.expression
                ));
            }
            Err(error) => return Err(format!("evaluating {}: {error}", route.expression)),
        }
    }
    Ok(None)
}

/// Route paths are cleaned as daprd does before calling the app.
fn normalize_path(path: &str) -> String {
    format!(
        "/{}",
        crate::invoke::normalize_method(path).unwrap_or_default()
    )
}

#[derive(Deserialize)]
struct AppReply {
    #[serde(default)]
    status: Option<String>,
}

/// Dapr's reply rules for one message.
fn classify(status: StatusCode, body: &[u8]) -> Outcome {
    if status == StatusCode::NOT_FOUND {
        tracing::warn!("the app answered 404 to a pub/sub delivery; dropping the message");
        return Outcome::Drop;
    }
    if !status.is_success() {
        return Outcome::Retry(Some(status.as_u16()));
    }
    match serde_json::from_slice::<AppReply>(body)
        .ok()
        .and_then(|r| r.status)
    {
        None => Outcome::Success,
        Some(s) if s.is_empty() || s == "SUCCESS" => Outcome::Success,
        Some(s) if s == "DROP" => Outcome::Drop,
        Some(s) if s == "RETRY" => Outcome::Retry(None),
        Some(other) => {
            tracing::warn!(status = %other, "unknown status from the app; the message will be retried");
            Outcome::Retry(None)
        }
    }
}

#[derive(Deserialize)]
struct BulkReply {
    #[serde(default)]
    statuses: Vec<BulkStatus>,
}

#[derive(Deserialize)]
struct BulkStatus {
    #[serde(rename = "entryId")]
    entry_id: String,
    #[serde(default)]
    status: String,
}

/// Dapr's reply rules for a batch: every entry needs a status; an unreadable answer retries all.
fn bulk_outcomes<'a>(
    status: StatusCode,
    body: &[u8],
    ids: impl Iterator<Item = &'a str>,
) -> Vec<Outcome> {
    let ids: Vec<&str> = ids.collect();
    if status == StatusCode::NOT_FOUND {
        return vec![Outcome::Drop; ids.len()];
    }
    if !status.is_success() {
        return vec![Outcome::Retry(Some(status.as_u16())); ids.len()];
    }
    let Ok(reply) = serde_json::from_slice::<BulkReply>(body) else {
        return vec![Outcome::Retry(None); ids.len()];
    };
    // As a map, the first status for an id counts, and a batch is not searched once per entry.
    let mut statuses = std::collections::HashMap::with_capacity(reply.statuses.len());
    for status in &reply.statuses {
        statuses
            .entry(status.entry_id.as_str())
            .or_insert(status.status.as_str());
    }
    ids.iter()
        .map(|id| match statuses.get(id).copied() {
            Some("SUCCESS") => Outcome::Success,
            Some("DROP") => Outcome::Drop,
            _ => Outcome::Retry(None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_follow_daprs_rules() {
        assert_eq!(classify(StatusCode::OK, b""), Outcome::Success);
        assert_eq!(classify(StatusCode::OK, b"not json"), Outcome::Success);
        assert_eq!(
            classify(StatusCode::OK, br#"{"status":"SUCCESS"}"#),
            Outcome::Success
        );
        assert_eq!(
            classify(StatusCode::OK, br#"{"status":"RETRY"}"#),
            Outcome::Retry(None)
        );
        assert_eq!(
            classify(StatusCode::OK, br#"{"status":"DROP"}"#),
            Outcome::Drop
        );
        assert_eq!(
            classify(StatusCode::OK, br#"{"status":"success"}"#),
            Outcome::Retry(None)
        );
        assert_eq!(classify(StatusCode::NOT_FOUND, b""), Outcome::Drop);
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, b""),
            Outcome::Retry(Some(503))
        );
    }

    #[test]
    fn bulk_replies_need_a_status_per_entry() {
        let body =
            br#"{"statuses":[{"entryId":"a","status":"SUCCESS"},{"entryId":"b","status":"DROP"}]}"#;
        assert_eq!(
            bulk_outcomes(StatusCode::OK, body, ["a", "b", "c"].into_iter()),
            vec![Outcome::Success, Outcome::Drop, Outcome::Retry(None)]
        );
        assert_eq!(
            bulk_outcomes(StatusCode::OK, b"", ["a"].into_iter()),
            vec![Outcome::Retry(None)]
        );
    }

    #[test]
    fn rules_route_by_cel_expression_with_the_default_last() {
        let subscription = Compiled {
            pubsub: "pubsub".into(),
            topic: "orders".into(),
            routes: vec![
                Route {
                    program: Some(
                        cel::Program::compile(r#"event.type == "order.created""#).expect("valid"),
                    ),
                    expression: "event.type".into(),
                    path: "/created".into(),
                },
                Route {
                    program: Some(cel::Program::compile("event.data.total > 100").expect("valid")),
                    expression: "total".into(),
                    path: "/big".into(),
                },
                Route {
                    program: None,
                    expression: String::new(),
                    path: "/other".into(),
                },
            ],
            dead_letter_topic: None,
            raw_payload: false,
        };
        let event = |value: Value| value.to_string().into_bytes();
        assert_eq!(
            route(
                &subscription,
                &event(serde_json::json!({"type": "order.created"}))
            ),
            Ok(Some("/created".into()))
        );
        assert_eq!(
            route(
                &subscription,
                &event(serde_json::json!({"type": "x", "data": {"total": 250}}))
            ),
            Ok(Some("/big".into()))
        );
        assert_eq!(
            route(
                &subscription,
                &event(serde_json::json!({"type": "x", "data": {"total": 5}}))
            ),
            Ok(Some("/other".into()))
        );
    }
}
