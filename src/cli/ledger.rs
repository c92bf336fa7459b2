//! `media-worker ledger import`: copies what versions before the job ledger kept in the bucket
//! under `jobs/` into the ledger, once per deployment, idempotently.
//!
//! - `jobs/<id>.json`, a job's status: stored unless the ledger has it at the same or a later
//!   revision (a job that went on since, under the new version, is never turned back);
//! - `jobs/notifications/<id>.json`, its delivery record, and `jobs/idempotency/<id>.json`, an
//!   `Idempotency-Key`'s claim: stored unless the ledger has one.
//!
//! The old source index (`jobs/by-source/`) and the signed-parts records of uploads in flight
//! (`jobs/multipart/`) are not copied: the ledger indexes sources itself, and an upload in
//! flight is signed anew. Nothing under `jobs/` is deleted: once the import reports no failures,
//! an operator may remove the prefix (docs/operations.md).

use std::process::ExitCode;

use clap::Subcommand;

use super::output;
use crate::backend::Backend;
use crate::config::Config;
use crate::domain::keys::{JOBS_PREFIX, job_id_of_status_key};
use crate::domain::status::JobStatus;
use crate::ledger::{DocKind, Ledger, Row};

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Copy the job status documents, delivery records and idempotency claims kept under
    /// `jobs/` in the bucket (before the job ledger) into the ledger. Safe to run again.
    Import {
        /// The counts as a JSON document instead of one line.
        #[arg(long)]
        json: bool,
    },
    /// Create the DynamoDB table `MEDIA_JOBS_TABLE` as `infra/storage.yaml` defines it, for
    /// emulators and development (a deployment's table comes from its stack). Nothing to do on
    /// the local backend, whose ledger file is made when first opened.
    CreateTable,
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
struct Imported {
    /// Records stored (new, or newer than the ledger's).
    jobs: usize,
    /// Records the ledger had already, at the same or a later revision.
    jobs_current: usize,
    deliveries: usize,
    claims: usize,
    /// Documents already in the ledger, or of kinds not copied.
    skipped: usize,
    /// Keys that could not be read or stored (named on stderr).
    failed: usize,
}

pub async fn run(command: &LedgerCommand, config: &Config, backend: &Backend) -> anyhow::Result<ExitCode> {
    let json = match command {
        LedgerCommand::Import { json } => *json,
        LedgerCommand::CreateTable => return create_table(config).await,
    };
    let mut imported = Imported::default();
    for key in backend.storage.list(JOBS_PREFIX).await? {
        if let Err(err) = import_one(config, backend, &key, &mut imported).await {
            eprintln!("error: {key}: {err:#}");
            imported.failed += 1;
        }
    }
    if json {
        output::emit_json(&serde_json::to_value(&imported)?)?;
    } else {
        output::emit(&format!(
            "imported {} job records ({} already current), {} delivery records, {} claims; {} skipped, {} failed",
            imported.jobs,
            imported.jobs_current,
            imported.deliveries,
            imported.claims,
            imported.skipped,
            imported.failed
        ))?;
    }
    Ok(if imported.failed > 0 { ExitCode::from(output::ERROR) } else { ExitCode::SUCCESS })
}

async fn create_table(config: &Config) -> anyhow::Result<ExitCode> {
    let Some(aws) = &config.aws else {
        eprintln!("the local backend's ledger needs no table");
        return Ok(ExitCode::SUCCESS);
    };
    let shared = crate::aws::load().await;
    let client = aws_sdk_dynamodb::Client::new(&shared);
    crate::ledger::dynamo::DynamoLedger::create_table(&client, &aws.jobs_table).await?;
    eprintln!("table {} is ready", aws.jobs_table);
    Ok(ExitCode::SUCCESS)
}

async fn import_one(config: &Config, backend: &Backend, key: &str, imported: &mut Imported) -> anyhow::Result<()> {
    let ledger = backend.ledger.as_ref();
    let rest = key.strip_prefix(JOBS_PREFIX).unwrap_or(key);
    let doc = |folder: &str| rest.strip_prefix(folder).and_then(|name| name.strip_suffix(".json"));
    let (kind, id) = match (job_id_of_status_key(key), doc("notifications/"), doc("idempotency/")) {
        (Some(id), _, _) => return import_status(config, ledger, key, id, backend, imported).await,
        (None, Some(id), _) => (DocKind::Deliveries, id),
        (None, None, Some(id)) => (DocKind::Claim, id),
        _ => {
            imported.skipped += 1;
            return Ok(());
        }
    };
    let Some(body) = backend.storage.get_bytes(key).await? else { return Ok(()) };
    let expires = chrono::Utc::now() + chrono::Duration::from_std(config.job_retention)?;
    if ledger.doc_put(kind, id, &body, None, Some(expires)).await? {
        match kind {
            DocKind::Deliveries => imported.deliveries += 1,
            _ => imported.claims += 1,
        }
    } else {
        imported.skipped += 1;
    }
    Ok(())
}

async fn import_status(
    config: &Config,
    ledger: &dyn Ledger,
    key: &str,
    id: &str,
    backend: &Backend,
    imported: &mut Imported,
) -> anyhow::Result<()> {
    let Some(bytes) = backend.storage.get_bytes(key).await? else { return Ok(()) };
    let status: JobStatus = serde_json::from_slice(&bytes)?;
    anyhow::ensure!(status.job_id == id, "the document names job `{}`", status.job_id);
    let expected = match ledger.get(id).await? {
        Some(current) if current.revision >= status.revision => {
            imported.jobs_current += 1;
            return Ok(());
        }
        current => current.map(|c| c.revision),
    };
    let row = Row::new(status, &config.layout, config.job_retention);
    if ledger.put(&row, expected, &[]).await? {
        imported.jobs += 1;
    } else {
        // Changed under us: the ledger's record is the live one.
        imported.jobs_current += 1;
    }
    Ok(())
}
