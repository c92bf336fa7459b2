//! Several renditions scored against one decode of their reference ([`score_many`]).
//!
//! Every rendition of a job is scored against the same source: decoding it once per
//! rendition repeats the most expensive decode of the scoring (the source is the largest and
//! least compressed input) as many times as there are renditions. Here one ffmpeg decodes the
//! reference (scaled, with the subsample's `select`) and an in-process tee hands each picture to
//! every rendition's scoring, each with its own distorted decoder and libvmaf context. The
//! scores are those of [`super::score`] on each request alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::{mpsc, watch};

use super::decoder::Decoder;
use super::{QualityError, Sampling, ScoreRequest, Side, score, score_inputs, validate};
use crate::domain::quality::FrameScores;
use crate::media::vmaf::yuv420p_size;

/// Pictures the tee keeps in flight for each scoring.
const PICTURES_IN_FLIGHT: usize = 2;

/// Decoder threads when several decoders run at once: they already keep the cores busy, and
/// one thread each avoids frame threading's overhead.
const SHARED_DECODER_THREADS: u32 = 1;

/// The end of the shared reference: its decoded frames' times, or why it failed.
type Ending = Option<Result<Arc<Vec<f64>>, Arc<QualityError>>>;

/// One side of a scoring: a decoder of its own, or the shared reference's pictures.
pub(super) enum Input {
    Own(Box<Decoder>),
    Shared(SharedReference),
}

/// A scoring's view of the shared reference decoder.
pub(super) struct SharedReference {
    pictures: mpsc::Receiver<Arc<Vec<u8>>>,
    ending: watch::Receiver<Ending>,
}

impl Input {
    pub(super) fn side(&self) -> Side {
        match self {
            Input::Own(decoder) => decoder.side,
            Input::Shared(_) => Side::Reference,
        }
    }

    /// Fills `buffer` with the next picture; false at the end of the stream.
    pub(super) async fn next(&mut self, buffer: &mut [u8]) -> Result<bool, QualityError> {
        match self {
            Input::Own(decoder) => decoder.next(buffer).await,
            Input::Shared(shared) => match shared.pictures.recv().await {
                Some(picture) if picture.len() == buffer.len() => {
                    buffer.copy_from_slice(&picture);
                    Ok(true)
                }
                Some(_) => Err(QualityError::Thread("a shared picture has the wrong size".into())),
                None => Ok(false),
            },
        }
    }

    /// The frames' times once the input ended (see [`Decoder::finish`]).
    pub(super) async fn finish(self) -> Result<Vec<f64>, QualityError> {
        match self {
            Input::Own(decoder) => (*decoder).finish().await,
            Input::Shared(SharedReference { pictures, mut ending }) => {
                drop(pictures);
                let ended = ending.wait_for(Option::is_some).await;
                let stopped = || QualityError::Thread("the reference decoder stopped".into());
                let ending = ended.map_err(|_| stopped())?.clone().ok_or_else(stopped)?;
                ending.map(|times| times.as_ref().clone()).map_err(|e| copy_error(&e))
            }
        }
    }
}

/// Scores every request, decoding each reference once for all the requests that read it the
/// same way (same file, window, size and subsample step): one result per request, in order.
/// Each request keeps its own timeout; a rendition that fails does not stop the others.
pub async fn score_many(requests: &[ScoreRequest]) -> Vec<Result<FrameScores, QualityError>> {
    let mut results: Vec<Option<Result<FrameScores, QualityError>>> = requests.iter().map(|_| None).collect();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, request) in requests.iter().enumerate() {
        match validate(request) {
            Ok(()) => groups.entry(group_key(request)).or_default().push(i),
            Err(err) => results[i] = Some(Err(err)),
        }
    }
    for members in groups.into_values() {
        let group: Vec<&ScoreRequest> = members.iter().map(|&i| &requests[i]).collect();
        let scored = if let [one] = group[..] { vec![score(one).await] } else { score_group(&group).await };
        for (i, result) in members.into_iter().zip(scored) {
            results[i] = Some(result);
        }
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(QualityError::Thread("not scored".into())))).collect()
}

