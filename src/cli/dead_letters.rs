//! `media-worker dead-letters`: list, show, redrive and purge the dead-letter queue, on either
//! backend.
//!
//! Reading a queue means receiving: every command first scans the queue, hiding what it read
//! for a short while ([`LOOK`]), and reveals all it did not delete right after, as the worker's
//! dead-letter sweep does. Messages are told apart by message id across batches.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::output::{self, CliError, Table};
use crate::backend::Backend;
use crate::config::Config;
use crate::domain::event::{EventContext, parse_ready_message};
use crate::domain::job::{JobSpec, SourcePin, redriven_job_id};
use crate::domain::status::{JobState, JobStatus};
use crate::jobs;
use crate::queue::{MAX_BATCH, Queue, SendOptions};

/// How long a scan hides what it read; it reveals it again as soon as it is done.
const LOOK: Duration = Duration::from_secs(30);
/// At most this many batches per scan (10 messages each).
const MAX_BATCHES: usize = 1000;

#[derive(Subcommand, Debug)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest first: message id, reason, origin, job, age, source key.
    List {
        /// Only dead letters with this reason (e.g. not_json, transcode_failed).
        #[arg(long, value_name = "CODE")]
        reason: Option<String>,
        /// A JSON array instead of one line per dead letter.
        #[arg(long, conflicts_with = "quiet")]
        json: bool,
        /// Only the message ids, one per line.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print one dead letter as JSON: its attributes, body, and its job's state.
    Show { message_id: String },
    /// Bring dead letters back: a failed job is submitted again as a new job (same source and
    /// outputs); anything else is sent back to the ready queue as it is.
    Redrive {
        /// The message ids to redrive.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        message_ids: Vec<String>,
        /// Redrive every dead letter (with --reason: every one with that reason).
        #[arg(long)]
        all: bool,
        /// With --all: only dead letters with this reason.
        #[arg(long, value_name = "CODE", requires = "all")]
        reason: Option<String>,
        /// A JSON array of what was done instead of one line per dead letter.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good: the ones named, or all of them with --all.
    Purge {
        /// The message ids to delete.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        message_ids: Vec<String>,
        /// Delete every dead letter.
        #[arg(long)]
        all: bool,
        /// Confirms the deletion; nothing is deleted without it.
        #[arg(long)]
        yes: bool,
    },
}

/// One dead letter as a scan read it.
struct Letter {
    message_id: String,
    body: String,
    /// The handle of the scan's own receive: valid until it reveals the message.
    receipt: String,
    receive_count: u32,
    attributes: std::collections::BTreeMap<String, String>,
    sent_at: Option<DateTime<Utc>>,
}

impl Letter {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str).filter(|v| *v != "-")
    }
}

/// What a dead letter's body says, where it can be read.
struct About {
    job_ids: Vec<String>,
    source_key: Option<String>,
    jobs: Vec<JobSpec>,
}

fn about(letter: &Letter, config: &Config) -> About {
    let ctx = EventContext { layout: &config.layout, default_presets: &config.default_presets };
    let jobs: Vec<JobSpec> = parse_ready_message(&letter.body, &ctx)
        .map(|p| p.jobs.into_iter().map(|m| m.job).collect())
        .unwrap_or_default();
    let mut job_ids: Vec<String> = letter.attribute("job_id").map(str::to_string).into_iter().collect();
    for job in &jobs {
        if !job_ids.contains(&job.job_id) {
            job_ids.push(job.job_id.clone());
        }
    }
    About { job_ids, source_key: jobs.first().map(|j| j.source_key.clone()), jobs }
}

/// The dead-letter queue and what the commands need besides.
pub struct Deps<'a> {
    pub config: &'a Config,
    pub backend: &'a Backend,
    pub queue: Arc<dyn Queue>,
    /// How long each receive of a scan waits for messages: a short long-poll on SQS, whose
    /// immediate receives sample only some of its servers and may answer empty too soon.
    pub wait: Duration,
}

