//! The `media-worker` binary: see `media-worker --help`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    media_worker::cli::main().await
}
