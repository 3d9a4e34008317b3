//! daprd's command line: flags, logging, and running until Ctrl-C or SIGTERM.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use secrecy::SecretString;
use sidecar::{AppHealthOptions, Sidecar, SidecarOptions, Topology};
use tracing_subscriber::EnvFilter;

/// A Dapr-compatible sidecar for one app, configured like daprd.
#[derive(Debug, Parser)]
#[command(name = "sidecar", version, about)]
pub(crate) struct Args {
    /// The app's id.
    #[arg(long)]
    app_id: String,
    /// The port the app listens on (no port: the sidecar has no app).
    #[arg(long)]
    app_port: Option<u16>,
    /// The protocol the app speaks; only `http` is supported.
    #[arg(long, default_value = "http")]
    app_protocol: String,
    /// The address the app listens on.
    #[arg(long, default_value = "127.0.0.1")]
    app_channel_address: String,
    /// Port of the Dapr HTTP API.
    #[arg(long, default_value_t = 3500)]
    dapr_http_port: u16,
    /// Port of the Dapr gRPC API.
    #[arg(long, default_value_t = 50001)]
    dapr_grpc_port: u16,
    /// Port other sidecars invoke this app through (0: any free port).
    #[arg(long, default_value_t = 0)]
    dapr_internal_grpc_port: u16,
    /// Address the sidecar listens on.
    #[arg(long, default_value = "127.0.0.1")]
    dapr_listen_addresses: IpAddr,
    /// Port of the Prometheus metrics endpoint.
    #[arg(long, default_value_t = 9090)]
    metrics_port: u16,
    /// Serve Prometheus metrics.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    enable_metrics: bool,
    /// A directory (or file) of resources; repeatable.
    #[arg(long, alias = "components-path")]
    resources_path: Vec<PathBuf>,
    /// The Configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// debug, info, warn, error or fatal.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Write logs as JSON lines.
    #[arg(long)]
    log_as_json: bool,
    /// Probe the app's health and stop delivering to it while it is unhealthy.
    #[arg(long)]
    enable_app_health_check: bool,
    /// Path of the app's health endpoint.
    #[arg(long, default_value = "/healthz")]
    app_health_check_path: String,
    /// Seconds between health probes.
    #[arg(long, default_value_t = 5)]
    app_health_probe_interval: u64,
    /// Milliseconds a health probe may take.
    #[arg(long, default_value_t = 500)]
    app_health_probe_timeout: u64,
    /// Failed probes in a row before the app counts as unhealthy.
    #[arg(long, default_value_t = 3)]
    app_health_threshold: u32,
    /// Requests in flight to the app at once (-1: unlimited).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    app_max_concurrency: i64,
    /// Seconds in-flight work may take to finish when stopping.
    #[arg(long, default_value_t = 5)]
    dapr_graceful_shutdown_seconds: u64,
    /// Token required on API calls (`dapr-api-token`).
    #[arg(long, env = "DAPR_API_TOKEN", hide_env_values = true)]
    dapr_api_token: Option<String>,
    /// Token sent to the app on every call.
    #[arg(long, env = "APP_API_TOKEN", hide_env_values = true)]
    app_api_token: Option<String>,
    /// The namespace (resources of other namespaces are skipped).
    #[arg(long, env = "NAMESPACE")]
    namespace: Option<String>,
}

/// daprd accepts `-app-id` as well as `--app-id`: turn single-dash long flags into double-dash.
pub(crate) fn normalise_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    args.enumerate()
        .map(|(index, arg)| match arg.to_str() {
            Some(text)
                if index > 0
                    && text.len() > 2
                    && text.starts_with('-')
                    && !text.starts_with("--") =>
            {
                OsString::from(format!("-{text}"))
            }
            _ => arg,
        })
        .collect()
}

