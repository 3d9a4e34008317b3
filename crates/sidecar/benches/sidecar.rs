//! Latency of the sidecar against the same work done without it, side by side in one run.
//!
//! Run with `cargo bench -p sidecar --bench sidecar` (release profile). What it measures, and the
//! results on the reference machine, are in `docs/perf.md`.
//!
//! * Invocation: a tiny axum app called directly, and through sidecar A → sidecar B → app, once
//!   with both sidecars in one in-process topology and once across a "process" boundary (two
//!   shared topologies found through SQLite name resolution, so the hop between the sidecars is
//!   real HTTP).
//! * State get, for each store type: the store called directly (built as the sidecar builds it),
//!   against `GET /v1.0/state/{store}/{key}` and gRPC `GetState` through the sidecar.
//!
//! Every path is timed on one sequential client (keep-alive, one request in flight), warmed up
//! first, then measured in rounds that alternate between the paths so that drift on the machine
//! hits them alike. Servers (apps and sidecars) run on a two-worker runtime; the client, and the
//! "direct" store clients an app would own, run on a runtime of their own on the main thread.
//!
//! Tuning through the environment: `SIDECAR_BENCH_ITERS` (measured calls per path, default
//! 10000), `SIDECAR_BENCH_WARMUP` (default 1000), `SIDECAR_BENCH_ROUNDS` (default 10),
//! `SIDECAR_BENCH_WORKERS` (worker threads of the servers' runtime, default 2). Arguments
//! that do not start with `-` select scenarios by substring (`cargo bench ... -- redis`).
//! Without `--bench` (e.g. `cargo test --benches`) it runs a short smoke pass.

#![allow(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use common::{
    SidecarDir, Stats, allowed_cpus, env_usize, eventually, http_client, machine, serve,
    start_sidecar, stop, unique, uri,
};
use dapr::dapr::proto::runtime::v1 as pb;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sidecar::Topology;
use sidecar::components::{ComponentContext, Components};
use sidecar::state::{Concurrency, DeleteRequest, SetRequest, StateStore};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

/// Dapr v1.17's published figures and this project's targets, in microseconds.
const DAPR_INVOKE_ADDED_US: f64 = 1060.0;
const DAPR_STATE_GRPC_ADDED_US: f64 = 120.0;
const DAPR_STATE_HTTP_ADDED_US: f64 = 280.0;
const TARGET_INVOKE_ADDED_US: f64 = 250.0;
const TARGET_STATE_ADDED_US: f64 = 100.0;

const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres";
const POSTGRES_DATABASE: &str = "sidecar_bench";
const REDIS: &str = "127.0.0.1:6379";
/// The state value every store holds: small JSON, stored compact with sorted keys (as the HTTP
/// API stores it, so both ways of seeding write the same bytes).
const VALUE: &str = r#"{"id":42,"name":"bench","tags":["a","b"]}"#;
const KEY: &str = "order-42";
const APP_BODY: &str = r#"{"ok":true}"#;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

// ---------------------------------------------------------------------------------------------
// Settings and the measuring harness.

#[derive(Debug, Clone, Copy)]
struct Settings {
    iterations: usize,
    warmup: usize,
    rounds: usize,
    /// Worker threads of the servers' runtime (default 2: what `#[tokio::main]` gives the
    /// sidecar binary on this two-core machine).
    workers: usize,
}

impl Settings {
    fn from_env(full: bool) -> Self {
        let read = env_usize;
        let (iterations, warmup, rounds) = if full {
            (10_000, 1_000, 10)
        } else {
            (200, 20, 2)
        };
        Self {
            iterations: read("SIDECAR_BENCH_ITERS", iterations),
            warmup: read("SIDECAR_BENCH_WARMUP", warmup),
            rounds: read("SIDECAR_BENCH_ROUNDS", rounds),
            workers: read("SIDECAR_BENCH_WORKERS", 2),
        }
    }
}

/// One call the harness can time.
enum Call {
    /// `GET uri` expecting `status` (and with 200, a non-empty body).
    Http {
        client: HttpClient,
        uri: Uri,
        status: StatusCode,
    },
    /// gRPC `GetState` expecting data.
    GrpcGetState {
        client: DaprClient<Channel>,
        store: String,
        key: String,
    },
    /// The store's own `get`, expecting an item.
    StoreGet {
        store: Arc<dyn StateStore>,
        key: String,
    },
}

