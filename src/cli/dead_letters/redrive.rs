//! `media-worker dead-letters redrive`: brings dead letters back. A failed job is submitted
//! again as a new job (its id derived from the old one, so running a redrive twice makes no
//! second job); anything else goes back to the ready queue as it is.

use std::process::ExitCode;

use anyhow::Context as _;

use super::super::output::{self, CliError, Table};
use super::{Deps, Letter, about, reveal, scan};
use crate::domain::job::{JobSpec, redriven_job_id};
use crate::domain::status::JobState;
use crate::jobs::{IfExists, NewJob, SubmitError, Submitter};
use crate::queue::SendOptions;

/// What a redrive did with one job of a dead letter (or with the whole letter).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct Outcome {
    message_id: String,
    /// `resubmitted` (a new job), `resent` (the body, to the ready queue), `skipped`, `error`.
    action: &'static str,
    /// The new job (resubmitted), or the job the dead letter names.
    job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_job_id: Option<String>,
    note: String,
}

impl Outcome {
    fn done(&self) -> bool {
        matches!(self.action, "resubmitted" | "resent")
    }
}

pub(super) async fn redrive(
    cx: &Deps<'_>,
    letters: Vec<Letter>,
    message_ids: &[String],
    all: bool,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (chosen, others): (Vec<Letter>, Vec<Letter>) = letters.into_iter().partition(|l| {
        if all { reason.is_none_or(|r| l.reason() == Some(r)) } else { message_ids.contains(&l.message_id) }
    });
    reveal(cx, &others).await;
    let missing: Vec<&String> = message_ids.iter().filter(|id| !chosen.iter().any(|l| &l.message_id == *id)).collect();
    let mut outcomes = Vec::new();
    let mut failed = false;
    let mut deleted = Vec::new();
    for letter in &chosen {
        let letter_outcomes = match redrive_one(cx, letter).await {
            Ok(o) => o,
            Err(err) => vec![Outcome {
                message_id: letter.message_id.clone(),
                action: "error",
                job_id: None,
                previous_job_id: None,
                note: format!("{err:#}"),
            }],
        };
        if letter_outcomes.iter().all(Outcome::done) {
            cx.queue.delete(&letter.receipt).await?;
            deleted.push(letter.message_id.clone());
        } else {
            failed |= letter_outcomes.iter().any(|o| o.action == "error");
            reveal(cx, [letter]).await;
        }
        outcomes.extend(letter_outcomes);
    }
    failed |= !verify_deleted(cx, &deleted).await?;
    if json {
        output::emit_json(&serde_json::to_value(&outcomes)?)?;
    } else {
        let mut table = Table::new(&["MESSAGE", "ACTION", "JOB", "NOTE"]);
        for o in &outcomes {
            table.push(vec![
                o.message_id.clone(),
                o.action.to_string(),
                o.job_id.clone().unwrap_or_else(|| "-".into()),
                o.note.clone(),
            ]);
        }
        table.emit()?;
    }
    let done = outcomes.iter().filter(|o| o.done()).count();
    eprintln!("redrove {done} of {} dead letters' jobs or messages", outcomes.len());
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        eprintln!("error: no dead letter {}", names.join(", "));
        return Ok(ExitCode::from(output::NOT_FOUND));
    }
    Ok(if failed { ExitCode::from(output::ERROR) } else { ExitCode::SUCCESS })
}

/// Checks that the letters redriven are gone. A delete with a receipt that went stale (the
/// letter was received again meanwhile, by the worker's sweep or another command) deletes
/// nothing, and says nothing: a letter still there is deleted again with its new receipt,
/// which is safe because its job was made already (its id is derived, [`redriven_job_id`]).
/// `false` when one could not be deleted (hidden by another reader): running the redrive
/// again finishes it, making no second job.
async fn verify_deleted(cx: &Deps<'_>, deleted: &[String]) -> anyhow::Result<bool> {
    if deleted.is_empty() {
        return Ok(true);
    }
    let left = scan(cx).await?;
    let (again, others): (Vec<Letter>, Vec<Letter>) = left.into_iter().partition(|l| deleted.contains(&l.message_id));
    reveal(cx, &others).await;
    for letter in &again {
        tracing::info!(message_id = %letter.message_id, "A redriven dead letter was still there; deleting it again.");
        cx.queue.delete(&letter.receipt).await?;
    }
    let still: Vec<String> = scan_ids(cx).await?.into_iter().filter(|id| deleted.contains(id)).collect();
    if !still.is_empty() {
        eprintln!(
            "error: dead letters {} were redriven but are still on the queue (read elsewhere meanwhile); \
             run the redrive again: it makes no second job",
            still.join(", ")
        );
    }
    Ok(still.is_empty())
}

