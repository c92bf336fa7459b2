//! The web console in a real browser: Debian's Chromium, driven through chromedriver over
//! WebDriver, against the API and a worker on the local backend, all on 127.0.0.1.
//!
//! Screenshots of the job page at each stage are saved under
//! `<target>/tmp/console-screenshots/` (printed by the test), for CI to keep as artifacts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use media_worker::domain::job::option_range;
use media_worker::domain::preset::Preset;
use media_worker::domain::status::JobState;
use serde_json::{Value, json};

use crate::api::{ApiServer, TOKEN};
use crate::browser::{Browser, browser};
use crate::require;
use crate::support::{Clip, Deployment, ffprobe, media_tools, stream};

/// A file name that would run a script if the console ever rendered names as HTML.
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>.mp4";

fn screenshot_folder() -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("screenshot folder");
    folder
}

/// Chooses presets on the new-job form and submits `file`; returns the job id from the URL.
pub(crate) async fn submit_file(b: &Browser, file: &Path, presets: &[&str]) -> String {
    for preset in presets {
        b.click(&format!("input[name=preset][value='{preset}']")).await;
    }
    let input = b.client.find(Locator::Css("#file")).await.expect("file input");
    input.send_keys(&file.display().to_string()).await.expect("choose the file");
    b.click("#submit-job").await;
    b.until("the job page", Duration::from_secs(60), "return location.hash.startsWith('#/jobs/')", vec![]).await;
    let hash = b.client.execute("return location.hash", vec![]).await.expect("hash");
    hash.as_str().and_then(|h| h.strip_prefix("#/jobs/")).expect("a job id").to_string()
}

/// The job page's quality section against the manifest (`quality` per output) and its sidecar
/// (`quality_key`): a table row per scored rendition showing its VMAF mean to one decimal, a
/// chart line per rendition of the sidecar with a point per second, a scatter point per HLS rung.
async fn check_quality(b: &Browser, d: &Deployment, manifest: &Value) {
    let outputs = manifest["outputs"].as_array().cloned().unwrap_or_default();
    let scored: Vec<(String, String, f64)> = outputs
        .iter()
        .flat_map(|o| {
            let preset = o["preset"].as_str().expect("preset").to_string();
            let entries = o["quality"].as_array().cloned().unwrap_or_default();
            entries.into_iter().map(move |q| {
                let rendition = q["rendition"].as_str().expect("rendition").to_string();
                (preset.clone(), rendition, q["vmaf"]["mean"].as_f64().expect("the VMAF mean"))
            })
        })
        .collect();
    let mut names: Vec<(&str, &str)> = scored.iter().map(|(o, r, _)| (o.as_str(), r.as_str())).collect();
    names.sort();
    assert_eq!(names, [("hls", "360p"), ("mp4-h264", "mp4-h264")], "the scored renditions of {manifest}");
    check_quality_table(b, &scored).await;
    check_quality_charts(b, d, manifest, scored.len()).await;
}

/// The quality table: one row per scored rendition (`(output, rendition, VMAF mean)`), in
/// manifest order, with its mean to one decimal.
pub(crate) async fn check_quality_table(b: &Browser, scored: &[(String, String, f64)]) {
    let rows = "return Array.from(document.querySelectorAll('#quality-body tr')).map(tr => \
        [tr.dataset.output, tr.dataset.rendition, tr.cells[2].textContent])";
    b.until(
        "the quality table",
        Duration::from_secs(15),
        "return document.querySelectorAll('#quality-body tr').length > 0",
        vec![],
    )
    .await;
    let shown = b.client.execute(rows, vec![]).await.expect("the quality table");
    let shown = shown.as_array().cloned().unwrap_or_default();
    assert_eq!(shown.len(), scored.len(), "a row per scored rendition: {shown:?}");
    for ((output, rendition, mean), row) in scored.iter().zip(&shown) {
        assert_eq!((row[0].as_str(), row[1].as_str()), (Some(output.as_str()), Some(rendition.as_str())), "{row}");
        let text = row[2].as_str().unwrap_or_default();
        let value: f64 = text.parse().unwrap_or_else(|_| panic!("a VMAF mean, not `{text}`"));
        assert!(text.split_once('.').is_some_and(|(_, d)| d.len() == 1), "one decimal: {text}");
        assert!((value - mean).abs() <= 0.05 + 1e-9, "{output} {rendition}: shown {text}, manifest {mean}");
    }
}

