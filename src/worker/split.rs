//! The run that owns a split job (its coordinator): cuts the source into pieces, offers every
//! unfinished segment on the ready queue, makes the audio and the outputs that run whole,
//! waits for the segments' checkpoints, and stitches. Segments themselves are encoded by
//! [`super::segment`], on any worker.
//!
//! No serial head: once the segments are offered, the coordinator's own worker takes them at
//! once like every other. The audio is encoded meanwhile beside them, without a transcode
//! slot: one AAC encoder is a single thread, a small share of one video encode, and holding a
//! slot for it would put it before the worker's first segment (a serial head) or after its
//! last (a serial tail). A worker holding a segment takes no message ahead of its free
//! transcode slots (`MEDIA_PREFETCH` is for jobs): a segment taken ahead would wait there
//! while other workers run out of them at the job's end. The outputs made whole (thumbnail, storyboard, GIF, MP3) decode video, so they queue for a
//! transcode slot like a segment.
//!
//! Resuming is by records, not by memory: `split/split.json` (create-only) fixes the pieces
//! for every attempt of the job, and `split/segment-<n>.done.json` (create-only, written after
//! the segment's files) marks a segment finished for good. A later attempt, after a crash or a
//! shutdown, reuses both and offers only the segments without a checkpoint. Only the run that
//! holds the job (the lifecycle's fenced compare-and-swap) stitches, so exactly one stitch
//! completes a job.

mod stitch;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::permits::JobPermit;
use super::transcode::{Made, millis, ran_over, source_bounds};
use super::{Inner, JobError};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::JobMessage;
use crate::domain::keys::{done_key, failed_key, piece_file, piece_key, progress_key, record_key, split_dir};
use crate::domain::plan::{Decisions, PlannedOutput, plan_with};
use crate::domain::probe::MediaInfo;
use crate::domain::split::{
    Piece, Rendition, SPLIT_VERSION, SegmentDone, SegmentFailed, SegmentMessage, SegmentTask, SplitRecord, audio_args,
    cut_times, is_stitched, job_progress, parse_pieces, split_args,
};
use crate::domain::status::{SegmentTiming, SplitSummary, Stage, TaskTiming};
use crate::domain::watermark::Overlay;
use crate::jobs::Attempt;
use crate::media::ffmpeg::{Bounds, FfmpegProgress, run_ffmpeg};
use crate::queue::SendOptions;
use crate::storage::{CasOutcome, Precondition};

/// How often the coordinator looks for segment checkpoints.
const CHECKPOINT_POLL: Duration = Duration::from_millis(500);

/// The source, downloaded and probed.
pub(super) struct Whole<'a> {
    pub path: &'a Path,
    pub media: &'a MediaInfo,
    pub etag: Option<String>,
    /// The job's loudness filter: the whole source's audio (and any output made whole) gets
    /// it once, so every segment plays at the same gain.
    pub audio_filter: Option<&'a str>,
    /// The job's watermark and its checked image: the segments and the outputs made whole
    /// draw it alike.
    pub watermark: Option<(&'a Overlay, &'a Path)>,
}

/// What the coordinator of a split job made of it.
pub(super) enum Cut {
    /// Every output, in `out_dir`: the stitched ones from the segments, the others made whole.
    Stitched(Made),
    /// The source cannot be cut into at least two pieces (its keyframes are too sparse): the
    /// job is to be transcoded whole instead.
    TooFewPieces,
}

