//! Reading the measuring pass's log ([`analysis_args`](crate::domain::qc::analysis_args)), line
//! by line as ffmpeg prints it, into [`QcMeasurements`].
//!
//! Memory stays bounded however long the source: `cropdetect` prints a line per frame, of which
//! only the last counts (its box grows over the whole file); stretches are kept up to
//! [`MAX_SPANS`] of each kind; everything else is a few numbers.
//!
//! Only lines ffmpeg writes itself are read. The input's description, where the source's own
//! text (titles, tags) is printed, comes before `Stream mapping:` and is skipped but for its
//! `Duration:` line; the pass drops metadata from the output's description; every other line
//! read starts with a filter's `[name @ 0x…]` tag or is the final report.

use crate::domain::qc::{CropArea, FieldCounts, Loudness, QcMeasurements, SILENT_PEAK_DBTP, Span};

/// Stretches kept of each kind (black, frozen, silent). Past it, the longest are kept: they
/// decide the findings.
pub const MAX_SPANS: usize = 100;

/// Folds the measuring pass's log into [`QcMeasurements`]: feed each line to [`line`](Self::line),
/// then call [`finish`](Self::finish).
#[derive(Debug, Default)]
pub struct QcLogParser {
    /// Past `Stream mapping:`: the source's own description is over.
    running: bool,
    /// The input's `Duration:`, used when the final report gives no time.
    header_duration: Option<f64>,
    /// The time of the last report: how far the pass read.
    read_time: Option<f64>,
    /// The analysed picture's size, from the output's video stream line.
    frame: Option<(u32, u32)>,
    black: Vec<Span>,
    /// A black stretch reported after the last report: `blackdetect` reports a stretch still
    /// running at the end only when it is closed down, ended at the last frame's start.
    black_after_report: Option<Span>,
    freeze: Vec<Span>,
    freeze_open: Option<f64>,
    silence: Vec<Span>,
    silence_open: Option<f64>,
    fields: Option<FieldCounts>,
    /// `cropdetect`'s last box: x1, x2, y1, y2 (inclusive; x1 > x2 while every frame was black).
    crop: Option<[i64; 4]>,
    /// An `ebur128` summary being read.
    summary: Option<Summary>,
    loudness: Option<Loudness>,
}

/// The values of an `ebur128` summary read so far.
#[derive(Debug, Default)]
struct Summary {
    integrated: Option<f64>,
    lra: Option<f64>,
    peak: Option<f64>,
}

