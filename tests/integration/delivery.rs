//! The `cmaf` preset through the worker, on real footage: a ladder in H.264, HEVC and AV1 whose
//! files, playlists and MPD are checked against the bitstreams, against Shaka Packager's
//! manifests of the same renditions, and by playing them in hls.js and dash.js; and the
//! single-file layout, played through byte ranges.

use std::path::{Path, PathBuf};
use std::process::Command;

use media_worker::domain::delivery::{CaptionTrack, Packaging, VideoCodec};
use media_worker::domain::job::OutputRequest;
use media_worker::domain::preset::Preset;
use serde_json::Value;

use crate::browser::browser;
use crate::packaging::{
    Input, Layout, Stream, hls_differences, hls_variants, mpd_differences, mpd_representations, packager_available,
    shaka_package,
};
use crate::playback::{Pick, Player, Session, players};
use crate::quality::{bunny, finished, manifest, submit};
use crate::require;
use crate::support::{Deployment, Kind, ffprobe, media_tools, stream};

/// Bandwidths may differ from Shaka Packager's by this fraction.
const TOLERANCE: f64 = 0.02;

/// Every file of the job's `preset` output, downloaded under `<dir>/out/` with the paths they
/// have under the attempt's folder; answers `<dir>/out`.
async fn fetch(d: &Deployment, manifest: &Value, preset: &str) -> PathBuf {
    let output = manifest["outputs"].as_array().and_then(|o| o.iter().find(|o| o["preset"] == preset)).expect("output");
    let key = output["key"].as_str().expect("key");
    let root = &key[..key.rfind(&format!("{preset}/")).expect("the output's folder")];
    let out = d.path("out");
    for file in output["files"].as_array().expect("files") {
        let file = file.as_str().expect("a key");
        let target = out.join(&file[root.len()..]);
        std::fs::create_dir_all(target.parent().expect("a folder")).expect("mkdir");
        d.storage().get_to_file(file, &target).await.expect("download");
    }
    out
}

/// The `#EXTINF` durations of a media playlist.
fn durations(playlist: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(playlist).expect("a media playlist");
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse().expect("a duration"))
        .collect()
}

/// Frames a rendition decodes to, and its video stream's probe.
fn frames(path: &Path) -> (u64, Value) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_streams", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let probe: Value = serde_json::from_slice(&output.stdout).expect("json");
    let video = probe["streams"][0].clone();
    let count = video["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    (count, video)
}

/// A segmented rendition made whole again (its init segment, then its segments in order), for
/// tools that read one file.
fn whole(folder: &Path, into: &Path) -> PathBuf {
    let mut bytes = std::fs::read(folder.join("init.mp4")).expect("init.mp4");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(folder)
        .expect("a rendition folder")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "m4s"))
        .collect();
    segments.sort();
    for segment in segments {
        bytes.extend(std::fs::read(segment).expect("a segment"));
    }
    let name = folder.file_name().expect("a name");
    let path = into.join(name).with_extension("mp4");
    std::fs::write(&path, bytes).expect("write");
    path
}

/// Our manifests against Shaka Packager's of the same renditions: codec strings equal,
/// bandwidths within [`TOLERANCE`].
fn compare_with_shaka(cmaf: &Path, inputs: &[Input], layout: Layout, scratch: &Path) {
    let shaka = shaka_package(inputs, scratch, layout, 6);
    let ours = hls_variants(&std::fs::read_to_string(cmaf.join("master.m3u8")).expect("master"));
    let theirs = hls_variants(&std::fs::read_to_string(&shaka.master).expect("Shaka's master"));
    assert_eq!(ours.len(), theirs.len(), "{ours:#?}\n{theirs:#?}");
    let hls = hls_differences(&ours, &theirs, TOLERANCE);
    assert!(hls.is_empty(), "HLS, ours against Shaka Packager's: {hls:#?}");
    // Text is compared by its cues, not by how two packagers describe a WebVTT file.
    let media = |mpd: &Path| -> Vec<_> {
        let text = std::fs::read_to_string(mpd).expect("an MPD");
        mpd_representations(&text).into_iter().filter(|r| r.content_type != "text").collect()
    };
    let (ours, theirs) = (media(&cmaf.join("manifest.mpd")), media(&shaka.mpd));
    let dash = mpd_differences(&ours, &theirs, TOLERANCE);
    assert!(dash.is_empty(), "DASH, ours against Shaka Packager's: {dash:#?}\n{ours:#?}\n{theirs:#?}");
}