impl Args {
    /// The options these flags describe, checked as daprd checks them.
    pub(crate) fn into_options(self) -> Result<SidecarOptions, String> {
        if !self.app_protocol.eq_ignore_ascii_case("http") {
            return Err(format!(
                "invalid value for 'app-protocol': {:?}; the local sidecar speaks only `http` to apps",
                self.app_protocol
            ));
        }
        let mut options = SidecarOptions::new(self.app_id);
        options.app_port = self.app_port.filter(|p| *p != 0);
        options.app_channel_address = self.app_channel_address;
        options.listen_address = self.dapr_listen_addresses;
        options.http_port = self.dapr_http_port;
        options.grpc_port = self.dapr_grpc_port;
        options.internal_port = self.dapr_internal_grpc_port;
        options.metrics_port = self.enable_metrics.then_some(self.metrics_port);
        options.resources_paths = self.resources_path;
        options.config = self.config;
        options.api_token = self
            .dapr_api_token
            .filter(|t| !t.is_empty())
            .map(SecretString::from);
        options.app_api_token = self
            .app_api_token
            .filter(|t| !t.is_empty())
            .map(SecretString::from);
        options.namespace = self.namespace.filter(|n| !n.is_empty());
        options.app_max_concurrency = usize::try_from(self.app_max_concurrency)
            .ok()
            .filter(|n| *n > 0);
        options.graceful_shutdown = Duration::from_secs(self.dapr_graceful_shutdown_seconds);
        let defaults = AppHealthOptions::default();
        options.app_health = AppHealthOptions {
            enabled: self.enable_app_health_check,
            path: self.app_health_check_path,
            interval: match self.app_health_probe_interval {
                0 => defaults.interval,
                seconds => Duration::from_secs(seconds),
            },
            timeout: match self.app_health_probe_timeout {
                0 => defaults.timeout,
                millis => Duration::from_millis(millis),
            },
            threshold: if self.app_health_threshold == 0 {
                defaults.threshold
            } else {
                self.app_health_threshold
            },
        };
        options.validate()?;
        Ok(options)
    }
}

/// Logging as `--log-level` and `--log-as-json` ask. `RUST_LOG` refines the level if set.
pub(crate) fn init_logging(args: &Args) {
    let level = match args.log_level.to_ascii_lowercase().as_str() {
        "fatal" => "error".to_owned(),
        other => other.to_owned(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_as_json {
        builder
            .event_format(json_log::DaprJson::new(args.app_id.clone()))
            .init();
    } else {
        builder.init();
    }
}

/// Runs one sidecar until Ctrl-C, SIGTERM or a shutdown request through the API.
pub(crate) async fn run(options: SidecarOptions) -> anyhow::Result<()> {
    let sidecar = Sidecar::start(options, &Topology::shared()).await?;
    tokio::select! {
        () = shutdown_signal() => tracing::info!("received a signal, shutting down"),
        () = sidecar.stopped() => {}
    }
    sidecar.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

mod json_log {
    //! daprd's JSON log lines: `time`, `level`, `msg`, `scope`, `type`, `ver`, `app_id`,
    //! `instance`, plus the event's own fields.

    use std::fmt;

    use serde_json::{Map, Value};
    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    pub(crate) struct DaprJson {
        app_id: String,
        instance: String,
    }

    impl DaprJson {
        pub(crate) fn new(app_id: String) -> Self {
            let instance = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            Self { app_id, instance }
        }
    }

    struct Fields(Map<String, Value>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0
                .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0
                .insert(field.name().to_owned(), Value::String(value.to_owned()));
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.0.insert(field.name().to_owned(), value.into());
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.0.insert(field.name().to_owned(), value.into());
        }
        fn record_bool(&mut self, field: &Field, value: bool) {
            self.0.insert(field.name().to_owned(), value.into());
        }
        fn record_f64(&mut self, field: &Field, value: f64) {
            self.0.insert(field.name().to_owned(), value.into());
        }
    }

    impl<S, N> FormatEvent<S, N> for DaprJson
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            _: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let mut fields = Fields(Map::new());
            event.record(&mut fields);
            let mut line = fields.0;
            let message = line
                .remove("message")
                .unwrap_or(Value::String(String::new()));
            let level = match *event.metadata().level() {
                Level::ERROR => "error",
                Level::WARN => "warning",
                Level::INFO => "info",
                Level::DEBUG | Level::TRACE => "debug",
            };
            line.insert(
                "time".into(),
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                    .into(),
            );
            line.insert("level".into(), level.into());
            line.insert("msg".into(), message);
            line.insert(
                "scope".into(),
                event.metadata().target().replace("::", ".").into(),
            );
            line.insert("type".into(), "log".into());
            line.insert("ver".into(), env!("CARGO_PKG_VERSION").into());
            line.insert("app_id".into(), self.app_id.clone().into());
            line.insert("instance".into(), self.instance.clone().into());
            writeln!(writer, "{}", Value::Object(line))
        }
    }
}