pub async fn run(command: &DeadLetterCommand, cx: &Deps<'_>) -> anyhow::Result<ExitCode> {
    if let DeadLetterCommand::Purge { message_ids, all, yes } = command {
        return purge(cx, message_ids, *all, *yes).await;
    }
    let letters = scan(cx).await?;
    match command {
        DeadLetterCommand::List { reason, json, quiet } => list(cx, &letters, reason.as_deref(), *json, *quiet).await,
        DeadLetterCommand::Show { message_id } => show(cx, &letters, message_id).await,
        DeadLetterCommand::Redrive { message_ids, all, reason, json } => {
            redrive(cx, letters, message_ids, *all, reason.as_deref(), *json).await
        }
        DeadLetterCommand::Purge { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// Every dead letter, oldest first, hidden until [`reveal`] (or [`LOOK`]).
async fn scan(cx: &Deps<'_>) -> anyhow::Result<Vec<Letter>> {
    let mut letters: Vec<Letter> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..MAX_BATCHES {
        let batch = match cx.queue.receive_listed(MAX_BATCH, cx.wait, LOOK).await {
            Ok(batch) => batch,
            Err(err) => {
                reveal(cx, &letters).await;
                return Err(err);
            }
        };
        if batch.is_empty() {
            break;
        }
        let mut new = false;
        for listed in batch {
            let m = listed.received;
            match seen.get(&m.message_id) {
                // Visible again (a scan slower than LOOK, or revealed by a worker's sweep):
                // only its latest receipt is valid now.
                Some(&i) => {
                    if let Some(letter) = letters.get_mut(i) {
                        letter.receipt = m.receipt;
                    }
                }
                None => {
                    seen.insert(m.message_id.clone(), letters.len());
                    letters.push(Letter {
                        message_id: m.message_id,
                        body: m.body,
                        receipt: m.receipt,
                        receive_count: m.receive_count,
                        attributes: m.attributes,
                        sent_at: listed.sent_at,
                    });
                    new = true;
                }
            }
        }
        if !new {
            break;
        }
    }
    letters.sort_by_key(|l| l.sent_at);
    Ok(letters)
}

/// Makes the letters visible again at once, for the worker's sweep and other readers.
async fn reveal<'l>(cx: &Deps<'_>, letters: impl IntoIterator<Item = &'l Letter>) {
    for letter in letters {
        if let Err(err) = cx.queue.change_visibility(&letter.receipt, Duration::ZERO).await {
            tracing::debug!(message_id = %letter.message_id, error = format!("{err:#}"), "Could not reveal a dead letter again.");
        }
    }
}

fn summary(letter: &Letter, about: &About, now: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "message_id": letter.message_id,
        "reason": letter.attribute("reason"),
        "error": letter.attribute("error"),
        "origin": letter.attribute("origin"),
        "worker": letter.attribute("worker"),
        "job_id": about.job_ids.first(),
        "job_state": letter.attribute("job_state"),
        "source_key": about.source_key,
        "sent_at": letter.sent_at,
        "age_seconds": letter.sent_at.map(|s| now.signed_duration_since(s).num_seconds().max(0)),
        "receive_count": letter.receive_count,
    })
}

