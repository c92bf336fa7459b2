//! The web console with a `cmaf` ladder, in a real browser (as in [`crate::console`]): the form
//! offers the codecs and packaging the catalogue publishes, refuses a ladder without a codec,
//! submits H.264 + AV1, and the job page plays the ladder with hls.js, links its DASH manifest
//! and draws a scatter point per rendition, one series per codec.
//!
//! Screenshots of the form and the job page are saved under
//! `<target>/tmp/console-cmaf-screenshots/`, for CI to keep as artifacts.

use std::time::{Duration, Instant};

use media_worker::domain::delivery::{Packaging, VideoCodec};
use media_worker::domain::preset::Preset;
use serde_json::{Value, json};

use crate::api::ApiServer;
use crate::browser::{Browser, browser};
use crate::console::{PLAY, check_quality_table, sign_in, submit_file};
use crate::require;
use crate::support::{Clip, Deployment, media_tools};

/// The form's list options for `cmaf`: the codec checkboxes (value, checked) and the packaging
/// select's values with the one selected.
const FORM_CHOICES: &str = r#"
    const boxes = Array.from(document.querySelectorAll('#opt-cmaf-codecs input[type=checkbox]'));
    const select = document.getElementById('opt-cmaf-packaging');
    return {
        codecs: boxes.map(b => [b.value, b.checked]),
        packaging: select ? Array.from(select.options).map(o => o.value) : null,
        selected: select ? select.value : null,
        shown: !document.getElementById('options-cmaf').hidden,
    };
"#;