/// Plays `entry` with both players' pick of each codec in `codecs`: the clock advances, no
/// error, the rendition playing has that codec.
async fn plays(session: &Session, entries: [&str; 2], codecs: &[&str]) {
    for (player, entry) in [(Player::HlsJs, entries[0]), (Player::DashJs, entries[1])] {
        for codec in codecs {
            let p = session.play(entry, player, &Pick::Codec((*codec).to_string())).await;
            assert!(p.advanced && p.errors.is_empty(), "{player:?} {entry} {codec}: {p:?}");
            assert!(p.codec.as_deref().is_some_and(|c| c.starts_with(codec)), "{player:?} {entry} {codec}: {p:?}");
        }
    }
}

/// H.264, HEVC and AV1 rungs of an 8 s 480p clip: every rendition complete and aligned, the
/// manifests equal to Shaka Packager's, and the H.264 and AV1 rungs playing in both players
/// (Chromium's Media Source Extensions have no HEVC).
#[tokio::test]
async fn a_cmaf_ladder_in_three_codecs_plays_in_hls_and_dash() {
    require!(media_tools(), browser(), players(), packager_available());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "bunny-480.mp4", "854:480", 8, false) else { return };
    d.upload("uploads/c/bunny.mp4", &clip).await;
    let codecs = vec![VideoCodec::H264, VideoCodec::Hevc, VideoCodec::Av1];
    let output = OutputRequest { codecs: Some(codecs), ..OutputRequest::new(Preset::Cmaf) };
    submit(&d, "uploads/c/bunny.mp4", "cmaf", vec![output], None).await;
    d.drain().await;
    let manifest = manifest(&d, &finished(&d, "cmaf").await).await;
    let out = fetch(&d, &manifest, "cmaf").await;
    let cmaf = out.join("cmaf");

    let whole_dir = d.path("whole");
    std::fs::create_dir_all(&whole_dir).expect("mkdir");
    let mut inputs = Vec::new();
    for (codec, name) in [("h264", "avc1"), ("hevc", "hvc1"), ("av1", "av01")] {
        let mut cuts = Vec::new();
        for height in [480, 360] {
            let rendition = format!("{codec}-{height}p");
            let folder = cmaf.join(&rendition);
            assert!(!cmaf.join(format!("{rendition}.mp4")).exists(), "{rendition}: the whole file is left");
            let (count, video) = frames(&folder.join("index.m3u8"));
            assert_eq!(count, 200, "{rendition}: 8 s at 25 fps");
            assert_eq!(video["codec_name"], codec);
            assert_eq!(video["height"].as_u64(), Some(height), "{rendition}");
            let file = whole(&folder, &whole_dir);
            assert_eq!(frames(&file).1["codec_tag_string"], name, "{rendition}");
            let lengths = durations(&folder.join("index.m3u8"));
            assert!((lengths.iter().sum::<f64>() - 8.0).abs() < 0.05, "{rendition}: {lengths:?}");
            cuts.push(lengths);
            inputs.push(Input { name: rendition, file, stream: Stream::Video });
        }
        assert_eq!(cuts[0], cuts[1], "{codec}: every rung cut at the same instants");
    }
    let audio = whole(&cmaf.join("audio"), &whole_dir);
    assert!(stream(&ffprobe(&audio), "audio").is_some_and(|a| a["codec_name"] == "aac"));
    inputs.push(Input { name: "audio".into(), file: audio, stream: Stream::Audio });
    compare_with_shaka(&cmaf, &inputs, Layout::Segments, &d.path("shaka"));

    let scored = manifest["outputs"][0]["quality"].as_array().expect("quality blocks");
    assert_eq!(scored.len(), 6, "every video rendition scored: {scored:#?}");
    assert!(scored.iter().all(|q| q["vmaf"]["mean"].as_f64().is_some_and(|v| v > 60.0)), "{scored:#?}");

    let session = Session::start(&out).await;
    plays(&session, ["cmaf/master.m3u8", "cmaf/manifest.mpd"], &["avc1", "av01"]).await;
}

