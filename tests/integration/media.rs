//! The media corpus: what users upload (phone video, screen recordings, old AVIs, audio files,
//! and things that are not media at all), each through the worker with the presets that suit
//! it, every output checked with ffprobe. Runs on the local backend: the storage and queue
//! paths are covered on both backends by `worker.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use media_worker::domain::job::{JobMessage, JobSpec, OutputRequest};
use media_worker::domain::preset::Preset;
use media_worker::domain::status::JobState;
use media_worker::queue::SendOptions;
use serde_json::Value;

use crate::require;
use crate::support::{Deployment, Kind, duration, ffprobe, media_tools, stream};

/// Runs ffmpeg to make a test file (into `out`) from lavfi sources or local files.
pub(crate) fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "could not make {}: {args:?}", out.display());
}

fn video(size: &str, seconds: u32) -> String {
    format!("testsrc2=size={size}:rate=25:duration={seconds}")
}

fn tone(seconds: u32, frequency: u32) -> String {
    format!("sine=frequency={frequency}:sample_rate=48000:duration={seconds}")
}

/// Marks an MP4's first track as displayed rotated by 90 degrees, as phones record portrait
/// video (this ffmpeg cannot write the display matrix itself).
fn rotate_90(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let tkhd = data.windows(4).position(|w| w == b"tkhd").expect("tkhd box");
    let version = data[tkhd + 4];
    let times = if version == 1 { 8 + 8 + 4 + 4 + 8 } else { 4 + 4 + 4 + 4 + 4 };
    let matrix_at = tkhd + 4 + 4 + times + 8 + 8;
    let matrix: [u32; 9] = [0, 0x10000, 0, 0xFFFF_0000, 0, 0, 0, 0, 0x4000_0000];
    for (i, value) in matrix.iter().enumerate() {
        data[matrix_at + 4 * i..matrix_at + 4 * i + 4].copy_from_slice(&value.to_be_bytes());
    }
    std::fs::write(path, data).unwrap();
}

struct Case {
    name: &'static str,
    file: PathBuf,
    outputs: Vec<OutputRequest>,
}

fn outputs(presets: &[Preset]) -> Vec<OutputRequest> {
    presets.iter().map(|&p| OutputRequest::new(p)).collect()
}

