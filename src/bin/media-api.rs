//! The `media-api` binary: the HTTP API in front of storage and the queue; see
//! `media-api --help` and docs/api.md.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use media_worker::api::{self, config::ApiConfig};
use media_worker::{config::Config, telemetry};

#[derive(Parser, Debug)]
#[command(name = "media-api", version, about = "HTTP API for media-worker: uploads, jobs, progress, downloads.")]
struct Cli {}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::command().after_help(api::config::variables_help());
    let _ = command.get_matches();
    // Config::from_env loads .env first, so the API settings come from it too.
    let settings = Config::from_env().and_then(|config| Ok((config, ApiConfig::from_env()?)));
    let (config, api_config) = match settings {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.json_logs);
    match api::run(config, api_config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