/// One H.264 rung in single-file mode, with captions from a SubRip and a WebVTT file: one MP4
/// per rendition with its index, playlists of byte ranges, an MPD of `SegmentBase`, WebVTT
/// renditions with their languages; Shaka Packager agrees, and both players play it through
/// range requests and show the first cue at its time.
#[tokio::test]
async fn a_single_file_cmaf_ladder_with_captions_plays_through_byte_ranges() {
    require!(media_tools(), browser(), players(), packager_available());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "bunny-360.mp4", "640:360", 6, false) else { return };
    d.upload("uploads/s/bunny.mp4", &clip).await;
    let srt = d.path("talk.srt");
    std::fs::write(&srt, "1\r\n00:00:01,000 --> 00:00:02,500\r\nHello <i>there</i>\r\n\r\n2\r\n00:00:03,200 --> 00:00:04,000\r\nSecond\r\n")
        .expect("srt");
    d.upload("uploads/s/captions/talk.srt", &srt).await;
    let vtt = d.path("talk.vtt");
    std::fs::write(&vtt, "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nBonjour\n").expect("vtt");
    d.upload("uploads/s/captions/talk.vtt", &vtt).await;
    let track = |key: &str, language: &str, name: &str| CaptionTrack {
        key: key.into(),
        language: language.into(),
        name: Some(name.into()),
    };
    let output = OutputRequest {
        packaging: Some(Packaging::SingleFile),
        captions: Some(vec![
            track("uploads/s/captions/talk.srt", "en", "English"),
            track("uploads/s/captions/talk.vtt", "fr", "Français"),
        ]),
        ..OutputRequest::new(Preset::Cmaf)
    };
    submit(&d, "uploads/s/bunny.mp4", "single", vec![output], None).await;
    d.drain().await;
    let manifest = manifest(&d, &finished(&d, "single").await).await;
    let out = fetch(&d, &manifest, "cmaf").await;
    let cmaf = out.join("cmaf");

    let file = cmaf.join("h264-360p.mp4");
    let (count, video) = frames(&file);
    assert_eq!((count, video["height"].as_u64()), (150, Some(360)));
    let playlist = std::fs::read_to_string(cmaf.join("h264-360p.m3u8")).expect("media playlist");
    assert!(playlist.contains("#EXT-X-MAP:URI=\"h264-360p.mp4\",BYTERANGE="), "{playlist}");
    assert!(playlist.matches("#EXT-X-BYTERANGE:").count() >= 1, "{playlist}");
    let mpd = std::fs::read_to_string(cmaf.join("manifest.mpd")).expect("mpd");
    assert!(mpd.contains("<SegmentBase") && mpd.contains("indexRange="), "{mpd}");
    assert!(mpd.contains("contentType=\"text\"") && mpd.contains("lang=\"fr\""), "{mpd}");

    // The cues keep the source's times, to the millisecond; HLS gets its timestamp map.
    let english = std::fs::read_to_string(cmaf.join("captions-en.vtt")).expect("captions-en.vtt");
    assert!(english.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"), "{english}");
    assert!(english.contains("00:01.000 --> 00:02.500\nHello <i>there</i>"), "{english}");
    assert!(english.contains("00:03.200 --> 00:04.000\nSecond"), "{english}");
    let master = std::fs::read_to_string(cmaf.join("master.m3u8")).expect("master");
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subtitles\",NAME=\"English\",LANGUAGE=\"en\""),
        "{master}"
    );
    assert!(master.contains("SUBTITLES=\"subtitles\""), "{master}");

    let inputs = vec![
        Input { name: "h264-360p".into(), file: file.clone(), stream: Stream::Video },
        Input { name: "audio".into(), file: cmaf.join("audio.mp4"), stream: Stream::Audio },
    ];
    compare_with_shaka(&cmaf, &inputs, Layout::SingleFile, &d.path("shaka"));

    let session = Session::start(&out).await;
    for (player, entry) in [(Player::HlsJs, "cmaf/master.m3u8"), (Player::DashJs, "cmaf/manifest.mpd")] {
        let p = session.play(entry, player, &Pick::Codec("avc1".into())).await;
        assert!(p.advanced && p.errors.is_empty(), "{player:?}: {p:?}");
        assert!(p.cues.iter().any(|c| c.contains("Hello")), "{player:?} shows the first cue: {p:?}");
        let timed = p.timed_cues.iter().find(|c| c.contains("Hello")).expect("the cue's times");
        let start: f64 = timed.split('-').next().and_then(|t| t.trim().parse().ok()).expect("a start time");
        assert!((start - 1.0).abs() <= 0.04, "{player:?}: the cue starts within a frame of 1 s: {timed}");
    }
    assert!(session.server.ranges_served() > 0, "the players asked for byte ranges");
}

