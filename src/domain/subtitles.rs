//! The text tracks a source carries, as WebVTT renditions of a `cmaf` output: which streams
//! are kept, their language as a BCP 47 tag and the name players show, and the ffmpeg argv
//! that extracts them.
//!
//! Kept: the text codecs ffmpeg's `webvtt` encoder takes (MP4's `mov_text`, SubRip, ASS/SSA
//! and WebVTT in Matroska/WebM), and CEA-608 captions in the video's SEI when the probe found
//! some. Bitmap subtitles (DVD, Blu-ray PGS, DVB) are pictures, not text: they are left out
//! and named in the output's note, never a failure. Caption files given with the job come
//! first; the source's tracks fill what is left of [`MAX_CAPTION_TRACKS`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::domain::args::strings;
use crate::domain::delivery::{CaptionTrack, MAX_CAPTION_TRACKS};
use crate::domain::probe::{MediaInfo, SubtitleStream};

/// Subtitle codecs that are text, as ffmpeg names them.
const TEXT_CODECS: &[&str] = &["mov_text", "subrip", "srt", "ass", "ssa", "webvtt", "text"];
/// Subtitle codecs that are pictures.
const BITMAP_CODECS: &[&str] = &["dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle", "xsub"];

/// Longest name players show, as for caption files given with a job.
const MAX_NAME_CHARS: usize = 64;

/// ISO 639-2 codes (bibliographic and terminology forms) with a two-letter ISO 639-1 code,
/// which BCP 47 prefers, and the language's English name.
const LANGUAGES: &[(&[&str], &str, &str)] = &[
    (&["eng"], "en", "English"),
    (&["fra", "fre"], "fr", "French"),
    (&["deu", "ger"], "de", "German"),
    (&["spa"], "es", "Spanish"),
    (&["ita"], "it", "Italian"),
    (&["por"], "pt", "Portuguese"),
    (&["nld", "dut"], "nl", "Dutch"),
    (&["swe"], "sv", "Swedish"),
    (&["nor"], "no", "Norwegian"),
    (&["nob"], "nb", "Norwegian Bokmål"),
    (&["nno"], "nn", "Norwegian Nynorsk"),
    (&["dan"], "da", "Danish"),
    (&["fin"], "fi", "Finnish"),
    (&["isl", "ice"], "is", "Icelandic"),
    (&["pol"], "pl", "Polish"),
    (&["ces", "cze"], "cs", "Czech"),
    (&["slk", "slo"], "sk", "Slovak"),
    (&["slv"], "sl", "Slovenian"),
    (&["hrv"], "hr", "Croatian"),
    (&["srp"], "sr", "Serbian"),
    (&["bul"], "bg", "Bulgarian"),
    (&["hun"], "hu", "Hungarian"),
    (&["ron", "rum"], "ro", "Romanian"),
    (&["ell", "gre"], "el", "Greek"),
    (&["tur"], "tr", "Turkish"),
    (&["rus"], "ru", "Russian"),
    (&["ukr"], "uk", "Ukrainian"),
    (&["est"], "et", "Estonian"),
    (&["lav"], "lv", "Latvian"),
    (&["lit"], "lt", "Lithuanian"),
    (&["cat"], "ca", "Catalan"),
    (&["eus", "baq"], "eu", "Basque"),
    (&["glg"], "gl", "Galician"),
    (&["gle"], "ga", "Irish"),
    (&["cym", "wel"], "cy", "Welsh"),
    (&["ara"], "ar", "Arabic"),
    (&["heb"], "he", "Hebrew"),
    (&["fas", "per"], "fa", "Persian"),
    (&["hin"], "hi", "Hindi"),
    (&["ben"], "bn", "Bengali"),
    (&["tam"], "ta", "Tamil"),
    (&["tel"], "te", "Telugu"),
    (&["urd"], "ur", "Urdu"),
    (&["tha"], "th", "Thai"),
    (&["vie"], "vi", "Vietnamese"),
    (&["ind"], "id", "Indonesian"),
    (&["msa", "may"], "ms", "Malay"),
    (&["zho", "chi"], "zh", "Chinese"),
    (&["jpn"], "ja", "Japanese"),
    (&["kor"], "ko", "Korean"),
];

