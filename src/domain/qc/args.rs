//! The argv of the one ffmpeg pass that measures a source for its quality checks.
//!
//! One decode serves every rule: the picture goes through the video filters the rules ask for,
//! the sound through the audio filters, and both end in the `null` muxer. Only numbers from
//! validated settings enter the filter strings.

use std::ffi::OsString;
use std::path::Path;

use crate::domain::args::{seconds, strings};
use crate::domain::qc::{QcSettings, SourceStreams};

/// Lines of the picture `blackdetect`, `freezedetect` and `cropdetect` look at. Black, a
/// frozen picture and bars show at any size, and at 360 lines these filters cost about half as
/// much as on a 1080p picture (scaling included).
pub const ANALYSIS_HEIGHT: u32 = 360;

/// ffmpeg's arguments to measure `input` for `settings`: one pass over the file, reading local
/// files only, writing nothing. Call it when [`QcSettings::measures`] says there is something
/// to measure; the log it prints is read by [`QcLogParser`](crate::domain::qc::QcLogParser).
pub fn analysis_args(settings: &QcSettings, input: &Path, streams: SourceStreams) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-nostats", "-protocol_whitelist", "file", "-i"]);
    args.push(input.as_os_str().to_owned());
    if let Some(chain) = video_chain(settings).filter(|_| streams.video) {
        args.extend(strings(&["-map", "0:v:0", "-vf", &chain]));
    }
    if let Some(chain) = audio_chain(settings).filter(|_| streams.audio) {
        args.extend(strings(&["-map", "0:a:0", "-af", &chain]));
    }
    // No metadata or chapters in the output's description: the log then holds no text of the
    // source's after the input's own description, which the parser skips.
    args.extend(strings(&["-map_metadata", "-1", "-map_chapters", "-1", "-f", "null", "-"]));
    args
}

/// The video filters the rules ask for, or `None`.
///
/// `idet` comes first: it compares the two fields of each frame, which any scaling would mix.
/// The others see the picture scaled down to [`ANALYSIS_HEIGHT`] lines (never up), with the
/// cheapest scaler: they count dark pixels, compare frames and find dark edges, none of which
/// needs a fine picture. `cropdetect` comes last, so its coordinates are in the size the log's
/// output stream line announces.
fn video_chain(settings: &QcSettings) -> Option<String> {
    let mut filters = Vec::new();
    if settings.interlace.is_some() {
        filters.push("idet".to_string());
    }
    if settings.black.is_some() || settings.freeze.is_some() || settings.letterbox.is_some() {
        filters.push(format!("scale=w=-2:h='min(ih,{ANALYSIS_HEIGHT})':flags=fast_bilinear"));
    }
    // Each detector reports only stretches at least as long as its rule's limit: the log stays
    // short however many fades a film has, and no rule can break on a shorter stretch.
    if let Some(rule) = settings.black {
        filters.push(format!("blackdetect=d={}", seconds(rule.max_seconds)));
    }
    if let Some(rule) = settings.freeze {
        filters.push(format!("freezedetect=n={:.1}dB:d={}", rule.noise_db, seconds(rule.max_seconds)));
    }
    if settings.letterbox.is_some() {
        // Never reset: the box is the union of the picture over every frame, so bars are what
        // stays black throughout. A limit of 0.094 is cropdetect's usual 24 of 255, at any bit depth.
        filters.push("cropdetect=limit=0.094:round=2:reset=0".to_string());
    }
    (!filters.is_empty()).then(|| filters.join(","))
}

/// The audio filters the rules ask for, or `None`. `ebur128` logs every 100 ms of sound at the
/// verbose level, below the pass's log level, so only its summary is printed.
fn audio_chain(settings: &QcSettings) -> Option<String> {
    let mut filters = Vec::new();
    if let Some(rule) = settings.silence {
        filters.push(format!("silencedetect=n={:.1}dB:d={}", rule.threshold_db, seconds(rule.max_seconds)));
    }
    if settings.loudness.is_some() {
        filters.push("ebur128=peak=true:framelog=verbose".to_string());
    }
    (!filters.is_empty()).then(|| filters.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::qc::{BlackRule, FreezeRule, InterlaceRule, LetterboxRule, LoudnessRule, SilenceRule};

    const BOTH: SourceStreams = SourceStreams { video: true, audio: true };

    fn joined(settings: &QcSettings, streams: SourceStreams) -> String {
        let args = analysis_args(settings, Path::new("/s/in/source.mov"), streams);
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    fn all() -> QcSettings {
        QcSettings {
            black: Some(BlackRule::default()),
            freeze: Some(FreezeRule::default()),
            silence: Some(SilenceRule { threshold_db: -50.0, ..SilenceRule::default() }),
            interlace: Some(InterlaceRule::default()),
            letterbox: Some(LetterboxRule::default()),
            loudness: Some(LoudnessRule::default()),
        }
    }

    #[test]
    fn every_rule_is_one_pass() {
        assert_eq!(
            joined(&all(), BOTH),
            "-hide_banner -nostdin -nostats -protocol_whitelist file -i /s/in/source.mov \
             -map 0:v:0 -vf idet,scale=w=-2:h='min(ih,360)':flags=fast_bilinear,blackdetect=d=2.000,\
             freezedetect=n=-50.0dB:d=5.000,cropdetect=limit=0.094:round=2:reset=0 \
             -map 0:a:0 -af silencedetect=n=-50.0dB:d=5.000,ebur128=peak=true:framelog=verbose \
             -map_metadata -1 -map_chapters -1 -f null -"
        );
    }

    #[test]
    fn only_the_filters_asked_for_run() {
        let interlace = QcSettings { interlace: Some(InterlaceRule::default()), ..QcSettings::default() };
        let args = joined(&interlace, BOTH);
        assert!(args.contains("-map 0:v:0 -vf idet -map_metadata"), "no scaling for idet alone: {args}");
        assert!(!args.contains("0:a:0"), "{args}");

        let loudness = QcSettings { loudness: Some(LoudnessRule::default()), ..QcSettings::default() };
        let args = joined(&loudness, BOTH);
        assert!(args.contains("-map 0:a:0 -af ebur128=peak=true:framelog=verbose -map_metadata"), "{args}");
        assert!(!args.contains("0:v:0"), "{args}");

        let black =
            QcSettings { black: Some(BlackRule { max_seconds: 0.5, ..BlackRule::default() }), ..QcSettings::default() };
        let args = joined(&black, BOTH);
        assert!(args.contains("-vf scale=w=-2:h='min(ih,360)':flags=fast_bilinear,blackdetect=d=0.500 -map_metadata"));
    }

    #[test]
    fn streams_the_source_lacks_are_not_mapped() {
        let sound_only = joined(&all(), SourceStreams { video: false, audio: true });
        assert!(!sound_only.contains("0:v:0") && sound_only.contains("-map 0:a:0"), "{sound_only}");
        let picture_only = joined(&all(), SourceStreams { video: true, audio: false });
        assert!(!picture_only.contains("0:a:0") && picture_only.contains("-map 0:v:0"), "{picture_only}");
    }
}
