//! `media-worker jobs`: recent jobs, from their status documents, on either backend.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use clap::builder::TypedValueParser as _;

use super::output::{self, CliError, Table};
use crate::domain::status::{JobState, JobStatus};
use crate::jobs::JobStore;
use crate::ledger::{JobQuery, Ledger, Listed, MAX_PAGE};

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Only jobs in this state (repeatable).
    #[arg(long = "state", value_name = "STATE", value_parser = state_parser())]
    pub states: Vec<JobState>,
    /// Only jobs that changed within this long (e.g. 30m, 1h, 2days).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// At most this many jobs, the most recently created first; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// A JSON array of job summaries instead of one line per job.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Only the job ids, one per line.
    #[arg(short, long)]
    pub quiet: bool,
}

fn state_parser() -> impl clap::builder::TypedValueParser<Value = JobState> {
    clap::builder::PossibleValuesParser::new(JobState::ALL.map(JobState::as_str)).try_map(|name: String| {
        serde_json::from_value::<JobState>(serde_json::Value::String(name)).map_err(|e| e.to_string())
    })
}

/// Changes (of state or stage) looked at for `--since`, at most.
const MAX_CHANGES: u32 = 10_000;

/// The jobs `args` asks for, the most recently created first: a page at a time from the
/// ledger's indexes (one query per state asked for), never a read of every job.
pub async fn select(store: &JobStore, args: &JobsArgs, now: DateTime<Utc>) -> anyhow::Result<Vec<JobStatus>> {
    let ledger = store.ledger();
    let limit = if args.limit == 0 { usize::MAX } else { args.limit };
    let mut selected = match args.since {
        Some(since) => {
            let cutoff = now - chrono::Duration::from_std(since)?;
            let mut changed = ledger.changed_since(cutoff, MAX_CHANGES).await?;
            changed.retain(|s| args.states.is_empty() || args.states.contains(&s.state));
            changed
        }
        None => {
            let states: Vec<Option<JobState>> =
                if args.states.is_empty() { vec![None] } else { args.states.iter().copied().map(Some).collect() };
            let mut all = Vec::new();
            for state in states {
                all.extend(newest(ledger.as_ref(), state, limit).await?);
            }
            all
        }
    };
    selected.sort_by(|a, b| (b.created_at, &b.job_id).cmp(&(a.created_at, &a.job_id)));
    selected.truncate(limit);
    Ok(selected)
}

/// Up to `limit` jobs (of `state`), newest first, paging through the ledger.
async fn newest(ledger: &dyn Ledger, state: Option<JobState>, limit: usize) -> anyhow::Result<Vec<JobStatus>> {
    let mut found = Vec::new();
    let mut after = None;
    while found.len() < limit {
        let wanted = u32::try_from(limit - found.len()).unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let page = ledger.list(&JobQuery { listed: Listed::All, state, after, limit: wanted }).await?;
        found.extend(page.jobs);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(found)
}

pub async fn run(store: &JobStore, args: &JobsArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let jobs = select(store, args, now).await?;
    if args.json {
        return output::emit_json(&serde_json::Value::Array(jobs.iter().map(summary).collect()));
    }
    if args.quiet {
        let ids: String = jobs.iter().map(|s| format!("{}\n", s.job_id)).collect();
        return if ids.is_empty() { Ok(()) } else { output::emit(&ids) };
    }
    let mut table =
        Table::new(&["JOB", "STATE", "STAGE", "PROGRESS", "ATTEMPT", "CREATED", "UPDATED", "SOURCE", "ERROR"]);
    for s in &jobs {
        table.push(vec![
            s.job_id.clone(),
            json_name(&s.state),
            json_name(&s.stage),
            format!("{:.0}%", s.progress),
            format!("{}/{}", s.attempt, s.max_attempts),
            output::age(s.created_at, now),
            output::age(s.updated_at, now),
            s.job.source_key.clone(),
            s.error.as_ref().map_or_else(|| "-".to_string(), |e| e.code.clone()),
        ]);
    }
    table.emit()
}

/// What `jobs --json` says of one job: the status without its timeline.
fn summary(s: &JobStatus) -> serde_json::Value {
    serde_json::json!({
        "job_id": s.job_id,
        "state": s.state,
        "stage": s.stage,
        "progress": s.progress,
        "attempt": s.attempt,
        "max_attempts": s.max_attempts,
        "source_key": s.job.source_key,
        "output_dir": s.job.output_dir,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "manifest_key": s.manifest_key,
        "error": s.error,
    })
}

/// An enum's name as the documents spell it.
pub fn json_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "-".to_string(),
    }
}

