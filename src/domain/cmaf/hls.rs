//! HLS playlists (RFC 8216) for CMAF renditions: media playlists (segmented or byte ranges of
//! one file), the multivariant playlist with audio and subtitle groups, and a one-file WebVTT
//! playlist.
//!
//! Text safety: every quoted attribute value (names, group ids, URIs) is refused with
//! [`CmafError::UnsafeText`] when it holds a `"` or any control character (a line break would
//! start a new tag), and languages must be RFC 5646-shaped (letters, digits, `-`). Refusing
//! rather than rewriting keeps the playlist's names the ones the job asked for.

use std::fmt::Write as _;

use super::segments::{INIT_FILE_NAME, segment_file_name};
use super::{Bandwidth, ByteRange, CmafError, Segment, TrackIndex};

/// One `#EXTINF` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSegment {
    pub uri: String,
    pub duration_seconds: f64,
    /// Set in single-file mode: `#EXT-X-BYTERANGE`.
    pub range: Option<ByteRange>,
}

/// A VOD media playlist of fMP4 segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `#EXT-X-MAP` URI, with its byte range in single-file mode.
    pub map_uri: String,
    pub map_range: Option<ByteRange>,
    pub segments: Vec<MediaSegment>,
}

/// `init.mp4` and `segment_00001.m4s`..., relative to the playlist.
pub fn segmented_playlist(index: &TrackIndex, segments: &[Segment]) -> MediaPlaylist {
    let seconds = |s: &Segment| s.seconds(index.info.timescale);
    MediaPlaylist {
        map_uri: INIT_FILE_NAME.into(),
        map_range: None,
        segments: segments
            .iter()
            .map(|s| MediaSegment { uri: segment_file_name(s.number), duration_seconds: seconds(s), range: None })
            .collect(),
    }
}

/// Byte ranges of the one file `file_name`.
pub fn single_file_playlist(file_name: &str, index: &TrackIndex, segments: &[Segment]) -> MediaPlaylist {
    MediaPlaylist {
        map_uri: file_name.into(),
        map_range: Some(index.init),
        segments: segments
            .iter()
            .map(|s| MediaSegment {
                uri: file_name.into(),
                duration_seconds: s.seconds(index.info.timescale),
                range: Some(s.range),
            })
            .collect(),
    }
}

/// A quoted attribute value, or [`CmafError::UnsafeText`].
fn quoted(value: &str) -> Result<String, CmafError> {
    if value.is_empty() || value.chars().any(|c| c == '"' || c.is_control()) {
        return Err(CmafError::UnsafeText(value.into()));
    }
    Ok(format!("\"{value}\""))
}

/// A URI line outside any attribute: the same rule (it must stay one line).
fn uri_line(value: &str) -> Result<&str, CmafError> {
    quoted(value).map(|_| value)
}

/// Checks an RFC 5646 language tag's shape (shared with the DASH writer).
pub(crate) fn language(value: &str) -> Result<&str, CmafError> {
    let ok = !value.is_empty() && value.len() <= 35 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok { Ok(value) } else { Err(CmafError::UnsafeText(value.into())) }
}

/// `#EXT-X-TARGETDURATION`: the longest duration, rounded to the millisecond, then up.
fn target_duration<I: IntoIterator<Item = f64>>(durations: I) -> u64 {
    durations.into_iter().map(|d| ((d * 1000.0).round() / 1000.0).ceil() as u64).max().unwrap_or(0).max(1)
}

fn byte_range(range: &ByteRange) -> String {
    format!("{}@{}", range.size, range.offset)
}

/// The text of a VOD media playlist.
pub fn media_playlist(playlist: &MediaPlaylist) -> Result<String, CmafError> {
    if playlist.segments.is_empty() {
        return Err(CmafError::Empty("no segments"));
    }
    let target = target_duration(playlist.segments.iter().map(|s| s.duration_seconds));
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    out.push_str("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = write!(out, "#EXT-X-MAP:URI={}", quoted(&playlist.map_uri)?);
    if let Some(range) = &playlist.map_range {
        let _ = write!(out, ",BYTERANGE=\"{}\"", byte_range(range));
    }
    out.push('\n');
    for segment in &playlist.segments {
        let _ = writeln!(out, "#EXTINF:{:.3},", segment.duration_seconds);
        if let Some(range) = &segment.range {
            let _ = writeln!(out, "#EXT-X-BYTERANGE:{}", byte_range(range));
        }
        let _ = writeln!(out, "{}", uri_line(&segment.uri)?);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    Ok(out)
}

/// A media playlist of one WebVTT file lasting `duration_seconds`.
pub fn webvtt_playlist(uri: &str, duration_seconds: f64) -> Result<String, CmafError> {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", target_duration([duration_seconds]));
    out.push_str("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    let _ = writeln!(out, "#EXTINF:{duration_seconds:.3},\n{}\n#EXT-X-ENDLIST", uri_line(uri)?);
    Ok(out)
}

/// An alternate audio rendition (`#EXT-X-MEDIA:TYPE=AUDIO`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AudioRendition {
    pub group_id: String,
    pub name: String,
    pub language: Option<String>,
    pub default: bool,
    pub autoselect: bool,
    pub channels: u32,
    pub uri: String,
    pub codec: String,
    /// Added to each variant using the group (the group's highest).
    pub bandwidth: Bandwidth,
}

/// A subtitle rendition (`#EXT-X-MEDIA:TYPE=SUBTITLES`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubtitleRendition {
    pub group_id: String,
    pub name: String,
    pub language: Option<String>,
    pub default: bool,
    pub autoselect: bool,
    pub uri: String,
}

/// One video rendition (`#EXT-X-STREAM-INF`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    pub uri: String,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    /// The video's own; the audio group's is added.
    pub bandwidth: Bandwidth,
    pub audio_group: Option<String>,
    pub subtitles_group: Option<String>,
}