/// Makes a clip from lavfi sources: test-pattern video (`size`, seconds) and/or a tone, encoded
/// with `codecs` (every other argument, e.g. `-c:v mpeg4`).
fn lavfi(out: &Path, video_source: Option<(&str, u32)>, tone_seconds: Option<u32>, codecs: &[&str]) {
    let mut args: Vec<String> = Vec::new();
    if let Some((size, seconds)) = video_source {
        args.extend(["-f".into(), "lavfi".into(), "-i".into(), video(size, seconds)]);
    }
    if let Some(seconds) = tone_seconds {
        args.extend(["-f".into(), "lavfi".into(), "-i".into(), tone(seconds, 440)]);
    }
    args.extend(codecs.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ffmpeg(&args, out);
}

const X264: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast"];
const X264_AAC: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"];
const VP9_OPUS: &[&str] = &["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"];

/// Makes every corpus file in `dir`; returns the cases.
fn corpus(dir: &Path) -> Vec<Case> {
    let p = |name: &str| dir.join(name);
    let mut cases = Vec::new();
    let mut add = |name, file: PathBuf, outputs| cases.push(Case { name, file, outputs });

    lavfi(&p("odd.mp4"), Some(("1279x719", 2)), Some(2), X264_AAC);
    add("odd_dimensions", p("odd.mp4"), outputs(&[Preset::Mp4H264]));

    lavfi(&p("phone.mp4"), Some(("640x360", 2)), None, X264);
    rotate_90(&p("phone.mp4"));
    add("rotated_phone_video", p("phone.mp4"), outputs(&[Preset::Mp4H264, Preset::Thumbnail]));

    // Variable frame rate: drop 3 frames in 10, keep the gaps in the timestamps.
    let vfr = ["-vf", "select='lt(mod(n,10),7)'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast"];
    lavfi(&p("vfr.mkv"), Some(("320x240", 3)), None, &vfr);
    add("variable_frame_rate", p("vfr.mkv"), outputs(&[Preset::Mp4H264]));

    lavfi(&p("silent.mp4"), Some(("320x240", 2)), None, X264);
    add("no_audio", p("silent.mp4"), outputs(&[Preset::Mp4H264, Preset::Hls]));

    lavfi(&p("voice.wav"), None, Some(3), &["-c:a", "pcm_s16le"]);
    add("audio_only_wav", p("voice.wav"), outputs(&[Preset::Mp3]));
    lavfi(&p("song.mp3"), None, Some(3), &["-c:a", "libmp3lame"]);
    add("audio_only_mp3_video_preset", p("song.mp3"), outputs(&[Preset::Mp4H264]));
    add("audio_only_mp3", p("song.mp3"), outputs(&[Preset::Mp3, Preset::RemuxMp4]));

    let second_tone = tone(2, 880);
    let mut tracks = vec!["-f", "lavfi", "-i", second_tone.as_str(), "-map", "0", "-map", "1", "-map", "2"];
    tracks.extend_from_slice(X264_AAC);
    lavfi(&p("tracks.mkv"), Some(("320x240", 2)), Some(2), &tracks);
    add("several_audio_tracks", p("tracks.mkv"), outputs(&[Preset::Mp4H264]));

    lavfi(
        &p("tenbit.mp4"),
        Some(("320x240", 2)),
        None,
        &["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"],
    );
    add("ten_bit", p("tenbit.mp4"), outputs(&[Preset::Mp4H264, Preset::WebmVp9]));

    lavfi(&p("old.avi"), Some(("320x240", 2)), Some(2), &["-c:v", "mpeg4", "-c:a", "libmp3lame"]);
    add("avi_mpeg4_part2", p("old.avi"), outputs(&[Preset::Mp4H264, Preset::RemuxMp4]));

    lavfi(&p("clip.mkv"), Some(("320x240", 2)), Some(2), VP9_OPUS);
    add("mkv_vp9", p("clip.mkv"), outputs(&[Preset::Mp4H264]));

    lavfi(
        &p("edit.mov"),
        Some(("320x240", 2)),
        Some(2),
        &["-c:v", "prores_ks", "-profile:v", "0", "-c:a", "pcm_s16le"],
    );
    add("mov_prores", p("edit.mov"), outputs(&[Preset::Mp4H264_480, Preset::RemuxMp4]));

    lavfi(&p("clip.webm"), Some(("320x240", 3)), Some(3), VP9_OPUS);
    add(
        "webm",
        p("clip.webm"),
        vec![
            OutputRequest { start: Some(0.5), duration: Some(1.5), ..OutputRequest::new(Preset::Gif) },
            OutputRequest { time: Some(1.0), ..OutputRequest::new(Preset::Thumbnail) },
        ],
    );

    lavfi(&p("h264.mkv"), Some(("640x360", 2)), Some(2), X264_AAC);
    add("mkv_h264_remux", p("h264.mkv"), outputs(&[Preset::RemuxMp4]));

    lavfi(&p("talk.mp4"), Some(("1280x720", 8)), Some(8), X264_AAC);
    add(
        "several_outputs",
        p("talk.mp4"),
        vec![
            OutputRequest::new(Preset::Mp4H264_720),
            OutputRequest::new(Preset::Hls),
            OutputRequest::new(Preset::Thumbnail),
            OutputRequest::new(Preset::Storyboard),
            OutputRequest { start: Some(2.0), duration: Some(3.0), ..OutputRequest::new(Preset::Mp4H264_480) },
        ],
    );

    // Must fail.
    std::fs::write(p("empty.mp4"), b"").unwrap();
    add("zero_bytes", p("empty.mp4"), outputs(&[Preset::Mp4H264]));
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(p("noise.mp4"), noise).unwrap();
    add("random_bytes", p("noise.mp4"), outputs(&[Preset::Mp4H264]));
    // An MP4 without +faststart keeps its index at the end: cut it off.
    lavfi(&p("whole.mp4"), Some(("320x240", 3)), None, X264);
    let whole = std::fs::read(p("whole.mp4")).unwrap();
    std::fs::write(p("truncated.mp4"), &whole[..whole.len() / 2]).unwrap();
    add("truncated", p("truncated.mp4"), outputs(&[Preset::Mp4H264]));
    lavfi(&p("picture.mp4"), Some(("64x64", 1)), None, &["-frames:v", "1", "-f", "image2", "-c:v", "png"]);
    add("image_renamed_mp4", p("picture.mp4"), outputs(&[Preset::Mp4H264]));
    std::fs::write(
        p("list.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    add("hls_playlist", p("list.m3u8"), outputs(&[Preset::Mp4H264]));
    std::fs::write(p("list.ffconcat"), "ffconcat version 1.0\nfile '/etc/passwd'\n").unwrap();
    add("concat_list", p("list.ffconcat"), outputs(&[Preset::Mp4H264]));
    std::fs::write(p("list.txt"), "file 'a.mp4'\nfile 'b.mp4'\n").unwrap();
    add("concat_text_without_header", p("list.txt"), outputs(&[Preset::Mp4H264]));
    cases
}

/// Expected outcome: `Ok(())` for completed, `Err(code)` for a failure with that code.
fn expected(name: &str) -> Result<(), &'static str> {
    match name {
        "audio_only_mp3_video_preset" => Err("no_video_stream"),
        "zero_bytes" | "random_bytes" | "truncated" | "image_renamed_mp4" | "concat_text_without_header" => {
            Err("not_media")
        }
        "hls_playlist" | "concat_list" => Err("unsupported_input"),
        _ => Ok(()),
    }
}

fn dims(probe: &Value) -> (u64, u64) {
    let v = stream(probe, "video").expect("video stream");
    (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
}

fn audio_count(probe: &Value) -> usize {
    probe["streams"].as_array().unwrap().iter().filter(|s| s["codec_type"] == "audio").count()
}

#[tokio::test]
async fn corpus_through_the_worker() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let dir = d.path("corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = corpus(&dir);

    let layout = media_worker::domain::keys::KeyLayout::new("uploads/", "outputs/").unwrap();
    for case in &cases {
        let file_name = case.file.file_name().unwrap().to_string_lossy().into_owned();
        let key = format!("corpus/{}/{file_name}", case.name);
        d.upload(&key, &case.file).await;
        let job_id = format!("corpus-{}", case.name.replace('_', "-"));
        let job = JobSpec {
            output_dir: layout.job_dir(&key, &job_id),
            job_id,
            source_key: key,
            outputs: case.outputs.clone(),
            source: Default::default(),
            notify: None,
            split: None,
            import: None,
            qc: None,
            loudness: None,
            repackage: None,
            watermark: None,
        };
        job.validate().unwrap();
        d.queues().ready.send(&JobMessage::new(job, 1).to_json(), SendOptions::default()).await.unwrap();
    }
    d.drain().await;

    let mut report = Vec::new();
    for case in &cases {
        let status = d
            .status_for_source(&format!("corpus/{}/{}", case.name, case.file.file_name().unwrap().to_string_lossy()))
            .await;
        let status = status.unwrap_or_else(|| panic!("{}: no status", case.name));
        let outcome = match status.state {
            JobState::Completed => Ok(()),
            _ => Err(status.error.as_ref().map(|e| e.code.clone()).unwrap_or_default()),
        };
        report.push(format!(
            "{}: {:?} {}",
            case.name,
            status.state,
            status.error.as_ref().map(|e| e.message.as_str()).unwrap_or("")
        ));
        match (expected(case.name), &outcome) {
            (Ok(()), Ok(())) => {}
            (Err(code), Err(got)) if code == got => {
                assert!(!status.error.as_ref().unwrap().retryable, "{}: should be permanent", case.name);
                assert_eq!(status.attempt, 1, "{}: a permanent error was retried", case.name);
                continue;
            }
            (want, _) => panic!("{}: expected {want:?}, got {:?}: {:?}", case.name, status.state, status.error),
        }
        let manifest = d.json(status.manifest_key.as_deref().unwrap()).await;
        check_outputs(&d, case, &manifest).await;
    }
    eprintln!("corpus outcomes:\n  {}", report.join("\n  "));
    d.assert_queues_empty(false).await;
}

async fn local_file(d: &Deployment, key: &str) -> PathBuf {
    d.download(key).await
}

/// Per-case checks of every output, by ffprobe.
async fn check_outputs(d: &Deployment, case: &Case, manifest: &Value) {
    let output = |preset: &str| -> &Value {
        manifest["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["preset"] == preset)
            .unwrap_or_else(|| panic!("{}: no {preset}", case.name))
    };
    let key = |preset: &str| output(preset)["key"].as_str().unwrap().to_string();
    let source_duration = manifest["source"]["duration_seconds"].as_f64().unwrap_or(0.0);
    for out in manifest["outputs"].as_array().unwrap() {
        assert!(out["size"].as_u64().unwrap() > 0, "{}: empty {}", case.name, out["preset"]);
        for file in out["files"].as_array().unwrap() {
            assert!(d.storage().head(file.as_str().unwrap()).await.unwrap().is_some(), "{}: missing {file}", case.name);
        }
    }
    match case.name {
        "odd_dimensions" => assert_eq!(dims(&ffprobe(&local_file(d, &key("mp4-h264")).await)), (1278, 718)),
        "rotated_phone_video" => {
            let probe = ffprobe(&local_file(d, &key("mp4-h264")).await);
            assert_eq!(dims(&probe), (360, 640), "rotation was not applied");
            assert_eq!(dims(&ffprobe(&local_file(d, &key("thumbnail")).await)), (360, 640));
        }
        "variable_frame_rate" | "several_audio_tracks" | "mkv_vp9" | "avi_mpeg4_part2" | "ten_bit" => {
            let probe = ffprobe(&local_file(d, &key("mp4-h264")).await);
            let v = stream(&probe, "video").unwrap();
            assert_eq!(
                (v["codec_name"].as_str(), v["pix_fmt"].as_str()),
                (Some("h264"), Some("yuv420p")),
                "{}",
                case.name
            );
            assert!(
                (duration(&probe) - source_duration).abs() < 0.3,
                "{}: duration {} vs {source_duration}",
                case.name,
                duration(&probe)
            );
            if case.name == "several_audio_tracks" {
                assert_eq!(audio_count(&probe), 1);
            }
            if case.name == "ten_bit" {
                let webm = ffprobe(&local_file(d, &key("webm-vp9")).await);
                assert_eq!(stream(&webm, "video").unwrap()["codec_name"], "vp9");
            }
            if case.name == "avi_mpeg4_part2" {
                assert_eq!(output("remux-mp4")["note"], "video transcoded from mpeg4 to h264, audio copied (mp3)");
            }
        }
        "no_audio" => {
            let probe = ffprobe(&local_file(d, &key("mp4-h264")).await);
            assert_eq!(audio_count(&probe), 0);
            check_hls(d, output("hls"), &["240p"], false).await;
        }
        "audio_only_wav" | "audio_only_mp3" => {
            let probe = ffprobe(&local_file(d, &key("mp3")).await);
            assert_eq!(stream(&probe, "audio").unwrap()["codec_name"], "mp3");
            assert!(stream(&probe, "video").is_none());
            assert!((duration(&probe) - 3.0).abs() < 0.2);
        }
        "mov_prores" => {
            assert_eq!(dims(&ffprobe(&local_file(d, &key("mp4-h264-480")).await)), (320, 240), "never upscaled");
            let remux = ffprobe(&local_file(d, &key("remux-mp4")).await);
            assert_eq!(stream(&remux, "video").unwrap()["codec_name"], "h264");
            assert_eq!(stream(&remux, "audio").unwrap()["codec_name"], "aac");
        }
        "webm" => {
            let gif = ffprobe(&local_file(d, &key("gif")).await);
            assert_eq!(stream(&gif, "video").unwrap()["codec_name"], "gif");
            assert!((duration(&gif) - 1.5).abs() < 0.2, "gif duration {}", duration(&gif));
            assert_eq!(dims(&ffprobe(&local_file(d, &key("thumbnail")).await)), (320, 240));
        }
        "mkv_h264_remux" => {
            assert_eq!(output("remux-mp4")["note"], "video copied (h264), audio copied (aac)");
            let probe = ffprobe(&local_file(d, &key("remux-mp4")).await);
            assert_eq!(dims(&probe), (640, 360));
        }
        "several_outputs" => {
            assert_eq!(dims(&ffprobe(&local_file(d, &key("mp4-h264-720")).await)), (1280, 720));
            let short = ffprobe(&local_file(d, &key("mp4-h264-480")).await);
            assert_eq!(dims(&short), (854, 480));
            assert!((duration(&short) - 3.0).abs() < 0.2, "trimmed duration {}", duration(&short));
            assert_eq!(dims(&ffprobe(&local_file(d, &key("thumbnail")).await)), (1280, 720));
            check_hls(d, output("hls"), &["720p", "480p", "360p"], true).await;
            let vtt = String::from_utf8(d.storage().get_bytes(&key("storyboard")).await.unwrap().unwrap()).unwrap();
            assert!(
                vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard.jpg#xywh=0,0,160,90"),
                "{vtt}"
            );
            let sprite = key("storyboard").replace(".vtt", ".jpg");
            assert_eq!(dims(&ffprobe(&local_file(d, &sprite).await)), (1280, 90));
        }
        other => panic!("no checks for {other}"),
    }
}

/// Downloads an HLS output's files and reads the master playlist with ffprobe, as a player would.
async fn check_hls(d: &Deployment, output: &Value, rungs: &[&str], audio: bool) {
    let master_key = output["key"].as_str().unwrap();
    let base = master_key.trim_end_matches("master.m3u8");
    let local = d.path(&format!("hls-{}", uuid::Uuid::new_v4().simple()));
    for file in output["files"].as_array().unwrap() {
        let key = file.as_str().unwrap();
        let path = local.join(key.strip_prefix(base).unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        d.storage().get_to_file(key, &path).await.unwrap();
    }
    let master = std::fs::read_to_string(local.join("master.m3u8")).unwrap();
    for rung in rungs {
        assert!(master.contains(&format!("{rung}/index.m3u8")), "{master}");
    }
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), rungs.len());
    for rung in rungs {
        assert_measured_bandwidths(&master, &local.join(rung), rung);
    }
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-protocol_whitelist", "file", "-print_format", "json", "-show_streams", "-show_format"])
        .arg(local.join("master.m3u8"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let probe: Value = serde_json::from_slice(&output.stdout).unwrap();
    let videos = probe["streams"].as_array().unwrap().iter().filter(|s| s["codec_type"] == "video").count();
    assert!(videos >= rungs.len(), "{probe}");
    assert_eq!(audio_count(&probe) > 0, audio);
}

/// The master playlist announces what the rung's segments measure: `BANDWIDTH` the peak of a
/// segment's size over its length, `AVERAGE-BANDWIDTH` all sizes over all lengths (not the
/// encoder's rate cap).
fn assert_measured_bandwidths(master: &str, folder: &std::path::Path, rung: &str) {
    let playlist = std::fs::read_to_string(folder.join("index.m3u8")).unwrap();
    let (mut peak, mut bits, mut seconds) = (0.0_f64, 0.0_f64, 0.0_f64);
    let mut length = None;
    for line in playlist.lines() {
        if let Some(value) = line.strip_prefix("#EXTINF:") {
            length = value.trim_end_matches(',').split(',').next().and_then(|v| v.parse::<f64>().ok());
        } else if !line.starts_with('#') && !line.is_empty() {
            let size = std::fs::metadata(folder.join(line)).unwrap().len() as f64 * 8.0;
            let length = length.take().expect("a segment length");
            peak = peak.max(size / length);
            bits += size;
            seconds += length;
        }
    }
    let lines: Vec<&str> = master.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(&format!("{rung}/"))).expect("the rung's line");
    let attribute = |name: &str| -> f64 {
        let found = lines[at - 1].split([':', ',']).find_map(|a| a.strip_prefix(&format!("{name}=")));
        found.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name} for {rung}:\n{master}"))
    };
    assert!((attribute("BANDWIDTH") - peak).abs() <= 1.0, "{rung}: peak {peak}:\n{master}");
    assert!((attribute("AVERAGE-BANDWIDTH") - bits / seconds).abs() <= 1.0, "{rung}: average:\n{master}");
}

/// An operator's preset from `MEDIA_PRESETS_FILE` runs like a built-in one, with its options.
#[tokio::test]
async fn operator_presets_from_a_file() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let presets = d.path("presets.toml");
    std::fs::write(
        &presets,
        r#"
[[preset]]
name = "mp4-baseline"
file = "baseline.mp4"
options = ["max_height", "duration"]
args = ["-map", "0:v:0", "-map", "0:a:0?", "-vf", "{scale}", "-c:v", "libx264", "-profile:v", "baseline",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart", "-f", "mp4"]
"#,
    )
    .unwrap();
    let source = d.path("wide.mp4");
    lavfi(&source, Some(("640x360", 3)), Some(3), X264_AAC);
    d.upload("corpus/custom/wide.mp4", &source).await;
    let message = serde_json::json!({"version": 1, "job": {
        "job_id": "custom-preset", "source_key": "corpus/custom/wide.mp4", "output_dir": "outputs/corpus/custom/wide/",
        "outputs": [{"preset": "mp4-baseline", "max_height": 240, "duration": 2}]}});
    d.queues().ready.send(&message.to_string(), SendOptions::default()).await.unwrap();
    let presets_file = presets.display().to_string();
    d.drain_with(&[("MEDIA_PRESETS_FILE", presets_file.as_str())]).await;

    // This test process does not know the operator's preset: the CLI, told of it, reads it.
    let output = d
        .command(&["status", "custom-preset"])
        .env("MEDIA_PRESETS_FILE", &presets_file)
        .stdout(std::process::Stdio::piped())
        .output()
        .await
        .expect("media-worker status");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a status document");
    assert_eq!(status["state"], "completed", "{status}");
    let probe = ffprobe(&d.download("outputs/corpus/custom/wide/attempt-1/baseline.mp4").await);
    assert_eq!(dims(&probe), (426, 240));
    assert_eq!(stream(&probe, "video").unwrap()["profile"], "Constrained Baseline");
    assert!((duration(&probe) - 2.0).abs() < 0.2);

    // A malformed file stops start-up with one line naming the variable.
    std::fs::write(&presets, "[[preset]]\nname = \"x\"\nfile = \"x.mp4\"\nargs = [\"-i\", \"/etc/passwd\"]\n").unwrap();
    let out = d.command(&["run", "--drain"]).env("MEDIA_PRESETS_FILE", &presets_file).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MEDIA_PRESETS_FILE") && stderr.contains("`-i` is not allowed"), "{stderr}");
}

/// The in-process reader of plain MP4/MOV gives exactly what ffprobe gives, on every corpus
/// file it accepts, and it accepts the common shapes (our own outputs among them); the rest
/// it leaves to ffprobe.
#[tokio::test]
async fn in_process_probe_agrees_with_ffprobe() {
    use media_worker::domain::probe::MediaInfo;
    use media_worker::media::probe::in_process;

    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let dir = d.path("probe-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<(String, PathBuf)> =
        corpus(&dir).into_iter().map(|case| (case.name.to_string(), case.file)).collect();
    let p = |name: &str| dir.join(name);
    // What the worker writes for an `mp4-h264*` output, and other common shapes.
    let ours = ["-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high", "-pix_fmt", "yuv420p"];
    type Recipe<'a> = (&'a str, Option<(&'a str, u32)>, Option<u32>, Vec<&'a str>);
    let extra: [Recipe; 7] = [
        (
            "output_faststart.mp4",
            Some(("640x360", 2)),
            Some(2),
            [&ours[..], &["-c:a", "aac", "-movflags", "+faststart"]].concat(),
        ),
        (
            "baseline.mp4",
            Some(("320x240", 1)),
            Some(1),
            vec!["-c:v", "libx264", "-profile:v", "baseline", "-c:a", "aac"],
        ),
        ("full_range.mp4", Some(("320x240", 1)), None, vec!["-c:v", "libx264", "-pix_fmt", "yuvj420p"]),
        (
            "mono_44k.mp4",
            Some(("320x240", 1)),
            Some(1),
            vec!["-c:v", "libx264", "-c:a", "aac", "-ac", "1", "-ar", "44100"],
        ),
        ("video_only_mov.mov", Some(("320x240", 1)), None, vec!["-c:v", "libx264"]),
        ("audio_only.m4a", None, Some(2), vec!["-c:a", "aac"]),
        ("ntsc.mp4", Some(("320x240", 1)), None, vec!["-vf", "fps=30000/1001", "-c:v", "libx264"]),
    ];
    for (name, video_source, tone_seconds, codecs) in &extra {
        lavfi(&p(name), *video_source, *tone_seconds, codecs);
        files.push((name.to_string(), p(name)));
    }

    let mut read = Vec::new();
    for (name, file) in &files {
        let Some(fast) = in_process(file) else { continue };
        let slow = MediaInfo::describe(&ffprobe(file).to_string()).unwrap();
        let rate = |m: &MediaInfo| m.video.as_ref().and_then(|v| v.frame_rate);
        match (rate(&fast), rate(&slow)) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-6 * b, "{name}: frame rate {a} vs ffprobe's {b}"),
            (a, b) => assert_eq!(a, b, "{name}: frame rate"),
        }
        let without_rate = |mut m: MediaInfo| {
            if let Some(v) = m.video.as_mut() {
                v.frame_rate = None;
            }
            m
        };
        assert_eq!(without_rate(fast), without_rate(slow), "{name}");
        read.push(name.as_str());
    }
    read.sort();

    // Every single-byte corruption of a real `moov`: never a panic, never a zero size.
    let bytes = std::fs::read(p("output_faststart.mp4")).unwrap();
    let at = bytes.windows(4).position(|w| w == b"moov").unwrap();
    let size = u32::from_be_bytes(bytes[at - 4..at].try_into().unwrap()) as usize;
    let moov = &bytes[at + 4..at - 4 + size];
    assert!(media_worker::domain::isobmff::describe_moov(moov).is_some());
    for i in 0..moov.len() {
        for value in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut bad = moov.to_vec();
            bad[i] ^= value;
            if let Some(info) = media_worker::domain::isobmff::describe_moov(&bad) {
                assert!(info.video.is_none_or(|v| v.width > 0 && v.height > 0), "byte {i}");
            }
        }
    }
    assert_eq!(
        read,
        [
            "audio_only.m4a",
            "baseline.mp4",
            "full_range.mp4",
            "mono_44k.mp4",
            "no_audio",
            "ntsc.mp4",
            "odd_dimensions",
            "output_faststart.mp4",
            "several_outputs",
            "video_only_mov.mov",
        ],
        "files read in process"
    );
}
