//! Runs the notifications app.

use std::process::ExitCode;

use shop_notifications::{App, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings: Settings = match kit::settings::load("notifications") {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = match kit::telemetry::init("notifications", &settings.telemetry) {
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
            tracing::error!(error = %format!("{error:#}"), "notifications stopped");
            ExitCode::FAILURE
        }
    }
}
