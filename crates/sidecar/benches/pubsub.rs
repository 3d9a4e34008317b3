//! Pub/sub through the sidecar against the broker used directly, side by side in one run.
//!
//! Run with `cargo bench -p sidecar --bench pubsub` (release profile). What it measures, and the
//! results on the reference machine, are in `docs/perf.md` ("Pub/sub").
//!
//! For each broker, with persistent delivery where the broker has it:
//!
//! * sidecar: a client publishes through `POST /v1.0/publish/pubsub/{topic}` of a publisher
//!   sidecar (no app); a subscriber sidecar delivers to a tiny axum app that answers
//!   `{"status":"SUCCESS"}`. Both sidecars share one `Topology::in_process()`.
//! * direct: the same broker driven by its own client library with the same settings
//!   (RabbitMQ: lapin with publisher confirms → lapin consumer with manual ack on a durable
//!   queue; Redis: `XADD` → `XREADGROUP` + `XACK`; Kafka: rdkafka `FutureProducer` →
//!   `StreamConsumer`, on librdkafka's in-process mock cluster). The in-memory broker has no
//!   direct counterpart.
//! * sidecar bulk: the same two sidecars through Dapr's bulk APIs. The client publishes batches
//!   of `B` entries with `POST /v1.0-alpha1/publish/bulk/pubsub/{topic}`, `K` requests in
//!   flight; the app's subscription has `bulkSubscribe` (`maxMessagesCount` `B`,
//!   `maxAwaitDurationMs` `W`) and answers `SUCCESS` for every entry of a
//!   `com.dapr.event.sent.bulk` delivery. Delivery stays persistent and at-least-once: the
//!   sidecar acknowledges an entry to the broker only after the app's `SUCCESS`.
//! * halves (RabbitMQ and Redis): the sidecar on one end only, publisher sidecar → the broker's
//!   consumer, and the broker's client → subscriber sidecar → app (the client wraps the body in
//!   a CloudEvent, as a sidecar would). They show which end of the sidecar path costs what.
//!
//! Two measurements per path:
//!
//! 1. Throughput: `N` messages of 256 bytes of JSON, `C` publishes in flight (`K` bulk requests
//!    of `B` on the bulk path), timed from the first publish until the last message is
//!    delivered (to the app, or to the direct consumer).
//!    Each round also reports this process's CPU time per message and how busy the machine was.
//! 2. Latency: one message at a time (a bulk request of one entry on the bulk path); publish
//!    start → delivery, p50/p99.
//!
//! Paths alternate round by round (the order rotates) so that drift on the machine hits them
//! alike. Servers (the app, the sidecars, the direct consumers) run on a two-worker runtime; the
//! publishing client (HTTP, or the broker's client for the direct path) runs on a runtime of its
//! own on the main thread.
//!
//! Tuning through the environment: `PUBSUB_BENCH_MESSAGES` (N, default 5000),
//! `PUBSUB_BENCH_CONCURRENCY` (C, default 16), `PUBSUB_BENCH_BATCH` (B, default 100),
//! `PUBSUB_BENCH_BULK_CONCURRENCY` (K, default 4), `PUBSUB_BENCH_BULK_AWAIT_MS` (W, default 10),
//! `PUBSUB_BENCH_ROUNDS` (default 5),
//! `PUBSUB_BENCH_LATENCY` (sequential samples per path, default 300),
//! `PUBSUB_BENCH_KAFKA_LATENCY` (the same for Kafka, default 20: see the doc),
//! `PUBSUB_BENCH_WARMUP` (messages per path before measuring, default 200),
//! `PUBSUB_BENCH_PATHS` (the paths to measure, comma-separated: `direct`, `reference` (the
//! halves), `message` (the sidecar per message), `bulk`; all by default),
//! `PUBSUB_BENCH_IDLE` (seconds of idling before one last message per path, default 5),
//! `SIDECAR_BENCH_WORKERS` (worker threads of the servers' runtime, default 2). Arguments that
//! do not start with `-` select brokers by substring (`cargo bench ... -- rabbitmq`). Without
//! `--bench` (e.g. `cargo test --benches`) it runs a short smoke pass.

#![allow(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use bytes::Bytes;
use common::{
    SidecarDir, Stats, allowed_cpus, env_usize, eventually_within, http_client, machine, nanos,
    serve, start_sidecar, stop, unique, uri,
};
use futures::{StreamExt as _, TryStreamExt as _};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, ConnectionProperties, ExchangeKind};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use redis::AsyncCommands as _;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use serde::Deserialize;
use sidecar::Topology;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The issue's targets: the sidecar keeps at least this share of the broker's own throughput...
const TARGET_THROUGHPUT_SHARE: f64 = 0.5;
/// ...and adds at most this much latency at p50 (µs).
const TARGET_ADDED_P50_US: f64 = 1000.0;

/// Size of every message body as published (JSON).
const MESSAGE_BYTES: usize = 256;
const RABBITMQ_HOST: &str = "127.0.0.1:5672";
const REDIS_HOST: &str = "127.0.0.1:6379";
/// RabbitMQ prefetch, for the sidecar's subscription (`prefetchCount`) and the direct consumer.
const RABBITMQ_PREFETCH: u16 = 16;
/// What the app answers to every delivery.
const SUCCESS: &str = r#"{"status":"SUCCESS"}"#;
/// How long one measured batch may take before the run gives up.
const BATCH_LIMIT: Duration = Duration::from_secs(90);

type PublishClient = Client<HttpConnector, Full<Bytes>>;

// ---------------------------------------------------------------------------------------------
// Settings.

#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Messages per throughput round.
    messages: usize,
    /// Publishes in flight during a throughput round.
    concurrency: usize,
    /// Entries per bulk publish, and the bulk subscription's `maxMessagesCount`.
    batch: usize,
    /// Bulk publish requests in flight during a throughput round.
    bulk_concurrency: usize,
    /// The bulk subscription's `maxAwaitDurationMs`.
    bulk_await_ms: usize,
    rounds: usize,
    /// Sequential samples per path (per broker, Kafka aside).
    latency: usize,
    kafka_latency: usize,
    /// Messages per path before measuring (a throughput batch of this size, then a few
    /// sequential ones).
    warmup: usize,
    /// Idle time before the last, single delivery on every path.
    idle: Duration,
    workers: usize,
    full: bool,
}

