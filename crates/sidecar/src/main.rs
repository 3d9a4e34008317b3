//! `sidecar`: runs one Dapr-compatible sidecar, with daprd's flags.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Args::parse_from(cli::normalise_args(std::env::args_os()));
    cli::init_logging(&args);
    let options = match args.into_options() {
        Ok(options) => options,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    match cli::run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("fatal error from runtime: {error:#}");
            ExitCode::FAILURE
        }
    }
}
