//! Playback harness: streaming outputs played by real players (hls.js, dash.js) in headless
//! Chromium, all on 127.0.0.1.
//!
//! [`MediaServer`] serves a folder (with byte ranges, for single-file renditions), the players'
//! scripts and a page (`playback_page.html`) that plays one URL muted with either player,
//! optionally held to one video codec, and keeps its state in `window.playback`. [`play`]
//! polls that state until the clock has moved, an error shows or a deadline passes, and
//! reports what played. hls.js is the console's vendored copy (src/api/console/vendor, the
//! release scripts/refresh-hls-js pins), so the tests play with the bytes the console ships;
//! dash.js is installed from npm by scripts/test into `<target>/players`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};

use crate::browser::{Browser, browser};
use crate::packaging::{
    CUE_TEXT, Layout, fixture_inputs, hls_differences, hls_variants, make_fixtures, mpd_differences,
    mpd_representations, packager_available, shaka_package,
};
use crate::require;
use crate::support::{in_ci, media_tools};

/// The hls.js release vendored for the console (scripts/refresh-hls-js pins it).
pub const HLS_JS_VERSION: &str = "1.7.4";
/// The dash.js release scripts/lib.sh installs (`ensure_players`).
pub const DASHJS_VERSION: &str = "5.2.1";
/// The clock must pass this many seconds for a playback to count as advancing.
pub const ADVANCED: f64 = 1.5;
/// After this many seconds of playback, [`play`] stops waiting for a caption cue.
const CUE_WAIT: f64 = 3.0;
/// How long one playback may take to advance before [`play`] gives up.
const DEADLINE: Duration = Duration::from_secs(20);

const PAGE: &str = include_str!("playback_page.html");

fn hls_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/console/vendor/hls.min.js")
}

fn dash_js() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap_or(Path::new("."));
    target.join("players/node_modules/dashjs/dist/modern/umd/dash.all.min.js")
}

/// Whether both players' scripts are present; in CI their absence is a failure. The vendored
/// hls.js must be the release the harness was written for.
pub fn players() -> bool {
    let vendored = std::fs::read_to_string(hls_js()).expect("the console's vendored hls.js");
    assert!(vendored.contains(&format!("\"{HLS_JS_VERSION}\"")), "the vendored hls.js is not {HLS_JS_VERSION}");
    let ok = dash_js().is_file();
    assert!(ok || !in_ci(), "dash.js is not installed in {}, and CI=true forbids skipping", dash_js().display());
    if !ok {
        eprintln!("skipped: dash.js is not installed (scripts/test installs dashjs@{DASHJS_VERSION} with npm)");
    }
    ok
}

/// The player a playback uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Player {
    HlsJs,
    DashJs,
}

/// Which video rendition to play: the player's choice, or the first whose codec string starts
/// with the prefix (`avc1`, `av01`, `hvc1`; the player may only switch among those).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    Auto,
    Codec(String),
}

/// What a playback did, as the page saw it. Some fields are there for the failure messages
/// (`{:?}`) only.
#[allow(dead_code)]
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Playback {
    /// Whether `currentTime` passed [`ADVANCED`].
    #[serde(default)]
    pub advanced: bool,
    #[serde(rename = "time")]
    pub current_time: f64,
    /// Fatal player errors and media element errors.
    pub errors: Vec<String>,
    /// Errors the player reported as recovered.
    pub warnings: Vec<String>,
    /// The codec string and height of the rendition playing, as the player reports them.
    pub codec: Option<String>,
    pub height: Option<u32>,
    /// The height of the decoded picture (`videoHeight`).
    pub decoded_height: u32,
    /// Texts of every caption cue that was active on an enabled track.
    pub cues: Vec<String>,
    /// Every cue loaded on an enabled track, as `start-end text` (seconds).
    pub timed_cues: Vec<String>,
    /// The video renditions the player kept after its codec checks, as `codec@height`.
    pub renditions: Vec<String>,
    /// The text tracks as `kind:language:mode`.
    pub tracks: Vec<String>,
    /// How long the playback ran, and how many byte-range responses (206) it was served.
    #[serde(skip)]
    pub elapsed: Duration,
    #[serde(skip)]
    pub ranges: usize,
}

