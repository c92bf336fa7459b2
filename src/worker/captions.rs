//! The caption files of a `cmaf` output: fetched from the caller's uploads, told apart by
//! their content, and turned into WebVTT by ffmpeg (which reads only the local copy, with the
//! demuxer named on its command), with the `X-TIMESTAMP-MAP` HLS players need. The source's
//! own text tracks ([`extract_embedded`]) end the same way.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Inner, JobError};
use crate::domain::args::strings;
use crate::domain::cmaf::package::caption_file;
use crate::domain::delivery::{CaptionFormat, CaptionTrack, MAX_CAPTION_BYTES, with_timestamp_map_at};
use crate::domain::error_code::ErrorCode;
use crate::domain::subtitles::{EmbeddedPlan, Origin, closed_caption_args, extract_args};
use crate::media::ffmpeg::{Bounds, FfmpegError, FfmpegProgress, run_ffmpeg};

/// A conversion of a few hundred kilobytes of text takes well under a second.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(60);

/// A caption track ready to package: its WebVTT file, relative to the `cmaf` folder.
pub(super) struct Prepared<'a> {
    pub track: &'a CaptionTrack,
    pub file: String,
}

/// The 90 kHz time a new package's captions map their zero to: the renditions' presentation
/// time 0.
pub(super) const CAPTION_MPEGTS: u64 = 0;

/// Fetches and converts every track into `<folder>/captions-<language>.vtt`.
pub(super) async fn prepare<'a>(
    inner: &Inner,
    tracks: &'a [CaptionTrack],
    folder: &Path,
    stop: &CancellationToken,
) -> Result<Vec<Prepared<'a>>, JobError> {
    prepare_at(inner, tracks, folder, stop, CAPTION_MPEGTS).await
}

/// [`prepare`], with the `X-TIMESTAMP-MAP` mapping the cues' zero to the 90 kHz time `mpegts`.
pub(super) async fn prepare_at<'a>(
    inner: &Inner,
    tracks: &'a [CaptionTrack],
    folder: &Path,
    stop: &CancellationToken,
    mpegts: u64,
) -> Result<Vec<Prepared<'a>>, JobError> {
    let mut prepared = Vec::new();
    for (i, track) in tracks.iter().enumerate() {
        // The language is the caller's own (and checked); the key stays in the log.
        let refuse = |why: &str| {
            let detail = format!("captions[{i}] ({}): {why}", track.language);
            JobError::permanent_naming(ErrorCode::InvalidCaptions, detail, format!("caption `{}`: {why}", track.key))
        };
        let info = inner.storage.head(&track.key).await?.ok_or_else(|| refuse("the caption file does not exist"))?;
        if info.size > MAX_CAPTION_BYTES {
            return Err(refuse(&format!("the caption file is larger than {MAX_CAPTION_BYTES} bytes")));
        }
        let local = folder.join(format!(".captions-{i}.source"));
        inner.storage.get_to_file(&track.key, &local).await?;
        let format = sniff(&local).await?.ok_or_else(|| refuse("the caption file is not SubRip, WebVTT or SCC"))?;
        let file = caption_file(&track.language);
        let out = folder.join(&file);
        let converted = convert(&local, format, &out, stop).await;
        let _ = tokio::fs::remove_file(&local).await;
        match converted {
            Ok(()) => {}
            Err(FfmpegError::Failed { .. }) => return Err(refuse("ffmpeg could not read the caption file")),
            Err(other) => return Err(other.into()),
        }
        let vtt =
            tokio::fs::read_to_string(&out).await.map_err(|e| JobError::scratch("read converted captions", &e))?;
        tokio::fs::write(&out, with_timestamp_map_at(&vtt, mpegts))
            .await
            .map_err(|e| JobError::scratch("write converted captions", &e))?;
        prepared.push(Prepared { track, file });
    }
    Ok(prepared)
}

