//! `cargo run --release`: the whole shop on this machine, no Docker, no external services.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kit::settings::TelemetrySettings;
use shop::{AdminSource, Options, Shop};

/// Starts every app of the shop, each behind a local Dapr sidecar, in one process.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Component set (Dapr YAML) for every sidecar: `components/local` (embedded, the default),
    /// `components/rabbitmq`, `components/kafka`, `components/redis`, or your own.
    #[arg(long, value_name = "DIR")]
    components: Option<PathBuf>,
    /// Dapr `Configuration` file for every sidecar.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Port of the API gateway.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address the API gateway binds (`0.0.0.0` to be reachable from other machines).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Where the data lives (`.data/` under it) and relative component paths resolve; by
    /// default the current directory, or the repository when run from elsewhere.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Logs as JSON lines (for ELK) instead of text.
    #[arg(long)]
    log_json: bool,
    /// Log filter, as `RUST_LOG`.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// OTLP/gRPC endpoint to export traces to (e.g. `http://localhost:4317`).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Only create the missing secrets in `.data/secrets.json`, then exit (before
    /// `dapr run -f dapr.yaml`).
    #[arg(long)]
    prepare: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = TelemetrySettings {
        json: cli.log_json,
        level: cli.log_level.clone(),
        otlp_endpoint: cli.otlp_endpoint.clone(),
    };
    if let Err(error) = kit::settings::Validate::validate(&telemetry) {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    let _telemetry = match kit::telemetry::init("shop", &telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("cannot set up logging: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let options = options(&cli);
    if cli.prepare {
        let environment = std::env::vars().collect();
        return match shop::secrets::ensure(&options.secrets_file(), &environment) {
            Ok(admin) => {
                println!("Admin: {}", admin_line(&admin, &options));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let shop = match Shop::start(&options).await {
        Ok(shop) => shop,
        Err(error) => {
            eprintln!("the shop did not start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", banner(&shop, &options));
    match shop.run_until(kit::server::shutdown_signal()).await {
        Ok(()) => {
            println!("The shop has stopped.");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("the shop stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn options(cli: &Cli) -> Options {
    let current = std::env::current_dir().unwrap_or_default();
    let root = cli.root.clone().unwrap_or_else(|| {
        if current.join("components").is_dir() {
            current.clone()
        } else {
            shop::repository_root().unwrap_or_else(|| current.clone())
        }
    });
    let mut options = Options::new(root);
    if let Some(components) = &cli.components {
        options.components = current.join(components);
    }
    options.config = cli.config.as_ref().map(|config| current.join(config));
    options.host.clone_from(&cli.host);
    options.port = cli.port;
    options
}

/// Where the admin's credentials are.
fn admin_line(admin: &AdminSource, options: &Options) -> String {
    let secrets = options.secrets_file();
    match admin {
        AdminSource::Generated { email, password } => format!(
            "{email} / {password}\n               (generated now and kept in {}; set SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD to choose)",
            secrets.display()
        ),
        AdminSource::Environment => "from SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD".to_owned(),
        AdminSource::File => format!("admin-email and admin-password in {}", secrets.display()),
    }
}

fn banner(shop: &Shop, options: &Options) -> String {
    let url = shop.url();
    let admin = admin_line(shop.admin(), options);
    let mut text = format!(
        "\nThe shop is running.\n\n  API:         {url}/api\n  API docs:    {url}/api/docs\n  Admin:       {admin}\n  Components:  {}\n  Data:        {}\n\n  app           port   Dapr HTTP  Dapr gRPC\n",
        options.components.display(),
        options.root.join(".data").display(),
    );
    for member in shop.members() {
        let port = |port: Option<u16>| port.map_or_else(|| "-".to_owned(), |p| p.to_string());
        text.push_str(&format!(
            "  {:<13} {:<6} {:<10} {}\n",
            member.app_id,
            member.app_port,
            port(member.dapr_http_port),
            port(member.dapr_grpc_port)
        ));
    }
    text.push_str("\nPress Ctrl-C to stop.");
    text
}
