//! `media-worker webhook`: what a receiver needs, from the command line.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::output::{self, CliError};
use crate::config::Config;
use crate::notify::sign::{Secret, Secrets};
use crate::notify::verify::verify_request;

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Check the signature of a captured webhook request (the raw HTTP request: request line,
    /// headers, a blank line, the body). Prints what it found as JSON; exit code 1 when the
    /// signature does not match.
    Verify {
        /// The captured request; `-` reads stdin.
        file: PathBuf,
        /// The secret(s) to check with (space-separated `whsec_...`); default:
        /// MEDIA_WEBHOOK_SECRET.
        #[arg(long)]
        secret: Option<String>,
        /// Also refuse a request whose timestamp is further than this from now (e.g. 5m).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        max_age: Option<Duration>,
    },
    /// Print a new random secret for MEDIA_WEBHOOK_SECRET.
    Secret,
}

pub fn run(command: &WebhookCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match command {
        WebhookCommand::Secret => {
            output::emit(&Secret::generate())?;
            Ok(ExitCode::SUCCESS)
        }
        WebhookCommand::Verify { file, secret, max_age } => {
            let secrets = match secret {
                Some(raw) => Secrets::parse(raw).map_err(CliError::Usage)?,
                None => config.notify.secrets.clone(),
            };
            if secrets.is_empty() {
                return Err(CliError::Usage("no secret: pass --secret or set MEDIA_WEBHOOK_SECRET".into()).into());
            }
            let mut raw = Vec::new();
            if file.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut raw)?;
            } else {
                raw = std::fs::read(file).map_err(|e| CliError::NotFound(format!("{}: {e}", file.display())))?;
            }
            let max_age = max_age.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            match verify_request(&raw, &secrets, chrono::Utc::now().timestamp(), max_age) {
                Ok(verified) => {
                    let mut doc = serde_json::to_value(&verified)?;
                    doc["valid"] = true.into();
                    output::emit_json(&doc)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    output::emit_json(&serde_json::json!({"valid": false, "error": err.to_string()}))?;
                    Ok(ExitCode::from(output::JOB_FAILED))
                }
            }
        }
    }
}