/// Extracts the source's text tracks `plan` names into `folder`: one ffmpeg run for every
/// subtitle stream, one more (a decode of the video) for closed captions, each file then given
/// its `X-TIMESTAMP-MAP`. Closed captions that give no cue (CEA-708 only, or empty channel 1)
/// are left out. A stream ffmpeg cannot convert fails the job (`invalid_captions`): the
/// caller asked for the source's tracks, or left the default on.
pub(super) async fn extract_embedded<'a>(
    inner: &Inner,
    plan: &'a EmbeddedPlan,
    folder: &Path,
    stop: &CancellationToken,
) -> Result<Vec<Prepared<'a>>, JobError> {
    let timeout = inner.config.job_timeout;
    if plan.streams().next().is_some() {
        run(extract_args(plan, folder), timeout, folder, stop)
            .await
            .map_err(|e| unconvertible(e, "subtitle streams"))?;
    }
    let mut prepared = Vec::new();
    for track in &plan.tracks {
        let out = folder.join(&track.file);
        if track.origin == Origin::ClosedCaptions {
            let Some(args) = closed_caption_args(&plan.source, &out) else {
                tracing::warn!("The source's path is not UTF-8; its closed captions are left out.");
                continue;
            };
            run(args, timeout, folder, stop).await.map_err(|e| unconvertible(e, "closed captions"))?;
        }
        let vtt =
            tokio::fs::read_to_string(&out).await.map_err(|e| JobError::scratch("read extracted captions", &e))?;
        if track.origin == Origin::ClosedCaptions && !vtt.contains("-->") {
            tracing::info!("The source's closed captions hold no CEA-608 cue; left out.");
            let _ = tokio::fs::remove_file(&out).await;
            continue;
        }
        tokio::fs::write(&out, with_timestamp_map_at(&vtt, CAPTION_MPEGTS))
            .await
            .map_err(|e| JobError::scratch("write extracted captions", &e))?;
        prepared.push(Prepared { track: &track.track, file: track.file.clone() });
    }
    Ok(prepared)
}

async fn run(
    args: Vec<OsString>,
    timeout: Duration,
    folder: &Path,
    stop: &CancellationToken,
) -> Result<(), FfmpegError> {
    let (sender, _receiver) = watch::channel(FfmpegProgress::default());
    run_ffmpeg(args, timeout, stop, sender, &Bounds::on_scratch(folder)).await.map(|_| ())
}

/// The job's error for an extraction ffmpeg could not do: the source's fault when ffmpeg
/// failed on it, the run's own otherwise (a timeout, a full disk, a stop).
fn unconvertible(err: FfmpegError, what: &str) -> JobError {
    match err {
        FfmpegError::Failed { .. } => JobError::permanent_naming(
            ErrorCode::InvalidCaptions,
            format!(
                "the source's {what} could not be converted to WebVTT (`embedded_captions: false` leaves them out)"
            ),
            format!("ffmpeg could not extract the source's {what}: {err}"),
        ),
        other => other.into(),
    }
}

/// The format of the local copy, from its first kilobytes.
async fn sniff(path: &Path) -> Result<Option<CaptionFormat>, JobError> {
    let mut head = vec![0u8; 4096];
    let read = async {
        let mut file = tokio::fs::File::open(path).await?;
        file.read(&mut head).await
    };
    let n = read.await.map_err(|e| JobError::scratch("read a caption file", &e))?;
    Ok(CaptionFormat::sniff(&head[..n]))
}

/// The argv turning a caption file of `format` into WebVTT.
fn convert_args(input: &Path, format: CaptionFormat, out: &Path) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-f", format.demuxer()]);
    args.push("-i".into());
    args.push(input.as_os_str().to_owned());
    args.extend(strings(&["-map", "0:s:0", "-c:s", "webvtt", "-f", "webvtt"]));
    args.push(out.as_os_str().to_owned());
    args
}

async fn convert(input: &Path, format: CaptionFormat, out: &Path, stop: &CancellationToken) -> Result<(), FfmpegError> {
    let (sender, _receiver) = watch::channel(FfmpegProgress::default());
    let bounds = Bounds::on_scratch(out.parent().unwrap_or(out));
    run_ffmpeg(convert_args(input, format, out), CONVERT_TIMEOUT, stop, sender, &bounds).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demuxer_is_named_and_only_the_first_subtitle_stream_is_read() {
        let args = convert_args(Path::new("/s/in"), CaptionFormat::SubRip, Path::new("/s/out.vtt"));
        let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            text.join(" "),
            "-hide_banner -nostdin -y -protocol_whitelist file -f srt -i /s/in -map 0:s:0 -c:s webvtt -f webvtt /s/out.vtt"
        );
    }

    /// The `movie` source opens a source whose path holds every character the filter graph
    /// treats specially; a video without captions gives a WebVTT file without cues.
    #[tokio::test]
    async fn closed_captions_are_read_from_any_path() {
        let ffmpeg = std::process::Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success());
        if !ffmpeg {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "ffmpeg is missing, and CI=true forbids skipping"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("it's a [test], x=1; y:z\\q");
        std::fs::create_dir_all(&folder).unwrap();
        let source = folder.join("in.mp4");
        let made = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1", "-c:v", "libx264"])
            .arg(&source)
            .status()
            .unwrap();
        assert!(made.success());
        let out = dir.path().join("cc.vtt");
        let args = closed_caption_args(&source, &out).unwrap();
        run(args, Duration::from_secs(60), dir.path(), &CancellationToken::new()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "WEBVTT");
    }
}