impl Settings {
    fn from_env(full: bool) -> Self {
        // Full run: rounds long enough (about a second each) that a moment of load elsewhere
        // on the machine does not decide a round. Smoke run: every step once, in a few seconds.
        let (messages, rounds, latency, kafka_latency, warmup, idle) = if full {
            (5000, 5, 300, 20, 200, 5)
        } else {
            (100, 1, 20, 2, 10, 1)
        };
        Self {
            messages: env_usize("PUBSUB_BENCH_MESSAGES", messages),
            concurrency: env_usize("PUBSUB_BENCH_CONCURRENCY", 16),
            batch: env_usize("PUBSUB_BENCH_BATCH", 100),
            bulk_concurrency: env_usize("PUBSUB_BENCH_BULK_CONCURRENCY", 4),
            bulk_await_ms: env_usize("PUBSUB_BENCH_BULK_AWAIT_MS", 10),
            rounds: env_usize("PUBSUB_BENCH_ROUNDS", rounds),
            latency: env_usize("PUBSUB_BENCH_LATENCY", latency),
            kafka_latency: env_usize("PUBSUB_BENCH_KAFKA_LATENCY", kafka_latency),
            warmup: env_usize("PUBSUB_BENCH_WARMUP", warmup),
            idle: Duration::from_secs(env_usize("PUBSUB_BENCH_IDLE", idle) as u64),
            workers: env_usize("SIDECAR_BENCH_WORKERS", 2),
            full,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and where they are counted.

/// Every measured batch is a phase; a message carries its phase and its sequence number, and
/// whatever arrives for another phase (a late probe) is not counted.
static PHASES: AtomicU64 = AtomicU64::new(1);

fn next_phase() -> u64 {
    PHASES.fetch_add(1, Ordering::Relaxed)
}

/// `{"phase":P,"seq":S,"pad":"xx…"}`, exactly [`MESSAGE_BYTES`] long.
fn payload(phase: u64, seq: usize) -> Bytes {
    let mut text = format!(r#"{{"phase":{phase},"seq":{seq},"pad":""#);
    let pad = MESSAGE_BYTES.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str("\"}");
    Bytes::from(text)
}

#[derive(Deserialize)]
struct Tag {
    phase: u64,
    seq: usize,
}

/// What the app receives from the sidecar: the CloudEvent, the published JSON in `data`.
#[derive(Deserialize)]
struct Envelope {
    data: Tag,
}

/// What the app receives on a bulk subscription: entries, each with its CloudEvent.
#[derive(Deserialize)]
struct BulkDelivery {
    entries: Vec<BulkDeliveryEntry>,
}

#[derive(Deserialize)]
struct BulkDeliveryEntry {
    #[serde(rename = "entryId")]
    entry_id: String,
    event: Envelope,
}

/// `body` in a CloudEvent, as a sidecar would have published it: what a subscriber sidecar
/// expects to read from the broker.
fn cloud_event(topic: &str, body: &[u8]) -> Bytes {
    let mut event = format!(
        r#"{{"specversion":"1.0","id":"{}","source":"bench","type":"com.dapr.event.sent","datacontenttype":"application/json","pubsubname":"pubsub","topic":"{topic}","data":"#,
        uuid::Uuid::new_v4()
    )
    .into_bytes();
    event.extend_from_slice(body);
    event.push(b'}');
    Bytes::from(event)
}

/// Deliveries of the current phase, recorded by the app or the direct consumer.
#[derive(Default)]
struct Collector {
    state: Mutex<Phase>,
    wake: Notify,
}

#[derive(Default)]
struct Phase {
    id: u64,
    delivered: Vec<Option<Instant>>,
    count: usize,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Wake the waiter on every delivery (sequential latency), not only on the last.
    notify_each: bool,
    duplicates: usize,
    stray: usize,
}

impl Collector {
    fn begin(&self, id: u64, expected: usize, notify_each: bool) {
        let mut state = self.state.lock().unwrap();
        let (duplicates, stray) = (state.duplicates, state.stray);
        *state = Phase {
            id,
            delivered: vec![None; expected],
            notify_each,
            duplicates,
            stray,
            ..Phase::default()
        };
    }

    fn record(&self, phase: u64, seq: usize, at: Instant) {
        let notify = {
            let mut state = self.state.lock().unwrap();
            if phase != state.id || seq >= state.delivered.len() {
                state.stray += 1;
                return;
            }
            if state.delivered[seq].is_some() {
                state.duplicates += 1;
                return;
            }
            state.delivered[seq] = Some(at);
            state.count += 1;
            state.first.get_or_insert(at);
            state.last = Some(at);
            state.notify_each || state.count == state.delivered.len()
        };
        if notify {
            self.wake.notify_one();
        }
    }

    /// Parses a body as a direct consumer receives it (the published JSON, or the sidecar's
    /// CloudEvent around it) and records it.
    fn record_body(&self, body: &[u8], at: Instant) {
        let tag = serde_json::from_slice::<Tag>(body)
            .or_else(|_| serde_json::from_slice::<Envelope>(body).map(|e| e.data));
        if let Ok(tag) = tag {
            self.record(tag.phase, tag.seq, at);
        }
    }

    /// First and last delivery once every message of the phase arrived.
    async fn all(&self, limit: Duration) -> anyhow::Result<(Instant, Instant)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let woken = self.wake.notified();
            {
                let state = self.state.lock().unwrap();
                if state.count == state.delivered.len()
                    && let (Some(first), Some(last)) = (state.first, state.last)
                {
                    return Ok((first, last));
                }
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                let state = self.state.lock().unwrap();
                bail!(
                    "{} of {} messages delivered after {}s",
                    state.count,
                    state.delivered.len(),
                    limit.as_secs()
                );
            }
        }
    }

    /// When message `seq` of the phase was delivered.
    async fn one(&self, seq: usize, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let woken = self.wake.notified();
            if let Some(at) = self.state.lock().unwrap().delivered[seq] {
                return Ok(at);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                bail!("message {seq} not delivered within {}ms", limit.as_millis());
            }
        }
    }

    fn anomalies(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.duplicates, state.stray)
    }
}

// ---------------------------------------------------------------------------------------------
// Publishing.

enum Publisher {
    /// `POST /v1.0/publish/pubsub/{topic}` on the publisher sidecar. The client is boxed: it
    /// is several times larger than the other variants.
    Sidecar {
        client: Box<PublishClient>,
        uri: Uri,
    },
    /// `POST /v1.0-alpha1/publish/bulk/pubsub/{topic}` on the publisher sidecar, one request
    /// per batch of bodies.
    SidecarBulk {
        client: Box<PublishClient>,
        uri: Uri,
    },
    /// lapin, persistent message, waiting for the publisher confirm.
    Rabbit {
        channel: lapin::Channel,
        exchange: String,
        /// Wrap the body in a CloudEvent (for a subscriber sidecar).
        cloud_event: bool,
    },
    /// `XADD stream * data <body>`.
    Redis {
        connection: MultiplexedConnection,
        stream: String,
        /// Wrap the body in a CloudEvent (for a subscriber sidecar).
        cloud_event: bool,
    },
    /// rdkafka, waiting for the delivery report.
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
}

impl Publisher {
    /// Whether this publisher sends batches (and [`Publisher::publish_batch`] is the way to
    /// use it).
    fn is_bulk(&self) -> bool {
        matches!(self, Self::SidecarBulk { .. })
    }