fn yes(flag: bool) -> &'static str {
    if flag { "YES" } else { "NO" }
}

struct Media<'a> {
    kind: &'static str,
    group_id: &'a str,
    name: &'a str,
    language: Option<&'a str>,
    default: bool,
    autoselect: bool,
    uri: &'a str,
}

fn media_line(out: &mut String, m: &Media<'_>, channels: Option<u32>) -> Result<(), CmafError> {
    let (group, name) = (quoted(m.group_id)?, quoted(m.name)?);
    let _ = write!(out, "#EXT-X-MEDIA:TYPE={},GROUP-ID={group},NAME={name}", m.kind);
    if let Some(lang) = m.language {
        let _ = write!(out, ",LANGUAGE=\"{}\"", language(lang)?);
    }
    let _ = write!(out, ",DEFAULT={},AUTOSELECT={}", yes(m.default), yes(m.autoselect || m.default));
    if let Some(channels) = channels {
        let _ = write!(out, ",CHANNELS=\"{channels}\"");
    }
    let _ = writeln!(out, ",URI={}", quoted(m.uri)?);
    Ok(())
}

/// The audio group's bandwidth to add and its distinct codecs, or an error for an unknown group.
fn audio_group<'a>(audio: &'a [AudioRendition], group: &str) -> Result<(Bandwidth, Vec<&'a str>), CmafError> {
    let members: Vec<&AudioRendition> = audio.iter().filter(|a| a.group_id == group).collect();
    if members.is_empty() {
        return Err(CmafError::Layout(format!("no audio group {group:?}")));
    }
    let peak = members.iter().map(|a| a.bandwidth.peak).max().unwrap_or(0);
    let average = members.iter().map(|a| a.bandwidth.average).max().unwrap_or(0);
    let mut codecs: Vec<&str> = Vec::new();
    for a in members {
        if !codecs.contains(&a.codec.as_str()) {
            codecs.push(&a.codec);
        }
    }
    Ok((Bandwidth { peak, average }, codecs))
}

fn stream_inf(
    out: &mut String,
    v: &Variant,
    audio: &[AudioRendition],
    subs: &[SubtitleRendition],
) -> Result<(), CmafError> {
    let mut bandwidth = v.bandwidth;
    let mut codecs = vec![v.codec.as_str()];
    if let Some(group) = &v.audio_group {
        let (extra, group_codecs) = audio_group(audio, group)?;
        bandwidth = bandwidth + extra;
        codecs.extend(group_codecs);
    }
    let codecs = quoted(&codecs.join(","))?;
    let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}", bandwidth.peak, bandwidth.average);
    let _ = write!(out, ",CODECS={codecs},RESOLUTION={}x{},FRAME-RATE={:.3}", v.width, v.height, v.frame_rate);
    if let Some(group) = &v.audio_group {
        let _ = write!(out, ",AUDIO={}", quoted(group)?);
    }
    if let Some(group) = &v.subtitles_group {
        if !subs.iter().any(|s| &s.group_id == group) {
            return Err(CmafError::Layout(format!("no subtitles group {group:?}")));
        }
        let _ = write!(out, ",SUBTITLES={}", quoted(group)?);
    }
    let _ = writeln!(out, ",CLOSED-CAPTIONS=NONE\n{}", uri_line(&v.uri)?);
    Ok(())
}

/// The multivariant playlist: audio and subtitle renditions, then one entry per variant, in
/// the order given.
pub fn multivariant_playlist(
    variants: &[Variant],
    audio: &[AudioRendition],
    subtitles: &[SubtitleRendition],
) -> Result<String, CmafError> {
    if variants.is_empty() {
        return Err(CmafError::Empty("no variants"));
    }
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for a in audio {
        let m = Media {
            kind: "AUDIO",
            group_id: &a.group_id,
            name: &a.name,
            language: a.language.as_deref(),
            default: a.default,
            autoselect: a.autoselect,
            uri: &a.uri,
        };
        media_line(&mut out, &m, Some(a.channels))?;
    }
    for s in subtitles {
        let m = Media {
            kind: "SUBTITLES",
            group_id: &s.group_id,
            name: &s.name,
            language: s.language.as_deref(),
            default: s.default,
            autoselect: s.autoselect,
            uri: &s.uri,
        };
        media_line(&mut out, &m, None)?;
    }
    for v in variants {
        stream_inf(&mut out, v, audio, subtitles)?;
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tests/hls.rs"]
mod tests;
