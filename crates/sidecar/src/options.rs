//! How one sidecar is configured: the same settings daprd takes as flags.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// Settings for one sidecar. `Default` gives daprd's defaults except that every port is 0
/// (any free port), which is what in-process topologies and tests want.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// `--app-id`.
    pub app_id: String,
    /// `--app-port`: where the app listens; `None` means the sidecar has no app.
    pub app_port: Option<u16>,
    /// `--app-channel-address` (default `127.0.0.1`).
    pub app_channel_address: String,
    /// `--dapr-listen-addresses` (the local sidecar listens on one address, loopback by default).
    pub listen_address: IpAddr,
    /// `--dapr-http-port` (daprd default 3500).
    pub http_port: u16,
    /// `--dapr-grpc-port` (daprd default 50001).
    pub grpc_port: u16,
    /// `--dapr-internal-grpc-port`: where other sidecars reach this one.
    pub internal_port: u16,
    /// `--metrics-port`; `None` with `--enable-metrics=false`.
    pub metrics_port: Option<u16>,
    /// `--resources-path`, repeatable.
    pub resources_paths: Vec<PathBuf>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `DAPR_API_TOKEN`: required on API calls when set.
    pub api_token: Option<SecretString>,
    /// `APP_API_TOKEN`: sent to the app when set.
    pub app_api_token: Option<SecretString>,
    /// App health checks (`--enable-app-health-check` and friends).
    pub app_health: AppHealthOptions,
    /// `--app-max-concurrency`: requests in flight to the app at once (`None` = unlimited).
    pub app_max_concurrency: Option<usize>,
    /// `NAMESPACE`.
    pub namespace: Option<String>,
    /// Where relative paths in components are resolved (daprd: its working directory).
    pub working_dir: PathBuf,
    /// `--dapr-graceful-shutdown-seconds`: how long in-flight work may take to finish.
    pub graceful_shutdown: Duration,
}

/// App health check settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AppHealthOptions {
    /// `--enable-app-health-check`.
    pub enabled: bool,
    /// `--app-health-check-path` (default `/healthz`).
    pub path: String,
    /// `--app-health-probe-interval` (default 5s).
    pub interval: Duration,
    /// `--app-health-probe-timeout` (default 500ms).
    pub timeout: Duration,
    /// `--app-health-threshold`: failures in a row before the app counts as unhealthy (default 3).
    pub threshold: u32,
}

impl Default for AppHealthOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_millis(500),
            threshold: 3,
        }
    }
}

impl SidecarOptions {
    /// Options for `app_id` with every port chosen by the OS.
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            app_port: None,
            app_channel_address: "127.0.0.1".into(),
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            grpc_port: 0,
            internal_port: 0,
            metrics_port: Some(0),
            resources_paths: Vec::new(),
            config: None,
            api_token: None,
            app_api_token: None,
            app_health: AppHealthOptions::default(),
            app_max_concurrency: None,
            namespace: None,
            working_dir: std::env::current_dir().unwrap_or_default(),
            graceful_shutdown: Duration::from_secs(5),
        }
    }

    /// Sets the app port.
    pub fn app_port(mut self, port: u16) -> Self {
        self.app_port = Some(port);
        self
    }

    /// Adds a resources path.
    pub fn resources_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.resources_paths.push(path.into());
        self
    }

    /// Sets the configuration file.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// Checks the options as daprd does at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.app_id.is_empty() {
            return Err("--app-id is required".into());
        }
        if self.app_id.contains('.') {
            return Err(format!("--app-id {:?} must not contain dots", self.app_id));
        }
        if self.app_health.timeout > self.app_health.interval {
            return Err(
                "--app-health-probe-timeout must be smaller than --app-health-probe-interval"
                    .into(),
            );
        }
        if let Some(app_port) = self.app_port
            && app_port != 0
            && (app_port == self.http_port || app_port == self.grpc_port)
        {
            return Err(format!(
                "--app-port {app_port} must differ from the sidecar's HTTP and gRPC ports"
            ));
        }
        Ok(())
    }
}
