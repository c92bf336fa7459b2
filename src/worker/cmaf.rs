//! Packaging a `cmaf` ladder after ffmpeg: every rendition's fragmented MP4 is indexed, cut
//! into segments on the same times, and announced by our own HLS playlists and DASH MPD.
//!
//! Layout under `cmaf/` (both manifests address the same bytes):
//! - segments: `<rendition>/init.mp4`, `<rendition>/segment_NNNNN.m4s`, `<rendition>/index.m3u8`;
//! - single file: `<rendition>.mp4` (with its `sidx`), `<rendition>.m3u8` of byte ranges;
//! - captions: `captions-<language>.vtt` and its playlist `captions-<language>.m3u8`, the
//!   source's own tracks `captions-<language>_s<stream>.vtt` (`_cc1` for closed captions);
//! - always: `master.m3u8` (HLS), `manifest.mpd` (DASH), and `package.json`, what both writers
//!   were given ([`Package`]), from which a later job re-renders them with more caption tracks.
//!
//! Segments of a codec's rungs start on the same instants (the largest rung's cut times; the
//! keyframes of every rung fall on one clock), so players switch rungs at any boundary; the
//! audio cuts at the fragment nearest each of those instants.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::captions;
use super::{Inner, JobError};
use crate::domain::cmaf::dash::{self, AdaptationSet, ContentType, Media, Mpd, Representation};
use crate::domain::cmaf::hls::{self, AudioRendition, Variant};
use crate::domain::cmaf::package::{PACKAGE_FILE, PACKAGE_VERSION, Package};
use crate::domain::cmaf::{Bandwidth, Segment, TrackIndex, TrackKind, bandwidth, cut_times, segments_at};
use crate::domain::delivery::{Packaging, VideoCodec};
use crate::domain::error_code::ErrorCode;
use crate::domain::plan::{CmafPackage, CmafRendition};
use crate::media::fragmented::{FragmentedError, index_file, write_segments};

/// Seconds a segment lasts, about: three two-second GOPs, as the `hls` preset's segments.
const SEGMENT_SECONDS: f64 = 6.0;
/// The HLS audio group every variant names.
const AUDIO_GROUP: &str = "audio";

/// One rendition, indexed and cut.
struct Packed<'a> {
    rendition: &'a CmafRendition,
    index: TrackIndex,
    segments: Vec<Segment>,
    /// Measured once, announced by both manifests.
    bandwidth: Bandwidth,
    /// The rendition's length, the sum of its segments'.
    seconds: f64,
}

/// Packages `package` in `out_dir`: segment files (segments mode), media playlists, the
/// multivariant playlist and the MPD.
pub(super) async fn package(
    inner: &Inner,
    out_dir: &Path,
    package: &CmafPackage,
    stop: &CancellationToken,
) -> Result<(), JobError> {
    let mut indexed = Vec::new();
    for rendition in &package.renditions {
        let index = index_file(&out_dir.join(&rendition.file)).await.map_err(unreadable)?;
        indexed.push((rendition, index));
    }
    let packed = cut(indexed)?;
    let folder = out_dir.join(&package.folder);
    for p in &packed {
        let name = &p.rendition.name;
        let (path, playlist) = match package.packaging {
            Packaging::Segments => {
                let dir = folder.join(name);
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| JobError::scratch("create a rendition folder", &e))?;
                let file = out_dir.join(&p.rendition.file);
                write_segments(&file, &p.index, &p.segments, &dir).await.map_err(unreadable)?;
                tokio::fs::remove_file(&file).await.map_err(|e| JobError::scratch("remove a packaged file", &e))?;
                (dir.join("index.m3u8"), hls::segmented_playlist(&p.index, &p.segments))
            }
            Packaging::SingleFile => {
                let playlist = hls::single_file_playlist(&format!("{name}.mp4"), &p.index, &p.segments);
                (folder.join(format!("{name}.m3u8")), playlist)
            }
        };
        let text = hls::media_playlist(&playlist).map_err(malformed)?;
        write(&path, text).await?;
    }
    let mut captions = captions::prepare(inner, &package.captions, &folder, stop).await?;
    captions.extend(captions::extract_embedded(inner, &package.embedded, &folder, stop).await?);
    let (variants, audio) = multivariant(&packed, package.packaging);
    let mut described = Package {
        version: PACKAGE_VERSION,
        variants,
        audio,
        subtitles: Vec::new(),
        mpd: mpd(&packed, package.packaging)?,
        seconds: title_seconds(&packed),
        caption_mpegts: captions::CAPTION_MPEGTS,
        captions: Vec::new(),
    };
    for caption in &captions {
        described.add_caption(&caption.track.language, caption.track.label(), &caption.file);
    }
    write_package(&folder, &described).await
}

/// Writes the caption tracks' media playlists, `master.m3u8`, `manifest.mpd` and
/// `package.json` (what a later packaging of the same renditions starts from) in `folder`.
pub(super) async fn write_package(folder: &Path, package: &Package) -> Result<(), JobError> {
    for caption in &package.captions {
        write(&folder.join(&caption.playlist), package.caption_media_playlist(&caption.vtt).map_err(malformed)?)
            .await?;
    }
    write(&folder.join("master.m3u8"), package.master().map_err(malformed)?).await?;
    write(&folder.join("manifest.mpd"), package.manifest().map_err(malformed)?).await?;
    let json = package.to_json().map_err(malformed)?;
    tokio::fs::write(folder.join(PACKAGE_FILE), json).await.map_err(|e| JobError::scratch("write a playlist", &e))
}