/// The VMAF chart (a line per rendition of the sidecar, a point per second of it) and the
/// scatter (a point per HLS rung, in ladder order).
async fn check_quality_charts(b: &Browser, d: &Deployment, manifest: &Value, scored: usize) {
    let sidecar = d.json(manifest["quality_key"].as_str().expect("quality_key")).await;
    let mut expected: Vec<(String, String, usize)> = sidecar["renditions"]
        .as_array()
        .expect("the sidecar's renditions")
        .iter()
        .map(|r| {
            let per_second = r["vmaf_per_second"].as_array().expect("vmaf_per_second").len();
            (
                r["output"].as_str().unwrap_or_default().to_string(),
                r["rendition"].as_str().unwrap_or_default().to_string(),
                per_second,
            )
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), scored, "a series per scored rendition: {sidecar}");
    let drawn = "return document.querySelectorAll('#quality-chart polyline').length > 0";
    b.until("the VMAF chart", Duration::from_secs(15), drawn, vec![]).await;
    let lines = "return Array.from(document.querySelectorAll('#quality-chart polyline')).map(p => \
        [p.dataset.output, p.dataset.rendition, p.getAttribute('points').trim().split(/\\s+/).filter(Boolean).length])";
    let lines = b.client.execute(lines, vec![]).await.expect("the chart's lines");
    let mut lines: Vec<(String, String, usize)> = serde_json::from_value(lines).expect("lines");
    lines.sort();
    assert_eq!(lines, expected, "a line per rendition, a point per second");

    let rungs: Vec<&str> = manifest["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["preset"] == "hls")
        .flat_map(|o| o["quality"].as_array().into_iter().flatten())
        .filter_map(|q| q["rendition"].as_str())
        .collect();
    let points = "return Array.from(document.querySelectorAll('#quality-rate circle')).map(c => c.dataset.rendition)";
    let points = b.client.execute(points, vec![]).await.expect("the scatter's points");
    assert_eq!(points, json!(rungs), "a point per HLS rung");
}

/// Plays the video element `arguments[0]` muted until `currentTime` passes one second: `{time}`,
/// or `{error}` on a media error, a refused `play()` or 20 s without getting there.
pub(crate) const PLAY: &str = r#"
    const [id, done] = arguments;
    const v = document.getElementById(id);
    if (!v) { done({error: 'no element ' + id}); return; }
    v.muted = true;
    const started = Date.now();
    const check = () => {
        if (v.error) { done({error: 'media error ' + v.error.code}); return; }
        if (v.currentTime > 1.0) { done({time: v.currentTime}); return; }
        if (Date.now() - started > 20000) { done({error: 'stuck at ' + v.currentTime + ', readyState ' + v.readyState}); return; }
        setTimeout(check, 200);
    };
    v.play().then(check, e => done({error: 'play() refused: ' + e}));
"#;

/// Signs in on the console's first page with the API's token.
pub(crate) async fn sign_in(b: &Browser) {
    b.type_into("#token", TOKEN).await;
    b.click("#sign-in").await;
    b.until("the new-job form", Duration::from_secs(10), "return !!document.getElementById('new-job-form')", vec![])
        .await;
}

#[tokio::test]
async fn the_console_uploads_follows_plays_and_deletes() {
    require!(media_tools(), browser());
    let d = Deployment::local().await;
    let api = ApiServer::start_with(&d, &[]).await;
    let _worker = d.spawn_worker("worker", &[]);
    let shots = screenshot_folder();
    eprintln!("console screenshots: {}", shots.display());

    let clip = d.dir.path().join(HOSTILE_NAME);
    Clip { seconds: 6.0, width: 640, height: 360, ..Clip::default() }.make(&clip);
    let not_video = d.dir.path().join("notes.txt");
    std::fs::write(&not_video, "these are notes, not a video\n".repeat(100)).expect("a text file");

    let b = Browser::start().await;
    b.client.goto(&api.url("/")).await.expect("open the console");

    // A wrong token: a sign-in error in words, nothing stored.
    b.type_into("#token", "not-the-token-0123456789").await;
    b.click("#sign-in").await;
    let error = "const e = document.getElementById('sign-in-error'); return !!e && e.textContent.trim().length > 0";
    b.until("the sign-in error", Duration::from_secs(10), error, vec![]).await;
    let stored = b.client.execute("return sessionStorage.length", vec![]).await.expect("storage");
    assert_eq!(stored, json!(0), "a refused token is not kept");
    b.screenshot(&shots, "01-sign-in-refused").await;

    sign_in(&b).await;
    let in_url = b.client.current_url().await.expect("url");
    assert!(!in_url.as_str().contains(TOKEN), "the token never goes into a URL: {in_url}");

    // A clip with a hostile name, four outputs.
    b.click("input[name=preset][value='gif']").await;
    b.type_into("#gif-duration", "2").await;
    // The form's range is the one jobs are validated with, as GET /v1/presets publishes it.
    let range = option_range(Preset::Gif, "duration").expect("the GIF's duration has a range");
    let script = "const i = document.getElementById('gif-duration'); return [Number(i.min), Number(i.max)]";
    let bounds = b.client.execute(script, vec![]).await.expect("the input's bounds");
    assert_eq!((bounds[0].as_f64(), bounds[1].as_f64()), (Some(range.min), Some(range.max)), "{bounds}");
    // The jobs list's filter offers the server's job states.
    let script = "return Array.from(document.querySelectorAll('#state-filter option')).map(o => o.value)";
    let offered = b.client.execute(script, vec![]).await.expect("the filter's states");
    let mut expected = vec![json!("")];
    expected.extend(JobState::ALL.iter().map(|s| serde_json::to_value(s).expect("a state")));
    assert_eq!(offered, Value::Array(expected), "the state filter");
    let job_id = submit_file(&b, &clip, &["mp4-h264", "hls", "thumbnail"]).await;
    assert!(!b.alert_open().await, "a file name ran as HTML");
    let planted = b.client.execute("return document.querySelectorAll('img[src=\"x\"]').length", vec![]).await;
    assert_eq!(planted.expect("count"), json!(0), "a file name became an element");
    b.screenshot(&shots, "02-job-submitted").await;

    // Running, then completed: progress and the timeline on the page.
    let running =
        "const s = document.getElementById('job-state'); return !!s && /running|completed/.test(s.textContent)";
    b.until("the job to run", Duration::from_secs(60), running, vec![]).await;
    b.screenshot(&shots, "03-job-running").await;
    let completed = "const s = document.getElementById('job-state'); return !!s && /completed/.test(s.textContent)";
    b.until("the job to complete", Duration::from_secs(180), completed, vec![]).await;
    let progress = b.client.execute("return document.getElementById('job-progress').value", vec![]).await;
    assert_eq!(progress.expect("progress").as_f64(), Some(100.0));
    let stages = b
        .client
        .execute("return Array.from(document.querySelectorAll('#timeline li')).map(li => li.textContent)", vec![])
        .await
        .expect("timeline");
    let stages = stages.as_array().cloned().unwrap_or_default();
    assert!(stages.len() >= 5, "the timeline lists the stages: {stages:?}");
    for stage in ["queued", "transcoding", "done"] {
        assert!(stages.iter().any(|s| s.as_str().is_some_and(|s| s.contains(stage))), "{stage} in {stages:?}");
    }
    let status = d.store().read(&job_id).await.expect("read").expect("the job");
    let source = b.text("#job-source").await;
    assert!(!source.is_empty() && status.job.source_key.ends_with(&source), "{source} / {}", status.job.source_key);
    // The quality section agrees with the manifest and its sidecar.
    let manifest = d.json(status.manifest_key.as_deref().expect("manifest")).await;
    check_quality(&b, &d, &manifest).await;

    // The players play: currentTime advances and no media error, for the MP4 and the HLS ladder.
    for player in ["player-mp4", "player-hls"] {
        let played = b.client.execute_async(PLAY, vec![json!(player)]).await.expect("play");
        assert!(played["time"].as_f64().is_some_and(|t| t > 1.0), "{player}: {played}");
    }
    b.screenshot(&shots, "04-job-completed-players").await;
    b.client.execute("document.getElementById('quality').scrollIntoView()", vec![]).await.expect("scroll");
    b.screenshot(&shots, "05-quality").await;
    b.client.execute("window.scrollTo(0, 0)", vec![]).await.expect("scroll");

    // The GIF has the size the manifest says; the thumbnail loaded.
    let gif = manifest["outputs"].as_array().and_then(|o| o.iter().find(|o| o["preset"] == "gif")).cloned();
    let gif = gif.expect("a gif output");
    let gif_file = d.download(gif["key"].as_str().expect("gif key")).await;
    let probed = ffprobe(&gif_file);
    let gif_stream = stream(&probed, "video").expect("gif stream");
    let size = "const i = document.getElementById(arguments[0]); return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null";
    let loaded = "const i = document.getElementById(arguments[0]); return !!i && i.complete && i.naturalWidth > 0";
    for image in ["output-gif", "output-thumbnail"] {
        b.until(image, Duration::from_secs(20), loaded, vec![json!(image)]).await;
    }
    let shown = b.client.execute(size, vec![json!("output-gif")]).await.expect("gif size");
    assert_eq!(shown, json!([gif_stream["width"], gif_stream["height"]]), "the GIF as the page shows it");
    let rows =
        b.client.execute("return document.querySelectorAll('#outputs tbody tr, #outputs tr').length", vec![]).await;
    assert!(rows.expect("rows").as_u64().is_some_and(|n| n >= 4), "a row per output");

    // Delete: the outputs go, from storage too.
    let deleted = "const s = document.getElementById('outputs-status'); return !!s && /deleted/i.test(s.textContent)";
    b.click("#delete-outputs").await;
    let started = Instant::now();
    loop {
        let done = b.client.execute(deleted, vec![]).await.expect("status");
        if done == Value::Bool(true) {
            break;
        }
        if started.elapsed() > Duration::from_secs(2) {
            // A confirm-by-second-click button.
            if let Ok(button) = b.client.find(Locator::Css("#delete-outputs")).await {
                let _ = button.click().await;
            }
            b.until("the outputs to be deleted", Duration::from_secs(20), deleted, vec![]).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot(&shots, "06-outputs-deleted").await;
    let manifest_key = status.manifest_key.as_deref().expect("manifest");
    assert!(d.storage().head(manifest_key).await.expect("head").is_none(), "the manifest is gone");

    // The jobs list shows the job; a text file fails with a clear error.
    b.click("#back").await;
    let listed = format!("return !!document.querySelector('#jobs li[data-job-id=\"{job_id}\"]')");
    b.until("the job in the list", Duration::from_secs(10), &listed, vec![]).await;
    b.client.execute("document.getElementById('jobs').scrollIntoView()", vec![]).await.expect("scroll");
    b.screenshot(&shots, "07-job-list").await;
    let failed_job = submit_file(&b, &not_video, &["mp4-h264"]).await;
    let failed = "const e = document.getElementById('job-error'); return !!e && e.textContent.trim().length > 0";
    b.until("the job's error", Duration::from_secs(120), failed, vec![]).await;
    let error = b.text("#job-error").await;
    assert!(error.contains("not a media file"), "{error}");
    let status = d.store().read(&failed_job).await.expect("read").expect("the failed job");
    assert_eq!(status.error.map(|e| e.code).as_deref(), Some("not_media"));
    b.screenshot(&shots, "08-job-failed").await;

    // Phone width: the page fits without scrolling sideways.
    b.client.set_window_size(360, 800).await.expect("resize");
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth + 1";
    b.until("the page to fit 360 px", Duration::from_secs(5), fits, vec![]).await;
    b.screenshot(&shots, "09-phone-width").await;
    assert!(!b.alert_open().await, "no alert ever fired");
    b.client.clone().close().await.expect("close the browser");
}
