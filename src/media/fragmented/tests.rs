//! Real fragmented files from Debian's ffmpeg: indexes, codec strings and cut segments.

use std::time::Duration;

use tokio::process::Command;

use super::*;
use crate::domain::cmaf::{TrackKind, cut_times, segments_at};
use crate::media::quality::clips::media_tools;

const FLAGS: &str = "+frag_keyframe+empty_moov+default_base_moof+cmaf";

/// Encodes 6 s of testsrc2 (or a sine) with `codec` into `dir/name`, one track, fragmented.
async fn encode(dir: &Path, name: &str, codec: &[&str], movflags: &str) -> PathBuf {
    encode_for(dir, name, codec, movflags, "6").await
}

/// [`encode`] for `seconds`.
async fn encode_for(dir: &Path, name: &str, codec: &[&str], movflags: &str, seconds: &str) -> PathBuf {
    let out = dir.join(name);
    let audio = codec.first() == Some(&"-c:a");
    let input = if audio { "sine=f=440:r=48000" } else { "testsrc2=size=320x180:rate=30" };
    let mut args = vec!["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", input, "-t", seconds];
    args.extend_from_slice(codec);
    args.extend_from_slice(&["-movflags", movflags, "-protocol_whitelist", "file"]);
    let mut command = Command::new("ffmpeg");
    command.args(&args).arg(&out).kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(60), command.status()).await.unwrap().unwrap();
    assert!(status.success(), "ffmpeg {args:?}");
    out
}

/// ffprobe's (profile, level, duration in seconds) of the file's one stream.
async fn probe(path: &Path) -> (String, i64, f64) {
    let mut command = Command::new("ffprobe");
    command.args(["-v", "error", "-show_entries", "stream=profile,level:format=duration", "-of", "default=nw=1"]);
    command.arg(path).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await.unwrap().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("").to_string();
    (value("profile="), value("level=").parse().unwrap_or(-1), value("duration=").parse().unwrap())
}

/// One `key=value` of ffprobe's `-show_entries entries` for the file's first stream.
async fn probe_value(path: &Path, entries: &str, key: &str) -> String {
    let mut command = Command::new("ffprobe");
    command.args(["-v", "error", "-select_streams", "0", "-show_entries", entries, "-of", "default=nw=1"]);
    command.arg(path).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await.unwrap().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("").to_string()
}

/// Fragment count, summed duration against ffprobe's, contiguous ranges, every start sync.
fn check_index(index: &TrackIndex, fragments: usize, probed: f64, len: u64) {
    assert_eq!(index.fragments.len(), fragments);
    let ticks: u64 = index.fragments.iter().map(|f| f.timing.duration).sum();
    let seconds = ticks as f64 / f64::from(index.info.timescale);
    assert!((seconds - probed).abs() < 0.034, "{seconds} s indexed, ffprobe says {probed}");
    let mut at = index.init.end();
    for f in &index.fragments {
        assert_eq!(f.range.offset, at);
        assert!(f.timing.sync);
        at = f.range.end();
    }
    assert!(at <= len);
}

const H264: &[&str] = &["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-level", "3.0"];
const KEYS: &[&str] = &["-force_key_frames", "expr:gte(t,n_forced*2)"];

#[tokio::test]
async fn h264_index_codec_and_segments() {
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = encode(dir.path(), "h264.mp4", &[H264, KEYS].concat(), FLAGS).await;
    let index = index_file(&path).await.unwrap();
    let (profile, level, duration) = probe(&path).await;
    assert_eq!((profile.as_str(), level), ("High", 30));
    assert_eq!(index.info.codec, "avc1.64001e");
    assert_eq!(index.info.kind, TrackKind::Video { width: 320, height: 180 });
    assert_eq!(index.frame_rate(), Some((30, 1)));
    let len = std::fs::metadata(&path).unwrap().len();
    check_index(&index, 3, duration, len);
    // B-frames: ffmpeg's cmaf mode writes signed (trun v1) composition offsets with the
    // keyframe's at 0, so each fragment presents from its decode time. libavformat, reading
    // it back, shifts every timestamp by the B-frame delay instead (start_time 2 frames).
    for f in &index.fragments {
        assert_eq!(f.timing.earliest_presentation_time, f.timing.decode_time as i64);
    }
    let start: f64 = probe_value(&path, "stream=start_time", "start_time=").await.parse().unwrap();
    assert!((start - 2.0 / 30.0).abs() < 1e-3, "{start}");
    // 2 s fragments cut at 4 s: segments of 2 frags + 1 frag; files are init + byte ranges.
    let segments = segments_at(&index, &cut_times(&index, 4.0)).unwrap();
    assert_eq!(segments.iter().map(|s| s.fragments.len()).collect::<Vec<_>>(), vec![2, 1]);
    let out = tempfile::tempdir().unwrap();
    let files = write_segments(&path, &index, &segments, out.path()).await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let written: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert_eq!(written[0], bytes[..index.init.end() as usize]);
    let s = segments[1].range;
    assert_eq!(written[2], bytes[s.offset as usize..s.end() as usize]);
    assert_eq!(files[1].file_name().unwrap(), "segment_00001.m4s");
}

