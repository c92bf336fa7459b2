//! The per-title analysis: before an HLS ladder with a quality target is encoded, a few short
//! windows of the source are encoded into every rung at a few CRFs and scored, and each rung
//! gets the CRF its worst window needs ([`crate::domain::per_title`] decides; this file runs the
//! encodes and the scoring). A split job analyses once, before it is cut, so every segment of a
//! rung uses the same CRF.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::transcode::millis;
use super::{Inner, JobError};
use crate::domain::delivery::VideoCodec;
use crate::domain::job::{JobSpec, OutputRequest};
use crate::domain::per_title::probe::{
    ProbeRung, copies_losslessly, lead_in, probe_args, window_copy_args, window_start_in_probe,
};
use crate::domain::per_title::{
    Complexity, LadderDecision, Probe, QualityTarget, RungCandidate, RungRole, SampleBudget, Window, choose_crf,
    first_probe, next_probe, sample_windows, worth_probing,
};
use crate::domain::plan::{hls_rungs, rung_name};
use crate::domain::preset::Preset;
use crate::domain::probe::MediaInfo;
use crate::domain::quality::{BITRATE_WINDOW_SECONDS, bitrate, scoring_size};
use crate::domain::status::Stage;
use crate::jobs::Attempt;
use crate::media::ffmpeg::{Bounds, run_ffmpeg};
use crate::media::quality::{ScoreRequest, Window as ScoreWindow, packet_sizes, score_many, video_packets};

/// Longest one probe encode or one probe's scoring may take: a window is a few seconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(300);

/// Every how many frames of a probe one is scored. Past 3 the decoders pass only the frames
/// around each scored one ([`crate::media::quality`]): the pictures neither scaled to the viewing
/// size nor piped nor read by libvmaf are most of a probe's scoring. On the test set's clips
/// repeated to 120 s (five kinds of content, 11 rungs at their decided CRFs, 33 window probes
/// against the oracle's every frame, `scripts/bench-probe-sampling`), the window means over
/// every 5th frame stayed within 0.72 VMAF of every frame's (0.26 on average), where every 3rd
/// missed by up to 1.21 (0.36 on average, +0.3 to +0.6 on every window of the dark clip) and
/// every 7th by up to 1.08 (docs/per-title.md, "Cost").
const PROBE_SUBSAMPLE: u32 = 5;

/// The most probes a rung gets (the search stops earlier when a probe lands on the target).
const MAX_ROUNDS: usize = 3;

/// The quality target an output asks for, or the deployment's default, for an H.264 ladder: the
/// `hls` preset, or a `cmaf` ladder with H.264 rungs (their CRFs are decided; see
/// [`crate::domain::plan::cmaf_ladder`]).
pub(super) fn target_of(output: &OutputRequest, default: Option<QualityTarget>) -> Option<QualityTarget> {
    let h264_ladder = match output.preset {
        Preset::Hls => true,
        Preset::Cmaf => output.codecs.as_ref().is_none_or(|c| c.contains(&VideoCodec::H264)),
        _ => false,
    };
    h264_ladder.then(|| output.quality.or(default)).flatten()
}

