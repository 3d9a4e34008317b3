//! Runs the orders app.

use std::process::ExitCode;

use shop_orders::{App, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings: Settings = match kit::settings::load("orders") {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = match kit::telemetry::init("orders", &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("cannot set up telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = async { App::build(settings).await?.run_until_stopped().await }.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "orders stopped");
            ExitCode::FAILURE
        }
    }
}