#[tokio::test]
async fn the_console_submits_a_cmaf_ladder_and_plays_it() {
    require!(media_tools(), browser());
    let started = Instant::now();
    let d = Deployment::local().await;
    let api = ApiServer::start_with(&d, &[]).await;
    let _worker = d.spawn_worker("worker", &[]);
    let clip = d.dir.path().join("ladder.mp4");
    Clip { seconds: 6.0, width: 640, height: 360, ..Clip::default() }.make(&clip);

    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-cmaf-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let b = Browser::start().await;
    b.client.goto(&api.url("/")).await.expect("open the console");
    sign_in(&b).await;

    // Ticking cmaf shows its codecs (H.264 ticked) and packaging (segments), as published.
    b.click("input[name=preset][value='cmaf']").await;
    let offered = b.client.execute(FORM_CHOICES, vec![]).await.expect("the form's choices");
    let codecs: Vec<Value> = VideoCodec::ALL.iter().map(|c| json!([c.name(), *c == VideoCodec::H264])).collect();
    let packaging: Vec<&str> = Packaging::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(offered["codecs"], json!(codecs), "{offered}");
    assert_eq!(offered["packaging"], json!(packaging), "{offered}");
    assert_eq!(offered["selected"], json!(Packaging::default().name()), "{offered}");
    assert_eq!(offered["shown"], json!(true), "{offered}");
    b.client.execute("document.getElementById('options-cmaf').scrollIntoView()", vec![]).await.expect("scroll");
    b.screenshot(&shots, "01-cmaf-options").await;

    // No codec: the form says so and sends nothing.
    let input = b.client.find(fantoccini::Locator::Css("#file")).await.expect("file input");
    input.send_keys(&clip.display().to_string()).await.expect("choose the file");
    b.click("#opt-cmaf-codecs-h264").await;
    b.click("#submit-job").await;
    let said = "const e = document.getElementById('new-job-error'); return !!e && !e.hidden && /at least one/.test(e.textContent)";
    b.until("the no-codec error", Duration::from_secs(5), said, vec![]).await;
    let error = b.text("#new-job-error").await;
    assert!(error.contains("video codecs") && error.contains("cmaf"), "{error}");
    let focused = b.client.execute("return document.activeElement.id", vec![]).await.expect("focus");
    assert_eq!(focused, json!("opt-cmaf-codecs-h264"), "the error points at the codecs");
    let hash = b.client.execute("return location.hash", vec![]).await.expect("hash");
    assert!(!hash.as_str().unwrap_or_default().contains("jobs/"), "no job without a codec: {hash}");
    b.screenshot(&shots, "02-no-codec").await;

    // H.264 and AV1, through the form (cmaf is still ticked: submit_file ticks nothing more).
    b.click("#opt-cmaf-codecs-h264").await;
    b.click("#opt-cmaf-codecs-av1").await;
    let job_id = submit_file(&b, &clip, &[]).await;
    let status = d.store().read(&job_id).await.expect("read").expect("the job");
    let output = &status.job.outputs[0];
    assert_eq!(output.preset, Preset::Cmaf);
    assert_eq!(output.codecs, Some(vec![VideoCodec::H264, VideoCodec::Av1]), "the request carries the codecs");
    assert_eq!(output.packaging, None, "the default packaging is left to the server");
    let submitted = started.elapsed();

    let completed = "const s = document.getElementById('job-state'); return !!s && /completed/.test(s.textContent)";
    b.until("the job to complete", Duration::from_secs(240), completed, vec![]).await;
    let ran = started.elapsed() - submitted;
    let status = d.store().read(&job_id).await.expect("read").expect("the job");
    let manifest = d.json(status.manifest_key.as_deref().expect("manifest")).await;
    let cmaf = manifest["outputs"].as_array().and_then(|o| o.iter().find(|o| o["preset"] == "cmaf")).cloned();
    let cmaf = cmaf.expect("a cmaf output");
    assert!(cmaf["key"].as_str().is_some_and(|k| k.ends_with("cmaf/master.m3u8")), "{cmaf}");

    // The player is labelled CMAF (HLS) and plays.
    let caption = b.text("figure[data-output='cmaf'] figcaption").await;
    assert_eq!(caption, "CMAF (HLS) (cmaf)");
    let played = b.client.execute_async(PLAY, vec![json!("player-cmaf")]).await.expect("play");
    assert!(played["time"].as_f64().is_some_and(|t| t > 1.0), "player-cmaf: {played}");
    b.screenshot(&shots, "03-cmaf-player").await;

    // The DASH manifest is among the files, and its link serves an MPD.
    let fetch_mpd = r#"
        const [done] = arguments;
        const a = document.querySelector('#outputs-body tr[data-file=dash] a');
        if (!a) { done({error: 'no DASH link'}); return; }
        fetch(a.href).then(r => r.text().then(t => done({status: r.status, name: a.textContent, head: t.slice(0, 400)})),
            e => done({error: String(e)}));
    "#;
    let mpd = b.client.execute_async(fetch_mpd, vec![]).await.expect("the DASH manifest");
    assert_eq!((mpd["status"].as_u64(), mpd["name"].as_str()), (Some(200), Some("manifest.mpd")), "{mpd}");
    assert!(mpd["head"].as_str().is_some_and(|t| t.contains("<MPD")), "{mpd}");

    // Quality: a table row and a scatter point per rendition, one series per codec.
    let scored: Vec<(String, String, f64)> = cmaf["quality"]
        .as_array()
        .expect("the cmaf ladder's quality")
        .iter()
        .map(|q| {
            let rendition = q["rendition"].as_str().expect("rendition").to_string();
            ("cmaf".to_string(), rendition, q["vmaf"]["mean"].as_f64().expect("the VMAF mean"))
        })
        .collect();
    // In the manifest's order, which the table and the scatter keep.
    let renditions: Vec<&str> = scored.iter().map(|(_, r, _)| r.as_str()).collect();
    let mut sorted = renditions.clone();
    sorted.sort();
    assert_eq!(sorted, ["av1-360p", "h264-360p"], "{cmaf}");
    check_quality_table(&b, &scored).await;
    let points = "return Array.from(document.querySelectorAll('#quality-rate .point')).map(p => \
        [p.dataset.rendition, p.tagName.toLowerCase(), p.getAttribute('class')])";
    let points = b.client.execute(points, vec![]).await.expect("the scatter's points");
    let points: Vec<(String, String, String)> = serde_json::from_value(points).expect("points");
    let named: Vec<&str> = points.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(named, renditions, "a point per rendition: {points:?}");
    assert_ne!(points[0].1, points[1].1, "the codecs' markers differ in shape: {points:?}");
    assert_ne!(points[0].2, points[1].2, "and in style: {points:?}");
    let legend = "return Array.from(document.querySelectorAll('#quality-rate-legend li')).map(li => li.dataset.series)";
    let legend = b.client.execute(legend, vec![]).await.expect("the legend");
    let series: Vec<String> = renditions.iter().map(|r| format!("cmaf {}", r.split('-').next().unwrap_or(r))).collect();
    assert_eq!(legend, json!(series), "a series per codec");
    b.client.execute("document.getElementById('quality-rate-figure').scrollIntoView()", vec![]).await.expect("scroll");
    b.screenshot(&shots, "04-cmaf-rate").await;
    assert!(!b.alert_open().await, "no alert ever fired");
    eprintln!("cmaf console test: submitted after {submitted:?}, the job ran {ran:?}, all {:?}", started.elapsed());
    b.client.clone().close().await.expect("close the browser");
}