/// A split job's H.264 `cmaf` ladder: its segments are stitched into the same renditions,
/// packaged alike: every frame there, the rungs cut on the same instants, both players play it.
#[tokio::test]
async fn a_split_cmaf_ladder_is_stitched_and_packaged() {
    require!(media_tools(), browser(), players());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "bunny-split.mp4", "640:360", 12, false) else { return };
    d.upload("uploads/p/split.mp4", &clip).await;
    submit(&d, "uploads/p/split.mp4", "split-cmaf", vec![OutputRequest::new(Preset::Cmaf)], None).await;
    d.drain_with(&[("MEDIA_SPLIT_MIN_DURATION", "10s"), ("MEDIA_SEGMENT_DURATION", "4s")]).await;
    let manifest = manifest(&d, &finished(&d, "split-cmaf").await).await;
    assert!(manifest["split"]["segments"].as_u64().is_some_and(|n| n >= 3), "a split job: {}", manifest["split"]);
    let out = fetch(&d, &manifest, "cmaf").await;
    let cmaf = out.join("cmaf");
    let (count, video) = frames(&cmaf.join("h264-360p/index.m3u8"));
    assert_eq!((count, video["codec_name"].as_str()), (300, Some("h264")), "12 s at 25 fps");
    let lengths = durations(&cmaf.join("h264-360p/index.m3u8"));
    assert!((lengths.iter().sum::<f64>() - 12.0).abs() < 0.05, "{lengths:?}");
    let audio = durations(&cmaf.join("audio/index.m3u8"));
    assert_eq!(audio.len(), lengths.len(), "audio cut with the video: {audio:?} {lengths:?}");
    let master = std::fs::read_to_string(cmaf.join("master.m3u8")).expect("master");
    assert!(master.contains("CODECS=\"avc1.") && master.contains(",mp4a.40.2\""), "{master}");
    let session = Session::start(&out).await;
    plays(&session, ["cmaf/master.m3u8", "cmaf/manifest.mpd"], &["avc1"]).await;
}

/// The presentation times of a rendition's keyframes, in ms from its first frame's (the
/// encoders' reordering delays differ: x264 and x265 present their first frame two frames
/// after its decode time, SVT-AV1 at it, in whole jobs as in split ones).
fn keyframes(path: &Path) -> Vec<i64> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8(output.stdout).expect("text");
    let mut times: Vec<i64> = text
        .lines()
        .filter(|l| l.contains(",K"))
        .filter_map(|l| l.split(',').next()?.parse::<f64>().ok())
        .map(|t| (t * 1000.0).round() as i64)
        .collect();
    times.sort_unstable();
    let first = times.first().copied().unwrap_or_default();
    times.iter().map(|t| t - first).collect()
}