/// The BCP 47 tag of a container's language tag: an ISO 639-2 code becomes its two-letter
/// form where one exists (`eng` -> `en`, `fre` and `fra` -> `fr`), a tag already in BCP 47's
/// shape (`en`, `pt-BR`, `fil`) stays as it is (lower-cased primary subtag), and a missing,
/// `und` or malformed tag is `und`.
pub fn language_tag(raw: Option<&str>) -> String {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return "und".into() };
    let shaped = (2..=35).contains(&raw.len())
        && raw.starts_with(|c: char| c.is_ascii_alphabetic())
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !shaped {
        return "und".into();
    }
    let (primary, rest) = raw.split_once('-').map_or((raw, None), |(p, r)| (p, Some(r)));
    let primary = primary.to_ascii_lowercase();
    if !primary.chars().all(|c| c.is_ascii_alphabetic()) || !(2..=3).contains(&primary.len()) {
        return "und".into();
    }
    let primary = LANGUAGES
        .iter()
        .find(|(codes, _, _)| codes.contains(&primary.as_str()))
        .map_or(primary, |(_, tag, _)| (*tag).to_string());
    match rest {
        Some(rest) => format!("{primary}-{rest}"),
        None => primary,
    }
}

/// The English name of a BCP 47 tag's language (`en-GB` -> English), if the table has it.
pub fn language_name(tag: &str) -> Option<&'static str> {
    let primary = tag.split('-').next().unwrap_or(tag);
    LANGUAGES.iter().find(|(_, two, _)| primary.eq_ignore_ascii_case(two)).map(|(_, _, name)| *name)
}

/// A name players can show: no control characters or quotes (HLS attributes are quoted), at
/// most [`MAX_NAME_CHARS`] characters; `None` when nothing printable is left.
pub fn menu_name(raw: &str) -> Option<String> {
    let cleaned: String = raw.chars().filter(|c| *c != '"').map(|c| if c.is_control() { ' ' } else { c }).collect();
    let cleaned: String = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = cleaned.chars().take(MAX_NAME_CHARS).collect();
    let cut = cut.trim().to_string();
    (!cut.is_empty()).then_some(cut)
}

/// `wanted`, made distinct from `taken` and from each other (case aside): a repeated name
/// gets ` (2)`, ` (3)`, ... (HLS requires distinct names within a group).
pub fn distinct_names(wanted: &[String], taken: &[String]) -> Vec<String> {
    let mut used: Vec<String> = taken.iter().map(|t| t.to_lowercase()).collect();
    let mut out = Vec::new();
    for name in wanted {
        let mut candidate = name.clone();
        let mut n = 2;
        while used.contains(&candidate.to_lowercase()) {
            let suffix = format!(" ({n})");
            let room = MAX_NAME_CHARS.saturating_sub(suffix.chars().count());
            candidate = format!("{}{suffix}", name.chars().take(room).collect::<String>().trim_end());
            n += 1;
        }
        used.push(candidate.to_lowercase());
        out.push(candidate);
    }
    out
}

/// Where an embedded track comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A subtitle stream, by its index in the source (`0:<index>`).
    Stream(u32),
    /// CEA-608 captions (channel 1) carried in the video stream's SEI or user data.
    ClosedCaptions,
}

/// A text track of the source, to extract and announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedCaption {
    pub origin: Origin,
    /// ffmpeg's codec name (`eia_608` for closed captions).
    pub codec: String,
    /// Its language and name as players see them. The key is empty: the track is the source's.
    pub track: CaptionTrack,
    /// Its WebVTT file, relative to the `cmaf` folder: `captions-<language>_<origin>.vtt`
    /// (caption files' names, `captions-<language>.vtt`, never hold an underscore).
    pub file: String,
}

/// A subtitle stream of the source that is not packaged, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub index: u32,
    pub codec: String,
    pub why: &'static str,
}

/// The source's text tracks a `cmaf` output packages, and those it leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddedPlan {
    /// The local source the tracks are read from (set with the rest of the job's argv).
    pub source: PathBuf,
    pub tracks: Vec<EmbeddedCaption>,
    pub skipped: Vec<Skipped>,
}