#[tokio::test]
async fn global_sidx_is_found() {
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = format!("{FLAGS}+global_sidx");
    let fast = &["-c:v", "libx264", "-preset", "ultrafast"];
    let path = encode(dir.path(), "sidx.mp4", &[fast, KEYS].concat(), &flags).await;
    let index = index_file(&path).await.unwrap();
    let sidx = index.sidx.expect("a global sidx");
    assert_eq!(sidx.offset, index.init.end());
    assert_eq!(index.fragments[0].range.offset, sidx.end());
    assert_eq!(index.fragments.len(), 3);
}

#[tokio::test]
async fn hevc_codec_string() {
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let x265 = &["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1", "-x265-params", "log-level=error"];
    let path = encode(dir.path(), "hevc.mp4", &[x265, KEYS].concat(), FLAGS).await;
    let index = index_file(&path).await.unwrap();
    let (profile, level, duration) = probe(&path).await;
    assert_eq!(profile, "Main");
    let prefix = format!("hvc1.1.6.L{level}.");
    assert!(index.info.codec.starts_with(&prefix), "{} vs {prefix}", index.info.codec);
    check_index(&index, 3, duration, std::fs::metadata(&path).unwrap().len());
}

#[tokio::test]
async fn av1_codec_string() {
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svt = &["-c:v", "libsvtav1", "-preset", "12", "-g", "60"];
    let path = encode(dir.path(), "av1.mp4", svt, FLAGS).await;
    let index = index_file(&path).await.unwrap();
    let (profile, _, duration) = probe(&path).await;
    assert_eq!(profile, "Main");
    let codec = &index.info.codec;
    assert!(codec.starts_with("av01.0.0") && codec.ends_with("M.08") && codec.len() == 13, "{codec}");
    check_index(&index, 3, duration, std::fs::metadata(&path).unwrap().len());
}

#[tokio::test]
async fn aac_track() {
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let aac = &["-c:a", "aac", "-ac", "2", "-frag_duration", "2000000"];
    let path = encode(dir.path(), "aac.mp4", aac, FLAGS).await;
    let index = index_file(&path).await.unwrap();
    let (_, _, duration) = probe(&path).await;
    assert_eq!(index.info.codec, "mp4a.40.2");
    assert_eq!(index.info.kind, TrackKind::Audio { channels: 2, sample_rate: 48000 });
    let ticks: u64 = index.fragments.iter().map(|f| f.timing.duration).sum();
    assert!((ticks as f64 / 48000.0 - duration).abs() < 0.03);
    assert!(index.fragments.len() >= 3);
}

#[tokio::test]
async fn a_file_that_is_not_fragmented_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.mp4");
    std::fs::write(&path, b"\0\0\0\x10ftypisom\0\0\0\0\0\0\0\x10mdat\0\0\0\0").unwrap();
    assert!(matches!(index_file(&path).await, Err(FragmentedError::Cmaf { .. })));
    std::fs::write(&path, b"\0\0\0\x10ftyp").unwrap();
    assert!(index_file(&path).await.is_err());
}

/// ffprobe's format duration and the number of video frames it decodes from a manifest.
async fn probe_manifest(path: &Path, format: &str) -> (f64, u64) {
    let mut command = Command::new("ffprobe");
    command.args(["-v", "error", "-protocol_whitelist", "file", "-f", format, "-count_packets"]);
    command.args(["-select_streams", "v:0", "-show_entries", "stream=nb_read_packets:format=duration", "-of"]);
    command.arg("default=nw=1").arg(path).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await.unwrap().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("").to_string();
    (value("duration=").parse().unwrap_or(-1.0), value("nb_read_packets=").parse().unwrap_or(0))
}

