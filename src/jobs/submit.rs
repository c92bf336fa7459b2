//! Making a job: the one path from what a caller asks for ([`NewJob`]) to a queued job.
//!
//! The API, `media-worker submit` and the redrive of a failed job all make jobs, and a job made
//! twice or made differently by each would be a job that behaves differently depending on who
//! asked. So the rules live here, once:
//!
//! - a job's folder is its own: the layout's folder for its source, or `<folder><job id>/` under
//!   a folder the caller chose ([`NewJob::in_folder`]), which must lie inside no job's folder
//!   ([`Submitter::check_folder`]);
//! - a job is pinned to the write of its source stored when it is made ([`Submitter::pin`]): a
//!   source replaced before the job runs ends it with `source_changed` instead of transcoding
//!   bytes nobody submitted. An import has nothing stored yet and is pinned to nothing;
//! - a job id that names an existing job makes no second job ([`IfExists`]);
//! - the spec is validated, then published and recorded as queued ([`submit`]).
//!
//! An S3 upload event makes its job without a submission (the worker that takes the event
//! creates the status as it starts it); its pin is the event's, given to [`NewJob::spec`].

use crate::backend::Backend;
use crate::domain::delivery::CaptionTrack;
use crate::domain::job::{
    ImportSource, JobMessage, JobSpec, NotifyTarget, OutputRequest, Repackage, RepackageError, SourcePin, SpecError,
    repackaged_output,
};
use crate::domain::keys::{KeyError, KeyLayout, validate_job_id, validate_prefix};
use crate::domain::loudness::LoudnessSettings;
use crate::domain::preset::Preset;
use crate::domain::qc::QcSettings;
use crate::domain::split::SplitRequest;
use crate::domain::status::{JobState, JobStatus};
use crate::domain::watermark::WatermarkSettings;
use crate::ledger::LedgerError;
use crate::queue::{Queue, SendOptions};
use crate::storage::StorageError;

use super::machine::Event;
use super::store::{Applied, JobStore};

/// What a caller asks for: a source, the outputs, the job's own folder, and whom to tell.
/// Everything but the pin, which is the [`Submitter`]'s to take.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job_id: String,
    pub source_key: String,
    pub outputs: Vec<OutputRequest>,
    /// The job's own folder (see [`NewJob::new`] and [`NewJob::in_folder`]).
    pub output_dir: String,
    pub notify: Option<NotifyTarget>,
    pub split: Option<SplitRequest>,
    pub import: Option<ImportSource>,
    /// The job's QC rules.
    pub qc: Option<QcSettings>,
    /// The job's loudness target (or measure-only request).
    pub loudness: Option<LoudnessSettings>,
    /// A job that only packages another job's `cmaf` output again ([`NewJob::repackage`]).
    pub repackage: Option<Repackage>,
    /// The job's image watermark.
    pub watermark: Option<WatermarkSettings>,
    /// A failed job asked for again ([`NewJob::again`]): an import the old job stored is pinned
    /// like any source. A new job's import is fetched whatever the key holds (an object left
    /// there belongs to no live job of this id), so its source is not looked up at all.
    pub again: bool,
}

impl NewJob {
    /// A job for `source_key` in the layout's folder for the source (next to the source's other
    /// jobs, never shared with one).
    pub fn new(layout: &KeyLayout, job_id: String, source_key: String, outputs: Vec<OutputRequest>) -> Self {
        let output_dir = layout.job_dir(&source_key, &job_id);
        Self {
            job_id,
            source_key,
            outputs,
            output_dir,
            notify: None,
            split: None,
            import: None,
            qc: None,
            loudness: None,
            repackage: None,
            watermark: None,
            again: false,
        }
    }

