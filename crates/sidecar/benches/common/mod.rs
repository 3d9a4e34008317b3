//! What the benchmarks in this directory share: sidecars in temp directories, apps on a free
//! port, percentiles, and a description of the machine.
//!
//! Included with `mod common;` by each bench target; each uses a part of it.

#![allow(
    dead_code,
    reason = "each bench target uses a part of the shared helpers"
)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sidecar::{Sidecar, SidecarOptions, Topology};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// A positive integer from the environment, or `default`.
pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// Percentiles of a series of durations in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) mean: f64,
}

impl Stats {
    /// Nearest-rank percentiles, in microseconds.
    pub(crate) fn of(samples: &[u64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1] as f64 / 1000.0
        };
        let mean = sorted.iter().map(|&n| n as f64).sum::<f64>() / sorted.len() as f64 / 1000.0;
        Self {
            count: sorted.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            mean,
        }
    }
}

/// Nanoseconds of a duration, saturating.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Starts `router` on a free loopback port of the server runtime.
pub(crate) fn serve(servers: &Runtime, router: axum::Router) -> u16 {
    servers.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let port = listener.local_addr().expect("a bound listener").port();
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the app serves");
        });
        port
    })
}

/// A keep-alive HTTP/1.1 client with `TCP_NODELAY`.
pub(crate) fn http_client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

pub(crate) fn uri(port: u16, path: &str) -> Uri {
    format!("http://127.0.0.1:{port}{path}")
        .parse()
        .expect("a valid URI")
}

pub(crate) fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// A directory with `resources/` (and an optional `config.yaml`) for one sidecar.
pub(crate) struct SidecarDir {
    pub(crate) dir: TempDir,
}

impl SidecarDir {
    pub(crate) fn new(resources: &[(&str, &str)], config: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("resources"))?;
        for (name, yaml) in resources {
            std::fs::write(dir.path().join("resources").join(name), yaml)?;
        }
        if let Some(config) = config {
            std::fs::write(dir.path().join("config.yaml"), config)?;
        }
        Ok(Self { dir })
    }

    pub(crate) fn resources(&self) -> PathBuf {
        self.dir.path().join("resources")
    }

    pub(crate) fn options(&self, app_id: &str) -> SidecarOptions {
        let mut options = SidecarOptions::new(app_id).resources_path(self.resources());
        options.working_dir = self.dir.path().to_path_buf();
        options.graceful_shutdown = Duration::from_secs(1);
        let config = self.dir.path().join("config.yaml");
        if config.exists() {
            options.config = Some(config);
        }
        options
    }
}

pub(crate) fn start_sidecar(
    servers: &Runtime,
    options: SidecarOptions,
    topology: &Topology,
) -> anyhow::Result<Sidecar> {
    servers.block_on(Sidecar::start(options, topology))
}

pub(crate) fn stop(servers: &Runtime, sidecars: Vec<Sidecar>) {
    servers.block_on(async {
        for sidecar in sidecars {
            sidecar.shutdown().await;
        }
    });
}

/// Polls `check` every 25 ms until it holds, for at most 20 s.
pub(crate) async fn eventually<F, Fut>(what: &str, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(20), check).await
}

/// Polls `check` every 25 ms until it holds, for at most `limit`.
pub(crate) async fn eventually_within<F, Fut>(
    what: &str,
    limit: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("{what} did not happen within {}s", limit.as_secs())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores available, Linux {kernel}")
}

/// `Cpus_allowed_list` of this process (shows a `taskset`).
pub(crate) fn allowed_cpus() -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_owned())
}
