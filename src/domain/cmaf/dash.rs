//! A static DASH MPD (ISO/IEC 23009-1) for CMAF renditions: one Period; adaptation sets for
//! each video codec family, audio, and WebVTT text; three ways to address segments.
//!
//! - Segmented files: `SegmentTemplate` + `SegmentTimeline` (`$Number%05d$`, startNumber 1),
//!   profile `isoff-live:2011`.
//! - One file with a `sidx` for all fragments: `SegmentBase@indexRange` + `Initialization
//!   @range`, profile `isoff-on-demand:2011` (the player reads the `sidx` for the cuts).
//! - One file without a `sidx`: `SegmentList` with `SegmentURL@mediaRange`s and a timeline; the
//!   on-demand profile requires a `sidx`, so such an MPD claims `full:2011`. dash.js and Shaka
//!   pick addressing from the elements present, not from the profile string.
//!
//! Every attribute value is XML-escaped; the output is deterministic (tests compare text).

use std::fmt::Write as _;

use super::segments::{INIT_FILE_NAME, SEGMENT_TEMPLATE};
use super::{ByteRange, CmafError, Segment, TrackIndex};

const LIVE: &str = "urn:mpeg:dash:profile:isoff-live:2011";
const ON_DEMAND: &str = "urn:mpeg:dash:profile:isoff-on-demand:2011";
const FULL: &str = "urn:mpeg:dash:profile:full:2011";

/// One `S` of a `SegmentTimeline` before run-length compression (track timescale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineEntry {
    pub start: u64,
    pub duration: u64,
}

/// How a representation's segments are found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Addressing {
    /// Separate files named by `initialization` and `media` (with `$Number%05d$`).
    Template { initialization: String, media: String, timeline: Vec<TimelineEntry>, presentation_time_offset: u64 },
    /// One file whose `sidx` (at `index`) lists the segments.
    Base { url: String, init: ByteRange, index: ByteRange },
    /// One file, segments as byte ranges.
    List {
        url: String,
        init: ByteRange,
        media: Vec<ByteRange>,
        timeline: Vec<TimelineEntry>,
        presentation_time_offset: u64,
    },
    /// One whole file (WebVTT).
    File { url: String },
}

/// The timeline of segments: each starts at its earliest presentation time (negative times,
/// which a `trun` v1 allows, are clamped to 0), and the offset to subtract, if any.
fn timeline(segments: &[Segment]) -> (Vec<TimelineEntry>, u64) {
    let start = |s: &Segment| u64::try_from(s.earliest_presentation_time).unwrap_or(0);
    let entries = segments.iter().map(|s| TimelineEntry { start: start(s), duration: s.duration }).collect();
    (entries, segments.first().map(start).unwrap_or(0))
}

/// Segmented addressing with files under `prefix` (e.g. `video/720/`; may be empty).
pub fn template_addressing(prefix: &str, segments: &[Segment]) -> Result<Addressing, CmafError> {
    if prefix.contains('$') {
        return Err(CmafError::UnsafeText(prefix.into()));
    }
    let (timeline, presentation_time_offset) = timeline(segments);
    Ok(Addressing::Template {
        initialization: format!("{prefix}{INIT_FILE_NAME}"),
        media: format!("{prefix}{SEGMENT_TEMPLATE}"),
        timeline,
        presentation_time_offset,
    })
}

/// Single-file addressing: `SegmentBase` when the file has a `sidx`, else `SegmentList`.
pub fn single_file_addressing(url: &str, index: &TrackIndex, segments: &[Segment]) -> Addressing {
    match index.sidx {
        Some(sidx) => Addressing::Base { url: url.into(), init: index.init, index: sidx },
        None => {
            let (timeline, presentation_time_offset) = timeline(segments);
            Addressing::List {
                url: url.into(),
                init: index.init,
                media: segments.iter().map(|s| s.range).collect(),
                timeline,
                presentation_time_offset,
            }
        }
    }
}