async fn list(
    cx: &Deps<'_>,
    letters: &[Letter],
    reason: Option<&str>,
    json: bool,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    reveal(cx, letters).await;
    let now = Utc::now();
    let chosen: Vec<&Letter> =
        letters.iter().filter(|l| reason.is_none_or(|r| l.attribute("reason") == Some(r))).collect();
    if json {
        let items = chosen.iter().map(|l| summary(l, &about(l, cx.config), now)).collect();
        output::emit_json(&serde_json::Value::Array(items))?;
    } else if quiet {
        let ids: String = chosen.iter().map(|l| format!("{}\n", l.message_id)).collect();
        if !ids.is_empty() {
            output::emit(&ids)?;
        }
    } else {
        let mut table = Table::new(&["MESSAGE", "REASON", "ORIGIN", "JOB", "AGE", "SOURCE"]);
        for letter in chosen {
            let about = about(letter, cx.config);
            let dash = || "-".to_string();
            table.push(vec![
                letter.message_id.clone(),
                letter.attribute("reason").map_or_else(dash, str::to_string),
                letter.attribute("origin").map_or_else(dash, str::to_string),
                about.job_ids.first().cloned().unwrap_or_else(dash),
                letter.sent_at.map_or_else(dash, |s| output::age(s, now)),
                about.source_key.unwrap_or_else(dash),
            ]);
        }
        table.emit()?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(cx: &Deps<'_>, letters: &[Letter], message_id: &str) -> anyhow::Result<ExitCode> {
    reveal(cx, letters).await;
    let letter = letters
        .iter()
        .find(|l| l.message_id == message_id)
        .ok_or_else(|| CliError::NotFound(format!("no dead letter `{message_id}`")))?;
    let about = about(letter, cx.config);
    let mut doc = summary(letter, &about, Utc::now());
    let store = crate::notify::job_store(cx.config, cx.backend);
    let job = match about.job_ids.first() {
        Some(id) => store.read(id).await?.map(|s| job_summary(&s)),
        None => None,
    };
    if let Some(map) = doc.as_object_mut() {
        map.insert("attributes".into(), serde_json::to_value(&letter.attributes)?);
        map.insert("job".into(), job.unwrap_or(serde_json::Value::Null));
        map.insert("body".into(), serde_json::Value::String(letter.body.clone()));
    }
    output::emit_json(&doc)?;
    Ok(ExitCode::SUCCESS)
}

fn job_summary(s: &JobStatus) -> serde_json::Value {
    serde_json::json!({
        "job_id": s.job_id, "state": s.state, "attempt": s.attempt, "updated_at": s.updated_at, "error": s.error,
    })
}

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

async fn redrive(
    cx: &Deps<'_>,
    letters: Vec<Letter>,
    message_ids: &[String],
    all: bool,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (chosen, others): (Vec<Letter>, Vec<Letter>) = letters.into_iter().partition(|l| {
        if all { reason.is_none_or(|r| l.attribute("reason") == Some(r)) } else { message_ids.contains(&l.message_id) }
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
        let why = letter.attribute("reason").unwrap_or("no job in it");
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
                let state = super::jobs::json_name(&status.state);
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
    let job_id = redriven_job_id(&old.job_id);
    let store = crate::notify::job_store(cx.config, cx.backend);
    if store.read(&job_id).await?.is_some() {
        return Ok((job_id, false));
    }
    let head = cx.backend.storage.head(&old.source_key).await?;
    // An imported source that never got stored is fetched again by the new job.
    let pin = match (head, &old.import) {
        (Some(head), _) => SourcePin { etag: head.etag, version_id: None, size: Some(head.size) },
        (None, Some(_)) => SourcePin::default(),
        (None, None) => {
            return Err(CliError::NotFound(format!("the source `{}` no longer exists", old.source_key)).into());
        }
    };
    let job = JobSpec {
        output_dir: next_output_dir(cx.config, old, &job_id),
        job_id,
        source_key: old.source_key.clone(),
        outputs: old.outputs.clone(),
        source: pin,
        notify: old.notify.clone(),
        split: old.split.clone(),
        import: old.import.clone(),
    };
    job.validate()?;
    jobs::submit(&store, cx.backend.queues.ready.as_ref(), &job, cx.config.max_attempts).await?;
    Ok((job.job_id, true))
}

/// The new job's folder: where the old job's was, with the new id (so a job submitted with an
/// API `output_prefix` stays under it), else the layout's folder for the source.
fn next_output_dir(config: &Config, old: &JobSpec, new_id: &str) -> String {
    match old.output_dir.strip_suffix(&format!("{}/", old.job_id)) {
        Some(parent) if parent.is_empty() || parent.ends_with('/') => format!("{parent}{new_id}/"),
        _ => config.layout.job_dir(&old.source_key, new_id),
    }
}

async fn purge(cx: &Deps<'_>, message_ids: &[String], all: bool, yes: bool) -> anyhow::Result<ExitCode> {
    if !yes {
        let what = if all { "every dead letter".to_string() } else { format!("{} dead letters", message_ids.len()) };
        return Err(CliError::Usage(format!("purge deletes {what} for good: add --yes to confirm")).into());
    }
    if all {
        let before = cx.queue.counts().await?.total();
        match cx.queue.purge().await? {
            Some(n) => eprintln!("purged {n} dead letters"),
            None => eprintln!("purging about {before} dead letters (SQS finishes within a minute)"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let letters = scan(cx).await?;
    let (chosen, others): (Vec<Letter>, Vec<Letter>) =
        letters.into_iter().partition(|l| message_ids.contains(&l.message_id));
    reveal(cx, &others).await;
    for letter in &chosen {
        cx.queue.delete(&letter.receipt).await?;
    }
    eprintln!("deleted {} dead letters", chosen.len());
    let missing: Vec<&str> =
        message_ids.iter().filter(|id| !chosen.iter().any(|l| &l.message_id == *id)).map(String::as_str).collect();
    if !missing.is_empty() {
        eprintln!("error: no dead letter {}", missing.join(", "));
        return Ok(ExitCode::from(output::NOT_FOUND));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::OutputRequest;
    use crate::domain::preset::Preset;

    fn config() -> Config {
        Config::from_lookup(|name| (name == "MEDIA_BACKEND").then(|| "local".to_string())).unwrap()
    }

    fn job(id: &str, output_dir: &str) -> JobSpec {
        JobSpec {
            job_id: id.into(),
            source_key: "uploads/2024/cat.mov".into(),
            outputs: vec![OutputRequest::new(Preset::Mp4H264)],
            output_dir: output_dir.into(),
            source: Default::default(),
            notify: None,
            split: None,
            import: None,
        }
    }

    #[test]
    fn a_resubmitted_job_gets_a_folder_of_its_own_next_to_the_old_one() {
        let config = config();
        let layout_made = job("job-old", &config.layout.job_dir("uploads/2024/cat.mov", "job-old"));
        assert_eq!(
            next_output_dir(&config, &layout_made, "job-new"),
            config.layout.job_dir("uploads/2024/cat.mov", "job-new")
        );
        let api_made = job("job-old", "outputs/campaign-7/job-old/");
        assert_eq!(next_output_dir(&config, &api_made, "job-new"), "outputs/campaign-7/job-new/");
        // A hand-made folder not named after the job: the layout's folder.
        let hand_made = job("job-old", "outputs/somewhere/");
        assert_eq!(
            next_output_dir(&config, &hand_made, "job-new"),
            config.layout.job_dir("uploads/2024/cat.mov", "job-new")
        );
        let suffix_only = job("old", "outputs/x-old/");
        assert_eq!(next_output_dir(&config, &suffix_only, "new"), config.layout.job_dir("uploads/2024/cat.mov", "new"));
    }

    #[test]
    fn a_letter_names_its_job_and_source() {
        let config = config();
        let spec = job("job-7", "outputs/2024/cat.mov/job-7/");
        let body = crate::domain::job::JobMessage::new(spec, 2).to_json();
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("reason".to_string(), "not_media".to_string());
        attributes.insert("job_id".to_string(), "-".to_string());
        let letter =
            Letter { message_id: "m1".into(), body, receipt: "r".into(), receive_count: 1, attributes, sent_at: None };
        let about = about(&letter, &config);
        assert_eq!(about.job_ids, ["job-7"]);
        assert_eq!(about.source_key.as_deref(), Some("uploads/2024/cat.mov"));
        assert_eq!(letter.attribute("job_id"), None, "SQS's stand-in for an empty value");
        let poison = Letter { body: "not json".into(), attributes: Default::default(), ..letter };
        let about = super::about(&poison, &config);
        assert!(about.job_ids.is_empty() && about.source_key.is_none() && about.jobs.is_empty());
    }
}