    /// A job packaging `old`'s `cmaf` output again with the caption tracks `captions` (a track
    /// in a language the output has replaces it only with `replace`), under `job_id`, in a
    /// folder of its own next to `old`'s (as [`NewJob::again`] places it). The source is
    /// `old`'s, never read; the renditions are copied, not encoded.
    pub fn repackage(
        old: &JobSpec,
        job_id: String,
        captions: Vec<CaptionTrack>,
        replace: bool,
        layout: &KeyLayout,
    ) -> Result<Self, RepackageError> {
        let output = repackaged_output(old, &captions, replace)?;
        let output_dir = NewJob::again(old, job_id.clone(), layout).output_dir;
        let repackage = Repackage { job_id: old.job_id.clone(), output_dir: old.output_dir.clone(), captions, replace };
        Ok(Self {
            repackage: Some(repackage),
            output_dir,
            ..NewJob::new(layout, job_id, old.source_key.clone(), vec![output])
        })
    }

    /// `old`'s job asked for again under `job_id` (a failed job redriven): the same source,
    /// outputs, webhook, split and import, in a folder of its own next to the old job's (where
    /// the old job's was, with the new id, so a job submitted under an API `output_prefix`
    /// stays under it), else in the layout's folder for the source.
    pub fn again(old: &JobSpec, job_id: String, layout: &KeyLayout) -> Self {
        let output_dir = match old.output_dir.strip_suffix(&format!("{}/", old.job_id)) {
            Some(parent) if parent.is_empty() || parent.ends_with('/') => format!("{parent}{job_id}/"),
            _ => layout.job_dir(&old.source_key, &job_id),
        };
        Self {
            job_id,
            source_key: old.source_key.clone(),
            outputs: old.outputs.clone(),
            output_dir,
            notify: old.notify.clone(),
            split: old.split.clone(),
            import: old.import.clone(),
            qc: old.qc.as_deref().cloned(),
            loudness: old.loudness,
            repackage: old.repackage.as_deref().cloned(),
            watermark: old.watermark.as_deref().cloned(),
            again: true,
        }
    }

    /// Outputs of `presets` with their defaults, each preset once, in the order first named.
    pub fn outputs_of(presets: impl IntoIterator<Item = Preset>) -> Vec<OutputRequest> {
        let mut outputs: Vec<OutputRequest> = Vec::new();
        for preset in presets {
            if !outputs.iter().any(|o| o.preset == preset) {
                outputs.push(OutputRequest::new(preset));
            }
        }
        outputs
    }

    /// The same job in `<folder><job id>/`: under a folder the caller chose (checked with
    /// [`Submitter::check_folder`] when a client chose it).
    pub fn in_folder(mut self, folder: &str) -> Self {
        self.output_dir = format!("{folder}{}/", self.job_id);
        self
    }

    /// Whether `job` is what this asks for, its pin aside (the pin is the job's, not the
    /// request's): the same request again.
    pub fn asks_for(&self, job: &JobSpec) -> bool {
        job.job_id == self.job_id
            && job.source_key == self.source_key
            && job.outputs == self.outputs
            && job.output_dir == self.output_dir
            && job.notify == self.notify
            && job.import == self.import
            && job.split == self.split
            && job.qc.as_deref() == self.qc.as_ref()
            && job.loudness == self.loudness
            && job.repackage.as_deref() == self.repackage.as_ref()
            && job.watermark.as_deref() == self.watermark.as_ref()
    }

    /// The job's spec, pinned to `pin`, validated.
    pub fn spec(self, pin: SourcePin) -> Result<JobSpec, SpecError> {
        let job = JobSpec {
            job_id: self.job_id,
            source_key: self.source_key,
            outputs: self.outputs,
            output_dir: self.output_dir,
            source: pin,
            notify: self.notify,
            split: self.split,
            import: self.import,
            qc: self.qc.map(Box::new),
            loudness: self.loudness,
            repackage: self.repackage.map(Box::new),
            watermark: self.watermark.map(Box::new),
        };
        job.validate()?;
        Ok(job)
    }
}

