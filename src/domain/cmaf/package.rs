//! `cmaf/package.json`: what the HLS and DASH writers were given for a `cmaf` output, kept next
//! to the manifests they wrote.
//!
//! Writing a manifest takes facts only the renditions' bytes hold (codec strings from their
//! configuration boxes, bandwidths measured on the segments, segment times and byte ranges).
//! With them stored, a later job can change what the package announces (add a caption track)
//! by re-rendering both manifests with the same writers, without reading or re-encoding a
//! single rendition. The caption renditions are made here, for the first packaging and for
//! any later one, so both say them the same way.

use serde::{Deserialize, Serialize};

use super::CmafError;
use super::dash::{self, AdaptationSet, Addressing, ContentType, Media, Mpd, Representation};
use super::hls::{self, AudioRendition, SubtitleRendition, Variant};

/// The description's name in the output's folder.
pub const PACKAGE_FILE: &str = "package.json";
/// The version written; readers refuse others.
pub const PACKAGE_VERSION: u32 = 1;
/// The HLS subtitles group every variant names, when the output has captions.
pub const SUBTITLES_GROUP: &str = "subtitles";
/// A WebVTT file's `@bandwidth`: text is a few hundred bits a second.
const TEXT_BANDWIDTH: u64 = 1000;

/// The writers' inputs for one `cmaf` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub version: u32,
    /// The multivariant playlist's video variants.
    pub variants: Vec<Variant>,
    /// Its audio renditions.
    pub audio: Vec<AudioRendition>,
    /// Its subtitle renditions (each a caption track of `captions`).
    pub subtitles: Vec<SubtitleRendition>,
    /// The MPD, caption adaptation sets included.
    pub mpd: Mpd,
    /// The title's length: the one segment of each WebVTT playlist.
    pub seconds: f64,
    /// The 90 kHz time the captions' `X-TIMESTAMP-MAP` maps their zero to (`MPEGTS`).
    pub caption_mpegts: u64,
    /// The caption tracks and their files, relative to the output's folder.
    pub captions: Vec<CaptionFiles>,
}

/// One caption track's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionFiles {
    pub language: String,
    /// The cues: `captions-<language>.vtt`.
    pub vtt: String,
    /// Its HLS media playlist: `captions-<language>.m3u8`.
    pub playlist: String,
}

/// The WebVTT file of a caption track in `language`, relative to the output's folder.
pub fn caption_file(language: &str) -> String {
    format!("captions-{}.vtt", language.to_ascii_lowercase())
}

/// The HLS media playlist of a WebVTT file.
pub fn caption_playlist(vtt: &str) -> String {
    match vtt.strip_suffix(".vtt") {
        Some(stem) => format!("{stem}.m3u8"),
        None => format!("{vtt}.m3u8"),
    }
}

/// A caption track's HLS rendition.
pub fn subtitle_rendition(language: &str, name: &str, vtt: &str) -> SubtitleRendition {
    SubtitleRendition {
        group_id: SUBTITLES_GROUP.into(),
        name: name.to_string(),
        language: Some(language.to_string()),
        default: false,
        autoselect: true,
        uri: caption_playlist(vtt),
    }
}

/// A caption track's DASH adaptation set.
pub fn text_adaptation_set(language: &str, vtt: &str) -> AdaptationSet {
    let representation = Representation {
        id: vtt.trim_end_matches(".vtt").to_string(),
        codec: String::new(),
        bandwidth: TEXT_BANDWIDTH,
        timescale: 1000,
        media: Media::Text,
        addressing: Addressing::File { url: vtt.to_string() },
    };
    AdaptationSet {
        content: ContentType::Text,
        lang: Some(language.to_string()),
        representations: vec![representation],
    }
}

impl Package {
    /// `master.m3u8`.
    pub fn master(&self) -> Result<String, CmafError> {
        hls::multivariant_playlist(&self.variants, &self.audio, &self.subtitles)
    }

    /// `manifest.mpd`.
    pub fn manifest(&self) -> Result<String, CmafError> {
        dash::mpd(&self.mpd)
    }

    /// A WebVTT file's HLS media playlist: one segment, the title's length.
    pub fn caption_media_playlist(&self, vtt: &str) -> Result<String, CmafError> {
        hls::webvtt_playlist(vtt, self.seconds)
    }

    /// Whether a caption track in `language` is announced (languages compare without case).
    pub fn has_language(&self, language: &str) -> bool {
        self.captions.iter().any(|c| c.language.eq_ignore_ascii_case(language))
    }

    /// Removes every caption track in `language` (a source may carry two English tracks) and
    /// answers their files; with no track left, the variants name no subtitles group.
    pub fn remove_captions(&mut self, language: &str) -> Vec<CaptionFiles> {
        let same = |l: &str| l.eq_ignore_ascii_case(language);
        let (removed, kept) = std::mem::take(&mut self.captions).into_iter().partition(|c| same(&c.language));
        self.captions = kept;
        self.subtitles.retain(|s| !s.language.as_deref().is_some_and(same));
        self.mpd.adaptation_sets.retain(|a| a.content != ContentType::Text || !a.lang.as_deref().is_some_and(same));
        if self.subtitles.is_empty() {
            for variant in &mut self.variants {
                variant.subtitles_group = None;
            }
        }
        removed
    }

    /// Announces a caption track whose WebVTT file is `vtt`: an HLS subtitles rendition every
    /// variant names, and a DASH text adaptation set. Tracks may share a language (told apart by
    /// their names); replacing a language's tracks is [`remove_captions`](Self::remove_captions)
    /// first.
    pub fn add_caption(&mut self, language: &str, name: &str, vtt: &str) {
        self.subtitles.push(subtitle_rendition(language, name, vtt));
        self.mpd.adaptation_sets.push(text_adaptation_set(language, vtt));
        for variant in &mut self.variants {
            variant.subtitles_group = Some(SUBTITLES_GROUP.to_string());
        }
        self.captions.push(CaptionFiles {
            language: language.to_string(),
            vtt: vtt.to_string(),
            playlist: caption_playlist(vtt),
        });
    }

    /// The description as stored.
    pub fn to_json(&self) -> Result<Vec<u8>, CmafError> {
        serde_json::to_vec_pretty(self).map_err(|e| CmafError::Layout(format!("package description: {e}")))
    }

    /// A stored description, of a version this reader knows.
    pub fn from_json(bytes: &[u8]) -> Result<Package, CmafError> {
        let package: Package =
            serde_json::from_slice(bytes).map_err(|e| CmafError::Layout(format!("package description: {e}")))?;
        if package.version != PACKAGE_VERSION {
            return Err(CmafError::Layout(format!("package description version {}", package.version)));
        }
        Ok(package)
    }
}

#[cfg(test)]
#[path = "tests/package.rs"]
mod tests;
