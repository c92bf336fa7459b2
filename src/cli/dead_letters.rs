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

use chrono::{DateTime, Utc};
use clap::Subcommand;

mod redrive;

use super::output::{self, CliError, Table};
use crate::backend::Backend;
use crate::config::Config;
use crate::domain::dead_letter::{DeadLetter, Origin};
use crate::domain::event::EventContext;
use crate::domain::job::JobSpec;
use crate::domain::ready::ReadyMessage;
use crate::domain::status::JobStatus;
use crate::queue::{MAX_BATCH, Queue};

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
    /// What the letter says about itself, read from its attributes.
    says: DeadLetter,
    /// The attributes as they are, for `show`.
    attributes: std::collections::BTreeMap<String, String>,
    sent_at: Option<DateTime<Utc>>,
}

impl Letter {
    fn reason(&self) -> Option<&str> {
        self.says.reason.as_deref()
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
    let jobs: Vec<JobSpec> = ReadyMessage::parse(&letter.body, &ctx)
        .map(|ready| ready.into_jobs().into_iter().map(|m| m.job).collect())
        .unwrap_or_default();
    let mut job_ids: Vec<String> = letter.says.job_id.iter().cloned().collect();
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
            redrive::redrive(cx, letters, message_ids, *all, reason.as_deref(), *json).await
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
                        says: DeadLetter::from_attributes(&m.attributes),
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
    let says = &letter.says;
    serde_json::json!({
        "message_id": letter.message_id,
        "reason": says.reason,
        "error": says.error,
        "origin": says.origin,
        "worker": says.worker,
        "job_id": about.job_ids.first(),
        "job_state": says.job_state,
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
    let chosen: Vec<&Letter> = letters.iter().filter(|l| reason.is_none_or(|r| l.reason() == Some(r))).collect();
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
                letter.reason().map_or_else(dash, str::to_string),
                letter.says.origin.as_ref().map_or_else(dash, Origin::to_string),
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
            qc: None,
            loudness: None,
            repackage: None,
            watermark: None,
        }
    }

    #[test]
    fn a_letter_names_its_job_and_source() {
        let config = config();
        let spec = job("job-7", "outputs/2024/cat.mov/job-7/");
        let body = crate::domain::job::JobMessage::new(spec, 2).to_json();
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("reason".to_string(), "not_media".to_string());
        attributes.insert("job_id".to_string(), "-".to_string());
        let says = DeadLetter::from_attributes(&attributes);
        let letter = Letter {
            message_id: "m1".into(),
            body,
            receipt: "r".into(),
            receive_count: 1,
            says,
            attributes,
            sent_at: None,
        };
        let about = about(&letter, &config);
        assert_eq!(about.job_ids, ["job-7"]);
        assert_eq!(about.source_key.as_deref(), Some("uploads/2024/cat.mov"));
        assert_eq!(letter.says.job_id, None, "SQS's stand-in for an empty value");
        let poison =
            Letter { body: "not json".into(), says: DeadLetter::default(), attributes: Default::default(), ..letter };
        let about = super::about(&poison, &config);
        assert!(about.job_ids.is_empty() && about.source_key.is_none() && about.jobs.is_empty());
    }
}