    /// Publishes `bodies` in one bulk request (bulk publishers only).
    async fn publish_batch(&self, bodies: Vec<Bytes>) -> anyhow::Result<()> {
        let Self::SidecarBulk { client, uri } = self else {
            bail!("not a bulk publisher");
        };
        bulk_publish(client, uri, &bodies).await
    }
    async fn publish(&self, body: Bytes) -> anyhow::Result<()> {
        match self {
            Self::SidecarBulk { client, uri } => bulk_publish(client, uri, &[body]).await?,
            Self::Sidecar { client, uri } => {
                let request = Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body))?;
                let response = client.request(request).await?;
                let status = response.status();
                let answer = response.into_body().collect().await?.to_bytes();
                ensure!(
                    status == StatusCode::NO_CONTENT,
                    "publish through the sidecar: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            Self::Rabbit {
                channel,
                exchange,
                cloud_event: wrap,
            } => {
                let body = if *wrap {
                    cloud_event(exchange, &body)
                } else {
                    body
                };
                let confirmation = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_content_type("application/json".into())
                            .with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                ensure!(
                    matches!(confirmation, Confirmation::Ack(_)),
                    "RabbitMQ did not confirm: {confirmation:?}"
                );
            }
            Self::Redis {
                connection,
                stream,
                cloud_event: wrap,
            } => {
                let body = if *wrap {
                    cloud_event(stream, &body)
                } else {
                    body
                };
                let mut connection = connection.clone();
                let _: String = redis::cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("data")
                    .arg(body.as_ref())
                    .query_async(&mut connection)
                    .await?;
            }
            Self::Kafka { producer, topic } => {
                producer
                    .send(
                        FutureRecord::<(), [u8]>::to(topic).payload(body.as_ref()),
                        Timeout::After(Duration::from_secs(10)),
                    )
                    .await
                    .map_err(|(error, _)| anyhow!(error))?;
            }
        }
        Ok(())
    }
}

/// One bulk publish request with `bodies` as its entries; fails unless the sidecar took them all.
async fn bulk_publish(client: &PublishClient, uri: &Uri, bodies: &[Bytes]) -> anyhow::Result<()> {
    // `[{"entryId":"0","event":<body>,"contentType":"application/json"}, ...]`: the bodies
    // are JSON already, so they go in as they are.
    let mut request_body = Vec::with_capacity(bodies.len() * (MESSAGE_BYTES + 64) + 2);
    request_body.push(b'[');
    for (i, body) in bodies.iter().enumerate() {
        if i > 0 {
            request_body.push(b',');
        }
        request_body.extend_from_slice(format!(r#"{{"entryId":"{i}","event":"#).as_bytes());
        request_body.extend_from_slice(body);
        request_body.extend_from_slice(br#","contentType":"application/json"}"#);
    }
    request_body.push(b']');
    let request = Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(request_body)))?;
    let response = client.request(request).await?;
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    ensure!(
        status == StatusCode::NO_CONTENT,
        "bulk publish through the sidecar: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

/// One way from publisher to consumer.
struct Path {
    label: String,
    role: Role,
    publisher: Publisher,
    collector: Arc<Collector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Sidecar,
    /// The sidecar through the bulk APIs: held to the same targets as [`Role::Sidecar`].
    SidecarBulk,
    Direct,
    /// Shown for comparison only (not the baseline of a target).
    Reference,
}

/// One throughput round.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Messages per second, first publish → last delivery.
    delivered: f64,
    /// Messages per second, first publish → last publish acknowledged.
    published: f64,
    /// First publish → first delivery.
    first_delivery: Duration,
    /// CPU time of this benchmark process per message, in µs (clients, sidecars, app and
    /// direct consumers; not the broker's own process).
    process_cpu_us: Option<f64>,
    /// Share of the machine's CPU time that was busy (anything: this process, the broker,
    /// whatever else runs), 0 to 1.
    machine_busy: Option<f64>,
}

/// CPU time from `/proc`, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    /// utime + stime of this process (all threads, live or gone).
    process: u64,
    /// Busy time of all CPUs (`/proc/stat` minus idle and iowait).
    busy: u64,
    /// All time of all CPUs.
    total: u64,
}

/// `USER_HZ`: the unit of `/proc/*/stat` times (100 on every Linux architecture in use).
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuTicks {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may contain spaces: count from after it.
        // utime and stime are fields 14 and 15, the 12th and 13th after the name.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let process = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let cpus = std::fs::read_to_string("/proc/stat").ok()?;
        // user nice system idle iowait irq softirq steal
        let times: Vec<u64> = cpus
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .take(8)
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = times.iter().sum();
        let idle = times.get(3)? + times.get(4)?;
        Some(Self {
            process,
            busy: total - idle,
            total,
        })
    }

    /// CPU µs of this process per message, and the machine's busy share, since `self`.
    fn since(self, messages: usize) -> (Option<f64>, Option<f64>) {
        let Some(now) = Self::now() else {
            return (None, None);
        };
        let process = (now.process - self.process) as f64 / TICKS_PER_SECOND * 1e6;
        let total = now.total - self.total;
        let busy = (total > 0).then(|| (now.busy - self.busy) as f64 / total as f64);
        (Some(process / messages as f64), busy)
    }
}

async fn throughput(path: &Path, messages: usize, settings: Settings) -> anyhow::Result<Round> {
    let phase = next_phase();
    let bodies: Vec<Bytes> = (0..messages).map(|seq| payload(phase, seq)).collect();
    path.collector.begin(phase, messages, false);
    let cpu = CpuTicks::now();
    let started = Instant::now();
    let published = if path.publisher.is_bulk() {
        let mut bodies = bodies.into_iter();
        let batches = std::iter::from_fn(|| {
            let batch: Vec<Bytes> = bodies.by_ref().take(settings.batch.max(1)).collect();
            (!batch.is_empty()).then_some(batch)
        });
        futures::stream::iter(batches)
            .map(|batch| path.publisher.publish_batch(batch))
            .buffer_unordered(settings.bulk_concurrency)
            .try_collect::<()>()
            .await
    } else {
        futures::stream::iter(bodies)
            .map(|body| path.publisher.publish(body))
            .buffer_unordered(settings.concurrency)
            .try_collect::<()>()
            .await
    };
    published.with_context(|| format!("publishing on {}", path.label))?;
    let published = started.elapsed();
    let (first, last) = path
        .collector
        .all(BATCH_LIMIT)
        .await
        .with_context(|| path.label.clone())?;
    let (process_cpu_us, machine_busy) = cpu.map_or((None, None), |cpu| cpu.since(messages));
    let rate = |elapsed: Duration| messages as f64 / elapsed.as_secs_f64();
    Ok(Round {
        delivered: rate(last.duration_since(started)),
        published: rate(published),
        first_delivery: first.duration_since(started),
        process_cpu_us,
        machine_busy,
    })
}

/// `count` messages one at a time; publish start → delivery, in nanoseconds.
async fn latency(path: &Path, count: usize) -> anyhow::Result<Vec<u64>> {
    let phase = next_phase();
    path.collector.begin(phase, count, true);
    let mut samples = Vec::with_capacity(count);
    for seq in 0..count {
        let body = payload(phase, seq);
        let started = Instant::now();
        path.publisher
            .publish(body)
            .await
            .with_context(|| format!("publishing on {}", path.label))?;
        let delivered = path
            .collector
            .one(seq, Duration::from_secs(30))
            .await
            .with_context(|| path.label.clone())?;
        samples.push(nanos(delivered.duration_since(started)));
    }
    Ok(samples)
}

