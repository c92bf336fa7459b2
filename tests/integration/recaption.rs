//! Captions added to a completed `cmaf` job through `POST /v1/jobs/{id}/captions`, end to end:
//! the API in-process, a `media-worker run` daemon. The packaging job's folder holds the old
//! renditions byte for byte (copied, not encoded), the old and new caption tracks, and new
//! manifests that announce them; ffmpeg reads the new package back frame for frame. Another
//! tenant's job answers 404, a job without a cmaf output 422, a job still running 409.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{ApiServer, TOKEN};
use crate::require;
use crate::support::{Clip, Deployment, Kind, emulator, media_tools, video_frames};

const OTHER_TENANT_TOKEN: &str = "acme-token-0123456789abcdef0123";
const SRT: &str =
    "1\r\n00:00:01,000 --> 00:00:02,500\r\nBonjour <i>à tous</i>\r\n\r\n2\r\n00:00:02,600 --> 00:00:02,900\r\nFin\r\n";

/// The API with a second tenant (`acme`) besides the shared token.
async fn api(d: &Deployment) -> ApiServer {
    let digest = hex::encode(Sha256::digest(OTHER_TENANT_TOKEN.as_bytes()));
    let file = d.path("tokens.toml");
    std::fs::write(&file, format!("[[token]]\nsha256 = \"{digest}\"\ntenant = \"acme\"\n")).expect("tokens file");
    ApiServer::start_with(d, &[("MEDIA_API_TOKENS_FILE", file.to_str().expect("a path"))]).await
}