impl QcLogParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one line of ffmpeg's log (without its line ending).
    pub fn line(&mut self, line: &str) {
        if self.summary.is_some() && self.summary_line(line) {
            return;
        }
        if !self.running {
            if line.starts_with("Stream mapping:") {
                self.running = true;
            } else if let Some(rest) = line.strip_prefix("  Duration: ") {
                self.header_duration = rest.split(',').next().and_then(clock);
            }
            return;
        }
        if let Some(stream) = line.strip_prefix("  Stream #") {
            if self.frame.is_none() {
                self.frame = stream.split_once(": Video: ").and_then(|(_, desc)| picture_size(desc));
            }
            return;
        }
        if line.starts_with("frame=") || line.starts_with("size=") {
            self.report(line);
            return;
        }
        let Some((filter, rest)) = tagged(line) else { return };
        match filter {
            "blackdetect" => self.black_line(rest),
            "freezedetect" => self.freeze_line(rest),
            "silencedetect" => self.silence_line(rest),
            "idet" => self.idet_line(rest),
            "cropdetect" => self.crop = crop_box(rest).or(self.crop),
            "ebur128" if rest.trim_end() == "Summary:" => self.summary = Some(Summary::default()),
            _ => {}
        }
    }

    /// A report line (`frame=… time=00:00:05.31 …`): the pass has read this far.
    fn report(&mut self, line: &str) {
        if let Some(time) = line.split_whitespace().find_map(|word| word.strip_prefix("time=")).and_then(clock) {
            self.read_time = Some(time);
        }
        // A black stretch reported before another report did not run to the end.
        if let Some(span) = self.black_after_report.take() {
            push_span(&mut self.black, span);
        }
    }

    /// `black_start:0 black_end:2.52 black_duration:2.52`
    fn black_line(&mut self, rest: &str) {
        let (Some(start), Some(end)) = (value(rest, "black_start:"), value(rest, "black_end:")) else { return };
        let span = Span { start: start.max(0.0), end };
        if self.read_time.is_some() {
            if let Some(earlier) = self.black_after_report.replace(span) {
                push_span(&mut self.black, earlier);
            }
        } else {
            push_span(&mut self.black, span);
        }
    }

    /// `lavfi.freezedetect.freeze_start: 2.24`, `…freeze_duration: 3.76`, `…freeze_end: 6`
    fn freeze_line(&mut self, rest: &str) {
        let rest = rest.trim_start_matches("lavfi.freezedetect.");
        stretch_line(rest, ("freeze_start:", "freeze_end:"), &mut self.freeze_open, &mut self.freeze);
    }

    /// `silence_start: 1.00267`, `silence_end: 5.01333 | silence_duration: 4.01067`
    fn silence_line(&mut self, rest: &str) {
        stretch_line(rest, ("silence_start:", "silence_end:"), &mut self.silence_open, &mut self.silence);
    }

    /// `Multi frame detection: TFF:     0 BFF:     0 Progressive:   131 Undetermined:     1`,
    /// added up: a filter graph built again mid-file (a change of picture size) reports each
    /// part.
    fn idet_line(&mut self, rest: &str) {
        let Some(counts) = rest.strip_prefix("Multi frame detection:") else { return };
        let words: Vec<&str> = counts.split_whitespace().collect();
        let fields = self.fields.get_or_insert_with(FieldCounts::default);
        for pair in words.chunks(2) {
            let [label, n] = pair else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match *label {
                "TFF:" => fields.tff += n,
                "BFF:" => fields.bff += n,
                "Progressive:" => fields.progressive += n,
                "Undetermined:" => fields.undetermined += n,
                _ => {}
            }
        }
    }

    /// A line while an `ebur128` summary is read; `false` when the summary is over (the line
    /// is then read as any other).
    fn summary_line(&mut self, line: &str) -> bool {
        let Some(summary) = self.summary.as_mut() else { return false };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return true;
        }
        if line.starts_with(' ')
            && let Some((key, rest)) = trimmed.split_once(':')
        {
            let number = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
            match key {
                "I" => summary.integrated = number,
                "LRA" => summary.lra = number,
                "Peak" => summary.peak = number,
                "Integrated loudness" | "Loudness range" | "True peak" | "Threshold" | "LRA low" | "LRA high" => {}
                _ => return self.end_summary(),
            }
            return true;
        }
        self.end_summary()
    }

    /// Keeps a complete summary (the last one wins) and stops reading it; always `false`.
    fn end_summary(&mut self) -> bool {
        if let Some(Summary { integrated: Some(i), lra: Some(lra), peak: Some(peak) }) = self.summary.take()
            && i.is_finite()
            && lra.is_finite()
            && !peak.is_nan()
        {
            let true_peak_dbtp = if peak.is_finite() { peak } else { SILENT_PEAK_DBTP };
            self.loudness = Some(Loudness { integrated_lufs: i, lra, true_peak_dbtp });
        }
        false
    }

    /// The measurements. Stretches still open at the end (a freeze or silence running to the
    /// end of the file) are closed at the duration, and every stretch ends by it.
    pub fn finish(mut self) -> QcMeasurements {
        self.end_summary();
        let latest_end =
            || self.black.iter().chain(&self.freeze).chain(&self.silence).map(|s| s.end).fold(0.0, f64::max);
        let duration = self.read_time.or(self.header_duration).unwrap_or_else(latest_end);
        if let Some(span) = self.black_after_report.take() {
            push_span(&mut self.black, Span { start: span.start, end: duration.max(span.end) });
        }
        if let Some(start) = self.freeze_open.take() {
            push_span(&mut self.freeze, Span { start, end: duration });
        }
        if let Some(start) = self.silence_open.take() {
            push_span(&mut self.silence, Span { start, end: duration });
        }
        let crop = match (self.crop, self.frame) {
            (Some(bounds), Some(frame)) => crop_area(bounds, frame),
            _ => None,
        };
        QcMeasurements {
            duration,
            black: ordered(self.black, duration),
            freeze: ordered(self.freeze, duration),
            silence: ordered(self.silence, duration),
            interlace: self.fields,
            crop,
            loudness: self.loudness,
        }
    }
}