/// Publishes probes until one is delivered: the subscription is in place (and, for Kafka, the
/// consumer group has its partition). Returns how long that took.
async fn until_delivering(path: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    while Instant::now() < deadline {
        let phase = next_phase();
        path.collector.begin(phase, 1, true);
        if path.publisher.publish(payload(phase, 0)).await.is_ok()
            && path.collector.one(0, Duration::from_secs(1)).await.is_ok()
        {
            return Ok(started.elapsed());
        }
    }
    bail!("{}: nothing delivered within 60s", path.label)
}

/// What was measured on one path.
struct Measured {
    label: String,
    role: Role,
    ready_after: Duration,
    rounds: Vec<Round>,
    samples: Vec<u64>,
    /// Publish → delivery of one message after the path sat idle for `Settings::idle`.
    after_idle: Option<Duration>,
    duplicates: usize,
    stray: usize,
}

async fn measure(
    paths: &[Path],
    settings: Settings,
    latency_count: usize,
) -> anyhow::Result<Vec<Measured>> {
    let mut measured = Vec::new();
    for path in paths {
        let ready_after = until_delivering(path).await?;
        measured.push(Measured {
            label: path.label.clone(),
            role: path.role,
            ready_after,
            rounds: Vec::new(),
            samples: Vec::new(),
            after_idle: None,
            duplicates: 0,
            stray: 0,
        });
    }
    // A quarter of the measured count at most: Kafka's samples take half a second each.
    let warmup_latency = (settings.warmup / 10).min(latency_count / 4).max(1);
    for path in paths {
        throughput(path, settings.warmup, settings).await?;
        latency(path, warmup_latency).await?;
    }
    let rounds = settings.rounds.max(1);
    for round in 0..rounds {
        for offset in 0..paths.len() {
            let i = (round + offset) % paths.len();
            let result = throughput(&paths[i], settings.messages, settings).await?;
            measured[i].rounds.push(result);
        }
    }
    let latency_rounds = rounds.min(latency_count).max(1);
    for round in 0..latency_rounds {
        let chunk =
            latency_count / latency_rounds + usize::from(round < latency_count % latency_rounds);
        for offset in 0..paths.len() {
            let i = (round + offset) % paths.len();
            let samples = latency(&paths[i], chunk).await?;
            measured[i].samples.extend(samples);
        }
    }
    // Nothing published for a while, then one message on each path.
    tokio::time::sleep(settings.idle).await;
    for (path, result) in paths.iter().zip(&mut measured) {
        let samples = latency(path, 1).await?;
        result.after_idle = samples.first().map(|&n| Duration::from_nanos(n));
    }
    for (path, result) in paths.iter().zip(&mut measured) {
        (result.duplicates, result.stray) = path.collector.anomalies();
    }
    Ok(measured)
}

// ---------------------------------------------------------------------------------------------
// The sidecar side: a publisher sidecar, a subscriber sidecar and its app.

/// A topic the subscriber app subscribes to, and how.
struct Subscribed {
    topic: String,
    collector: Arc<Collector>,
    /// `bulkSubscribe` with `maxMessagesCount` and `maxAwaitDurationMs`.
    bulk: Option<(usize, usize)>,
}

impl Subscribed {
    fn one_by_one(topic: &str, collector: &Arc<Collector>) -> Self {
        Self {
            topic: topic.to_owned(),
            collector: collector.clone(),
            bulk: None,
        }
    }
}

/// The app behind the subscriber sidecar: subscribes to each topic (route `/events/{i}`) and
/// records every delivery with that topic's collector. Bulk deliveries are answered with a
/// `SUCCESS` per entry.
fn subscriber_app(topics: &[Subscribed]) -> axum::Router {
    let subscriptions = serde_json::Value::Array(
        topics
            .iter()
            .enumerate()
            .map(|(i, subscribed)| {
                let mut subscription = serde_json::json!({"pubsubname": "pubsub", "topic": subscribed.topic, "route": format!("/events/{i}")});
                if let Some((count, await_ms)) = subscribed.bulk {
                    subscription["bulkSubscribe"] = serde_json::json!({
                        "enabled": true,
                        "maxMessagesCount": count,
                        "maxAwaitDurationMs": await_ms,
                    });
                }
                subscription
            })
            .collect(),
    )
    .to_string();
    let mut router = axum::Router::new().route(
        "/dapr/subscribe",
        axum::routing::get(move || {
            let subscriptions = subscriptions.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    subscriptions,
                )
            }
        }),
    );
    for (i, subscribed) in topics.iter().enumerate() {
        let collector = subscribed.collector.clone();
        if subscribed.bulk.is_some() {
            router = router.route(
                &format!("/events/{i}"),
                axum::routing::post(move |body: Bytes| {
                    let collector = collector.clone();
                    async move { bulk_reply(&collector, &body) }
                }),
            );
            continue;
        }
        router = router.route(
            &format!("/events/{i}"),
            axum::routing::post(move |body: Bytes| {
                let collector = collector.clone();
                async move {
                    let at = Instant::now();
                    if let Ok(event) = serde_json::from_slice::<Envelope>(&body) {
                        collector.record(event.data.phase, event.data.seq, at);
                    }
                    ([(http::header::CONTENT_TYPE, "application/json")], SUCCESS)
                }
            }),
        );
    }
    router
}

/// Records every entry of a bulk delivery and answers `SUCCESS` for each (a 400 for a body
/// that is not a bulk delivery, so that the sidecar retries it and the round reports it).
fn bulk_reply(collector: &Collector, body: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let at = Instant::now();
    let Ok(delivery) = serde_json::from_slice::<BulkDelivery>(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut reply = String::with_capacity(16 + delivery.entries.len() * 48);
    reply.push_str(r#"{"statuses":["#);
    for (i, entry) in delivery.entries.iter().enumerate() {
        collector.record(entry.event.data.phase, entry.event.data.seq, at);
        if i > 0 {
            reply.push(',');
        }
        // Entry ids are the sidecar's UUIDs: nothing in them needs escaping.
        reply.push_str(&format!(
            r#"{{"entryId":"{}","status":"SUCCESS"}}"#,
            entry.entry_id
        ));
    }
    reply.push_str("]}");
    ([(http::header::CONTENT_TYPE, "application/json")], reply).into_response()
}

fn component(kind: &str, metadata: &[(&str, String)]) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: {kind}\n  version: v1\n"
    );
    if metadata.is_empty() {
        yaml.push_str("  metadata: []\n");
    } else {
        yaml.push_str("  metadata:\n");
        for (name, value) in metadata {
            yaml.push_str(&format!("  - name: {name}\n    value: \"{value}\"\n"));
        }
    }
    yaml
}

/// The two sidecars of one broker and what they need kept alive.
struct SidecarSide {
    publisher: sidecar::Sidecar,
    subscriber: sidecar::Sidecar,
    _dirs: (SidecarDir, SidecarDir),
    topics: usize,
}