/// What to do when the job id names a job that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// The same request again (an idempotent retry) gets the stored job, its message sent again
    /// while no worker has taken it (a duplicate is refused at start, a missing one would strand
    /// the job); another request under that id is refused ([`SubmitError::Reused`]).
    Replay,
    /// The stored job, as it is: nothing is sent (a derived id whose job was made earlier).
    Keep,
    /// The id was just made ([`new_job_id`](crate::domain::job::new_job_id)): no job can have
    /// it, so none is looked up.
    FreshId,
}

/// What a submission made.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub status: JobStatus,
    /// `false` when the job existed already ([`IfExists`]).
    pub created: bool,
}

/// Why a job was not made.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Nothing is stored at the source key (and the job imports nothing).
    #[error("nothing is stored at `{0}`")]
    SourceMissing(String),
    /// The job as asked cannot be run.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// A folder the caller chose is no folder a job's may be under.
    #[error("`{folder}` refused: {reason}")]
    NotAFolder { folder: String, reason: KeyError },
    /// A folder the caller chose lies inside the folder of the job `job_id`.
    #[error("`{folder}` is inside the folder of job `{job_id}`")]
    InsideJob { folder: String, job_id: String },
    /// The job id names a job made for another request.
    #[error("job `{0}` exists and was made for another request")]
    Reused(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ready queue, or the record after it: worth retrying.
    #[error(transparent)]
    Unavailable(anyhow::Error),
}

/// The one maker of jobs: pins, applies the rules, publishes and records through the store.
pub struct Submitter<'a> {
    store: &'a JobStore,
    backend: &'a Backend,
    max_attempts: u32,
}

impl<'a> Submitter<'a> {
    pub fn new(store: &'a JobStore, backend: &'a Backend, max_attempts: u32) -> Self {
        Self { store, backend, max_attempts }
    }

    /// A folder a client chose for its job's folder (`<folder><job id>/`), refused when it is
    /// no folder or lies inside a job's folder. A job's folder always ends in its id, so any
    /// folder inside one has a job id among its segments below the output prefix, and each
    /// segment that could be a job id is looked up.
    pub async fn check_folder(&self, folder: &str, output_prefix: &str) -> Result<(), SubmitError> {
        let refused = |reason| SubmitError::NotAFolder { folder: folder.to_string(), reason };
        validate_prefix(folder).map_err(refused)?;
        let relative = folder.strip_prefix(output_prefix).unwrap_or(folder);
        for segment in relative.split('/').filter(|s| validate_job_id(s).is_ok()) {
            if self.store.read(segment).await?.is_some() {
                return Err(SubmitError::InsideJob { folder: folder.to_string(), job_id: segment.to_string() });
            }
        }
        Ok(())
    }

    /// The write of the job's source stored now; nothing for a new job's import (its worker
    /// fetches the source), nor for a redriven one whose source was never stored.
    pub async fn pin(&self, job: &NewJob) -> Result<SourcePin, SubmitError> {
        // A packaging job reads no source: its input is another job's package.
        if job.repackage.is_some() {
            return Ok(SourcePin::default());
        }
        if job.import.is_some() && !job.again {
            return Ok(SourcePin::default());
        }
        match (self.backend.storage.head(&job.source_key).await?, &job.import) {
            (Some(head), _) => Ok(SourcePin { etag: head.etag, version_id: None, size: Some(head.size) }),
            (None, Some(_)) => Ok(SourcePin::default()),
            (None, None) => Err(SubmitError::SourceMissing(job.source_key.clone())),
        }
    }