/// What makes two requests' reference decoders the same.
fn group_key(request: &ScoreRequest) -> String {
    format!(
        "{:?}|{:?}|{}x{}|{}",
        request.reference, request.reference_window, request.width, request.height, request.subsample
    )
}

/// Scores a group of valid requests sharing one reference decoder.
async fn score_group(group: &[&ScoreRequest]) -> Vec<Result<FrameScores, QualityError>> {
    let first = group[0];
    let sampling = Sampling::new(first.subsample);
    let (select, distorted_select) = (sampling.select(), sampling.distorted_select());
    let threads = Some(SHARED_DECODER_THREADS);
    let spawn_reference =
        Decoder::spawn(Side::Reference, &first.reference, first.reference_window, first, select.as_deref(), threads);
    let (reference, frame_bytes) = match (spawn_reference, yuv420p_size(first.width, first.height)) {
        (Ok(decoder), Some(bytes)) => (decoder, bytes),
        (Err(err), _) => return group.iter().map(|_| Err(copy_error(&err))).collect(),
        (_, None) => return group.iter().map(|_| Err(QualityError::Invalid("scoring size".into()))).collect(),
    };
    let (ending_sender, ending) = watch::channel(None);
    let mut senders = Vec::with_capacity(group.len());
    let scorings = group.iter().map(|request| {
        let (sender, pictures) = mpsc::channel(PICTURES_IN_FLIGHT);
        senders.push(sender);
        let reference = Input::Shared(SharedReference { pictures, ending: ending.clone() });
        let distorted_select = distorted_select.as_deref();
        async move {
            let run = async {
                let distorted = Decoder::spawn(
                    Side::Distorted,
                    &request.distorted,
                    request.distorted_window,
                    request,
                    distorted_select,
                    threads,
                )?;
                score_inputs(request, sampling, reference, Input::Own(Box::new(distorted))).await
            };
            tokio::time::timeout(request.timeout, run).await.map_err(|_| QualityError::Timeout(request.timeout))?
        }
    });
    let scorings: Vec<_> = scorings.collect();
    let (_, results) = tokio::join!(tee(reference, frame_bytes, senders, ending_sender), join_all(scorings));
    results
}

/// Reads the reference decoder to its end, handing every picture to each scoring still
/// reading, then publishes the frames' times (or the failure) and closes the pictures. Stops
/// the decoder when no scoring reads any more.
async fn tee(
    mut decoder: Decoder,
    frame_bytes: usize,
    senders: Vec<mpsc::Sender<Arc<Vec<u8>>>>,
    ending: watch::Sender<Ending>,
) {
    let to = &senders;
    let outcome = async move {
        loop {
            let mut picture = vec![0; frame_bytes];
            if !decoder.next(&mut picture).await? {
                break;
            }
            let picture = Arc::new(picture);
            let mut reading = 0;
            for sender in to {
                if sender.send(Arc::clone(&picture)).await.is_ok() {
                    reading += 1;
                }
            }
            if reading == 0 {
                return Err(QualityError::Thread("no scoring reads the reference any more".into()));
            }
        }
        decoder.finish().await
    }
    .await;
    ending.send_replace(Some(outcome.map(Arc::new).map_err(Arc::new)));
    drop(senders);
}

/// The same error for another scoring of the group (the errors hold I/O errors, which do not
/// clone).
fn copy_error(err: &QualityError) -> QualityError {
    let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
    match err {
        QualityError::Invalid(what) => QualityError::Invalid(what.clone()),
        QualityError::Spawn { program, source } => QualityError::Spawn { program, source: io(source) },
        QualityError::Decode { side, reason } => QualityError::Decode { side: *side, reason: reason.clone() },
        QualityError::NoFrames { side } => QualityError::NoFrames { side: *side },
        QualityError::Timeout(after) => QualityError::Timeout(*after),
        QualityError::Pipe(e) => QualityError::Pipe(io(e)),
        other => QualityError::Thread(other.to_string()),
    }
}