async fn post(api: &ApiServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    let response = api.client.post(api.url(path)).bearer_auth(token).json(&body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// Waits for the job to end; its final view.
async fn ended(api: &ApiServer, d: &Deployment, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (_, job) = api.json(Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
        if matches!(job["state"].as_str(), Some("completed" | "failed" | "cancelled")) {
            assert_eq!(job["state"], "completed", "{job:#}\n{}", d.worker_log("recaption-worker"));
            return job;
        }
        assert!(Instant::now() < deadline, "job {job_id} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits a job of `outputs` for `key`; its id.
async fn submit(api: &ApiServer, key: &str, outputs: Value) -> String {
    let (status, job) = post(api, "/v1/jobs", TOKEN, json!({"input": {"key": key}, "outputs": outputs})).await;
    assert_eq!(status, 202, "{job}");
    job["job_id"].as_str().expect("a job id").to_string()
}

/// Every file of the completed job's cmaf output, downloaded into `into` by its path under the
/// output's folder; those paths.
async fn download(d: &Deployment, job: &Value, into: &Path) -> Vec<String> {
    let outputs = job["manifest"]["outputs"].as_array().expect("outputs");
    let output = outputs.iter().find(|o| o["preset"] == "cmaf").expect("a cmaf output");
    let key = output["key"].as_str().expect("key");
    let folder = key.strip_suffix("master.m3u8").expect("the master playlist");
    let mut names = Vec::new();
    for file in output["files"].as_array().expect("files") {
        let file = file.as_str().expect("a key");
        let relative = file.strip_prefix(folder).expect("a file of the folder");
        let target = into.join(relative);
        std::fs::create_dir_all(target.parent().expect("a folder")).expect("mkdir");
        d.storage().get_to_file(file, &target).await.expect("download");
        names.push(relative.to_string());
    }
    names.sort();
    names
}

/// The first cue's start, in seconds, of a WebVTT file.
fn first_cue_start(vtt: &str) -> f64 {
    let line = vtt.lines().find(|l| l.contains("-->")).expect("a cue");
    let start = line.split("-->").next().expect("a start").trim();
    let parts: Vec<f64> = start.split(':').map(|p| p.parse().expect("a number")).collect();
    parts.iter().fold(0.0, |total, part| total * 60.0 + part)
}

/// One cmaf job in `packaging`, completed; captions added; the new package checked against it.
/// The completed job's id.
async fn adds_captions(d: &Deployment, api: &ApiServer, source: &str, packaging: &str, old_tracks: Value) -> String {
    let cmaf = json!([{"preset": "cmaf", "packaging": packaging, "captions": old_tracks}]);
    let cmaf = if old_tracks.is_null() { json!([{"preset": "cmaf", "packaging": packaging}]) } else { cmaf };
    let old_id = submit(api, source, cmaf).await;
    let captions = json!({"captions": [{"key": "uploads/r/fr.srt", "language": "fr", "name": "Français"}]});
    // Not completed yet: refused, nothing made.
    let (status, refused) = post(api, &format!("/v1/jobs/{old_id}/captions"), TOKEN, captions.clone()).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("job_not_completed")), "{refused}");
    let old = ended(api, d, &old_id).await;

    // Another tenant's job is no job; the same request with an Idempotency-Key twice is one job.
    let path = format!("/v1/jobs/{old_id}/captions");
    let (status, hidden) = post(api, &path, OTHER_TENANT_TOKEN, captions.clone()).await;
    assert_eq!((status, hidden["error"]["code"].as_str()), (404, Some("job_not_found")), "{hidden}");
    let request = || api.client.post(api.url(&path)).bearer_auth(TOKEN).header("idempotency-key", packaging);
    let first = request().json(&captions).send().await.expect("request");
    assert_eq!(first.status().as_u16(), 202);
    let made: Value = first.json().await.expect("json");
    let again = request().json(&captions).send().await.expect("request");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let new_id = made["job_id"].as_str().expect("a job id").to_string();
    assert_eq!(again.json::<Value>().await.expect("json")["job_id"], new_id.as_str());
    let new = ended(api, d, &new_id).await;
    assert_ne!(new["output_dir"], old["output_dir"]);

    let (old_dir, new_dir) = (d.path(&format!("{packaging}-old")), d.path(&format!("{packaging}-new")));
    let old_files = download(d, &old, &old_dir).await;
    let new_files = download(d, &new, &new_dir).await;
    for name in ["master.m3u8", "manifest.mpd", "package.json", "captions-fr.vtt", "captions-fr.m3u8"] {
        assert!(new_files.iter().any(|f| f == name), "{name} in {new_files:?}");
    }
    // Every file of the old package but its manifests is in the new one, byte for byte: the
    // renditions were copied, not encoded.
    let mut compared = 0;
    for name in old_files.iter().filter(|f| !["master.m3u8", "manifest.mpd", "package.json"].contains(&f.as_str())) {
        let (a, b) = (std::fs::read(old_dir.join(name)).expect("old"), std::fs::read(new_dir.join(name)));
        assert!(b.as_ref().is_ok_and(|b| *b == a), "{name} differs or is missing");
        compared += usize::from(name.ends_with(".mp4") || name.ends_with(".m4s"));
    }
    assert!(compared >= 2, "the renditions were compared: {old_files:?}");

    let master = std::fs::read_to_string(new_dir.join("master.m3u8")).expect("master");
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subtitles\",NAME=\"Français\",LANGUAGE=\"fr\""),
        "{master}"
    );
    let variants: Vec<&str> = master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert!(!variants.is_empty() && variants.iter().all(|v| v.contains("SUBTITLES=\"subtitles\"")), "{master}");
    let mpd = std::fs::read_to_string(new_dir.join("manifest.mpd")).expect("mpd");
    assert!(mpd.contains("contentType=\"text\" mimeType=\"text/vtt\" lang=\"fr\""), "{mpd}");
    assert!(mpd.contains("<BaseURL>captions-fr.vtt</BaseURL>"), "{mpd}");
    let vtt = std::fs::read_to_string(new_dir.join("captions-fr.vtt")).expect("vtt");
    assert!(vtt.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"), "{vtt}");
    let start = first_cue_start(&vtt);
    assert!((start - 1.0).abs() <= 0.04, "the cue starts within a frame of 1 s: {start}");

    // ffmpeg reads the new package through its master playlist, every frame of the old one.
    let (old_frames, new_frames) =
        (video_frames(&old_dir.join("master.m3u8")), video_frames(&new_dir.join("master.m3u8")));
    assert!(old_frames >= 70, "{old_frames} frames in the old package");
    assert_eq!(new_frames, old_frames);
    old_id
}

async fn recaption(kind: Kind) {
    require!(media_tools(), kind == Kind::Local || emulator());
    let d = Deployment::new(kind).await;
    // Upload events make cheap jobs: the tests' own jobs are the API's.
    let _worker = d.spawn_worker("recaption-worker", &[("MEDIA_DEFAULT_PRESETS", "thumbnail")]);
    let api = api(&d).await;
    let clip: PathBuf = d.path("clip.mp4");
    Clip { seconds: 3.0, ..Clip::default() }.make(&clip);
    d.upload("uploads/r/clip.mp4", &clip).await;
    for (name, text) in [("fr.srt", SRT), ("en.srt", "1\n00:00:00,500 --> 00:00:01,000\nHello\n")] {
        let path = d.path(name);
        std::fs::write(&path, text).expect("srt");
        d.upload(&format!("uploads/r/{name}"), &path).await;
    }

    let english = json!([{"key": "uploads/r/en.srt", "language": "en", "name": "English"}]);
    let segmented = adds_captions(&d, &api, "uploads/r/clip.mp4", "segments", english).await;
    // A track in a language the package has is refused unless it replaces that one.
    let path = format!("/v1/jobs/{segmented}/captions");
    let taken = json!({"captions": [{"key": "uploads/r/fr.srt", "language": "EN"}]});
    let (status, refused) = post(&api, &path, TOKEN, taken.clone()).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("caption_language_exists")), "{refused}");
    let missing = json!({"captions": [{"key": "uploads/r/none.srt", "language": "de"}]});
    let (status, refused) = post(&api, &path, TOKEN, missing).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("captions_not_found")), "{refused}");
    adds_captions(&d, &api, "uploads/r/clip.mp4", "single_file", Value::Null).await;

    // A job without a cmaf output: nothing to add captions to.
    let plain = submit(&api, "uploads/r/clip.mp4", json!([{"preset": "thumbnail"}])).await;
    ended(&api, &d, &plain).await;
    let captions = json!({"captions": [{"key": "uploads/r/fr.srt", "language": "fr"}]});
    let (status, refused) = post(&api, &format!("/v1/jobs/{plain}/captions"), TOKEN, captions).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("no_cmaf_output")), "{refused}");
}

crate::on_both_backends!(recaption);