/// A publisher sidecar, and a subscriber sidecar whose app subscribes to every one of `topics`.
fn start_sidecars(
    servers: &Runtime,
    yaml: &str,
    topics: &[Subscribed],
) -> anyhow::Result<SidecarSide> {
    let app_port = serve(servers, subscriber_app(topics));
    let topology = Topology::in_process();
    let subscriber_dir = SidecarDir::new(&[("pubsub.yaml", yaml)], None)?;
    let publisher_dir = SidecarDir::new(&[("pubsub.yaml", yaml)], None)?;
    let subscriber = start_sidecar(
        servers,
        subscriber_dir
            .options(&unique("subscriber-"))
            .app_port(app_port),
        &topology,
    )?;
    let publisher = start_sidecar(
        servers,
        publisher_dir.options(&unique("publisher-")),
        &topology,
    )?;
    Ok(SidecarSide {
        publisher,
        subscriber,
        _dirs: (subscriber_dir, publisher_dir),
        topics: topics.len(),
    })
}

impl SidecarSide {
    /// Waits until the subscriber sidecar lists its subscriptions (it consumes from then on).
    async fn subscribed(&self) -> anyhow::Result<()> {
        let url = format!(
            "http://127.0.0.1:{}/v1.0/metadata",
            self.subscriber.http_port()
        );
        let http = reqwest::Client::new();
        eventually_within("the subscription", Duration::from_secs(30), || async {
            let metadata: serde_json::Value = match http.get(&url).send().await {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            metadata["subscriptions"]
                .as_array()
                .is_some_and(|s| s.len() == self.topics)
        })
        .await
    }

    /// Publishing to `topic` through the publisher sidecar.
    fn publisher(&self, topic: &str) -> Publisher {
        Publisher::Sidecar {
            client: Box::new(http_client()),
            uri: uri(
                self.publisher.http_port(),
                &format!("/v1.0/publish/pubsub/{topic}"),
            ),
        }
    }

    /// Bulk publishing to `topic` through the publisher sidecar.
    fn bulk_publisher(&self, topic: &str) -> Publisher {
        Publisher::SidecarBulk {
            client: Box::new(http_client()),
            uri: uri(
                self.publisher.http_port(),
                &format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}"),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Brokers.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Memory,
    RabbitMq,
    Redis,
    Kafka,
}

impl Broker {
    const ALL: [Self; 4] = [Self::Memory, Self::RabbitMq, Self::Redis, Self::Kafka];

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "pubsub.in-memory",
            Self::RabbitMq => "pubsub.rabbitmq",
            Self::Redis => "pubsub.redis",
            Self::Kafka => "pubsub.kafka",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Memory => "in-memory (sidecar only)",
            Self::RabbitMq => {
                "RabbitMQ (persistent: durable exchange and queue, deliveryMode 2, publisher confirms, manual ack)"
            }
            Self::Redis => "Redis Streams (XADD, consumer group, XACK after delivery)",
            Self::Kafka => {
                "Kafka on librdkafka's in-process mock cluster (acks=all, idempotent producer; not a real broker)"
            }
        }
    }
}

/// Deletes a RabbitMQ vhost when dropped.
struct Vhost(String);

impl Vhost {
    fn create() -> anyhow::Result<Self> {
        let name = unique("sidecar-bench-");
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self(name);
        rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"])?;
        Ok(vhost)
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{RABBITMQ_HOST}/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl")?;
    ensure!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Declares `exchange` (fanout) and a queue bound to it, durable, as the sidecar declares them.
async fn rabbit_topology(
    channel: &lapin::Channel,
    exchange: &str,
    queue: &str,
) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// The direct RabbitMQ consumer, on the server runtime: manual ack after recording.
async fn rabbit_consumer(
    uri: String,
    exchange: String,
    collector: Arc<Collector>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let connection = lapin::Connection::connect(&uri, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let queue = format!("{exchange}-queue");
    rabbit_topology(&channel, &exchange, &queue).await?;
    channel
        .basic_qos(RABBITMQ_PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "direct".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                () = stop.cancelled() => break,
            };
            let Some(Ok(delivery)) = delivery else { break };
            collector.record_body(&delivery.data, Instant::now());
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
        let _ = channel.close(200, "done".into()).await;
        let _ = connection.close(200, "done".into()).await;
    });
    Ok(())
}

async fn rabbit_publisher(
    uri: &str,
    exchange: &str,
    cloud_event: bool,
) -> anyhow::Result<(lapin::Connection, Publisher)> {
    let connection = lapin::Connection::connect(uri, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((
        connection,
        Publisher::Rabbit {
            channel,
            exchange: exchange.to_owned(),
            cloud_event,
        },
    ))
}

fn redis_client() -> anyhow::Result<redis::Client> {
    Ok(redis::Client::open(format!("redis://{REDIS_HOST}"))?)
}

/// The direct Redis consumer, on the server runtime: a blocking `XREADGROUP` of up to 100
/// entries on a connection of its own, then one `XACK` for what it read.
async fn redis_consumer(
    stream: String,
    collector: Arc<Collector>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let client = redis_client()?;
    // No response timeout: the read blocks for up to a second.
    let mut reader = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await?;
    let mut acker = client.get_multiplexed_async_connection().await?;
    let group = "direct";
    let _: () = acker.xgroup_create_mkstream(&stream, group, "0").await?;
    tokio::spawn(async move {
        let options = StreamReadOptions::default()
            .group(group, "consumer")
            .count(100)
            .block(1000);
        let keys = [stream.as_str()];
        loop {
            let read: redis::RedisResult<StreamReadReply> = tokio::select! {
                read = reader.xread_options(&keys, &[">"], &options) => read,
                () = stop.cancelled() => break,
            };
            let Ok(reply) = read else { break };
            let mut ids = Vec::new();
            for key in reply.keys {
                for entry in key.ids {
                    let at = Instant::now();
                    if let Some(redis::Value::BulkString(data)) = entry.map.get("data") {
                        collector.record_body(data, at);
                    }
                    ids.push(entry.id);
                }
            }
            if !ids.is_empty() {
                let acked: redis::RedisResult<i64> = acker.xack(&stream, group, &ids).await;
                if acked.is_err() {
                    break;
                }
            }
        }
    });
    Ok(())
}

/// librdkafka settings the sidecar's Kafka component uses for its consumers.
fn kafka_consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("log_level", "3")
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000");
    config
}

/// The direct Kafka consumer, on the server runtime: records, then stores the offset.
fn kafka_consumer(
    config: ClientConfig,
    topic: String,
    collector: Arc<Collector>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic.as_str()])?;
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = consumer.recv() => message,
                () = stop.cancelled() => break,
            };
            let Ok(message) = message else { continue };
            let at = Instant::now();
            if let Some(body) = message.payload() {
                collector.record_body(body, at);
            }
            let _ = consumer.store_offset_from_message(&message);
        }
    });
    Ok(())
}