/// Each output's ladder decision (in the job's order): `None` for outputs without a target.
pub(super) async fn analyse(
    inner: &Inner,
    job: &JobSpec,
    tracker: &Attempt,
    source: &Path,
    media: &MediaInfo,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<Vec<Option<LadderDecision>>, JobError> {
    let mut decisions: Vec<Option<LadderDecision>> = vec![None; job.outputs.len()];
    for (index, output) in job.outputs.iter().enumerate() {
        let Some(target) = target_of(output, inner.config.quality_target) else { continue };
        // An `hls` and a `cmaf` ladder of the same rungs and target decide alike: analysed once.
        let same = |o: &OutputRequest| {
            target_of(o, inner.config.quality_target) == Some(target) && hls_rungs(o, media) == hls_rungs(output, media)
        };
        if let Some(earlier) = job.outputs[..index].iter().position(same) {
            decisions[index] = decisions[earlier].clone();
            continue;
        }
        // A ladder with nothing to probe is decided at once: no stage, no transcode slot.
        let probing = worth_probing(hls_rungs(output, media).len());
        if probing {
            tracker.stage(Stage::Analysing).await?;
        }
        let slot = if probing { Some(inner.transcode_slot().await?) } else { None };
        let clock = Instant::now();
        let decision = ladder(output, target, source, media, dir, stop).await?;
        drop(slot);
        decisions[index] = decision.map(|mut d| {
            d.analysis_ms = Some(millis(clock));
            d
        });
    }
    Ok(decisions)
}

/// The decision for one HLS output, or `None` when the source cannot be sampled (no length,
/// no picture size): the fixed ladder then applies. A one-rung ladder is decided without
/// probes ([`worth_probing`]).
async fn ladder(
    output: &OutputRequest,
    target: QualityTarget,
    source: &Path,
    media: &MediaInfo,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<Option<LadderDecision>, JobError> {
    let Some(duration) = media.duration_seconds.filter(|d| *d > 0.0) else { return Ok(None) };
    let Some((width, height)) = media.display_dimensions().map(|(w, h)| scoring_size(w, h)) else { return Ok(None) };
    let rungs = hls_rungs(output, media);
    let last = rungs.len().saturating_sub(1);
    let role = |i: usize| match i {
        i if i == last => RungRole::Bottom,
        0 => RungRole::Top,
        _ => RungRole::Lower,
    };
    let mut probes: Vec<Vec<Probe>> = vec![Vec::new(); rungs.len()];
    let decide = |windows: Vec<Window>, probes: Vec<Vec<Probe>>| {
        let candidates = rungs
            .iter()
            .zip(probes)
            .enumerate()
            .map(|(i, (&(height, cap_kbps), probes))| RungCandidate {
                name: rung_name(height),
                height,
                cap_kbps,
                choice: choose_crf(role(i), &probes, target.vmaf),
                probes,
            })
            .collect();
        Some(LadderDecision::new(target, duration, windows, candidates))
    };
    if !worth_probing(rungs.len()) {
        return Ok(decide(Vec::new(), probes));
    }
    let complexity = source_complexity(source, stop).await?;
    let windows = sample_windows(duration, &complexity, &SampleBudget::default());
    if windows.is_empty() {
        return Ok(None);
    }
    let mut next: Vec<Option<u32>> = vec![Some(first_probe()); rungs.len()];
    let folder = dir.join("per-title");
    tokio::fs::create_dir_all(&folder).await.map_err(|e| JobError::scratch("create per-title", &e))?;
    let lossless = copies_losslessly(media.video.as_ref().and_then(|v| v.pix_fmt.as_deref()));
    let inputs = window_inputs(source, &windows, lossless, &complexity, &folder, stop).await?;
    let cx = ProbeCx { inputs: &inputs, folder: &folder, size: (width, height), stop };
    for _ in 0..MAX_ROUNDS {
        let active: Vec<(usize, ProbeRung)> = next
            .iter()
            .enumerate()
            .filter_map(|(i, crf)| {
                let (crf, (height, cap_kbps)) = ((*crf)?, rungs[i]);
                let file = folder.join(format!("{}-crf{crf}.mp4", rung_name(height)));
                Some((i, ProbeRung { height, crf, cap_kbps, file }))
            })
            .collect();
        if active.is_empty() {
            break;
        }
        let measured = cx.round(&active).await?;
        for ((i, _), probe) in active.iter().zip(measured) {
            probes[*i].push(probe);
            next[*i] = next_probe(role(*i), rungs[*i].1, &probes[*i], target.vmaf);
        }
    }
    let _ = tokio::fs::remove_dir_all(&folder).await;
    Ok(decide(windows, probes))
}

/// How hard each stretch of the source is to encode, from its own packets (ffprobe reads the
/// file once, decoding nothing), so a window can go to a stretch far harder than the rest
/// ([`Complexity`]); an empty profile, the windows then centred in their shares of the title,
/// when the packets cannot be listed.
async fn source_complexity(source: &Path, stop: &CancellationToken) -> Result<Complexity, JobError> {
    let listed = tokio::select! {
        listed = video_packets(source, PROBE_TIMEOUT) => listed,
        () = stop.cancelled() => return Err(JobError::Interrupted),
    };
    Ok(match listed {
        Ok(packets) => Complexity::from_packets(packets.into_iter().map(|p| (p.time, p.bytes, p.key))),
        Err(err) => {
            tracing::warn!(error = %err, "The source's packets could not be listed; the sample windows are centred in their shares.");
            Complexity::default()
        }
    })
}

/// Where each window is read from: a lossless copy of it (its lead-in, then the window), or
/// the source itself (at the window). The copy is made once, so the rounds and their scoring
/// decode the window's frames only, not the source from the keyframe before the window every
/// time; it is made where that keyframe is more than a window's length before the lead-in (or
/// unknown), and the source's pixels copy losslessly. Elsewhere, or if the copy fails, the
/// probes read the source.
async fn window_inputs(
    source: &Path,
    windows: &[Window],
    lossless: bool,
    complexity: &Complexity,
    folder: &Path,
    stop: &CancellationToken,
) -> Result<Vec<(PathBuf, Window)>, JobError> {
    let mut inputs = Vec::with_capacity(windows.len());
    for (i, window) in windows.iter().enumerate() {
        let file = folder.join(format!("window-{i}.mp4"));
        let wasted = complexity.decoded_before(window.start - lead_in(window));
        let copied = if lossless && wasted.is_none_or(|seconds| seconds > window.duration) {
            let (sender, _receiver) = watch::channel(Default::default());
            let bounds = Bounds::on_scratch(folder).lasting(window.duration + 1.0);
            let args = window_copy_args(source, window, &file);
            match run_ffmpeg(args, PROBE_TIMEOUT, stop, sender, &bounds).await {
                Ok(_) => true,
                Err(err) if stop.is_cancelled() => return Err(err.into()),
                Err(err) => {
                    tracing::warn!(error = %err, "A sample window could not be copied; the probes read the source.");
                    false
                }
            }
        } else {
            false
        };
        inputs.push(if copied {
            (file, Window { start: lead_in(window), duration: window.duration })
        } else {
            (source.to_path_buf(), *window)
        });
    }
    Ok(inputs)
}

/// What every probe round shares: where each window is read, the scratch folder, the scoring
/// size.
struct ProbeCx<'a> {
    inputs: &'a [(PathBuf, Window)],
    folder: &'a Path,
    size: (u32, u32),
    stop: &'a CancellationToken,
}

/// One window's measure of one rung's probe.
#[derive(Default, Clone, Copy)]
struct WindowScore {
    vmaf_sum: f64,
    frames: usize,
    bits: f64,
    seconds: f64,
    peak_kbps: f64,
    worst: Option<f64>,
    /// The average rate of the window that scored `worst`.
    worst_kbps: f64,
}

impl ProbeCx<'_> {
    /// Encodes every window into the active rungs (one decode per window) and scores each; one
    /// probe per active rung, in the order given.
    async fn round(&self, active: &[(usize, ProbeRung)]) -> Result<Vec<Probe>, JobError> {
        let mut totals = vec![WindowScore::default(); active.len()];
        for (input, window) in self.inputs {
            let rungs: Vec<ProbeRung> = active.iter().map(|(_, r)| r.clone()).collect();
            let (sender, _receiver) = watch::channel(Default::default());
            let bounds = Bounds::on_scratch(self.folder).lasting(window.duration + 1.0);
            run_ffmpeg(probe_args(input, window, &rungs), PROBE_TIMEOUT, self.stop, sender, &bounds).await?;
            self.measure(input, window, &rungs, &mut totals).await?;
        }
        Ok(active
            .iter()
            .zip(totals)
            .map(|((_, rung), t)| Probe {
                crf: rung.crf,
                worst_window_vmaf: t.worst.unwrap_or(0.0),
                mean_vmaf: if t.frames > 0 { t.vmaf_sum / t.frames as f64 } else { 0.0 },
                kbps: if t.seconds > 0.0 { t.bits / t.seconds / 1000.0 } else { 0.0 },
                peak_kbps: t.peak_kbps,
                worst_window_kbps: t.worst_kbps,
            })
            .collect())
    }

    /// Scores one window's probe of every rung (against one decode of the window) into
    /// `totals`, then removes the probes' files. The lead-in is decoded and scored with the
    /// window (both sides then start on the same frame) and left out of the scores and rates.
    async fn measure(
        &self,
        input: &Path,
        window: &Window,
        rungs: &[ProbeRung],
        totals: &mut [WindowScore],
    ) -> Result<(), JobError> {
        let lead = lead_in(window);
        let start = window_start_in_probe(window);
        let in_window = |time: f64| time >= start;
        let read = ScoreWindow { start: window.start - lead, duration: Some(lead + window.duration) };
        let requests: Vec<ScoreRequest> = rungs
            .iter()
            .map(|rung| ScoreRequest {
                reference_window: Some(read),
                subsample: PROBE_SUBSAMPLE,
                timeout: PROBE_TIMEOUT,
                ..ScoreRequest::new(input, &rung.file, self.size.0, self.size.1)
            })
            .collect();
        let scored = tokio::select! {
            scored = score_many(&requests) => scored,
            () = self.stop.cancelled() => return Err(JobError::Interrupted),
        };
        for ((rung, scores), total) in rungs.iter().zip(scored).zip(totals.iter_mut()) {
            let scores = scores.map_err(|e| {
                JobError::retryable(
                    crate::domain::error_code::ErrorCode::TranscodeFailed,
                    format!("scoring a probe: {e}"),
                )
            })?;
            let mut packets = packet_sizes(&rung.file, PROBE_TIMEOUT).await.unwrap_or_default();
            packets.retain(|&(time, _)| in_window(time));
            let rate = bitrate(&packets, window.duration, BITRATE_WINDOW_SECONDS);
            let scored: Vec<f64> =
                scores.vmaf.iter().zip(&scores.times).filter(|&(_, &t)| in_window(t)).map(|(&v, _)| v).collect();
            let frames = scored.len();
            let mean = if frames > 0 { scored.iter().sum::<f64>() / frames as f64 } else { 0.0 };
            total.vmaf_sum += mean * frames as f64;
            total.frames += frames;
            total.bits += rate.average_kbps * 1000.0 * window.duration;
            total.seconds += window.duration;
            total.peak_kbps = total.peak_kbps.max(rate.peak_kbps);
            if total.worst.is_none_or(|worst| mean < worst) {
                total.worst = Some(mean);
                total.worst_kbps = rate.average_kbps;
            }
            let _ = tokio::fs::remove_file(&rung.file).await;
        }
        Ok(())
    }
}