    /// Makes the job `job` asks for, pinned to its source as stored now, unless its id names a
    /// job already (then as `if_exists` says).
    pub async fn submit(&self, job: NewJob, if_exists: IfExists) -> Result<Submitted, SubmitError> {
        let existing = match if_exists {
            IfExists::FreshId => None,
            IfExists::Replay | IfExists::Keep => self.store.read(&job.job_id).await?,
        };
        if let Some(existing) = existing {
            if if_exists == IfExists::Replay {
                if !job.asks_for(&existing.job) {
                    return Err(SubmitError::Reused(job.job_id));
                }
                if existing.state == JobState::Queued && existing.attempt == 1 {
                    let message = JobMessage::new(existing.job.clone(), 1).to_json();
                    let ready = self.backend.queues.ready.as_ref();
                    ready.send(&message, SendOptions::default()).await.map_err(SubmitError::Unavailable)?;
                }
            }
            return Ok(Submitted { status: existing, created: false });
        }
        let pin = self.pin(&job).await?;
        let spec = job.spec(pin)?;
        let status = submit(self.store, self.backend.queues.ready.as_ref(), &spec, self.max_attempts)
            .await
            .map_err(SubmitError::Unavailable)?;
        tracing::info!(job_id = %spec.job_id, source = %spec.source_key, outputs = spec.outputs.len(), "Job submitted.");
        Ok(Submitted { status, created: true })
    }
}