impl Call {
    async fn run(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Http {
                client,
                uri,
                status,
            } => {
                let response = client.get(uri.clone()).await?;
                let got = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                ensure!(
                    got == *status && (got != StatusCode::OK || !body.is_empty()),
                    "GET {uri}: {got} {:?}",
                    String::from_utf8_lossy(&body)
                );
            }
            Self::GrpcGetState { client, store, key } => {
                let response = client
                    .get_state(pb::GetStateRequest {
                        store_name: store.clone(),
                        key: key.clone(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                ensure!(!response.data.is_empty(), "GetState {store}/{key}: no data");
            }
            Self::StoreGet { store, key } => {
                let item = store.get(key).await?;
                ensure!(item.is_some(), "store get {key}: missing");
            }
        }
        Ok(())
    }
}

/// A path being measured.
struct Measured {
    label: String,
    call: Call,
    samples: Vec<u64>,
}

impl Measured {
    fn new(label: impl Into<String>, call: Call) -> Self {
        Self {
            label: label.into(),
            call,
            samples: Vec::new(),
        }
    }
}

/// What was measured on one path, its client gone.
struct Series {
    label: String,
    samples: Vec<u64>,
}

fn series(paths: Vec<Measured>) -> Vec<Series> {
    paths
        .into_iter()
        .map(|p| Series {
            label: p.label,
            samples: p.samples,
        })
        .collect()
}

/// Warms every path up, then measures them in alternating rounds (the order rotates each round).
async fn measure(paths: &mut [Measured], settings: Settings) -> anyhow::Result<()> {
    for path in paths.iter_mut() {
        for _ in 0..settings.warmup {
            path.call
                .run()
                .await
                .with_context(|| format!("warming up {}", path.label))?;
        }
        path.samples = Vec::with_capacity(settings.iterations);
    }
    let rounds = settings.rounds.min(settings.iterations).max(1);
    for round in 0..rounds {
        let chunk =
            settings.iterations / rounds + usize::from(round < settings.iterations % rounds);
        for offset in 0..paths.len() {
            let path = &mut paths[(round + offset) % paths.len()];
            for _ in 0..chunk {
                let started = Instant::now();
                path.call.run().await.with_context(|| path.label.clone())?;
                let elapsed = started.elapsed();
                path.samples
                    .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }
    Ok(())
}

/// How a path compares with its baseline.
struct Comparison<'a> {
    /// Index of the baseline in the measured paths.
    baseline: usize,
    /// Paths compared against the baseline, with Dapr's figure and the target (µs, added at p50).
    against: &'a [(usize, Option<f64>, Option<f64>)],
}

fn report(title: &str, note: &str, paths: &[Series], comparison: &Comparison<'_>) -> bool {
    let stats: Vec<Stats> = paths.iter().map(|p| Stats::of(&p.samples)).collect();
    let base = stats[comparison.baseline];
    println!("\n### {title}\n");
    if !note.is_empty() {
        println!("{note}\n");
    }
    println!(
        "| path | n | p50 µs | p90 µs | p99 µs | mean µs | added p50 µs | added mean µs | Dapr 1.17 added | target | result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut all_pass = true;
    for (i, (path, s)) in paths.iter().zip(&stats).enumerate() {
        let compared = comparison.against.iter().find(|(index, ..)| *index == i);
        let (added, added_mean, dapr, target, result) = match compared {
            Some((_, dapr, target)) => {
                let added = s.p50 - base.p50;
                let pass = target.is_none_or(|t| added <= t);
                all_pass &= pass;
                (
                    format!("{added:.1}"),
                    format!("{:.1}", s.mean - base.mean),
                    dapr.map_or("–".into(), |d| format!("{d:.0}")),
                    target.map_or("–".into(), |t| format!("≤ {t:.0}")),
                    match target {
                        Some(_) if pass => "pass",
                        Some(_) => "FAIL",
                        None => "–",
                    },
                )
            }
            None if i == comparison.baseline => (
                "baseline".into(),
                String::new(),
                String::new(),
                String::new(),
                "",
            ),
            None => ("".into(), String::new(), String::new(), String::new(), ""),
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {added} | {added_mean} | {dapr} | {target} | {result} |",
            path.label, s.count, s.p50, s.p90, s.p99, s.mean
        );
    }
    all_pass
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn tiny_app() -> axum::Router {
    axum::Router::new().route(
        "/x",
        axum::routing::get(|| async {
            ([(http::header::CONTENT_TYPE, "application/json")], APP_BODY)
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Invocation.

fn invocation(servers: &Runtime, client: &Runtime, settings: Settings) -> anyhow::Result<bool> {
    let app_port = serve(servers, tiny_app());

    // In process: both sidecars in one topology, as the shop launcher runs them.
    let local = Topology::in_process();
    let local_dir = SidecarDir::new(&[], None)?;
    let (local_a_id, local_b_id) = (unique("a"), unique("b"));
    let local_b = start_sidecar(
        servers,
        local_dir.options(&local_b_id).app_port(app_port),
        &local,
    )?;
    let local_a = start_sidecar(servers, local_dir.options(&local_a_id), &local)?;

    // Across processes: each sidecar in a shared topology of its own, found through a SQLite
    // name resolution file, so A reaches B over HTTP on B's internal port.
    let names = tempfile::tempdir()?;
    let config = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {{name: nr}}\nspec:\n  nameResolution:\n    component: sqlite\n    configuration:\n      connectionString: \"{}\"\n",
        names.path().join("names.db").display()
    );
    let (remote_a_dir, remote_b_dir) = (
        SidecarDir::new(&[], Some(&config))?,
        SidecarDir::new(&[], Some(&config))?,
    );
    let (remote_a_id, remote_b_id) = (unique("a"), unique("b"));
    let remote_b = start_sidecar(
        servers,
        remote_b_dir.options(&remote_b_id).app_port(app_port),
        &Topology::shared(),
    )?;
    let remote_a = start_sidecar(
        servers,
        remote_a_dir.options(&remote_a_id),
        &Topology::shared(),
    )?;

    let http = http_client();
    let local_uri = uri(
        local_a.http_port(),
        &format!("/v1.0/invoke/{local_b_id}/method/x"),
    );
    let remote_uri = uri(
        remote_a.http_port(),
        &format!("/v1.0/invoke/{remote_b_id}/method/x"),
    );
    let mut paths = vec![
        Measured::new(
            "direct: client → app",
            Call::Http {
                client: http.clone(),
                uri: uri(app_port, "/x"),
                status: StatusCode::OK,
            },
        ),
        Measured::new(
            "in-process topology: client → A → B → app",
            Call::Http {
                client: http.clone(),
                uri: local_uri.clone(),
                status: StatusCode::OK,
            },
        ),
        Measured::new(
            "shared topology (HTTP between sidecars): client → A → B → app",
            Call::Http {
                client: http.clone(),
                uri: remote_uri.clone(),
                status: StatusCode::OK,
            },
        ),
    ];
    let result = client.block_on(async {
        for uri in [&local_uri, &remote_uri] {
            eventually(&format!("an invocation through {uri}"), || async {
                matches!(http.get(uri.clone()).await, Ok(r) if r.status() == StatusCode::OK)
            })
            .await?;
        }
        measure(&mut paths, settings).await
    });
    // Clients go first, so that the sidecars' graceful shutdown has no connection to wait for.
    let paths = series(paths);
    drop(http);
    stop(servers, vec![local_a, local_b, remote_a, remote_b]);
    result?;
    Ok(report(
        "Service invocation (GET, 11-byte JSON answer)",
        "Added = sidecar path p50 − direct p50. The direct call is one loopback HTTP hop; the \
         in-process path makes two (client → A, B → app: A calls B's router in memory), the \
         shared-topology path three (client → A → B → app), like daprd.",
        &paths,
        &Comparison {
            baseline: 0,
            against: &[
                (1, Some(DAPR_INVOKE_ADDED_US), Some(TARGET_INVOKE_ADDED_US)),
                (2, Some(DAPR_INVOKE_ADDED_US), Some(TARGET_INVOKE_ADDED_US)),
            ],
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// State.

struct StoreKind {
    name: &'static str,
    component: String,
}

fn component(kind: &str, version: &str, metadata: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: store\nspec:\n  type: {kind}\n  version: {version}\n"
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

fn store_kinds() -> Vec<StoreKind> {
    vec![
        StoreKind {
            name: "state.in-memory",
            component: component("state.in-memory", "v1", &[]),
        },
        StoreKind {
            name: "state.sqlite",
            component: component("state.sqlite", "v1", &[("connectionString", "state.db")]),
        },
        StoreKind {
            name: "state.postgresql",
            component: component(
                "state.postgresql",
                "v2",
                &[
                    (
                        "connectionString",
                        &format!("{POSTGRES} dbname={POSTGRES_DATABASE}"),
                    ),
                    ("cleanupInterval", "0"),
                ],
            ),
        },
        StoreKind {
            name: "state.redis",
            component: component("state.redis", "v1", &[("redisHost", REDIS)]),
        },
    ]
}

/// Creates the benchmark's PostgreSQL database when it does not exist.
async fn ensure_postgres_database() -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(
        &format!("{POSTGRES} dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .context("PostgreSQL on 127.0.0.1:5432")?;
    let connection = tokio::spawn(connection);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&POSTGRES_DATABASE],
        )
        .await?
        .is_some();
    if !exists {
        match client
            .batch_execute(&format!("CREATE DATABASE {POSTGRES_DATABASE}"))
            .await
        {
            Ok(()) => {}
            // Created meanwhile by another run.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// The store as an app would use it without a sidecar: built from the same component file
/// (`load_resources` + `Components::load`, as the tests' `build_store`), on the client runtime.
async fn direct_store(
    resources: &Path,
    working_dir: &Path,
    app_id: &str,
) -> anyhow::Result<sidecar::components::StateComponent> {
    let set = sidecar::resources::load_resources(&[resources.to_path_buf()], app_id, None)?;
    let context = ComponentContext::new(app_id, working_dir);
    let mut components = Components::load(&set.components, &context).await?;
    components
        .state
        .remove("store")
        .context("the store is loaded")
}

fn state(
    servers: &Runtime,
    client: &Runtime,
    settings: Settings,
    kind: &StoreKind,
) -> anyhow::Result<bool> {
    if kind.name == "state.postgresql" {
        client.block_on(ensure_postgres_database())?;
    }
    // One directory and one app id for both: the direct store and the sidecar's store open the
    // same SQLite file, PostgreSQL table and Redis prefix (`<app id>||`), and read the same row.
    let dir = SidecarDir::new(&[("store.yaml", &kind.component)], None)?;
    let app_id = unique("bench");
    let direct = client.block_on(direct_store(&dir.resources(), dir.dir.path(), &app_id))?;
    let storage_key = direct.storage_key(KEY)?;
    let store = direct.store.clone();
    let sidecar = start_sidecar(servers, dir.options(&app_id), &Topology::in_process())?;

    let http = http_client();
    let result = client.block_on(async {
        // Seed through both ways in (they write the same bytes; for in-memory they are two stores).
        store
            .set(&SetRequest {
                key: storage_key.clone(),
                value: Bytes::from_static(VALUE.as_bytes()),
                etag: None,
                concurrency: Concurrency::LastWrite,
                ttl: None,
            })
            .await?;
        let saved = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/v1.0/state/store",
                sidecar.http_port()
            ))
            .body(format!(r#"[{{"key":"{KEY}","value":{VALUE}}}]"#))
            .header("content-type", "application/json")
            .send()
            .await?;
        ensure!(
            saved.status() == StatusCode::NO_CONTENT,
            "seeding: {}",
            saved.status()
        );
        let grpc = DaprClient::connect(format!("http://127.0.0.1:{}", sidecar.grpc_port())).await?;

        let mut paths = vec![
            Measured::new(
                "direct: store.get",
                Call::StoreGet {
                    store: store.clone(),
                    key: storage_key.clone(),
                },
            ),
            Measured::new(
                "sidecar HTTP: GET /v1.0/state/store/{key}",
                Call::Http {
                    client: http.clone(),
                    uri: uri(sidecar.http_port(), &format!("/v1.0/state/store/{KEY}")),
                    status: StatusCode::OK,
                },
            ),
            Measured::new(
                "sidecar gRPC: GetState",
                Call::GrpcGetState {
                    client: grpc,
                    store: "store".into(),
                    key: KEY.into(),
                },
            ),
        ];
        measure(&mut paths, settings).await?;
        // Leave nothing behind in the shared servers.
        let _ = store
            .delete(&DeleteRequest {
                key: storage_key.clone(),
                etag: None,
                concurrency: Concurrency::LastWrite,
            })
            .await;
        anyhow::Ok(series(paths))
    });
    drop(http);
    stop(servers, vec![sidecar]);
    // Dropped on the runtime that owns its connections.
    client.block_on(async move { drop(direct) });
    let paths = result?;
    Ok(report(
        &format!("State get: {}", kind.name),
        "",
        &paths,
        &Comparison {
            baseline: 0,
            against: &[
                (
                    1,
                    Some(DAPR_STATE_HTTP_ADDED_US),
                    Some(TARGET_STATE_ADDED_US),
                ),
                (
                    2,
                    Some(DAPR_STATE_GRPC_ADDED_US),
                    Some(TARGET_STATE_ADDED_US),
                ),
            ],
        },
    ))
}

/// The sidecar's HTTP API with no store behind it (`/v1.0/healthz/outbound`), next to the direct
/// app call: what one request through the sidecar's HTTP server costs on its own.
fn api_floor(servers: &Runtime, client: &Runtime, settings: Settings) -> anyhow::Result<bool> {
    let app_port = serve(servers, tiny_app());
    let dir = SidecarDir::new(&[], None)?;
    let sidecar = start_sidecar(
        servers,
        dir.options(&unique("floor")),
        &Topology::in_process(),
    )?;
    let http = http_client();
    let mut paths = vec![
        Measured::new(
            "axum app: GET /x",
            Call::Http {
                client: http.clone(),
                uri: uri(app_port, "/x"),
                status: StatusCode::OK,
            },
        ),
        Measured::new(
            "sidecar: GET /v1.0/healthz/outbound",
            Call::Http {
                client: http.clone(),
                uri: uri(sidecar.http_port(), "/v1.0/healthz/outbound"),
                status: StatusCode::NO_CONTENT,
            },
        ),
    ];
    let result = client.block_on(measure(&mut paths, settings));
    let paths = series(paths);
    drop(http);
    stop(servers, vec![sidecar]);
    result?;
    Ok(report(
        "Reference: one loopback HTTP request",
        "A bare axum handler against the sidecar's HTTP API with no store or peer behind it \
         (`/v1.0/healthz/outbound`, 204), for the cost of the sidecar's HTTP server, router and \
         middleware alone.",
        &paths,
        &Comparison {
            baseline: 0,
            against: &[(1, None, None)],
        },
    ))
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
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let settings = Settings::from_env(full);

    // Apps and sidecars: two workers, one per core. The client: the main thread.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .thread_name("servers")
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    println!("## sidecar latency benchmark\n");
    println!("- machine: {}", machine());
    println!(
        "- {} measured calls per path after {} warm-up calls, in {} alternating rounds; one \
         request in flight; times in µs",
        settings.iterations, settings.warmup, settings.rounds
    );
    println!(
        "- servers (apps, sidecars) on a {}-worker runtime, the client on the main thread",
        settings.workers
    );
    if let Some(cpus) = allowed_cpus() {
        println!("- CPUs allowed: {cpus}");
    }
    if !full {
        println!("- smoke run (no `--bench` argument): numbers are not meaningful");
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut verdicts = Vec::new();

    if selected("floor") || selected("reference") {
        api_floor(&servers, &client, settings)?;
    }
    if selected("invoke") || selected("invocation") {
        verdicts.push(("invocation", invocation(&servers, &client, settings)?));
    }
    for kind in store_kinds() {
        if !selected(kind.name) && !selected("state") {
            continue;
        }
        match state(&servers, &client, settings, &kind) {
            Ok(pass) => verdicts.push((kind.name, pass)),
            Err(error) => {
                println!("\n### State get: {}\n\nskipped: {error:#}", kind.name);
                failures.push(kind.name);
            }
        }
    }

    println!("\n### Summary\n");
    for (name, pass) in &verdicts {
        println!(
            "- {name}: {}",
            if *pass {
                "within target"
            } else {
                "OVER TARGET"
            }
        );
    }
    for name in &failures {
        println!("- {name}: not measured (see above)");
    }
    println!("- total time: {:.1}s", started.elapsed().as_secs_f64());
    servers.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