/// A folder, the page and the players' scripts over HTTP on 127.0.0.1 (a free port); stops on
/// drop. Media types are set for streaming files (ServeDir's guesses miss `m4s` and `mpd`).
pub struct MediaServer {
    pub base: String,
    partial: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MediaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn media_type(path: &str) -> Option<&'static str> {
    let extension = path.rsplit_once('.').map(|(_, e)| e)?;
    Some(match extension {
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "mp4" | "m4s" => "video/mp4",
        "m4a" => "audio/mp4",
        "vtt" => "text/vtt",
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        _ => return None,
    })
}

async fn typed(State(partial): State<Arc<AtomicUsize>>, request: Request<Body>, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    if response.status() == StatusCode::PARTIAL_CONTENT {
        partial.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(kind) = media_type(&path).filter(|_| response.status().is_success()) {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    }
    response
}

impl MediaServer {
    /// Serves `folder` under `/media/`, the page at `/` and the scripts under `/players/`.
    pub async fn start(folder: &Path) -> Self {
        let partial = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/", axum::routing::get(|| async { axum::response::Html(PAGE) }))
            .route_service("/players/hls.min.js", ServeFile::new(hls_js()))
            .route_service("/players/dash.all.min.js", ServeFile::new(dash_js()))
            .nest_service("/media", ServeDir::new(folder))
            .layer(middleware::from_fn_with_state(partial.clone(), typed));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let base = format!("http://{}", listener.local_addr().expect("the address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MediaServer { base, partial, task }
    }

    /// How many byte-range responses (206) the server has sent.
    pub fn ranges_served(&self) -> usize {
        self.partial.load(Ordering::Relaxed)
    }
}

/// A browser and a server for several playbacks of one folder.
pub struct Session {
    pub browser: Browser,
    pub server: MediaServer,
}

impl Session {
    pub async fn start(folder: &Path) -> Self {
        let server = MediaServer::start(folder).await;
        Session { browser: Browser::start().await, server }
    }

    /// Whether this Chromium's Media Source Extensions take `mime` (e.g.
    /// `video/mp4; codecs="hvc1.1.6.L93.B0"`): what a player asks before it keeps a rendition.
    pub async fn supports(&self, mime: &str) -> bool {
        let client = &self.browser.client;
        client.goto(&format!("{}/", self.server.base)).await.expect("open the page");
        let script = "return MediaSource.isTypeSupported(arguments[0])";
        client.execute(script, vec![json!(mime)]).await.expect("ask MediaSource") == json!(true)
    }

    /// Plays `entry` (a path inside the folder) on a fresh page; see [`play`].
    pub async fn play(&self, entry: &str, player: Player, pick: &Pick) -> Playback {
        let client = &self.browser.client;
        client.goto(&format!("{}/", self.server.base)).await.expect("open the page");
        let name = if player == Player::HlsJs { "hls" } else { "dash" };
        let codec = match pick {
            Pick::Auto => json!(null),
            Pick::Codec(prefix) => json!(prefix),
        };
        let url = format!("{}/media/{entry}", self.server.base);
        client
            .execute("window.start(arguments[0], arguments[1], arguments[2])", vec![json!(name), json!(url), codec])
            .await
            .expect("start the player");
        let (started, ranges) = (Instant::now(), self.server.ranges_served());
        loop {
            let state = client.execute("return window.playback", vec![]).await.expect("the page's state");
            let mut playback: Playback =
                serde_json::from_value(state.clone()).unwrap_or_else(|e| panic!("{e}: {state}"));
            playback.advanced = playback.current_time > ADVANCED;
            playback.elapsed = started.elapsed();
            playback.ranges = self.server.ranges_served() - ranges;
            let settled = playback.advanced && (!playback.cues.is_empty() || playback.current_time > CUE_WAIT);
            if settled || !playback.errors.is_empty() || started.elapsed() > DEADLINE {
                return playback;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Plays `entry` of `folder` with `player`, muted, held to `pick`'s rendition: returns once
/// the clock passed [`ADVANCED`] (and a caption cue showed, or 3 s played), an error showed, or
/// 20 s passed.
pub async fn play(folder: &Path, entry: &str, player: Player, pick: Pick) -> Playback {
    Session::start(folder).await.play(entry, player, &pick).await
}

/// The harness on renditions made with plain ffmpeg and packaged by Shaka Packager: H.264 and
/// AV1 through hls.js and dash.js, captions, and the single-file layout's byte ranges.
#[tokio::test]
async fn shaka_packaged_h264_and_av1_play_in_hls_js_and_dash_js() {
    require!(media_tools(), browser(), players(), packager_available());
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a folder");
    let fixtures = make_fixtures(dir.path());
    let made = started.elapsed();
    let inputs = fixture_inputs(&fixtures);
    let segments = shaka_package(&inputs, &dir.path().join("segments"), Layout::Segments, 2);
    let single = shaka_package(&inputs, &dir.path().join("single"), Layout::SingleFile, 2);

    // The parsers read Shaka's manifests: a variant and a representation per video rendition.
    let master = std::fs::read_to_string(&segments.master).expect("the master playlist");
    let variants = hls_variants(&master);
    let codecs: Vec<&str> = variants.iter().map(|v| v.codecs[0].as_str()).collect();
    assert!(codecs.len() == 2 && codecs[0].starts_with("avc1.") && codecs[1].starts_with("av01."), "{master}");
    assert!(variants.iter().all(|v| v.resolution == Some((320, 180)) && v.bandwidth > 0), "{variants:?}");
    let mpd = std::fs::read_to_string(&segments.mpd).expect("the MPD");
    let reps = mpd_representations(&mpd);
    let video: Vec<_> = reps.iter().filter(|r| r.content_type == "video").collect();
    let dash_codecs: Vec<&str> = video.iter().filter_map(|r| r.codecs.as_deref()).collect();
    assert_eq!(dash_codecs, codecs, "the same codec strings in both manifests");
    assert!(video.iter().all(|r| r.height == Some(180) && r.bandwidth > 0), "{video:?}");
    let packaged = started.elapsed();
    // The comparison helpers on Shaka's two layouts of the same renditions.
    let single_master = std::fs::read_to_string(&single.master).expect("the single-file master");
    let single_mpd = std::fs::read_to_string(&single.mpd).expect("the single-file MPD");
    let hls = hls_differences(&hls_variants(&single_master), &variants, 0.02);
    let dash = mpd_differences(&mpd_representations(&single_mpd), &reps, 0.02);
    assert!(hls.is_empty(), "Shaka's two layouts, HLS: {hls:?}");
    assert!(dash.iter().all(|d| d.starts_with("(\"text\"")), "only the text's format differs: {dash:?}");

    let session = Session::start(dir.path()).await;
    let mut support = Vec::new();
    for codec in ["avc1.64000d", "av01.0.00M.08", "hvc1.1.6.L93.B0", "hev1.1.6.L93.B0", "vp09.00.10.08"] {
        support.push((codec, session.supports(&format!("video/mp4; codecs=\"{codec}\"")).await));
    }
    eprintln!("Media Source Extensions in this Chromium: {support:?}");
    assert!(support[..2].iter().all(|(_, yes)| *yes), "H.264 and AV1 in MP4: {support:?}");
    for (player, entry) in [(Player::HlsJs, "segments/master.m3u8"), (Player::DashJs, "segments/manifest.mpd")] {
        for codec in ["avc1", "av01"] {
            let p = session.play(entry, player, &Pick::Codec(codec.to_string())).await;
            eprintln!("{player:?} {codec}: {p:?}");
            assert!(p.advanced && p.errors.is_empty(), "{player:?} {codec}: {p:?}");
            assert!(p.codec.as_deref().is_some_and(|c| c.starts_with(codec)), "{player:?} played {:?}", p.codec);
            assert_eq!((p.height, p.decoded_height), (Some(180), 180), "{player:?} {codec}");
            // dash.js shows WebVTT in fMP4 segments; hls.js 1.7.4 loads them but adds no cue.
            if player == Player::DashJs {
                assert_eq!(p.cues, [CUE_TEXT], "{player:?} {codec}: the caption cue");
            }
        }
    }
    drop(session);

    // One file per rendition, read by byte ranges, with a plain WebVTT file, the player's choice
    // of rendition.
    let p = play(dir.path(), "single/master.m3u8", Player::HlsJs, Pick::Auto).await;
    eprintln!("single-file HlsJs: {p:?}");
    assert!(p.advanced && p.errors.is_empty() && p.decoded_height == 180, "single file: {p:?}");
    assert!(p.ranges > 0, "the single-file playlist was read by byte ranges: {p:?}");
    assert_eq!(p.cues, [CUE_TEXT], "hls.js: the caption cue of the WebVTT file");
    eprintln!("fixtures {made:?}, packaged {packaged:?}, all {:?}", started.elapsed());
}