/// What a representation carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Media {
    /// `frame_rate` as an exact fraction (numerator, denominator).
    Video {
        width: u32,
        height: u32,
        frame_rate: (u64, u64),
    },
    Audio {
        sample_rate: u32,
        channels: u32,
    },
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Representation {
    pub id: String,
    /// RFC 6381 (`wvtt` or empty for a WebVTT file).
    pub codec: String,
    /// Peak bits per second.
    pub bandwidth: u64,
    pub timescale: u32,
    pub media: Media,
    pub addressing: Addressing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContentType {
    Video,
    Audio,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdaptationSet {
    pub content: ContentType,
    pub lang: Option<String>,
    pub representations: Vec<Representation>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mpd {
    pub duration_seconds: f64,
    pub min_buffer_seconds: f64,
    pub adaptation_sets: Vec<AdaptationSet>,
}

/// Escapes a value for a double-quoted XML attribute or element text.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push_str(&format!("&#x{:X};", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn profile(mpd: &Mpd) -> &'static str {
    let addressings = mpd.adaptation_sets.iter().flat_map(|a| &a.representations).map(|r| &r.addressing);
    let (mut template, mut base, mut list) = (false, false, false);
    for a in addressings {
        match a {
            Addressing::Template { .. } => template = true,
            Addressing::Base { .. } => base = true,
            Addressing::List { .. } => list = true,
            Addressing::File { .. } => {}
        }
    }
    match (template, base, list) {
        (true, false, false) => LIVE,
        (false, _, false) => ON_DEMAND,
        _ => FULL,
    }
}

/// ISO 8601 duration in seconds, millisecond precision: `PT6.000S`.
fn duration(seconds: f64) -> String {
    format!("PT{:.3}S", seconds.max(0.0))
}

/// The MPD's text.
pub fn mpd(mpd: &Mpd) -> Result<String, CmafError> {
    if mpd.adaptation_sets.iter().all(|a| a.representations.is_empty()) {
        return Err(CmafError::Empty("no representations"));
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"{}\" type=\"static\" \
         mediaPresentationDuration=\"{}\" minBufferTime=\"{}\">",
        profile(mpd),
        duration(mpd.duration_seconds),
        duration(mpd.min_buffer_seconds)
    );
    out.push_str("  <Period id=\"0\" start=\"PT0S\">\n");
    for (id, set) in mpd.adaptation_sets.iter().enumerate().filter(|(_, a)| !a.representations.is_empty()) {
        adaptation_set(&mut out, id, set)?;
    }
    out.push_str("  </Period>\n</MPD>\n");
    Ok(out)
}

fn adaptation_set(out: &mut String, id: usize, set: &AdaptationSet) -> Result<(), CmafError> {
    let (content, mime) = match set.content {
        ContentType::Video => ("video", "video/mp4"),
        ContentType::Audio => ("audio", "audio/mp4"),
        ContentType::Text => ("text", "text/vtt"),
    };
    let _ = write!(out, "    <AdaptationSet id=\"{id}\" contentType=\"{content}\" mimeType=\"{mime}\"");
    if let Some(lang) = &set.lang {
        let _ = write!(out, " lang=\"{}\"", escape(super::hls::language(lang)?));
    }
    if set.content != ContentType::Text {
        out.push_str(" segmentAlignment=\"true\" startWithSAP=\"1\"");
    }
    let sizes = set.representations.iter().filter_map(|r| match r.media {
        Media::Video { width, height, .. } => Some((width, height)),
        _ => None,
    });
    if let (Some(w), Some(h)) = (sizes.clone().map(|s| s.0).max(), sizes.map(|s| s.1).max()) {
        let _ = write!(out, " maxWidth=\"{w}\" maxHeight=\"{h}\"");
    }
    out.push_str(">\n");
    if set.content == ContentType::Text {
        out.push_str("      <Role schemeIdUri=\"urn:mpeg:dash:role:2011\" value=\"subtitle\"/>\n");
    }
    for r in &set.representations {
        representation(out, r);
    }
    out.push_str("    </AdaptationSet>\n");
    Ok(())
}

fn representation(out: &mut String, r: &Representation) {
    let _ = write!(out, "      <Representation id=\"{}\" bandwidth=\"{}\"", escape(&r.id), r.bandwidth);
    if !r.codec.is_empty() {
        let _ = write!(out, " codecs=\"{}\"", escape(&r.codec));
    }
    match r.media {
        Media::Video { width, height, frame_rate: (num, den) } => {
            let rate = if den == 1 { num.to_string() } else { format!("{num}/{den}") };
            let _ = write!(out, " width=\"{width}\" height=\"{height}\" frameRate=\"{rate}\" sar=\"1:1\"");
        }
        Media::Audio { sample_rate, .. } => {
            let _ = write!(out, " audioSamplingRate=\"{sample_rate}\"");
        }
        Media::Text => {}
    }
    out.push_str(">\n");
    if let Media::Audio { channels, .. } = r.media {
        let _ = writeln!(
            out,
            "        <AudioChannelConfiguration \
             schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{channels}\"/>"
        );
    }
    addressing(out, r.timescale, &r.addressing);
    out.push_str("      </Representation>\n");
}

fn addressing(out: &mut String, timescale: u32, a: &Addressing) {
    let pto = |offset: u64| if offset == 0 { String::new() } else { format!(" presentationTimeOffset=\"{offset}\"") };
    let range = |r: &ByteRange| format!("{}-{}", r.offset, r.end().saturating_sub(1));
    match a {
        Addressing::Template { initialization, media, timeline, presentation_time_offset } => {
            let _ = writeln!(
                out,
                "        <SegmentTemplate timescale=\"{timescale}\" initialization=\"{}\" media=\"{}\" \
                 startNumber=\"1\"{}>",
                escape(initialization),
                escape(media),
                pto(*presentation_time_offset)
            );
            segment_timeline(out, timeline);
            out.push_str("        </SegmentTemplate>\n");
        }
        Addressing::Base { url, init, index } => {
            let _ = writeln!(out, "        <BaseURL>{}</BaseURL>", escape(url));
            let _ = writeln!(out, "        <SegmentBase timescale=\"{timescale}\" indexRange=\"{}\">", range(index));
            let _ = writeln!(out, "          <Initialization range=\"{}\"/>", range(init));
            out.push_str("        </SegmentBase>\n");
        }
        Addressing::List { url, init, media, timeline, presentation_time_offset } => {
            let _ = writeln!(out, "        <BaseURL>{}</BaseURL>", escape(url));
            let _ = writeln!(out, "        <SegmentList timescale=\"{timescale}\"{}>", pto(*presentation_time_offset));
            let _ = writeln!(out, "          <Initialization range=\"{}\"/>", range(init));
            segment_timeline(out, timeline);
            for m in media {
                let _ = writeln!(out, "          <SegmentURL mediaRange=\"{}\"/>", range(m));
            }
            out.push_str("        </SegmentList>\n");
        }
        Addressing::File { url } => {
            let _ = writeln!(out, "        <BaseURL>{}</BaseURL>", escape(url));
        }
    }
}

/// `S` elements: `t` on the first and after any gap, `r` for runs of equal durations.
fn segment_timeline(out: &mut String, entries: &[TimelineEntry]) {
    out.push_str("          <SegmentTimeline>\n");
    let mut i = 0;
    let mut expected = None;
    while i < entries.len() {
        let e = entries[i];
        let mut run = 1;
        while i + run < entries.len()
            && entries[i + run].duration == e.duration
            && entries[i + run].start == e.start + run as u64 * e.duration
        {
            run += 1;
        }
        let t = if expected == Some(e.start) { String::new() } else { format!(" t=\"{}\"", e.start) };
        let r = if run > 1 { format!(" r=\"{}\"", run - 1) } else { String::new() };
        let _ = writeln!(out, "            <S{t} d=\"{}\"{r}/>", e.duration);
        expected = Some(e.start + run as u64 * e.duration);
        i += run;
    }
    out.push_str("          </SegmentTimeline>\n");
}

#[cfg(test)]
#[path = "tests/dash.rs"]
mod tests;