/// The ids of the letters a scan sees, every one revealed again at once.
async fn scan_ids(cx: &Deps<'_>) -> anyhow::Result<Vec<String>> {
    let letters = scan(cx).await?;
    reveal(cx, &letters).await;
    Ok(letters.into_iter().map(|l| l.message_id).collect())
}

/// Redrives one dead letter. A failed job is final, so it is submitted again as a new job; a
/// message naming no job, or a job without a status, goes back to the ready queue as it is (a
/// poison message is dead-lettered again if it is still bad).
async fn redrive_one(cx: &Deps<'_>, letter: &Letter) -> anyhow::Result<Vec<Outcome>> {
    let about = about(letter, cx.config);
    let outcome = |action, job_id: Option<String>, previous_job_id, note: String| Outcome {
        message_id: letter.message_id.clone(),
        action,
        job_id,
        previous_job_id,
        note,
    };
    if about.jobs.is_empty() {
        resend(cx, letter).await?;
        let why = letter.reason().unwrap_or("no job in it");
        return Ok(vec![outcome("resent", None, None, format!("sent back to the ready queue as it is ({why})"))]);
    }
    let store = crate::notify::job_store(cx.config, cx.backend);
    let mut outcomes = Vec::new();
    let mut resend_body = false;
    for job in &about.jobs {
        match store.read(&job.job_id).await? {
            None => {
                resend_body = true;
                outcomes.push(outcome(
                    "resent",
                    Some(job.job_id.clone()),
                    None,
                    "the job has no status: its message goes back to the ready queue".into(),
                ));
            }
            Some(status) if status.state == JobState::Failed => match resubmit(cx, &status.job).await {
                Ok((new_id, made)) => outcomes.push(outcome(
                    "resubmitted",
                    Some(new_id),
                    Some(job.job_id.clone()),
                    if made {
                        format!("failed job {} submitted again as a new job", job.job_id)
                    } else {
                        format!("failed job {} was already submitted again as this job", job.job_id)
                    },
                )),
                Err(err) => outcomes.push(outcome("error", Some(job.job_id.clone()), None, format!("{err:#}"))),
            },
            Some(status) => {
                let state = crate::cli::jobs::json_name(&status.state);
                let note = match status.state {
                    JobState::Completed | JobState::Cancelled => format!("the job is {state}: nothing to redrive"),
                    _ => format!("the job is {state}: it goes on without this message"),
                };
                outcomes.push(outcome("skipped", Some(job.job_id.clone()), None, note));
            }
        }
    }
    if resend_body {
        resend(cx, letter).await?;
    }
    Ok(outcomes)
}

async fn resend(cx: &Deps<'_>, letter: &Letter) -> anyhow::Result<()> {
    cx.backend.queues.ready.send(&letter.body, SendOptions::default()).await.context("send to the ready queue")
}

/// Submits a failed job again as a new job: an id derived from the old one, the same source
/// and outputs, pinned to the source as it is stored now, in a folder of its own next to the
/// old job's. `false` when that job exists already (an earlier redrive made it): nothing is
/// sent.
async fn resubmit(cx: &Deps<'_>, old: &JobSpec) -> anyhow::Result<(String, bool)> {
    let store = crate::notify::job_store(cx.config, cx.backend);
    let job = NewJob::again(old, redriven_job_id(&old.job_id), &cx.config.layout);
    match Submitter::new(&store, cx.backend, cx.config.max_attempts).submit(job, IfExists::Keep).await {
        Ok(submitted) => Ok((submitted.status.job_id, submitted.created)),
        Err(SubmitError::SourceMissing(key)) => {
            Err(CliError::NotFound(format!("the source `{key}` no longer exists")).into())
        }
        Err(err) => Err(err.into()),
    }
}
