//! Workflow throughput: Dapr's own workflow benchmark shape (5 trivial activities per workflow,
//! in parallel and in sequence) with the `dapr` crate's `WorkflowClient` and worker against one
//! sidecar, on the embedded sqlite store and on PostgreSQL.
//!
//! Run with `cargo bench -p sidecar --bench workflow` (release profile). Results and method are in
//! `docs/perf.md`. Sidecar, worker and clients share one two-worker runtime (everything on the
//! machine's two cores). `SIDECAR_BENCH_CLIENTS` closed-loop clients each start a workflow and
//! wait for it to complete, again and again, until `SIDECAR_BENCH_WORKFLOWS` have completed
//! (after `SIDECAR_BENCH_WARMUP` warm-up workflows). Arguments that do not start with `-` select
//! scenarios by substring (`cargo bench ... -- sqlite`). Without `--bench` (e.g.
//! `cargo test --benches`) it runs a short smoke pass.

#![allow(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use common::{SidecarDir, Stats, env_usize, machine, nanos, unique};
use dapr::workflow::{
    ActivityContext, RegistryExt, RuntimeStatus, ScheduleOptions, WorkflowClient, WorkflowContext,
    when_all,
};
use sidecar::{Sidecar, Topology};

/// Dapr v1.17/1.18's published figures (workflows per second).
const DAPR_PARALLEL: &str = "98-108";
const DAPR_SEQUENTIAL: &str = "57-73";
const TARGET_PARALLEL: f64 = 300.0;
const TARGET_SEQUENTIAL: f64 = 150.0;

const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres";

#[derive(Debug, Clone, Copy)]
struct Settings {
    workflows: usize,
    warmup: usize,
    clients: usize,
    workers: usize,
}

impl Settings {
    fn from_env(full: bool) -> Self {
        if full {
            Self {
                workflows: env_usize("SIDECAR_BENCH_WORKFLOWS", 3000),
                warmup: env_usize("SIDECAR_BENCH_WARMUP", 300),
                clients: env_usize("SIDECAR_BENCH_CLIENTS", 100),
                workers: env_usize("SIDECAR_BENCH_WORKERS", 2),
            }
        } else {
            Self {
                workflows: 50,
                warmup: 10,
                clients: 10,
                workers: 2,
            }
        }
    }
}

async fn noop(_: ActivityContext, input: Option<String>) -> dapr::workflow::Result<Option<String>> {
    Ok(input)
}

async fn parallel(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let tasks = (0..5).map(|i| ctx.call_activity("noop", i)).collect();
    let results = when_all(tasks).await?;
    Ok(Some(results.len().to_string()))
}

async fn sequential(ctx: WorkflowContext) -> dapr::workflow::Result<Option<String>> {
    let mut done = 0;
    for i in 0..5 {
        ctx.call_activity("noop", i).await?;
        done += 1;
    }
    Ok(Some(done.to_string()))
}

struct Store {
    name: &'static str,
    component: String,
    /// A database to drop afterwards (PostgreSQL).
    database: Option<String>,
}

async fn postgres_admin() -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls)
        .await
        .context("PostgreSQL at 127.0.0.1:5432")?;
    tokio::spawn(connection);
    Ok(client)
}

async fn store(kind: &str, dir: &std::path::Path) -> anyhow::Result<Store> {
    let component = |ty: &str, version: &str, connection: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: workflowstore\nspec:\n  type: {ty}\n  version: {version}\n  metadata:\n  - name: connectionString\n    value: \"{connection}\"\n  - name: actorStateStore\n    value: \"true\"\n"
        )
    };
    Ok(match kind {
        "sqlite" => Store {
            name: "sqlite",
            component: component(
                "state.sqlite",
                "v1",
                &dir.join("workflows.db").display().to_string(),
            ),
            database: None,
        },
        _ => {
            let database = unique("wf_bench").replace('-', "_");
            postgres_admin()
                .await?
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await?;
            Store {
                name: "postgres",
                component: component(
                    "state.postgresql",
                    "v2",
                    &format!("{POSTGRES} dbname={database}"),
                ),
                database: Some(database),
            }
        }
    })
}