/// Segmented and single-file playlists and MPDs written by the domain writers are read back
/// by ffmpeg's own HLS and DASH demuxers: every frame, the whole duration.
#[tokio::test]
async fn written_manifests_play_back_in_ffmpeg() {
    use crate::domain::cmaf::{dash, hls};
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fast = &["-c:v", "libx264", "-preset", "ultrafast"];
    let flags = format!("{FLAGS}+global_sidx");
    let path = encode(dir.path(), "v.mp4", &[fast, KEYS].concat(), &flags).await;
    let index = index_file(&path).await.unwrap();
    let segments = segments_at(&index, &cut_times(&index, 4.0)).unwrap();
    write_segments(&path, &index, &segments, dir.path()).await.unwrap();
    let segmented = hls::media_playlist(&hls::segmented_playlist(&index, &segments)).unwrap();
    let single = hls::media_playlist(&hls::single_file_playlist("v.mp4", &index, &segments)).unwrap();
    std::fs::write(dir.path().join("seg.m3u8"), segmented).unwrap();
    std::fs::write(dir.path().join("one.m3u8"), single).unwrap();
    let rate = index.frame_rate().unwrap();
    let representation = |addressing| dash::Representation {
        id: "v".into(),
        codec: index.info.codec.clone(),
        bandwidth: crate::domain::cmaf::bandwidth(&segments, index.info.timescale).peak,
        timescale: index.info.timescale,
        media: dash::Media::Video { width: 320, height: 180, frame_rate: rate },
        addressing,
    };
    let mpd = |addressing| dash::Mpd {
        duration_seconds: 6.0,
        min_buffer_seconds: 4.0,
        adaptation_sets: vec![dash::AdaptationSet {
            content: dash::ContentType::Video,
            lang: None,
            representations: vec![representation(addressing)],
        }],
    };
    let template = dash::template_addressing("", &segments).unwrap();
    std::fs::write(dir.path().join("seg.mpd"), dash::mpd(&mpd(template)).unwrap()).unwrap();
    let base = dash::single_file_addressing("v.mp4", &index, &segments);
    std::fs::write(dir.path().join("one.mpd"), dash::mpd(&mpd(base)).unwrap()).unwrap();
    // The same file without its sidx: a SegmentList of byte ranges.
    let plain = encode(dir.path(), "plain.mp4", &[fast, KEYS].concat(), FLAGS).await;
    let plain_index = index_file(&plain).await.unwrap();
    let plain_segments = segments_at(&plain_index, &cut_times(&plain_index, 4.0)).unwrap();
    let list = dash::single_file_addressing("plain.mp4", &plain_index, &plain_segments);
    assert!(matches!(list, dash::Addressing::List { .. }));
    // ffmpeg 5.1's DASH demuxer ignores SegmentList byte ranges, so the ranges the MPD names
    // are joined into a file instead, which must hold every frame.
    let text = dash::mpd(&mpd(list)).unwrap();
    let bytes = std::fs::read(&plain).unwrap();
    let mut joined = Vec::new();
    for part in text.split("ange=\"").skip(1) {
        let (a, b) = part.split_once('"').unwrap().0.split_once('-').unwrap();
        joined.extend_from_slice(&bytes[a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()]);
    }
    std::fs::write(dir.path().join("joined.mp4"), joined).unwrap();
    let manifests = [("seg.m3u8", "hls"), ("one.m3u8", "hls"), ("seg.mpd", "dash"), ("one.mpd", "dash")];
    for (name, format) in manifests.into_iter().chain([("joined.mp4", "mp4")]) {
        let (duration, frames) = probe_manifest(&dir.path().join(name), format).await;
        assert_eq!(frames, 180, "{name}");
        assert!((duration - 6.0).abs() < 0.1, "{name}: {duration}");
    }
}

/// Two 2 s segments of one encode's timeline, each its own fragmented MP4 with the source's
/// decode times (`+frag_discont`, the second offset by 2 s), joined: one file that decodes
/// every frame from time 0, its fragments numbered through; a third segment with another
/// encoder configuration is refused.
#[tokio::test]
async fn segments_of_one_rung_join_into_one_file() {
    if !media_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = format!("{FLAGS}+frag_discont");
    let part = |name: &'static str, offset: &'static str, crf: &'static str| {
        let codec = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", crf, "-g", "30", "-output_ts_offset", offset];
        let (dir, flags) = (dir.path().to_path_buf(), flags.clone());
        async move { encode_for(&dir, name, &codec, &flags, "2").await }
    };
    let first = part("a.mp4", "10", "23").await;
    let second = part("b.mp4", "12", "23").await;
    let other = part("c.mp4", "14", "30").await;
    let joined = dir.path().join("joined.mp4");
    let mut join = JoinedFile::create(&joined).await.unwrap();
    join.append(&first).await.unwrap();
    join.append(&second).await.unwrap();
    let refused = join.append(&other).await;
    assert!(matches!(refused, Err(FragmentedError::Cmaf { source: CmafError::InitMismatch(2), .. })), "{refused:?}");
    join.finish().await.unwrap();
    // The refused part wrote nothing: read the file as the two parts made it.
    let index = index_file(&joined).await.unwrap();
    let times: Vec<u64> = index.fragments.iter().map(|f| f.timing.decode_time).collect();
    let step = index.fragments[0].timing.duration;
    assert_eq!(times, (0..4).map(|i| i * step).collect::<Vec<_>>(), "one fragment per 30 frames, from 0");
    let (duration, frames) = probe_manifest(&joined, "mp4").await;
    assert_eq!(frames, 120);
    assert!((duration - 4.0).abs() < 0.05, "{duration}");
}
