//! The web console's job-wide options in a real browser (as in [`crate::console`]): a `cmaf`
//! job submitted through the form with loudness at -16 LUFS, a SubRip caption file in English
//! and a red PNG watermark, each file uploaded as the source is. The manifest reports the
//! loudness, the master playlist announces the captions, the rendition's pixels carry the
//! image; then the job page's "Add captions" form adds French, and the packaging job it makes
//! completes with both subtitle tracks.
//!
//! Screenshots are saved under `<target>/tmp/console-extras-screenshots/`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use media_worker::domain::loudness::LoudnessMode;
use media_worker::domain::watermark::WatermarkPosition;
use serde_json::{Value, json};

use crate::api::ApiServer;
use crate::browser::{Browser, browser};
use crate::console::{sign_in, submit_file};
use crate::require;
use crate::support::{Clip, Deployment, media_tools};

const EN_SRT: &str = "1\n00:00:01,000 --> 00:00:02,500\nHello\n";
const FR_SRT: &str = "1\n00:00:01,000 --> 00:00:02,500\nBonjour\n";

const COMPLETED: &str = "const s = document.getElementById('job-state'); return !!s && /completed/.test(s.textContent)";

/// Every file of the manifest's cmaf output, downloaded into `into` by its path under the
/// output's folder; the master playlist's text.
async fn download_cmaf(d: &Deployment, manifest: &Value, into: &Path) -> String {
    let outputs = manifest["outputs"].as_array().expect("outputs");
    let output = outputs.iter().find(|o| o["preset"] == "cmaf").expect("a cmaf output");
    let folder = output["key"].as_str().and_then(|k| k.strip_suffix("master.m3u8")).expect("a master playlist");
    for file in output["files"].as_array().expect("files") {
        let file = file.as_str().expect("a key");
        let target = into.join(file.strip_prefix(folder).expect("a file of the folder"));
        std::fs::create_dir_all(target.parent().expect("a folder")).expect("mkdir");
        d.storage().get_to_file(file, &target).await.expect("download");
    }
    std::fs::read_to_string(into.join("master.m3u8")).expect("master.m3u8")
}