/// Runs `count` workflows of `name` with `clients` closed-loop clients; returns the elapsed
/// time and each workflow's start-to-completion latency.
async fn drive(
    client: &WorkflowClient,
    name: &'static str,
    count: usize,
    clients: usize,
) -> anyhow::Result<(Duration, Vec<u64>)> {
    let remaining = Arc::new(AtomicUsize::new(count));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut scheduler = client.scheduling_client();
        let remaining = remaining.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                let begun = Instant::now();
                let id = scheduler
                    .schedule_workflow(name, ScheduleOptions::new())
                    .await?;
                let done = scheduler
                    .wait_for_workflow_completion_with_options(
                        &id,
                        dapr::workflow::FetchOptions::new().with_fetch_payloads(true),
                        Some(Duration::from_secs(120)),
                    )
                    .await?;
                ensure!(
                    done.runtime_status == RuntimeStatus::Completed
                        && done.serialized_output.as_deref() == Some("5"),
                    "workflow {id} ended as {:?} with {:?}",
                    done.runtime_status,
                    done.serialized_output
                );
                latencies.push(nanos(begun.elapsed()));
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    Ok((started.elapsed(), latencies))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let settings = Settings::from_env(full);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .enable_all()
        .build()?;

    println!("## sidecar workflow benchmark\n");
    println!("- machine: {}", machine());
    println!(
        "- {} workflows per scenario after {} warm-up, {} closed-loop clients, 5 trivial \
         activities per workflow; sidecar, worker and clients on one {}-worker runtime\n",
        settings.workflows, settings.warmup, settings.clients, settings.workers
    );
    println!(
        "| store | activities | workflows/s | p50 ms | p90 ms | p99 ms | Dapr wf/s | target |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    runtime.block_on(async {
        for kind in ["sqlite", "postgres"] {
            for (mode, workflow) in [("parallel", "parallel"), ("sequential", "sequential")] {
                let scenario = format!("{kind} {mode}");
                if !filters.is_empty() && !filters.iter().any(|f| scenario.contains(f)) {
                    continue;
                }
                let dir = tempfile::tempdir()?;
                let store = store(kind, dir.path()).await?;
                let sidecar_dir =
                    SidecarDir::new(&[("workflowstore.yaml", store.component.as_str())], None)?;
                let app_id = unique("wfbench");
                let sidecar = Sidecar::start(sidecar_dir.options(&app_id), &Topology::in_process())
                    .await?;
                let mut client = WorkflowClient::new_with_address(format!(
                    "http://127.0.0.1:{}",
                    sidecar.grpc_port()
                ))
                .await?;
                client.registry_mut().add_activity("noop", noop);
                client.registry_mut().add_workflow("parallel", parallel);
                client.registry_mut().add_workflow("sequential", sequential);
                let worker = client.start_worker().await?;

                drive(&client, workflow, settings.warmup, settings.clients).await?;
                let (elapsed, latencies) =
                    drive(&client, workflow, settings.workflows, settings.clients).await?;
                let rate = settings.workflows as f64 / elapsed.as_secs_f64();
                let stats = Stats::of(&latencies);
                let (dapr, target) = if mode == "parallel" {
                    (DAPR_PARALLEL, TARGET_PARALLEL)
                } else {
                    (DAPR_SEQUENTIAL, TARGET_SEQUENTIAL)
                };
                println!(
                    "| {} | 5 {mode} | {rate:.0} | {:.1} | {:.1} | {:.1} | {dapr} | >= {target:.0} |",
                    store.name,
                    stats.p50 / 1e3,
                    stats.p90 / 1e3,
                    stats.p99 / 1e3,
                );
                worker.shutdown().await?;
                sidecar.shutdown().await;
                if let Some(database) = store.database {
                    postgres_admin()
                        .await?
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                        .await?;
                }
            }
        }
        anyhow::Ok(())
    })
}