/// A detector's line that opens a stretch (`keys.0`) or closes the open one (`keys.1`) into
/// `spans`.
fn stretch_line(rest: &str, keys: (&str, &str), open: &mut Option<f64>, spans: &mut Vec<Span>) {
    if let Some(start) = value(rest, keys.0) {
        *open = Some(start.max(0.0));
    } else if let Some(end) = value(rest, keys.1)
        && let Some(start) = open.take()
    {
        push_span(spans, Span { start, end });
    }
}

/// Adds a stretch, keeping the [`MAX_SPANS`] longest.
fn push_span(spans: &mut Vec<Span>, span: Span) {
    if !(span.start.is_finite() && span.end.is_finite()) {
        return;
    }
    if spans.len() < MAX_SPANS {
        spans.push(span);
        return;
    }
    let shortest = spans.iter().enumerate().min_by(|a, b| a.1.seconds().total_cmp(&b.1.seconds()));
    if let Some((at, kept)) = shortest
        && kept.seconds() < span.seconds()
    {
        spans[at] = span;
    }
}

/// Stretches in order of start, none past `duration`.
fn ordered(mut spans: Vec<Span>, duration: f64) -> Vec<Span> {
    if duration > 0.0 {
        for span in &mut spans {
            span.end = span.end.min(duration);
            span.start = span.start.min(span.end);
        }
    }
    spans.sort_by(|a, b| a.start.total_cmp(&b.start));
    spans
}

/// A filter's line: `[Parsed_idet_0 @ 0x55…] rest` or `[blackdetect @ 0x55…] rest` gives
/// (`idet`, `rest`) or (`blackdetect`, `rest`).
fn tagged(line: &str) -> Option<(&str, &str)> {
    let (tag, rest) = line.strip_prefix('[')?.split_once("] ")?;
    let (name, _) = tag.split_once(" @ ")?;
    let name = match name.strip_prefix("Parsed_") {
        Some(parsed) => parsed.rsplit_once('_').map_or(parsed, |(filter, _)| filter),
        None => name,
    };
    Some((name, rest))
}

/// The number after `key` (`black_end:2.52`, `silence_end: 5.01 | …`).
fn value(text: &str, key: &str) -> Option<f64> {
    let (_, after) = text.split_once(key)?;
    let word = after.split_whitespace().next()?;
    word.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `HH:MM:SS.cc` in seconds (`N/A` and negative times: `None`).
fn clock(text: &str) -> Option<f64> {
    let mut parts = text.trim().split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || h.starts_with('-') {
        return None;
    }
    let seconds = h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
    seconds.is_finite().then_some(seconds)
}

/// The picture size in a stream description (`wrapped_avframe, yuv420p(progressive), 640x360
/// [SAR 1:1 DAR 16:9], …`).
fn picture_size(desc: &str) -> Option<(u32, u32)> {
    desc.split(", ").find_map(|part| {
        let (w, h) = part.split_whitespace().next()?.split_once('x')?;
        let digits = |s: &str| !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(w) && digits(h)) {
            return None;
        }
        Some((w.parse().ok()?, h.parse().ok()?))
    })
}

/// `x1:0 x2:639 y1:45 y2:314 w:… crop=…` gives [x1, x2, y1, y2].
fn crop_box(rest: &str) -> Option<[i64; 4]> {
    let mut bounds = [None; 4];
    for word in rest.split_whitespace() {
        let Some((key, n)) = word.split_once(':') else { continue };
        let at = match key {
            "x1" => 0,
            "x2" => 1,
            "y1" => 2,
            "y2" => 3,
            _ => continue,
        };
        bounds[at] = n.parse::<i64>().ok();
    }
    Some([bounds[0]?, bounds[1]?, bounds[2]?, bounds[3]?])
}

