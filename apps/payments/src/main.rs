//! Runs the payments app.

use std::process::ExitCode;

use shop_payments::{App, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings: Settings = match kit::settings::load("payments") {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = match kit::telemetry::init("payments", &settings.telemetry) {
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
            tracing::error!(error = %format!("{error:#}"), "payments stopped");
            ExitCode::FAILURE
        }
    }
}