/// The mean RGB of a 16x8 patch at (`x`, `y`) of the frame at 2 s of `input` (read locally).
fn patch(input: &Path, x: u32, y: u32) -> [f64; 3] {
    let crop = format!("trim=start=2,crop=16:8:{x}:{y}");
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file", "-i"])
        .arg(input)
        .args(["-frames:v", "1", "-vf", &crop, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.stdout.len(), 16 * 8 * 3, "one 16x8 RGB patch of {}: {said}", input.display());
    let mut sum = [0.0; 3];
    for pixel in output.stdout.chunks(3) {
        for (total, value) in sum.iter_mut().zip(pixel) {
            *total += f64::from(*value);
        }
    }
    sum.map(|total| total / 128.0)
}

/// Chooses `path` in the file input `css`.
async fn choose(b: &Browser, css: &str, path: &Path) {
    let input = b.client.find(Locator::Css(css)).await.expect(css);
    input.send_keys(&path.display().to_string()).await.expect("choose the file");
}

#[tokio::test]
async fn the_console_adds_loudness_captions_and_a_watermark() {
    require!(media_tools(), browser());
    let started = Instant::now();
    let d = Deployment::local().await;
    let api = ApiServer::start_with(&d, &[]).await;
    // Every upload also makes a job of the default presets: a thumbnail keeps the source's cheap
    // (the caption file's and the image's fail as not media).
    let _worker = d.spawn_worker("worker", &[("MEDIA_DEFAULT_PRESETS", "thumbnail")]);
    let clip = d.path("talk.mp4");
    Clip { seconds: 4.0, width: 640, height: 360, ..Clip::default() }.make(&clip);
    let (en, fr, logo) = (d.path("talk.en.srt"), d.path("talk.fr.srt"), d.path("logo.png"));
    std::fs::write(&en, EN_SRT).expect("en.srt");
    std::fs::write(&fr, FR_SRT).expect("fr.srt");
    let red = ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=100x50", "-frames:v", "1"];
    assert!(Command::new("ffmpeg").args(red).arg(&logo).status().expect("ffmpeg").success(), "the PNG");

    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-extras-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let b = Browser::start().await;
    b.client.goto(&api.url("/")).await.expect("open the console");
    sign_in(&b).await;

    // The caption fields show with cmaf only.
    b.element("#loudness").await;
    let hidden = "return document.getElementById('cmaf-captions').hidden";
    assert_eq!(b.client.execute(hidden, vec![]).await.expect("hidden"), json!(true));
    b.click("input[name=preset][value='cmaf']").await;
    assert_eq!(b.client.execute(hidden, vec![]).await.expect("hidden"), json!(false));
    b.client.execute("document.getElementById('loudness').value = 'streaming'", vec![]).await.expect("loudness");
    choose(&b, "#caption-file", &en).await;
    b.type_into("#caption-language", "en").await;
    choose(&b, "#watermark-file", &logo).await;
    b.type_into("#watermark-opacity", "1").await;
    b.client.execute("document.getElementById('job-extras').scrollIntoView()", vec![]).await.expect("scroll");
    b.screenshot(&shots, "01-form").await;
    let job_id = submit_file(&b, &clip, &[]).await;

    // The job as submitted: the uploaded files' keys in the caller's uploads.
    let status = d.store().read(&job_id).await.expect("read").expect("the job");
    let loudness = status.job.loudness.expect("loudness");
    assert_eq!((loudness.target, loudness.true_peak, loudness.mode), (-16.0, -1.0, LoudnessMode::Normalize));
    let watermark = status.job.watermark.as_deref().expect("a watermark");
    assert!(watermark.key.starts_with("uploads/") && watermark.key.ends_with("/logo.png"), "{}", watermark.key);
    assert_eq!((watermark.position, watermark.opacity), (WatermarkPosition::BottomRight, 1.0));
    let captions = status.job.outputs[0].captions.clone().expect("captions");
    assert_eq!(captions.len(), 1);
    assert!(captions[0].key.starts_with("uploads/") && captions[0].key.ends_with("/talk.en.srt"), "{captions:?}");
    assert_eq!(captions[0].language, "en");

    b.until("the job to complete", Duration::from_secs(240), COMPLETED, vec![]).await;
    let ran = started.elapsed();
    // The caption file and the image made no job of their own.
    let sources: Vec<String> = d.all_jobs().await.into_iter().map(|s| s.job.source_key).collect();
    assert!(!sources.iter().any(|k| k == &watermark.key || k == &captions[0].key), "{sources:?}");
    let status = d.store().read(&job_id).await.expect("read").expect("the job");
    let manifest = d.json(status.manifest_key.as_deref().expect("manifest")).await;
    let report = &manifest["loudness"];
    assert!(matches!(report["action"].as_str(), Some("linear" | "dynamic")), "{report:#}");
    assert!(report["gain_db"].as_f64().is_some(), "{report:#}");
    let dir = d.path("first");
    let master = download_cmaf(&d, &manifest, &dir).await;
    let subtitles: Vec<&str> = master.lines().filter(|l| l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES")).collect();
    assert_eq!(subtitles.len(), 1, "{master}");
    assert!(subtitles[0].contains("LANGUAGE=\"en\""), "{master}");
    // The red logo, 64x32 at the bottom right (margin 13 px) of the 640x360 rung; the source
    // has no red there.
    let [r, g, bl] = patch(&dir.join("master.m3u8"), 587, 327);
    eprintln!("the rung's patch under the logo: RGB {r:.0} {g:.0} {bl:.0}; loudness {report}");
    assert!(r > 200.0 && g < 60.0 && bl < 60.0, "the watermark's red: {r:.0} {g:.0} {bl:.0}");
    let [r, g, bl] = patch(&clip, 587, 327);
    assert!(!(r > 200.0 && g < 60.0 && bl < 60.0), "the source is not red there: {r:.0} {g:.0} {bl:.0}");

    // Add captions: French, through the job page's form.
    b.element("#add-captions:not([hidden])").await;
    choose(&b, "#recaption-file", &fr).await;
    b.type_into("#recaption-language", "fr").await;
    b.client.execute("document.getElementById('add-captions').scrollIntoView()", vec![]).await.expect("scroll");
    b.screenshot(&shots, "02-add-captions").await;
    b.click("#add-captions-submit").await;
    let moved = format!("return location.hash.startsWith('#/jobs/') && location.hash !== '#/jobs/{job_id}'");
    b.until("the packaging job's page", Duration::from_secs(60), &moved, vec![]).await;
    let hash = b.client.execute("return location.hash", vec![]).await.expect("hash");
    let new_id = hash.as_str().and_then(|h| h.strip_prefix("#/jobs/")).expect("a job id").to_string();
    b.until("the packaging job to complete", Duration::from_secs(120), COMPLETED, vec![]).await;
    let status = d.store().read(&new_id).await.expect("read").expect("the packaging job");
    let manifest = d.json(status.manifest_key.as_deref().expect("manifest")).await;
    let master = download_cmaf(&d, &manifest, &d.path("second")).await;
    let mut languages: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES"))
        .filter_map(|l| l.split("LANGUAGE=\"").nth(1).and_then(|rest| rest.split('"').next()))
        .collect();
    languages.sort();
    assert_eq!(languages, ["en", "fr"], "{master}");
    b.screenshot(&shots, "03-packaging-job").await;

    // A second French track without "replace" is refused, the API's words on the form.
    b.element("#add-captions:not([hidden])").await;
    choose(&b, "#recaption-file", &fr).await;
    b.type_into("#recaption-language", "fr").await;
    b.click("#add-captions-submit").await;
    let refused = "const e = document.getElementById('add-captions-error'); return !e.hidden && /caption_language_exists/.test(e.textContent)";
    b.until("the API's refusal", Duration::from_secs(30), refused, vec![]).await;
    assert!(!b.alert_open().await, "no alert ever fired");
    eprintln!("console extras test: first job done after {ran:?}, all {:?}", started.elapsed());
    b.client.clone().close().await.expect("close the browser");
}