/// The producer the sidecar's Kafka component builds.
fn kafka_producer(brokers: &str, topic: &str) -> anyhow::Result<Publisher> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "3")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .create()?;
    Ok(Publisher::Kafka {
        producer,
        topic: topic.to_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// One broker, start to finish.

struct Outcome {
    measured: Vec<Measured>,
    /// One per sidecar path (per message, bulk), against the direct path.
    versus: Vec<Versus>,
    warnings: Vec<(String, usize, String)>,
}

/// A sidecar path against the direct path, for the targets.
struct Versus {
    role: Role,
    /// Median rates, msg/s: the sidecar path's, and the direct path's when there is one.
    rate: f64,
    direct_rate: Option<f64>,
    /// The sidecar path's p50, and its p50 minus the direct path's (µs).
    p50_us: f64,
    added_p50_us: Option<f64>,
}

/// Whether `PUBSUB_BENCH_PATHS` (comma-separated path names: `direct`, `reference`,
/// `message`, `bulk`; all when unset) selects paths of this role.
fn path_selected(role: Role) -> bool {
    let Ok(names) = std::env::var("PUBSUB_BENCH_PATHS") else {
        return true;
    };
    names
        .split(',')
        .map(str::trim)
        .any(|name| !name.is_empty() && role.path_name().contains(name))
}

impl Role {
    /// The name of a sidecar path in the summary.
    fn path_name(self) -> &'static str {
        match self {
            Self::Sidecar => "per message",
            Self::SidecarBulk => "bulk",
            Self::Direct => "direct",
            Self::Reference => "reference",
        }
    }
}

/// The topics of one broker's run, one per path.
struct Topics {
    /// Sidecar → broker → sidecar → app.
    sidecar: String,
    /// The same through the bulk APIs.
    sidecar_bulk: String,
    /// The broker's client on both ends.
    direct: String,
    /// Publisher sidecar → broker → the broker's client (RabbitMQ and Redis only).
    sidecar_publish: String,
    /// The broker's client → broker → subscriber sidecar → app (RabbitMQ and Redis only).
    sidecar_deliver: String,
    /// Kafka only: the direct path with a short fetch wait.
    reference: String,
}

impl Topics {
    fn new() -> Self {
        let prefix = unique("bench-");
        Self {
            sidecar: format!("{prefix}-sidecar"),
            sidecar_bulk: format!("{prefix}-sidecar-bulk"),
            direct: format!("{prefix}-direct"),
            sidecar_publish: format!("{prefix}-sidecar-publish"),
            sidecar_deliver: format!("{prefix}-sidecar-deliver"),
            reference: format!("{prefix}-reference"),
        }
    }
}

/// Where each path's deliveries are recorded.
#[derive(Default)]
struct Collectors {
    sidecar: Arc<Collector>,
    sidecar_bulk: Arc<Collector>,
    direct: Arc<Collector>,
    sidecar_publish: Arc<Collector>,
    sidecar_deliver: Arc<Collector>,
    reference: Arc<Collector>,
}

/// Whether the broker gets the two half paths (the sidecar on one end only). They show which
/// end costs what; Kafka's mock cluster is not worth the time (see the doc).
fn has_halves(broker: Broker) -> bool {
    matches!(broker, Broker::RabbitMq | Broker::Redis)
}

fn run_broker(
    servers: &Runtime,
    client: &Runtime,
    settings: Settings,
    broker: Broker,
) -> anyhow::Result<Outcome> {
    let topics = Topics::new();
    let collectors = Collectors::default();
    let stop_consumers = CancellationToken::new();
    warnings::reset();

    // Broker fixtures first (vhost, mock cluster), then the sidecars, then the direct consumers.
    let vhost = match broker {
        Broker::RabbitMq => Some(Vhost::create()?),
        _ => None,
    };
    let kafka = match broker {
        Broker::Kafka => {
            let cluster = rdkafka::mocking::MockCluster::new(1)?;
            for topic in [
                &topics.sidecar,
                &topics.sidecar_bulk,
                &topics.direct,
                &topics.reference,
            ] {
                cluster.create_topic(topic, 1, 1)?;
            }
            Some(cluster)
        }
        _ => None,
    };
    let yaml = match broker {
        Broker::Memory => component("pubsub.in-memory", &[]),
        Broker::RabbitMq => component(
            "pubsub.rabbitmq",
            &[
                ("connectionString", vhost.as_ref().unwrap().uri()),
                ("durable", "true".into()),
                ("deletedWhenUnused", "false".into()),
                ("deliveryMode", "2".into()),
                ("publisherConfirm", "true".into()),
                ("requeueInFailure", "true".into()),
                ("prefetchCount", RABBITMQ_PREFETCH.to_string()),
                ("reconnectWaitSeconds", "1".into()),
            ],
        ),
        Broker::Redis => component("pubsub.redis", &[("redisHost", REDIS_HOST.into())]),
        Broker::Kafka => component(
            "pubsub.kafka",
            &[
                ("brokers", kafka.as_ref().unwrap().bootstrap_servers()),
                ("authType", "none".into()),
                ("initialOffset", "oldest".into()),
            ],
        ),
    };
    let mut subscribed = vec![
        Subscribed::one_by_one(&topics.sidecar, &collectors.sidecar),
        Subscribed {
            bulk: Some((settings.batch, settings.bulk_await_ms)),
            ..Subscribed::one_by_one(&topics.sidecar_bulk, &collectors.sidecar_bulk)
        },
    ];
    if has_halves(broker) {
        subscribed.push(Subscribed::one_by_one(
            &topics.sidecar_deliver,
            &collectors.sidecar_deliver,
        ));
    }
    let side = start_sidecars(servers, &yaml, &subscribed)?;
    let mut direct_consumers = vec![(topics.direct.clone(), collectors.direct.clone())];
    if has_halves(broker) {
        direct_consumers.push((
            topics.sidecar_publish.clone(),
            collectors.sidecar_publish.clone(),
        ));
    }
    servers.block_on(async {
        for (topic, collector) in &direct_consumers {
            match broker {
                Broker::Memory => {}
                Broker::RabbitMq => {
                    rabbit_consumer(
                        vhost.as_ref().unwrap().uri(),
                        topic.clone(),
                        collector.clone(),
                        stop_consumers.clone(),
                    )
                    .await?;
                }
                Broker::Redis => {
                    redis_consumer(topic.clone(), collector.clone(), stop_consumers.clone())
                        .await?;
                }
                Broker::Kafka => {
                    let brokers = kafka.as_ref().unwrap().bootstrap_servers();
                    kafka_consumer(
                        kafka_consumer_config(&brokers, &unique("direct-")),
                        topic.clone(),
                        collector.clone(),
                        stop_consumers.clone(),
                    )?;
                    // The same consumer, but the (mock) broker answers an empty fetch after
                    // 1 ms instead of 500 ms: what the mock cluster's fetch wait costs.
                    let mut config = kafka_consumer_config(&brokers, &unique("reference-"));
                    config.set("fetch.wait.max.ms", "1");
                    kafka_consumer(
                        config,
                        topics.reference.clone(),
                        collectors.reference.clone(),
                        stop_consumers.clone(),
                    )?;
                }
            }
        }
        anyhow::Ok(())
    })?;

    let latency_count = if broker == Broker::Kafka {
        settings.kafka_latency
    } else {
        settings.latency
    };
    let result = client.block_on(async {
        side.subscribed().await?;
        let mut paths = Vec::new();
        let mut keep = Vec::new();
        match broker {
            Broker::Memory => {}
            Broker::RabbitMq => {
                let uri = vhost.as_ref().unwrap().uri();
                let (connection, publisher) =
                    rabbit_publisher(&uri, &topics.direct, false).await?;
                keep.push(connection);
                paths.push(Path {
                    label: "direct: lapin publish (confirm) → durable queue → lapin consumer (manual ack)".into(),
                    role: Role::Direct,
                    publisher,
                    collector: collectors.direct.clone(),
                });
                paths.push(Path {
                    label: "half: HTTP publish → publisher sidecar → durable queue → lapin consumer".into(),
                    role: Role::Reference,
                    publisher: side.publisher(&topics.sidecar_publish),
                    collector: collectors.sidecar_publish.clone(),
                });
                let (connection, publisher) =
                    rabbit_publisher(&uri, &topics.sidecar_deliver, true).await?;
                keep.push(connection);
                paths.push(Path {
                    label: "half: lapin publish (confirm) → durable queue → subscriber sidecar → app".into(),
                    role: Role::Reference,
                    publisher,
                    collector: collectors.sidecar_deliver.clone(),
                });
            }
            Broker::Redis => {
                let connection = redis_client()?.get_multiplexed_async_connection().await?;
                paths.push(Path {
                    label: "direct: XADD → XREADGROUP (COUNT 100, BLOCK) → XACK".into(),
                    role: Role::Direct,
                    publisher: Publisher::Redis {
                        connection: connection.clone(),
                        stream: topics.direct.clone(),
                        cloud_event: false,
                    },
                    collector: collectors.direct.clone(),
                });
                paths.push(Path {
                    label: "half: HTTP publish → publisher sidecar → XADD → XREADGROUP consumer"
                        .into(),
                    role: Role::Reference,
                    publisher: side.publisher(&topics.sidecar_publish),
                    collector: collectors.sidecar_publish.clone(),
                });
                paths.push(Path {
                    label: "half: XADD → subscriber sidecar → app".into(),
                    role: Role::Reference,
                    publisher: Publisher::Redis {
                        connection,
                        stream: topics.sidecar_deliver.clone(),
                        cloud_event: true,
                    },
                    collector: collectors.sidecar_deliver.clone(),
                });
            }
            Broker::Kafka => {
                let brokers = kafka.as_ref().unwrap().bootstrap_servers();
                paths.push(Path {
                    label: "direct: FutureProducer → StreamConsumer (the sidecar's settings)".into(),
                    role: Role::Direct,
                    publisher: kafka_producer(&brokers, &topics.direct)?,
                    collector: collectors.direct.clone(),
                });
                paths.push(Path {
                    label: "reference: the same, consumer with fetch.wait.max.ms=1".into(),
                    role: Role::Reference,
                    publisher: kafka_producer(&brokers, &topics.reference)?,
                    collector: collectors.reference.clone(),
                });
            }
        }
        paths.push(Path {
            label: "sidecar: HTTP publish → publisher sidecar → broker → subscriber sidecar → app"
                .into(),
            role: Role::Sidecar,
            publisher: side.publisher(&topics.sidecar),
            collector: collectors.sidecar.clone(),
        });
        paths.push(Path {
            label: "sidecar bulk: HTTP bulk publish → publisher sidecar → broker → subscriber sidecar → app (bulk subscribe)"
                .into(),
            role: Role::SidecarBulk,
            publisher: side.bulk_publisher(&topics.sidecar_bulk),
            collector: collectors.sidecar_bulk.clone(),
        });
        paths.retain(|path| path_selected(path.role));
        let measured = measure(&paths, settings, latency_count).await;
        // What was logged while measuring (not what stopping everything logs).
        let logged = warnings::take();
        drop(paths);
        for connection in keep {
            let _ = connection.close(200, "done".into()).await;
        }
        measured.map(|measured| (measured, logged))
    });

    // Clients are gone; stop the sidecars, then the direct consumers, then the broker fixtures.
    let SidecarSide {
        publisher,
        subscriber,
        _dirs,
        ..
    } = side;
    stop(servers, vec![publisher, subscriber]);
    stop_consumers.cancel();
    servers.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    if broker == Broker::Redis {
        client.block_on(async {
            let mut connection = redis_client()?.get_multiplexed_async_connection().await?;
            let streams = [
                &topics.sidecar,
                &topics.sidecar_bulk,
                &topics.direct,
                &topics.sidecar_publish,
                &topics.sidecar_deliver,
            ];
            let _: i64 = connection.del(&streams).await?;
            anyhow::Ok(())
        })?;
    }
    drop(_dirs);
    drop(kafka);
    drop(vhost);
    let (measured, logged) = result?;

    let direct = measured.iter().find(|m| m.role == Role::Direct);
    let direct_rate = direct.map(|d| median(d.rounds.iter().map(|r| r.delivered)));
    let direct_p50 = direct.map(|d| Stats::of(&d.samples).p50);
    let versus = measured
        .iter()
        .filter(|m| matches!(m.role, Role::Sidecar | Role::SidecarBulk))
        .map(|m| {
            let p50_us = Stats::of(&m.samples).p50;
            Versus {
                role: m.role,
                rate: median(m.rounds.iter().map(|r| r.delivered)),
                direct_rate,
                p50_us,
                added_p50_us: direct_p50.map(|d| p50_us - d),
            }
        })
        .collect();
    Ok(Outcome {
        measured,
        versus,
        warnings: logged,
    })
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures (something else running shows here).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn verdict(pass: bool) -> &'static str {
    if pass { "pass" } else { "FAIL" }
}

fn report(broker: Broker, settings: Settings, latency_count: usize, outcome: &Outcome) {
    println!("\n### {}\n", broker.title());
    println!(
        "Throughput: {} messages of {MESSAGE_BYTES} bytes per round, {} publishes in flight (bulk: \
         {} requests of {} entries), {} rounds (rate = messages / (last delivery − first publish)).\n",
        settings.messages,
        settings.concurrency,
        settings.bulk_concurrency,
        settings.batch,
        settings.rounds
    );
    println!(
        "| path | msgs/s per round | median msgs/s | publish side msgs/s (median) | first delivery ms (median) | process CPU µs/msg (median) | machine busy % (median) | vs direct | target | result |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let direct = outcome.measured.iter().find(|m| m.role == Role::Direct);
    let direct_rate = direct.map(|d| median(d.rounds.iter().map(|r| r.delivered)));
    for m in &outcome.measured {
        let rounds: Vec<String> = m
            .rounds
            .iter()
            .map(|r| format!("{:.0}", r.delivered))
            .collect();
        let rate = median(m.rounds.iter().map(|r| r.delivered));
        let published = median(m.rounds.iter().map(|r| r.published));
        let first = median(
            m.rounds
                .iter()
                .map(|r| r.first_delivery.as_secs_f64() * 1000.0),
        );
        let cpu = median(m.rounds.iter().filter_map(|r| r.process_cpu_us));
        let busy = median(m.rounds.iter().filter_map(|r| r.machine_busy)) * 100.0;
        let (share, target, result) = match (m.role, direct_rate) {
            (Role::Direct, _) => ("baseline".to_owned(), String::new(), ""),
            (Role::Sidecar | Role::SidecarBulk, Some(base)) => (
                format!("{:.0} %", rate / base * 100.0),
                format!("≥ {:.0} %", TARGET_THROUGHPUT_SHARE * 100.0),
                verdict(rate / base >= TARGET_THROUGHPUT_SHARE),
            ),
            (_, Some(base)) => (format!("{:.0} %", rate / base * 100.0), String::new(), ""),
            (_, None) => ("–".to_owned(), String::new(), ""),
        };
        println!(
            "| {} | {} | {rate:.0} | {published:.0} | {first:.1} | {cpu:.1} | {busy:.0} | {share} | {target} | {result} |",
            m.label,
            rounds.join(" / ")
        );
    }
    println!(
        "\nLatency: one message at a time, publish start → delivery (to the app, or to the direct \
         consumer); {latency_count} samples per path, times in µs.\n"
    );
    println!("| path | n | p50 | p90 | p99 | max | mean | added p50 | target | result |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let base = direct.map(|d| Stats::of(&d.samples));
    for m in &outcome.measured {
        let s = Stats::of(&m.samples);
        let max = m.samples.iter().max().copied().unwrap_or(0) as f64 / 1000.0;
        let (added, target, result) = match (m.role, base) {
            (Role::Direct, _) => ("baseline".to_owned(), String::new(), ""),
            (Role::Sidecar | Role::SidecarBulk, Some(b)) => (
                format!("{:.1}", s.p50 - b.p50),
                format!("≤ {TARGET_ADDED_P50_US:.0}"),
                verdict(s.p50 - b.p50 <= TARGET_ADDED_P50_US),
            ),
            (_, Some(b)) => (format!("{:.1}", s.p50 - b.p50), String::new(), ""),
            (_, None) => ("–".to_owned(), String::new(), ""),
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {max:.1} | {:.1} | {added} | {target} | {result} |",
            m.label, s.count, s.p50, s.p90, s.p99, s.mean
        );
    }
    println!();
    for m in &outcome.measured {
        println!(
            "- {}: first probe delivered {:.2}s after the start; one message after {}s idle \
             delivered in {:.1} ms; {} duplicate and {} stray deliveries",
            m.label,
            m.ready_after.as_secs_f64(),
            settings.idle.as_secs(),
            m.after_idle.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            m.duplicates,
            m.stray
        );
    }
    for (what, count, example) in &outcome.warnings {
        println!("- logged {count}× during this broker's run: {what} (e.g. {example})");
    }
}

/// Counts WARN and ERROR events (the sidecar's, the clients') so that a report shows them.
mod warnings {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    /// By "level target: message": how many, and the first `error` field.
    static SEEN: Mutex<BTreeMap<String, (usize, String)>> = Mutex::new(BTreeMap::new());

    struct Counter;

    #[derive(Default)]
    struct Fields {
        message: String,
        error: String,
    }

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            match field.name() {
                "message" => self.message = format!("{value:?}"),
                "error" => self.error = format!("{value:?}"),
                _ => {}
            }
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "message" => self.message = value.to_owned(),
                "error" => self.error = value.to_owned(),
                _ => {}
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Counter {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let key = format!(
                "{} {}: {}",
                event.metadata().level(),
                event.metadata().target(),
                fields.message
            );
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            let entry = seen.entry(key).or_insert((0, fields.error));
            entry.0 += 1;
        }
    }

    pub(super) fn install() {
        let _ = tracing_subscriber::registry()
            .with(Counter.with_filter(LevelFilter::WARN))
            .try_init();
    }

    pub(super) fn reset() {
        SEEN.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(super) fn take() -> Vec<(String, usize, String)> {
        std::mem::take(&mut *SEEN.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|(what, (count, example))| (what, count, example))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let settings = Settings::from_env(full);
    warnings::install();

    // Apps, sidecars and direct consumers: two workers, one per core. The publishing client:
    // the main thread.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .thread_name("servers")
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    println!("## sidecar pub/sub benchmark\n");
    println!("- machine: {}", machine());
    println!(
        "- {} messages of {MESSAGE_BYTES} bytes per throughput round with {} publishes in \
         flight (bulk: {} requests of {} entries in flight, bulk subscribe maxMessagesCount {} \
         and maxAwaitDurationMs {}), {} rounds; {} sequential latency samples per path ({} for \
         Kafka); {} warm-up messages per path; one more message per path after {}s idle",
        settings.messages,
        settings.concurrency,
        settings.bulk_concurrency,
        settings.batch,
        settings.batch,
        settings.bulk_await_ms,
        settings.rounds,
        settings.latency,
        settings.kafka_latency,
        settings.warmup,
        settings.idle.as_secs()
    );
    println!(
        "- servers (app, sidecars, direct consumers) on a {}-worker runtime, the publishing \
         client on the main thread",
        settings.workers
    );
    if let Some(cpus) = allowed_cpus() {
        println!("- CPUs allowed: {cpus}");
    }
    println!("- load average at the start: {}", load_average());
    if !settings.full {
        println!("- smoke run (no `--bench` argument): numbers are not meaningful");
    }

    let started = Instant::now();
    let mut summary = Vec::new();
    for broker in Broker::ALL {
        if !filters.is_empty() && !filters.iter().any(|f| broker.name().contains(f)) {
            continue;
        }
        let latency_count = if broker == Broker::Kafka {
            settings.kafka_latency
        } else {
            settings.latency
        };
        let broker_started = Instant::now();
        match run_broker(&servers, &client, settings, broker) {
            Ok(outcome) => {
                report(broker, settings, latency_count, &outcome);
                println!("- took {:.1}s", broker_started.elapsed().as_secs_f64());
                summary.push((broker, Some(outcome)));
            }
            Err(error) => {
                println!("\n### {}\n\nnot measured: {error:#}", broker.title());
                summary.push((broker, None));
            }
        }
    }

    println!("\n### Summary\n");
    println!(
        "| broker | sidecar path | direct msg/s | sidecar msg/s | sidecar / direct | ≥ {:.0} % | p50 µs | added p50 µs | ≤ {TARGET_ADDED_P50_US:.0} µs |",
        TARGET_THROUGHPUT_SHARE * 100.0
    );
    println!("|---|---|---:|---:|---:|---|---:|---:|---|");
    for (broker, outcome) in &summary {
        let Some(outcome) = outcome else {
            println!(
                "| {} | – | not measured | – | – | – | – | – | – |",
                broker.name()
            );
            continue;
        };
        for versus in &outcome.versus {
            let (direct, share, share_verdict) = match versus.direct_rate {
                Some(base) => (
                    format!("{base:.0}"),
                    format!("{:.0} %", versus.rate / base * 100.0),
                    verdict(versus.rate / base >= TARGET_THROUGHPUT_SHARE),
                ),
                None => ("no baseline".to_owned(), "–".to_owned(), "–"),
            };
            let (added, added_verdict) = match versus.added_p50_us {
                Some(added) => (format!("{added:.1}"), verdict(added <= TARGET_ADDED_P50_US)),
                None => ("–".to_owned(), "–"),
            };
            println!(
                "| {} | {} | {direct} | {:.0} | {share} | {share_verdict} | {:.1} | {added} | {added_verdict} |",
                broker.name(),
                versus.role.path_name(),
                versus.rate,
                versus.p50_us,
            );
        }
    }
    println!("\n- load average at the end: {}", load_average());
    println!("- total time: {:.1}s", started.elapsed().as_secs_f64());
    servers.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