/// The picture's box in a `width`×`height` frame; `None` when no frame had any picture.
fn crop_area([x1, x2, y1, y2]: [i64; 4], (width, height): (u32, u32)) -> Option<CropArea> {
    let (w, h) = (i64::from(width), i64::from(height));
    let (x1, x2, y1, y2) = (x1.max(0), x2.min(w - 1), y1.max(0), y2.min(h - 1));
    if x2 < x1 || y2 < y1 {
        return None;
    }
    let size = |n: i64| u32::try_from(n).ok();
    Some(CropArea {
        width: size(x2 - x1 + 1)?,
        height: size(y2 - y1 + 1)?,
        x: size(x1)?,
        y: size(y1)?,
        frame_width: width,
        frame_height: height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ffmpeg 5.1's log of the pass over a clip whose last 2 s are black, still and silent
    /// (cropdetect's 180 lines cut to their first and last).
    const ENDS_BLACK: &str = "\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from '/s/in/source.mp4':
  Metadata:
    major_brand     : isom
    minor_version   : 512
    compatible_brands: isomiso2avc1mp41
    encoder         : Lavf59.27.100
  Duration: 00:00:07.31, start: 0.000000, bitrate: 2019 kb/s
  Stream #0:0[0x1](und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], 1766 kb/s, 25 fps, 25 tbr, 12800 tbn (default)
    Metadata:
      handler_name    : VideoHandler
      vendor_id       : [0][0][0][0]
      encoder         : Lavc59.37.100 libx264
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, 5.1, fltp, 254 kb/s (default)
    Metadata:
      handler_name    : SoundHandler
      vendor_id       : [0][0][0][0]
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> wrapped_avframe (native))
  Stream #0:1 -> #0:1 (aac (native) -> pcm_s16le (native))
Output #0, null, to 'pipe:':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: wrapped_avframe, yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], q=2-31, 200 kb/s, 25 fps, 25 tbn (default)
    Metadata:
      encoder         : Lavc59.37.100 wrapped_avframe
  Stream #0:1: Audio: pcm_s16le, 48000 Hz, 5.1, s16, 4608 kb/s (default)
    Metadata:
      encoder         : Lavc59.37.100 pcm_s16le
[Parsed_cropdetect_4 @ 0x55a709aaaf80] x1:0 x2:639 y1:0 y2:359 w:640 h:360 x:0 y:0 pts:1024 t:0.080000 crop=640:360:0:0
[silencedetect @ 0x55a7093aa1c0] silence_start: 5.31196
[freezedetect @ 0x55a709aaa9c0] lavfi.freezedetect.freeze_start: 5.28
[Parsed_cropdetect_4 @ 0x55a709aaaf80] x1:0 x2:639 y1:0 y2:359 w:640 h:360 x:0 y:0 pts:92672 t:7.240000 crop=640:360:0:0
frame=  182 fps=0.0 q=-0.0 Lsize=N/A time=00:00:07.31 bitrate=N/A speed=12.8x    
video:84kB audio:4116kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_idet_0 @ 0x55a709aa8d80] Repeated Fields: Neither:   182 Top:     0 Bottom:     0
[Parsed_idet_0 @ 0x55a709aa8d80] Single frame detection: TFF:     0 BFF:     1 Progressive:    34 Undetermined:   147
[Parsed_idet_0 @ 0x55a709aa8d80] Multi frame detection: TFF:     0 BFF:     0 Progressive:   169 Undetermined:    13
[blackdetect @ 0x55a709aaa1c0] black_start:5.28 black_end:7.24 black_duration:1.96
[silencedetect @ 0x55a7093aa1c0] silence_end: 7.31733 | silence_duration: 2.00537
[Parsed_ebur128_1 @ 0x55a7093aab40] Summary:

  Integrated loudness:
    I:         -34.1 LUFS
    Threshold: -44.7 LUFS

  Loudness range:
    LRA:         5.9 LU
    Threshold: -54.4 LUFS
    LRA low:   -38.7 LUFS
    LRA high:  -32.9 LUFS

  True peak:
    Peak:      -10.7 dBFS
";

    /// 2.5 s of black, then footage (video only): the black is also a still picture.
    const STARTS_BLACK: &str = "\
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> wrapped_avframe (native))
Output #0, null, to 'pipe:':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: wrapped_avframe, yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], q=2-31, 200 kb/s, 25 fps, 25 tbn (default)
    Metadata:
      encoder         : Lavc59.37.100 wrapped_avframe
[freezedetect @ 0x557172d90840] lavfi.freezedetect.freeze_start: 0
[blackdetect @ 0x557172d8ffc0] black_start:0 black_end:2.52 black_duration:2.52
[freezedetect @ 0x557172d90840] lavfi.freezedetect.freeze_duration: 2.52
[freezedetect @ 0x557172d90840] lavfi.freezedetect.freeze_end: 2.52
frame=  195 fps=0.0 q=-0.0 Lsize=N/A time=00:00:07.80 bitrate=N/A speed=58.5x    
video:90kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
";

    /// A 16:9 picture padded to 4:3 (analysed at 480x360), and an interlaced clip.
    const LETTERBOX: &str = "\
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> wrapped_avframe (native))
Output #0, null, to 'pipe:':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: wrapped_avframe, yuv420p(tv, progressive), 480x360 [SAR 1:1 DAR 4:3], q=2-31, 200 kb/s, 25 fps, 25 tbn (default)
    Metadata:
      encoder         : Lavc59.37.100 wrapped_avframe
[Parsed_cropdetect_4 @ 0x55d08537c880] x1:0 x2:479 y1:45 y2:314 w:480 h:268 x:0 y:46 pts:67072 t:5.240000 crop=480:268:0:46
frame=  132 fps=0.0 q=-0.0 Lsize=N/A time=00:00:05.28 bitrate=N/A speed=25.3x    
[Parsed_idet_0 @ 0x5618473589c0] Repeated Fields: Neither:    66 Top:     0 Bottom:     0
[Parsed_idet_0 @ 0x5618473589c0] Single frame detection: TFF:    66 BFF:     0 Progressive:     0 Undetermined:     0
[Parsed_idet_0 @ 0x5618473589c0] Multi frame detection: TFF:    66 BFF:     0 Progressive:     0 Undetermined:     0
";

    /// Three seconds of digital silence, sound only.
    const SILENT: &str = "\
Stream mapping:
  Stream #0:0 -> #0:0 (aac (native) -> pcm_s16le (native))
Output #0, null, to 'pipe:':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Audio: pcm_s16le, 48000 Hz, stereo, s16, 1536 kb/s (default)
    Metadata:
      encoder         : Lavc59.37.100 pcm_s16le
[silencedetect @ 0x559fb16b3500] silence_start: 0
size=N/A time=00:00:03.00 bitrate=N/A speed=94.2x    
video:0kB audio:564kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[silencedetect @ 0x559fb16b3500] silence_end: 3.008 | silence_duration: 3.008
[Parsed_ebur128_1 @ 0x559fb1746000] Summary:

  Integrated loudness:
    I:         -70.0 LUFS
    Threshold:   0.0 LUFS

  Loudness range:
    LRA:         0.0 LU
    Threshold:   0.0 LUFS
    LRA low:     0.0 LUFS
    LRA high:    0.0 LUFS

  True peak:
    Peak:       -inf dBFS
";

    fn parse(log: &str) -> QcMeasurements {
        let mut parser = QcLogParser::new();
        log.lines().for_each(|line| parser.line(line));
        parser.finish()
    }

    fn span(start: f64, end: f64) -> Span {
        Span { start, end }
    }

    #[test]
    fn stretches_running_to_the_end_close_at_the_duration() {
        let m = parse(ENDS_BLACK);
        assert_eq!(m.duration, 7.31);
        // blackdetect closed its stretch at the last frame's start (7.24): it ran to the end.
        assert_eq!(m.black, vec![span(5.28, 7.31)]);
        // freezedetect never closed its stretch.
        assert_eq!(m.freeze, vec![span(5.28, 7.31)]);
        // silencedetect closed it a little past the end.
        assert_eq!(m.silence, vec![span(5.31196, 7.31)]);
        assert_eq!(m.interlace, Some(FieldCounts { tff: 0, bff: 0, progressive: 169, undetermined: 13 }));
        assert_eq!(m.crop, Some(CropArea { width: 640, height: 360, x: 0, y: 0, frame_width: 640, frame_height: 360 }));
        assert_eq!(m.loudness, Some(Loudness { integrated_lufs: -34.1, lra: 5.9, true_peak_dbtp: -10.7 }));
    }

    #[test]
    fn closed_stretches_keep_their_ends() {
        let m = parse(STARTS_BLACK);
        assert_eq!(m.duration, 7.8);
        assert_eq!(m.black, vec![span(0.0, 2.52)]);
        assert_eq!(m.freeze, vec![span(0.0, 2.52)]);
        assert!(m.silence.is_empty() && m.loudness.is_none() && m.interlace.is_none() && m.crop.is_none());
    }

    #[test]
    fn bars_and_fields() {
        let m = parse(LETTERBOX);
        let crop = m.crop.unwrap();
        assert_eq!(crop, CropArea { width: 480, height: 270, x: 0, y: 45, frame_width: 480, frame_height: 360 });
        assert_eq!(crop.bars_ratio(), 0.25);
        assert_eq!(m.interlace.and_then(|f| f.interlaced_ratio()), Some(1.0));
    }

    #[test]
    fn digital_silence_has_a_finite_peak_and_the_floor_loudness() {
        let m = parse(SILENT);
        assert_eq!(m.duration, 3.0);
        assert_eq!(m.silence, vec![span(0.0, 3.0)]);
        assert_eq!(m.loudness, Some(Loudness { integrated_lufs: -70.0, lra: 0.0, true_peak_dbtp: SILENT_PEAK_DBTP }));
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"true_peak_dbtp\":-144.0"), "{json}");
    }

    #[test]
    fn the_sources_own_text_is_not_read_as_measures() {
        // A title with line breaks, in the input's description (before `Stream mapping:`), and
        // indented as ffmpeg prints every metadata line after it.
        let forged = "\
Input #0, matroska,webm, from '/s/in/source.mkv':
  Metadata:
    title           : x
[blackdetect @ 0x1] black_start:0 black_end:900 black_duration:900
[Parsed_ebur128_0 @ 0x1] Summary:
    I:         -5.0 LUFS
  Duration: 00:00:10.00, start: 0.000000, bitrate: 1 kb/s
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> wrapped_avframe (native))
Output #0, null, to 'pipe:':
  Metadata:
    encoder         : x
                    : [freezedetect @ 0x1] lavfi.freezedetect.freeze_start: 0