/// `media-worker deliveries JOB_ID`: the job's whole delivery record, for operators.
pub async fn deliveries(store: &JobStore, job_id: &str, json: bool) -> anyhow::Result<()> {
    if store.read(job_id).await?.is_none() {
        return Err(CliError::NotFound(format!("no job `{job_id}`")).into());
    }
    let record = crate::notify::record::read(store.ledger().as_ref(), job_id).await?;
    if json {
        return output::emit_json(&serde_json::to_value(&record)?);
    }
    let mut table = Table::new(&["EVENT", "ENDPOINT", "AUDIENCE", "ATTEMPT", "AT", "OUTCOME", "STATUS"]);
    for a in &record.attempts {
        table.push(vec![
            a.event_id.clone(),
            a.endpoint.clone(),
            json_name(&a.audience),
            a.attempt.to_string(),
            a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            a.outcome.clone(),
            a.status.map_or_else(|| "-".to_string(), |s| s.to_string()),
        ]);
    }
    table.emit()?;
    for endpoint in &record.stopped {
        eprintln!("stopped (410 Gone): {endpoint}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{JobSpec, OutputRequest};
    use crate::domain::preset::Preset;
    use crate::jobs::NoEvents;
    use crate::ledger::sqlite::SqliteLedger;
    use clap::Parser;
    use std::sync::Arc;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: JobsArgs,
    }

    fn args(argv: &[&str]) -> JobsArgs {
        Wrap::try_parse_from(std::iter::once("jobs").chain(argv.iter().copied())).unwrap().args
    }

    #[test]
    fn states_parse_by_their_document_names() {
        assert_eq!(args(&["--state", "failed", "--state", "running"]).states, [JobState::Failed, JobState::Running]);
        assert!(Wrap::try_parse_from(["jobs", "--state", "broken"]).is_err());
        assert_eq!(args(&["--since", "1h"]).since, Some(Duration::from_secs(3600)));
        assert_eq!(json_name(&JobState::Cancelled), "cancelled");
    }

    #[tokio::test]
    async fn select_filters_by_state_and_age_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = std::sync::Arc::new(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
        let layout = crate::domain::keys::KeyLayout::new("uploads/", "outputs/").unwrap();
        let store = JobStore::new(ledger.clone(), layout.clone(), Duration::from_secs(86_400), Arc::new(NoEvents));
        let now = Utc::now();
        for (i, (id, state, minutes_ago)) in
            [("job-a", JobState::Failed, 5), ("job-b", JobState::Completed, 10), ("job-c", JobState::Failed, 180)]
                .into_iter()
                .enumerate()
        {
            let job = JobSpec {
                job_id: id.into(),
                source_key: format!("uploads/{i}.mp4"),
                outputs: vec![OutputRequest::new(Preset::Mp4H264)],
                output_dir: format!("outputs/{i}.mp4/{id}/"),
                source: Default::default(),
                notify: None,
                split: None,
                import: None,
                qc: None,
                loudness: None,
                repackage: None,
                watermark: None,
            };
            // Written as records directly: this test is about reading them back.
            let mut status = JobStatus::queued(&job, 1, 3, now - chrono::Duration::minutes(minutes_ago));
            status.state = state;
            let row = crate::ledger::Row::new(status, &layout, Duration::from_secs(86_400));
            assert!(ledger.put(&row, None, &[]).await.unwrap());
        }
        let ids = |jobs: Vec<JobStatus>| jobs.into_iter().map(|s| s.job_id).collect::<Vec<_>>();
        assert_eq!(ids(select(&store, &args(&[]), now).await.unwrap()), ["job-a", "job-b", "job-c"]);
        assert_eq!(ids(select(&store, &args(&["--state", "failed"]), now).await.unwrap()), ["job-a", "job-c"]);
        assert_eq!(ids(select(&store, &args(&["--state", "failed", "--since", "1h"]), now).await.unwrap()), ["job-a"]);
        assert_eq!(ids(select(&store, &args(&["--limit", "2"]), now).await.unwrap()), ["job-a", "job-b"]);
        let both = args(&["--state", "failed", "--state", "completed", "--limit", "2"]);
        assert_eq!(ids(select(&store, &both, now).await.unwrap()), ["job-a", "job-b"]);
    }
}