/// Publishes a job already made (attempt 1), then records it as queued, and returns its status.
///
/// The message goes first so that a crash in between can never leave a queued job that no
/// message will ever start: a worker taking the message before the status exists creates it.
/// If that already happened, the stored status is returned.
pub async fn submit(
    store: &JobStore,
    ready: &dyn Queue,
    job: &JobSpec,
    max_attempts: u32,
) -> anyhow::Result<JobStatus> {
    ready.send(&JobMessage::new(job.clone(), 1).to_json(), SendOptions::default()).await?;
    let event = Event::Submit { job: job.clone(), max_attempts };
    match store.apply(&job.job_id, &event).await? {
        Applied::Done { status, .. } => Ok(status),
        Applied::Refused { current: Some(status), .. } => Ok(status),
        Applied::Refused { reason, current: None } => {
            anyhow::bail!("job {} could not be recorded: {reason}", job.job_id)
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::Config;
    use crate::domain::job::ImportSource;

    struct Local {
        config: Config,
        backend: Backend,
        store: JobStore,
        _dir: tempfile::TempDir,
    }

    async fn local() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            ("MEDIA_BACKEND", "local".to_string()),
            ("MEDIA_DATA_DIR", dir.path().join("data").display().to_string()),
            ("MEDIA_WORK_DIR", dir.path().join("work").display().to_string()),
        ];
        let config = Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())).unwrap();
        let backend = crate::backend::connect(&config).await.unwrap();
        let store = crate::notify::job_store(&config, &backend);
        Local { config, backend, store, _dir: dir }
    }

    impl Local {
        fn submitter(&self) -> Submitter<'_> {
            Submitter::new(&self.store, &self.backend, 3)
        }

        fn job(&self, job_id: &str, source_key: &str) -> NewJob {
            NewJob::new(&self.config.layout, job_id.into(), source_key.into(), NewJob::outputs_of([Preset::Mp4H264]))
        }

        /// Stores a source, and takes the upload event it makes off the ready queue.
        async fn source(&self, key: &str, bytes: &[u8]) {
            self.backend.storage.put_bytes(key, bytes.to_vec(), "video/mp4").await.unwrap();
            self.ready().await;
        }

        /// The bodies waiting on the ready queue, taken off it.
        async fn ready(&self) -> Vec<String> {
            crate::queue::take_all(self.backend.queues.ready.as_ref()).await
        }
    }

    #[test]
    fn a_new_job_has_a_folder_of_its_own_and_each_preset_once() {
        let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
        let outputs = NewJob::outputs_of([Preset::Mp4H264, Preset::Thumbnail, Preset::Mp4H264]);
        assert_eq!(outputs, [OutputRequest::new(Preset::Mp4H264), OutputRequest::new(Preset::Thumbnail)]);
        let job = NewJob::new(&layout, "job-1".into(), "uploads/a.mp4".into(), outputs);
        assert_eq!(job.output_dir, layout.job_dir("uploads/a.mp4", "job-1"));
        let chosen = job.clone().in_folder("outputs/mine/");
        assert_eq!(chosen.output_dir, "outputs/mine/job-1/");

        let pin = SourcePin { etag: Some("e1".into()), version_id: None, size: Some(7) };
        let spec = chosen.clone().spec(pin.clone()).unwrap();
        assert_eq!((&spec.source, spec.output_dir.as_str()), (&pin, "outputs/mine/job-1/"));
        let mut again = spec.clone();
        again.source = SourcePin::default();
        assert!(chosen.asks_for(&again), "the pin is the job's, not the request's");
        assert!(!job.asks_for(&again), "another folder is another request");
        let none = NewJob { outputs: Vec::new(), ..job };
        assert_eq!(none.spec(SourcePin::default()), Err(SpecError::Outputs));
    }

    #[test]
    fn a_job_asked_for_again_gets_a_folder_of_its_own_next_to_the_old_one() {
        let layout = KeyLayout::new("uploads/", "outputs/").unwrap();
        let job = |id: &str, output_dir: &str| {
            let mut job = crate::domain::job::sample_job();
            (job.job_id, job.source_key, job.output_dir) =
                (id.into(), "uploads/2024/cat.mov".into(), output_dir.into());
            job.notify = Some(NotifyTarget { url: "https://example.com/hook".into() });
            job
        };
        let again = |old: &JobSpec, id: &str| NewJob::again(old, id.into(), &layout).output_dir;
        let layout_made = job("job-old", &layout.job_dir("uploads/2024/cat.mov", "job-old"));
        assert_eq!(again(&layout_made, "job-new"), layout.job_dir("uploads/2024/cat.mov", "job-new"));
        let api_made = job("job-old", "outputs/campaign-7/job-old/");
        assert_eq!(again(&api_made, "job-new"), "outputs/campaign-7/job-new/");
        // A hand-made folder not named after the job: the layout's folder.
        let hand_made = job("job-old", "outputs/somewhere/");
        assert_eq!(again(&hand_made, "job-new"), layout.job_dir("uploads/2024/cat.mov", "job-new"));
        let suffix_only = job("old", "outputs/x-old/");
        assert_eq!(again(&suffix_only, "new"), layout.job_dir("uploads/2024/cat.mov", "new"));

        let new = NewJob::again(&api_made, "job-new".into(), &layout);
        let spec = new.clone().spec(SourcePin::default()).unwrap();
        assert_eq!(spec, JobSpec { job_id: "job-new".into(), output_dir: new.output_dir, ..api_made });
    }

    #[tokio::test]
    async fn a_job_is_pinned_to_the_write_of_its_source_stored_now() {
        let local = local().await;
        let submitter = local.submitter();
        let missing = submitter.submit(local.job("job-missing", "uploads/none.mp4"), IfExists::Replay).await;
        assert!(matches!(missing, Err(SubmitError::SourceMissing(key)) if key == "uploads/none.mp4"));
        assert!(local.store.read("job-missing").await.unwrap().is_none());

        local.source("uploads/a.mp4", b"first write").await;
        let stored = local.backend.storage.head("uploads/a.mp4").await.unwrap().unwrap();
        let submitted = submitter.submit(local.job("job-a", "uploads/a.mp4"), IfExists::Replay).await.unwrap();
        assert!(submitted.created);
        let status = submitted.status;
        assert_eq!(status.state, JobState::Queued);
        assert_eq!(status.max_attempts, 3);
        assert_eq!(status.job.source, SourcePin { etag: stored.etag, version_id: None, size: Some(11) });
        assert_eq!(local.store.read("job-a").await.unwrap(), Some(status.clone()));
        let sent = local.ready().await;
        assert_eq!(sent, [JobMessage::new(status.job.clone(), 1).to_json()], "published once, at attempt 1");

        // An import has nothing stored yet: pinned to nothing, fetched by its worker.
        let job_id = crate::domain::job::new_job_id();
        let mut import = local.job(&job_id, &format!("uploads/imports/{job_id}/clip.mp4"));
        import.import = Some(ImportSource { url: "https://example.com/clip.mp4".into() });
        assert_eq!(submitter.pin(&import).await.unwrap(), SourcePin::default());
        let submitted = submitter.submit(import, IfExists::Replay).await.unwrap();
        assert_eq!(submitted.status.job.source, SourcePin::default());

        // A new import whose key holds a file (left by an expired job of the same id) is not
        // pinned to it: its worker fetches the URL. A redrive of a job that stored its import
        // is pinned to that stored file, and no storage error can refuse a new import.
        let key = format!("uploads/imports/{job_id}/clip.mp4");
        local.source(&key, b"stale").await;
        let mut fresh = local.job(&crate::domain::job::new_job_id(), &key);
        fresh.import = Some(ImportSource { url: "https://example.com/clip.mp4".into() });
        assert_eq!(submitter.pin(&fresh).await.unwrap(), SourcePin::default());
        let redriven = NewJob::again(&submitted.status.job, "job-again".into(), &local.config.layout);
        assert_eq!(submitter.pin(&redriven).await.unwrap().size, Some(5));
    }

    #[tokio::test]
    async fn an_existing_job_is_replayed_kept_or_refused_never_made_twice() {
        let local = local().await;
        let submitter = local.submitter();
        local.source("uploads/a.mp4", b"bytes").await;
        let first = submitter.submit(local.job("job-a", "uploads/a.mp4"), IfExists::Replay).await.unwrap();
        local.ready().await;

        // The same request again: the same job, its message sent again while it waits.
        let again = submitter.submit(local.job("job-a", "uploads/a.mp4"), IfExists::Replay).await.unwrap();
        assert_eq!(again, Submitted { status: first.status.clone(), created: false });
        assert_eq!(local.ready().await, [JobMessage::new(first.status.job.clone(), 1).to_json()]);

        // Another request under that id is refused; kept as it is, nothing is sent.
        let other = local.job("job-a", "uploads/a.mp4").in_folder("outputs/elsewhere/");
        assert!(
            matches!(submitter.submit(other.clone(), IfExists::Replay).await, Err(SubmitError::Reused(id)) if id == "job-a")
        );
        let kept = submitter.submit(other, IfExists::Keep).await.unwrap();
        assert_eq!(kept, Submitted { status: first.status.clone(), created: false });
        assert!(local.ready().await.is_empty());
        assert_eq!(local.store.read("job-a").await.unwrap(), Some(first.status));
    }

    #[tokio::test]
    async fn a_chosen_folder_lies_inside_no_job_s_folder() {
        let local = local().await;
        let submitter = local.submitter();
        local.source("uploads/a.mp4", b"bytes").await;
        let made = submitter.submit(local.job("job-a", "uploads/a.mp4").in_folder("outputs/mine/"), IfExists::Keep);
        assert_eq!(made.await.unwrap().status.job.output_dir, "outputs/mine/job-a/");
        assert!(submitter.check_folder("outputs/mine/", "outputs/").await.is_ok());
        assert!(submitter.check_folder("outputs/other/job-b/", "outputs/").await.is_ok(), "no such job");
        let inside = submitter.check_folder("outputs/mine/job-a/deeper/", "outputs/").await;
        assert!(matches!(inside, Err(SubmitError::InsideJob { job_id, .. }) if job_id == "job-a"));
        let invalid = submitter.check_folder("outputs/../x/", "outputs/").await;
        assert!(matches!(invalid, Err(SubmitError::NotAFolder { .. })), "{invalid:?}");
    }
}