/// A split job's `cmaf` ladder in H.264, HEVC and AV1: every rung encoded segment by segment
/// and joined, with every frame of the source, its codec, keyframes on the same frames in all
/// six rungs (so each codec's rungs cut at the same instants), all three codecs' strings in
/// the multivariant playlist and the MPD, and the H.264 and AV1 rungs playing in both players.
#[tokio::test]
async fn a_split_cmaf_ladder_in_three_codecs_is_stitched_and_packaged() {
    require!(media_tools(), browser(), players());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "bunny-split3.mp4", "854:480", 10, false) else { return };
    d.upload("uploads/t/split.mp4", &clip).await;
    let codecs = vec![VideoCodec::H264, VideoCodec::Hevc, VideoCodec::Av1];
    let output = OutputRequest { codecs: Some(codecs), ..OutputRequest::new(Preset::Cmaf) };
    submit(&d, "uploads/t/split.mp4", "split-three", vec![output], None).await;
    d.drain_with(&[("MEDIA_SPLIT_MIN_DURATION", "8s"), ("MEDIA_SEGMENT_DURATION", "4s")]).await;
    let manifest = manifest(&d, &finished(&d, "split-three").await).await;
    let segments = manifest["split"]["segments"].as_u64().unwrap_or(0);
    assert!(segments >= 2, "a split job: {}", manifest["split"]);
    let timings = manifest["split"]["segment_timings"].as_array().expect("segment timings");
    assert_eq!(timings.len() as u64, segments, "{timings:#?}");
    let starts: Vec<f64> = timings.iter().filter_map(|t| t["start"].as_f64()).collect();
    let out = fetch(&d, &manifest, "cmaf").await;
    let cmaf = out.join("cmaf");

    let whole_dir = d.path("whole");
    std::fs::create_dir_all(&whole_dir).expect("mkdir");
    let mut aligned: Option<Vec<i64>> = None;
    for (codec, name) in [("h264", "avc1"), ("hevc", "hvc1"), ("av1", "av01")] {
        let mut cuts = Vec::new();
        for height in [480, 360] {
            let rendition = format!("{codec}-{height}p");
            let folder = cmaf.join(&rendition);
            let (count, video) = frames(&folder.join("index.m3u8"));
            assert_eq!(count, 250, "{rendition}: 10 s at 25 fps");
            assert_eq!(video["codec_name"], codec, "{rendition}");
            assert_eq!(video["height"].as_u64(), Some(height), "{rendition}");
            let file = whole(&folder, &whole_dir);
            assert_eq!(frames(&file).1["codec_tag_string"], name, "{rendition}");
            let keys = keyframes(&file);
            assert!(keys.len() >= 5, "{rendition}: a keyframe at least every 2 s: {keys:?}");
            match &aligned {
                None => aligned = Some(keys),
                Some(first) => assert_eq!(&keys, first, "{rendition}: keyframes on the same frames as h264-480p"),
            }
            let lengths = durations(&folder.join("index.m3u8"));
            assert!((lengths.iter().sum::<f64>() - 10.0).abs() < 0.05, "{rendition}: {lengths:?}");
            cuts.push(lengths);
        }
        assert_eq!(cuts[0], cuts[1], "{codec}: every rung cut at the same instants");
    }
    // Every later segment starts on a keyframe of every rung: the rungs' times are the
    // source's, less one constant (its first frame's time, within the source's B-frame delay).
    let keys = aligned.expect("keyframes");
    assert!(keys.windows(2).all(|w| w[1] - w[0] <= 2020), "a keyframe at least every 2 s: {keys:?}");
    let ms = |t: f64| (t * 1000.0).round() as i64;
    let shift = keys.iter().map(|k| k - ms(starts[1])).min_by_key(|d| d.abs()).unwrap_or(i64::MAX);
    assert!(shift.abs() <= 100, "segment 2 at {} s: {keys:?}", starts[1]);
    for start in &starts[1..] {
        assert!(keys.iter().any(|k| (k - ms(*start) - shift).abs() <= 20), "segment at {start} s: {keys:?}");
    }
    let master = std::fs::read_to_string(cmaf.join("master.m3u8")).expect("master");
    let mpd = std::fs::read_to_string(cmaf.join("manifest.mpd")).expect("mpd");
    for codec in ["avc1.", "hvc1.", "av01.", "mp4a.40.2"] {
        assert!(master.contains(codec), "{codec} in {master}");
        assert!(mpd.contains(&format!("codecs=\"{codec}")), "{codec} in {mpd}");
    }
    let session = Session::start(&out).await;
    plays(&session, ["cmaf/master.m3u8", "cmaf/manifest.mpd"], &["avc1", "av01"]).await;
}