frame=  250 fps=0.0 q=-0.0 Lsize=N/A time=00:00:10.00 bitrate=N/A speed=40x
";
        let m = parse(forged);
        assert_eq!(m, QcMeasurements { duration: 10.0, ..QcMeasurements::default() });
    }

    #[test]
    fn the_duration_falls_back_to_the_header_then_to_the_stretches() {
        let header = "  Duration: 00:01:02.50, start: 0.000000, bitrate: 1 kb/s\nStream mapping:\n";
        assert_eq!(parse(header).duration, 62.5);
        let no_header = "Stream mapping:\n[silencedetect @ 0x1] silence_start: 1\n[silencedetect @ 0x1] silence_end: 4.5 | silence_duration: 3.5\n";
        assert_eq!(parse(no_header).duration, 4.5);
        assert_eq!(parse("  Duration: N/A, bitrate: N/A\nStream mapping:\n").duration, 0.0);
    }

    #[test]
    fn tags_of_any_ffmpeg_naming_are_read() {
        assert_eq!(tagged("[Parsed_blackdetect_12 @ 0x5] black_start:1"), Some(("blackdetect", "black_start:1")));
        assert_eq!(tagged("[blackdetect @ 0x5] black_start:1"), Some(("blackdetect", "black_start:1")));
        assert_eq!(tagged("[Parsed_ebur128_1 @ 0x5] Summary:"), Some(("ebur128", "Summary:")));
        assert_eq!(tagged("  [blackdetect @ 0x5] black_start:1"), None);
        assert_eq!(tagged("[h264 @ 0x5]"), None);
        assert_eq!(clock("00:00:07.31"), Some(7.31));
        assert_eq!(clock("01:00:00.00"), Some(3600.0));
        assert_eq!(clock("N/A"), None);
        assert_eq!(clock("-00:00:00.04"), None);
        assert_eq!(
            picture_size("wrapped_avframe, yuv420p(tv, progressive), 848x360 [SAR 900:901 DAR 40:17], q=2-31"),
            Some((848, 360))
        );
        assert_eq!(picture_size("h264 (avc1 / 0x31637661), yuv420p"), None);
    }

    #[test]
    fn stretches_are_capped_keeping_the_longest() {
        let mut log = String::from("Stream mapping:\n");
        for i in 0..250 {
            let start = f64::from(i) * 10.0;
            // One stretch, the 200th, is much longer than the others.
            let length = if i == 200 { 9.0 } else { 1.0 + f64::from(i % 7) * 0.1 };
            log.push_str(&format!(
                "[blackdetect @ 0x1] black_start:{start} black_end:{} black_duration:{length}\n",
                start + length
            ));
        }
        log.push_str("frame= 1 fps=0.0 q=-0.0 Lsize=N/A time=00:41:40.00 bitrate=N/A speed=1x\n");
        let m = parse(&log);
        assert_eq!(m.black.len(), MAX_SPANS);
        assert!(m.black.contains(&span(2000.0, 2009.0)), "the longest is kept");
        assert!(m.black.iter().all(|s| s.seconds() >= 1.4), "the shortest went first");
        assert!(m.black.windows(2).all(|w| w[0].start <= w[1].start), "in order");
    }

    #[test]
    fn a_black_stretch_reported_between_reports_did_not_run_to_the_end() {
        // With progress reports on, a stretch printed between two reports ended where it says.
        let log = "Stream mapping:\n\
            frame=  50 fps=0.0 q=-0.0 size=N/A time=00:00:02.00 bitrate=N/A speed=1x\n\
            [blackdetect @ 0x1] black_start:2 black_end:4 black_duration:2\n\
            frame= 250 fps=0.0 q=-0.0 Lsize=N/A time=00:00:10.00 bitrate=N/A speed=1x\n";
        assert_eq!(parse(log).black, vec![span(2.0, 4.0)]);
    }

    #[test]
    fn graphs_built_again_add_up_their_fields_and_the_last_loudness_wins() {
        let log = "Stream mapping:\n\
            [Parsed_idet_0 @ 0x1] Multi frame detection: TFF:     0 BFF:     0 Progressive:     0 Undetermined:     0\n\
            [Parsed_ebur128_6 @ 0x1] Summary:\n\n  Integrated loudness:\n    I:         -70.0 LUFS\n\
            \x20   Threshold:   0.0 LUFS\n\n  Loudness range:\n    LRA:         0.0 LU\n\n  True peak:\n    Peak:       -inf dBFS\n\
            [Parsed_idet_0 @ 0x2] Multi frame detection: TFF:    10 BFF:     2 Progressive:    30 Undetermined:     1\n\
            [Parsed_idet_0 @ 0x3] Multi frame detection: TFF:     5 BFF:     0 Progressive:     3 Undetermined:     4\n\
            [Parsed_ebur128_6 @ 0x2] Summary:\n\n  Integrated loudness:\n    I:         -23.4 LUFS\n\
            \x20 Loudness range:\n    LRA:         7.5 LU\n  True peak:\n    Peak:       -0.5 dBFS\n";
        let m = parse(log);
        assert_eq!(m.interlace, Some(FieldCounts { tff: 15, bff: 2, progressive: 33, undetermined: 5 }));
        assert_eq!(m.loudness, Some(Loudness { integrated_lufs: -23.4, lra: 7.5, true_peak_dbtp: -0.5 }));
        // A summary cut short is no measure.
        let cut = "Stream mapping:\n[Parsed_ebur128_0 @ 0x1] Summary:\n    I:         -23.4 LUFS\n[h264 @ 0x1] error\n";
        assert_eq!(parse(cut).loudness, None);
    }

    #[test]
    fn a_picture_black_in_every_frame_has_no_crop() {
        let log = "Stream mapping:\n\
            \x20 Stream #0:0: Video: wrapped_avframe, yuv420p(progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31\n\
            [Parsed_cropdetect_0 @ 0x1] x1:319 x2:0 y1:239 y2:0 w:-304 h:-224 x:314 y:234 pts:4 t:0.160000 crop=-304:-224:314:234\n";
        assert_eq!(parse(log).crop, None);
    }
}