/// Makes every output of a split job in `out_dir`, or finds it cannot be cut.
#[allow(clippy::too_many_arguments)]
pub(super) async fn produce(
    inner: &Inner,
    message: &JobMessage,
    tracker: &Attempt,
    permit: &JobPermit,
    whole: &Whole<'_>,
    segment_duration: f64,
    renditions: Vec<Rendition>,
    dir: &Path,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<Cut, JobError> {
    let job = &message.job;
    tracker.stage(Stage::Splitting).await?;
    let clock = Instant::now();
    let mut tasks = Vec::new();
    let (record, split_ms) = match read_record(inner, &job.output_dir).await? {
        Some(record) if record.source_etag == whole.etag => (record, 0),
        _ => {
            let started_at = Utc::now();
            match cut(inner, job, whole, segment_duration, renditions, dir, stop).await? {
                Some(record) => {
                    tasks.push(inner.task_timing("split", started_at));
                    (record, millis(clock))
                }
                None => return Ok(Cut::TooFewPieces),
            }
        }
    };
    let count = u32::try_from(record.pieces.len()).unwrap_or(u32::MAX);
    tracing::info!(segments = count, split_ms, "Source split into segments.");

    let mut done = BTreeMap::new();
    let found = checkpoints(inner, &job.output_dir, &mut done).await?;
    clear_passing_failures(inner, &job.output_dir, &found.failed).await?;
    offer(inner, job, &record, &done).await?;
    tracker.stage(Stage::Transcoding).await?;
    // From here this worker encodes segments like any other; the audio runs beside them.
    permit.release();

    let clock = Instant::now();
    let waited = async {
        wait_for_segments(inner, &job.output_dir, tracker, &record.pieces, &mut done, stop).await?;
        Ok(millis(clock))
    };
    let (made, segments_ms) = tokio::try_join!(alongside(inner, message, whole, dir, out_dir, stop), waited)?;
    let (mut planned, alongside_ms) = (made.planned, made.ms);
    tasks.extend(made.tasks);

    tracker.stage(Stage::Stitching).await?;
    let clock = Instant::now();
    let started_at = Utc::now();
    planned.extend(stitch::stitch(inner, message, whole, &record, dir, out_dir, stop).await?);
    let stitch_ms = millis(clock);
    tasks.push(inner.task_timing("stitch", started_at));

    // In the job's order, as the manifest lists them.
    let outputs = job
        .outputs
        .iter()
        .filter_map(|o| planned.iter().position(|p| p.preset == o.preset).map(|i| planned[i].clone()))
        .collect();
    let split = SplitSummary {
        segments: count,
        segment_duration: record.segment_duration,
        split_ms,
        alongside_ms,
        segments_ms,
        stitch_ms,
        segment_timings: segment_timings(&record, &done),
        tasks,
    };
    Ok(Cut::Stitched(Made { outputs, speed: None, split: Some(split) }))
}

/// Who encoded each segment, when, and for how long.
fn segment_timings(record: &SplitRecord, done: &BTreeMap<u32, SegmentDone>) -> Vec<SegmentTiming> {
    record
        .pieces
        .iter()
        .map(|p| {
            let done = done.get(&p.index);
            SegmentTiming {
                index: p.index,
                start: p.start,
                end: p.end,
                worker: done.map(|d| d.worker.clone()).unwrap_or_default(),
                encode_ms: done.map_or(0, |d| d.encode_ms),
                started_at: done.and_then(|d| d.encode_started_at),
                finished_at: done.map(|d| d.finished_at),
            }
        })
        .collect()
}

/// The split pass, its pieces stored under `split/`, then the record (create-only: when two
/// runs race, the first record wins and both use it).
async fn cut(
    inner: &Inner,
    job: &crate::domain::job::JobSpec,
    whole: &Whole<'_>,
    segment_duration: f64,
    renditions: Vec<Rendition>,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<Option<SplitRecord>, JobError> {
    let pieces_dir = dir.join("pieces");
    tokio::fs::create_dir_all(&pieces_dir).await.map_err(|e| JobError::scratch("create the pieces folder", &e))?;
    let cuts = cut_times(whole.media.duration_seconds.unwrap_or_default(), segment_duration);
    let (sender, _receiver) = watch::channel(FfmpegProgress::default());
    let bounds = Bounds::on_scratch(&pieces_dir);
    run_ffmpeg(split_args(whole.path, &pieces_dir, &cuts), inner.config.job_timeout, stop, sender, &bounds).await?;
    let list = tokio::fs::read_to_string(pieces_dir.join("pieces.csv"))
        .await
        .map_err(|e| JobError::scratch("read the piece list", &e))?;
    let pieces: Vec<Piece> =
        parse_pieces(&list).map_err(|e| JobError::retryable(ErrorCode::SplitFailed, format!("the split pass: {e}")))?;
    if pieces.len() < 2 {
        tracing::info!("The source's keyframes are too sparse to split it; transcoding it whole.");
        return Ok(None);
    }
    for piece in &pieces {
        let key = piece_key(&job.output_dir, piece.index);
        inner.storage.put_file(&key, &pieces_dir.join(piece_file(piece.index)), "video/x-nut").await?;
    }
    let watermark = match whole.watermark {
        Some((overlay, image)) => {
            super::watermark::store_for_segments(inner, &job.output_dir, image).await?;
            Some(overlay.shifted(super::watermark::piece_shift(whole.path, &pieces_dir).await?))
        }
        None => None,
    };
    let record = SplitRecord {
        version: SPLIT_VERSION,
        source_etag: whole.etag.clone(),
        segment_duration,
        pieces,
        renditions,
        watermark,
        worker: inner.config.worker_id.clone(),
        split_ms: 0,
    };
    let body =
        serde_json::to_vec_pretty(&record).map_err(|e| JobError::retryable(ErrorCode::Internal, e.to_string()))?;
    let key = record_key(&job.output_dir);
    match inner.storage.put_if(&key, body, "application/json", Precondition::Absent).await? {
        CasOutcome::Written { .. } => Ok(Some(record)),
        CasOutcome::Conflict => read_record(inner, &job.output_dir)
            .await?
            .map(Some)
            .ok_or_else(|| JobError::retryable(ErrorCode::Storage, "the split record vanished")),
    }
}

pub(super) async fn read_record(inner: &Inner, output_dir: &str) -> Result<Option<SplitRecord>, JobError> {
    let Some(bytes) = inner.storage.get_bytes(&record_key(output_dir)).await? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| JobError::retryable(ErrorCode::Internal, format!("unreadable split record: {e}")))
}

/// The segments that failed for good, and those reporting progress.
struct Checkpoints {
    failed: Vec<u32>,
    running: Vec<u32>,
}

/// Lists `split/` once. Checkpoints not yet in `done` are read into it; a checkpoint is
/// create-only, so one read is enough for the whole wait.
async fn checkpoints(
    inner: &Inner,
    output_dir: &str,
    done: &mut BTreeMap<u32, SegmentDone>,
) -> Result<Checkpoints, JobError> {
    let folder = split_dir(output_dir);
    let mut found = Checkpoints { failed: Vec::new(), running: Vec::new() };
    for key in inner.storage.list(&folder).await? {
        let Some(name) = key.strip_prefix(&folder) else { continue };
        let index = |suffix: &str| name.strip_prefix("segment-")?.strip_suffix(suffix)?.parse::<u32>().ok();
        if let Some(i) = index(".done.json") {
            if !done.contains_key(&i)
                && let Some(bytes) = inner.storage.get_bytes(&key).await?
                && let Ok(record) = serde_json::from_slice::<SegmentDone>(&bytes)
            {
                done.insert(i, record);
            }
        } else if let Some(i) = index(".failed.json") {
            found.failed.push(i);
        } else if let Some(i) = index(".progress") {
            found.running.push(i);
        }
    }
    Ok(found)
}

/// Deletes the failure records an earlier attempt's segments left for a passing reason: this
/// attempt offers those segments again. A permanent one stays (and fails this attempt too).
async fn clear_passing_failures(inner: &Inner, output_dir: &str, failed: &[u32]) -> Result<(), JobError> {
    for &index in failed {
        let key = failed_key(output_dir, index);
        let passing = match inner.storage.get_bytes(&key).await? {
            Some(bytes) => serde_json::from_slice::<SegmentFailed>(&bytes).is_ok_and(|f| f.error.retryable),
            None => false,
        };
        if passing {
            inner.storage.delete(&key).await?;
            tracing::info!(segment = index, "Offering again a segment that failed for a passing reason.");
        }
    }
    Ok(())
}

/// Offers every segment without a checkpoint on the ready queue, in order: the pieces are cut
/// shortest last, so the last ones taken balance the workers' ends.
async fn offer(
    inner: &Inner,
    job: &crate::domain::job::JobSpec,
    record: &SplitRecord,
    done: &BTreeMap<u32, SegmentDone>,
) -> Result<(), JobError> {
    let count = u32::try_from(record.pieces.len()).unwrap_or(u32::MAX);
    for piece in record.pieces.iter().filter(|p| !done.contains_key(&p.index)) {
        let task = SegmentTask {
            job_id: job.job_id.clone(),
            output_dir: job.output_dir.clone(),
            index: piece.index,
            count,
            tries: 0,
        };
        inner
            .queues
            .ready
            .send(&SegmentMessage::new(task).to_json(), SendOptions::default())
            .await
            .map_err(|e| JobError::retryable(ErrorCode::Queue, format!("offer a segment: {e:#}")))?;
    }
    Ok(())
}

/// What the coordinator made from the whole source.
struct Alongside {
    planned: Vec<PlannedOutput>,
    /// From the start until both the audio and the outputs made whole were done.
    ms: u64,
    tasks: Vec<TaskTiming>,
}

/// The whole source's audio (beside the segments, without a transcode slot) and the outputs
/// made whole (with a slot, as a segment takes one), at the same time.
async fn alongside(
    inner: &Inner,
    message: &JobMessage,
    whole: &Whole<'_>,
    dir: &Path,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<Alongside, JobError> {
    let job = &message.job;
    let rest: Vec<_> = job.outputs.iter().filter(|o| !is_stitched(o.preset)).cloned().collect();
    let audio_dir = dir.join("split");
    tokio::fs::create_dir_all(&audio_dir).await.map_err(|e| JobError::scratch("create the split folder", &e))?;
    tokio::fs::create_dir_all(out_dir).await.map_err(|e| JobError::scratch("create the output folder", &e))?;
    let clock = Instant::now();
    // Two runs, not one: the audio alone never decodes the video, and the other outputs then
    // end as soon as they have their frames (a thumbnail does not wait for the source's end).
    let audio = async {
        if whole.media.audio.is_none() {
            return Ok(None);
        }
        let started_at = Utc::now();
        run_whole(
            inner,
            whole,
            audio_args(whole.path, &audio_dir.join("audio.m4a"), whole.audio_filter),
            out_dir,
            stop,
        )
        .await?;
        Ok::<_, JobError>(Some(inner.task_timing("audio", started_at)))
    };
    let outputs = async {
        if rest.is_empty() {
            return Ok((Vec::new(), None));
        }
        let decisions = Decisions { ladders: &[], audio_filter: whole.audio_filter, watermark: whole.watermark };
        let plan = plan_with(&rest, whole.media, whole.path, out_dir, &decisions)
            .map_err(|e| JobError::permanent(e.code(), e.to_string()))?;
        let slot = inner.transcode_slot().await?;
        let started_at = Utc::now();
        run_whole(inner, whole, plan.args, out_dir, stop).await?;
        drop(slot);
        for (file, content) in &plan.sidecars {
            tokio::fs::write(out_dir.join(file), content)
                .await
                .map_err(|e| JobError::scratch(&format!("write {file}"), &e))?;
        }
        Ok((plan.outputs, Some(inner.task_timing("whole", started_at))))
    };
    let (audio, (planned, made)) = tokio::try_join!(audio, outputs)?;
    Ok(Alongside { planned, ms: millis(clock), tasks: audio.into_iter().chain(made).collect() })
}

/// One ffmpeg run over the whole source, bounded by its length.
async fn run_whole(
    inner: &Inner,
    whole: &Whole<'_>,
    args: Vec<std::ffi::OsString>,
    out_dir: &Path,
    stop: &CancellationToken,
) -> Result<(), JobError> {
    let limits = &inner.config.limits;
    let bounds = source_bounds(limits, whole.media, out_dir);
    let (sender, _receiver) = watch::channel(FfmpegProgress::default());
    run_ffmpeg(args, inner.config.job_timeout, stop, sender, &bounds)
        .await
        .map_err(|e| ran_over(e, limits, whole.media))?;
    Ok(())
}

/// Waits until every segment has its checkpoint, reporting the job's progress (finished
/// segments, and running ones by what they last reported); a segment that failed for good
/// fails the job, naming it.
async fn wait_for_segments(
    inner: &Inner,
    output_dir: &str,
    tracker: &Attempt,
    pieces: &[Piece],
    done: &mut BTreeMap<u32, SegmentDone>,
    stop: &CancellationToken,
) -> Result<(), JobError> {
    let count = pieces.len();
    let mut running: BTreeMap<u32, f64> = BTreeMap::new();
    let mut progress_read = Instant::now().checked_sub(inner.config.heartbeat_interval).unwrap_or_else(Instant::now);
    loop {
        let found = checkpoints(inner, output_dir, done).await?;
        if let Some(&index) = found.failed.first() {
            let failed = match inner.storage.get_bytes(&failed_key(output_dir, index)).await? {
                Some(bytes) => serde_json::from_slice::<SegmentFailed>(&bytes).ok(),
                None => None,
            };
            let (reason, retryable) = failed.map_or((String::new(), false), |f| (f.error.message, f.error.retryable));
            let named = format!("segment {} of {count}", index + 1);
            let message = format!("segment {} of {count} could not be encoded: {reason}", index + 1);
            // A passing fault of a segment is one of the job's attempt: its retries decide.
            return Err(if retryable {
                JobError::retryable_naming(ErrorCode::SegmentFailed, named, message)
            } else {
                JobError::permanent_naming(ErrorCode::SegmentFailed, named, message)
            });
        }
        if done.len() >= count {
            return Ok(());
        }
        // Running segments refresh their progress once per heartbeat; read it as often.
        if progress_read.elapsed() >= inner.config.heartbeat_interval {
            progress_read = Instant::now();
            for &index in &found.running {
                if let Some(bytes) = inner.storage.get_bytes(&progress_key(output_dir, index)).await?
                    && let Some(fraction) = std::str::from_utf8(&bytes).ok().and_then(|t| t.trim().parse::<f64>().ok())
                {
                    running.insert(index, fraction);
                }
            }
        }
        tracker.set_progress(job_progress(pieces, &|i| done.contains_key(&i), &|i| running.get(&i).copied()));
        tokio::select! {
            () = tokio::time::sleep(CHECKPOINT_POLL) => {}
            () = stop.cancelled() => return Err(JobError::Interrupted),
        }
    }
}

/// Whether segment `index` has its checkpoint.
pub(super) async fn is_done(inner: &Inner, output_dir: &str, index: u32) -> Result<bool, JobError> {
    Ok(inner.storage.head(&done_key(output_dir, index)).await?.is_some())
}