impl EmbeddedPlan {
    /// The tracks read from subtitle streams (one ffmpeg run for all).
    pub fn streams(&self) -> impl Iterator<Item = &EmbeddedCaption> {
        self.tracks.iter().filter(|t| matches!(t.origin, Origin::Stream(_)))
    }

    /// The closed-caption track, when there is one (a run of its own: it decodes the video).
    pub fn closed_captions(&self) -> Option<&EmbeddedCaption> {
        self.tracks.iter().find(|t| t.origin == Origin::ClosedCaptions)
    }

    /// The note's words for these tracks: `fr (source stream 2)`, and what was left out.
    pub fn describe(&self) -> (Vec<String>, Vec<String>) {
        let kept = self
            .tracks
            .iter()
            .map(|t| match t.origin {
                Origin::Stream(i) => format!("{} (source stream {i})", t.track.language),
                Origin::ClosedCaptions => format!("{} (source CEA-608)", t.track.language),
            })
            .collect();
        let skipped =
            self.skipped.iter().map(|s| format!("source stream {} {} ({})", s.index, s.codec, s.why)).collect();
        (kept, skipped)
    }
}

/// The source's tracks a `cmaf` output with `sidecars` packages: its text subtitle streams in
/// the file's order, then its closed captions, up to what [`MAX_CAPTION_TRACKS`] leaves.
pub fn plan_embedded(media: &MediaInfo, sidecars: &[CaptionTrack]) -> EmbeddedPlan {
    let room = MAX_CAPTION_TRACKS.saturating_sub(sidecars.len());
    let mut kept: Vec<(Origin, &str, String, Option<String>)> = Vec::new();
    let mut skipped = Vec::new();
    for stream in &media.subtitles {
        let SubtitleStream { index, codec, .. } = stream;
        let why = if BITMAP_CODECS.contains(&codec.as_str()) {
            Some("bitmap subtitles")
        } else if !TEXT_CODECS.contains(&codec.as_str()) {
            Some("not a text format")
        } else if kept.len() >= room {
            Some("over the track limit")
        } else {
            None
        };
        match why {
            Some(why) => skipped.push(Skipped { index: *index, codec: codec.clone(), why }),
            None => kept.push((
                Origin::Stream(*index),
                codec,
                language_tag(stream.language.as_deref()),
                stream.title.as_deref().and_then(menu_name),
            )),
        }
    }
    if media.video.as_ref().is_some_and(|v| v.closed_captions) && kept.len() < room {
        kept.push((Origin::ClosedCaptions, "eia_608", "und".into(), Some("Closed captions".into())));
    }
    let wanted: Vec<String> = kept
        .iter()
        .map(|(_, _, language, title)| {
            title.clone().unwrap_or_else(|| language_name(language).unwrap_or("Subtitles").to_string())
        })
        .collect();
    let taken: Vec<String> = sidecars.iter().map(|s| s.label().to_string()).collect();
    let names = distinct_names(&wanted, &taken);
    let tracks = kept
        .into_iter()
        .zip(names)
        .map(|((origin, codec, language, _), name)| {
            let suffix = match origin {
                Origin::Stream(i) => format!("s{i}"),
                Origin::ClosedCaptions => "cc1".into(),
            };
            EmbeddedCaption {
                origin,
                codec: codec.to_string(),
                file: format!("captions-{}_{suffix}.vtt", language.to_ascii_lowercase()),
                track: CaptionTrack { key: String::new(), language, name: Some(name) },
            }
        })
        .collect();
    EmbeddedPlan { source: PathBuf::new(), tracks, skipped }
}

/// One ffmpeg run writing every subtitle stream of `plan` as WebVTT into `folder`: each
/// stream mapped by its index, through the `webvtt` encoder (ASS styling and positions are
/// dropped, italics, bold and underline become `<i>`, `<b>`, `<u>`).
pub fn extract_args(plan: &EmbeddedPlan, folder: &Path) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-i"]);
    args.push(plan.source.as_os_str().to_owned());
    for track in plan.streams() {
        let Origin::Stream(index) = track.origin else { continue };
        args.extend(strings(&["-map", &format!("0:{index}"), "-c:s", "webvtt", "-f", "webvtt"]));
        args.push(folder.join(&track.file).into_os_string());
    }
    args
}