/// The title's length: its longest rendition's.
fn title_seconds(packed: &[Packed<'_>]) -> f64 {
    packed.iter().map(|p| p.seconds).fold(0.0, f64::max)
}

/// Cuts every rendition: each codec's rungs at its largest rung's times, the audio at the
/// first codec's.
fn cut<'a>(indexed: Vec<(&'a CmafRendition, TrackIndex)>) -> Result<Vec<Packed<'a>>, JobError> {
    let mut references: Vec<(Option<VideoCodec>, Vec<f64>)> = Vec::new();
    for (rendition, index) in &indexed {
        if rendition.codec.is_some() && !references.iter().any(|(c, _)| *c == rendition.codec) {
            references.push((rendition.codec, cut_times(index, SEGMENT_SECONDS)));
        }
    }
    let first = references.first().map(|(_, cuts)| cuts.clone()).unwrap_or_default();
    indexed
        .into_iter()
        .map(|(rendition, index)| {
            let cuts = references.iter().find(|(c, _)| c.is_some() && *c == rendition.codec).map_or(&first, |(_, t)| t);
            let segments = segments_at(&index, cuts).map_err(malformed)?;
            let timescale = index.info.timescale;
            let bandwidth = bandwidth(&segments, timescale);
            let seconds = segments.iter().map(|s| s.seconds(timescale)).sum();
            Ok(Packed { rendition, index, segments, bandwidth, seconds })
        })
        .collect()
}

/// Where a rendition's media playlist is, relative to `master.m3u8`.
fn playlist_uri(name: &str, packaging: Packaging) -> String {
    match packaging {
        Packaging::Segments => format!("{name}/index.m3u8"),
        Packaging::SingleFile => format!("{name}.m3u8"),
    }
}

/// The HLS multivariant playlist's variants and audio: the audio group, then every video rung,
/// codec by codec (the caption tracks are added by [`Package::add_caption`]).
fn multivariant(packed: &[Packed<'_>], packaging: Packaging) -> (Vec<Variant>, Vec<AudioRendition>) {
    let audio: Vec<AudioRendition> = packed
        .iter()
        .filter_map(|p| match p.index.info.kind {
            TrackKind::Audio { channels, .. } => Some(AudioRendition {
                group_id: AUDIO_GROUP.into(),
                name: "Audio".into(),
                language: None,
                default: true,
                autoselect: true,
                channels,
                uri: playlist_uri(&p.rendition.name, packaging),
                codec: p.index.info.codec.clone(),
                bandwidth: p.bandwidth,
            }),
            TrackKind::Video { .. } => None,
        })
        .collect();
    let variants: Vec<Variant> = packed
        .iter()
        .filter_map(|p| match p.index.info.kind {
            TrackKind::Video { width, height } => Some(Variant {
                uri: playlist_uri(&p.rendition.name, packaging),
                codec: p.index.info.codec.clone(),
                width,
                height,
                frame_rate: p.index.frame_rate().map_or(0.0, |(n, d)| n as f64 / d as f64),
                bandwidth: p.bandwidth,
                audio_group: (!audio.is_empty()).then(|| AUDIO_GROUP.to_string()),
                subtitles_group: None,
            }),
            TrackKind::Audio { .. } => None,
        })
        .collect();
    (variants, audio)
}

/// The DASH MPD: one adaptation set per video codec, one for the audio (the caption tracks are
/// added by [`Package::add_caption`]).
fn mpd(packed: &[Packed<'_>], packaging: Packaging) -> Result<Mpd, JobError> {
    let mut sets: Vec<(Option<VideoCodec>, AdaptationSet)> = Vec::new();
    let mut duration = 0.0_f64;
    for p in packed {
        let info = &p.index.info;
        duration = duration.max(p.seconds);
        let name = &p.rendition.name;
        let addressing = match packaging {
            Packaging::Segments => dash::template_addressing(&format!("{name}/"), &p.segments).map_err(malformed)?,
            Packaging::SingleFile => dash::single_file_addressing(&format!("{name}.mp4"), &p.index, &p.segments),
        };
        let (content, media) = match info.kind {
            TrackKind::Video { width, height } => {
                (ContentType::Video, Media::Video { width, height, frame_rate: p.index.frame_rate().unwrap_or((0, 1)) })
            }
            TrackKind::Audio { channels, sample_rate } => (ContentType::Audio, Media::Audio { sample_rate, channels }),
        };
        let representation = Representation {
            id: name.clone(),
            codec: info.codec.clone(),
            bandwidth: p.bandwidth.peak,
            timescale: info.timescale,
            media,
            addressing,
        };
        match sets.iter_mut().find(|(codec, _)| *codec == p.rendition.codec) {
            Some((_, set)) => set.representations.push(representation),
            None => sets.push((
                p.rendition.codec,
                AdaptationSet { content, lang: None, representations: vec![representation] },
            )),
        }
    }
    let adaptation_sets: Vec<AdaptationSet> = sets.into_iter().map(|(_, set)| set).collect();
    Ok(Mpd { duration_seconds: duration, min_buffer_seconds: SEGMENT_SECONDS, adaptation_sets })
}

async fn write(path: &Path, text: String) -> Result<(), JobError> {
    tokio::fs::write(path, text).await.map_err(|e| JobError::scratch("write a playlist", &e))
}

/// A rendition ffmpeg wrote that cannot be read back: the scratch disk's fault, or a file
/// layout the packager does not know (logged; the public message names neither).
fn unreadable(err: FragmentedError) -> JobError {
    match err {
        FragmentedError::Io { source, .. } => JobError::scratch("read a rendition", &source),
        FragmentedError::Cmaf { source, .. } => malformed(source),
    }
}

fn malformed(err: crate::domain::cmaf::CmafError) -> JobError {
    tracing::error!(error = %err, "A CMAF rendition could not be packaged.");
    JobError::permanent(ErrorCode::Internal, format!("a rendition could not be packaged: {err}"))
}