/// The ffmpeg run writing the source's CEA-608 captions as WebVTT to `out`: ffmpeg 5.1 gives
/// the captions of a video's SEI as a stream only through the `movie` source's `+subcc`
/// output. The source's path is quoted for the filter graph ([`filter_quoted`]); `None` for a
/// path that is not UTF-8.
pub fn closed_caption_args(source: &Path, out: &Path) -> Option<Vec<OsString>> {
    let graph = format!("movie={}[out0+subcc]", filter_quoted(source.to_str()?));
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-f", "lavfi", "-i", &graph]);
    args.extend(strings(&["-map", "0:s:0", "-c:s", "webvtt", "-f", "webvtt"]));
    args.push(out.as_os_str().to_owned());
    Some(args)
}

/// `value` as a filter option inside a filter graph: every character the option parser or the
/// graph parser treats specially (`\ ' : = , ; [ ]` and blanks) is escaped with a backslash,
/// once for the option and once more for the graph, so the filter receives `value` unchanged.
pub fn filter_quoted(value: &str) -> String {
    fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len() * 2);
        for c in text.chars() {
            if matches!(c, '\\' | '\'' | ':' | '=' | ',' | ';' | '[' | ']' | ' ' | '\t' | '\n' | '\r') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }
    escape(&escape(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::probe::VideoStream;

    #[test]
    fn container_languages_become_bcp47_tags() {
        let cases = [
            (Some("eng"), "en"),
            (Some("fre"), "fr"),
            (Some("fra"), "fr"),
            (Some("ger"), "de"),
            (Some("DEU"), "de"),
            (Some("spa"), "es"),
            (Some("chi"), "zh"),
            (Some("fil"), "fil"),
            (Some("en"), "en"),
            (Some("pt-BR"), "pt-BR"),
            (Some("por-BR"), "pt-BR"),
            (Some("und"), "und"),
            (Some(""), "und"),
            (None, "und"),
            (Some("e"), "und"),
            (Some("en_US"), "und"),
            (Some("english"), "und"),
            (Some("1ab"), "und"),
        ];
        for (raw, tag) in cases {
            assert_eq!(language_tag(raw), tag, "{raw:?}");
        }
        assert_eq!(language_name("en-GB"), Some("English"));
        assert_eq!(language_name("und"), None);
    }

    #[test]
    fn names_are_printable_short_and_distinct() {
        assert_eq!(menu_name("  Director's\n\"cut\"  ").as_deref(), Some("Director's cut"));
        assert_eq!(menu_name("\u{7}\"").as_deref(), None);
        assert_eq!(menu_name(&"x".repeat(200)).map(|n| n.chars().count()), Some(64));
        let names = distinct_names(
            &["English".into(), "english".into(), "French".into(), "English".into()],
            &["English".into()],
        );
        assert_eq!(names, vec!["English (2)", "english (3)", "French", "English (4)"]);
        let long = "y".repeat(64);
        let names = distinct_names(&[long.clone(), long.clone()], &[]);
        assert_eq!(names[1].chars().count(), 64);
        assert!(names[1].ends_with(" (2)"));
    }

    fn stream(index: u32, codec: &str, language: Option<&str>, title: Option<&str>) -> SubtitleStream {
        SubtitleStream {
            index,
            codec: codec.into(),
            language: language.map(str::to_string),
            title: title.map(str::to_string),
            default: false,
            forced: false,
        }
    }

    fn source(subtitles: Vec<SubtitleStream>, closed_captions: bool) -> MediaInfo {
        MediaInfo {
            format: "matroska,webm".into(),
            duration_seconds: Some(10.0),
            video: Some(VideoStream {
                codec: "h264".into(),
                width: 640,
                height: 360,
                pix_fmt: None,
                frame_rate: Some(25.0),
                rotation: 0,
                closed_captions,
            }),
            audio: None,
            video_streams: 1,
            audio_streams: 0,
            subtitles,
        }
    }

    #[test]
    fn text_streams_are_kept_bitmaps_noted_and_sidecars_come_first() {
        let media = source(
            vec![
                stream(2, "subrip", Some("fre"), None),
                stream(3, "hdmv_pgs_subtitle", Some("eng"), None),
                stream(4, "ass", Some("ger"), Some("Deutsch \"SDH\"")),
                stream(5, "mov_text", Some("eng"), None),
                stream(6, "webvtt", None, None),
            ],
            true,
        );
        let sidecar = CaptionTrack { key: "uploads/a.srt".into(), language: "en".into(), name: Some("English".into()) };
        let plan = plan_embedded(&media, std::slice::from_ref(&sidecar));
        let summary: Vec<(Origin, &str, &str, &str)> = plan
            .tracks
            .iter()
            .map(|t| (t.origin, t.track.language.as_str(), t.track.label(), t.file.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Origin::Stream(2), "fr", "French", "captions-fr_s2.vtt"),
                (Origin::Stream(4), "de", "Deutsch SDH", "captions-de_s4.vtt"),
                (Origin::Stream(5), "en", "English (2)", "captions-en_s5.vtt"),
                (Origin::Stream(6), "und", "Subtitles", "captions-und_s6.vtt"),
                (Origin::ClosedCaptions, "und", "Closed captions", "captions-und_cc1.vtt"),
            ]
        );
        assert_eq!(
            plan.skipped,
            vec![Skipped { index: 3, codec: "hdmv_pgs_subtitle".into(), why: "bitmap subtitles" }]
        );

        // Seven caption files leave room for one of the source's tracks.
        let sidecars: Vec<CaptionTrack> = (0..7)
            .map(|i| CaptionTrack { key: format!("uploads/{i}.srt"), language: format!("l{i}"), name: None })
            .collect();
        let plan = plan_embedded(&media, &sidecars);
        assert_eq!(plan.tracks.len(), 1);
        assert_eq!(plan.tracks[0].origin, Origin::Stream(2));
        let over: Vec<u32> = plan.skipped.iter().filter(|s| s.why == "over the track limit").map(|s| s.index).collect();
        assert_eq!(over, vec![4, 5, 6]);
        let (kept, skipped) = plan.describe();
        assert_eq!(kept, vec!["fr (source stream 2)"]);
        assert_eq!(skipped[0], "source stream 3 hdmv_pgs_subtitle (bitmap subtitles)");
    }

    #[test]
    fn one_run_maps_every_stream_by_index() {
        let media = source(vec![stream(2, "subrip", Some("fra"), None), stream(3, "ass", Some("deu"), None)], true);
        let mut plan = plan_embedded(&media, &[]);
        plan.source = PathBuf::from("/s/source");
        let args: Vec<String> =
            extract_args(&plan, Path::new("/s/out/cmaf")).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args.join(" "),
            "-hide_banner -nostdin -y -protocol_whitelist file -i /s/source \
             -map 0:2 -c:s webvtt -f webvtt /s/out/cmaf/captions-fr_s2.vtt \
             -map 0:3 -c:s webvtt -f webvtt /s/out/cmaf/captions-de_s3.vtt"
        );
        let cc = closed_caption_args(Path::new("/s/source"), Path::new("/s/cc.vtt")).unwrap();
        let cc: Vec<String> = cc.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            cc.join(" "),
            "-hide_banner -nostdin -y -f lavfi -i movie=/s/source[out0+subcc] -map 0:s:0 -c:s webvtt -f webvtt /s/cc.vtt"
        );
    }

    #[test]
    fn filter_values_are_escaped_for_both_parsers() {
        assert_eq!(filter_quoted("/tmp/a.mp4"), "/tmp/a.mp4");
        assert_eq!(filter_quoted("/a:b"), "/a\\\\\\:b");
        assert_eq!(filter_quoted("it's"), "it\\\\\\'s");
        assert_eq!(filter_quoted("a,b[c]"), "a\\\\\\,b\\\\\\[c\\\\\\]");
        assert_eq!(filter_quoted("\\"), "\\\\\\\\");
    }
}
