//! The source's own text tracks as WebVTT renditions of a `cmaf` output: an MP4 with a
//! `mov_text` track, a Matroska file with SubRip and ASS tracks, and an H.264 stream with
//! CEA-608 captions in its SEI, all made here with ffmpeg; the playlists, the MPD and the
//! cues (times within a frame of the source's, text without ASS override tags) are checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use media_worker::domain::job::OutputRequest;
use media_worker::domain::preset::Preset;
use serde_json::Value;

use crate::quality::{finished, manifest, submit};
use crate::require;
use crate::support::{Deployment, Kind, media_tools};

/// Upload events make thumbnail jobs only; the tests look their own jobs up by id.
const CHEAP_DEFAULTS: (&str, &str) = ("MEDIA_DEFAULT_PRESETS", "thumbnail");
/// A frame at 25 fps: the furthest a cue may move.
const FRAME: f64 = 0.04;

const SRT: &str =
    "1\n00:00:00,500 --> 00:00:01,700\nBonjour le monde\n\n2\n00:00:02,000 --> 00:00:03,250\nDeuxième ligne\n";
const SRT_CUES: [(f64, f64, &str); 2] = [(0.5, 1.7, "Bonjour le monde"), (2.0, 3.25, "Deuxième ligne")];

const ASS: &str = "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n\
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n\
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n[Events]\n\
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n\
Dialogue: 0,0:00:00.60,0:00:01.80,Default,,0,0,0,,Guten {\\i1}Tag{\\i0}\n\
Dialogue: 0,0:00:02.10,0:00:03.30,Default,,0,0,0,,{\\an8\\pos(10,10)}Zweite Zeile\\Nmit Umbruch\n";
const ASS_CUES: [(f64, f64, &str); 2] = [(0.6, 1.8, "Guten <i>Tag</i>"), (2.1, 3.3, "Zweite Zeile\nmit Umbruch")];

fn ffmpeg(args: &[&str]) {
    let output = Command::new("ffmpeg").args(["-hide_banner", "-loglevel", "error", "-y"]).args(args).output();
    let output = output.expect("ffmpeg");
    assert!(output.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Four seconds of 320x180 picture at 25 fps and a tone, as ffmpeg inputs.
const PICTURE: [&str; 8] =
    ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4", "-f", "lavfi", "-i", "sine=duration=4"];

/// An MP4 with a `mov_text` track in English named "English" (MP4 keeps a track's name in
/// its handler).
fn mp4_with_mov_text(dir: &Path) -> PathBuf {
    let srt = dir.join("fr.srt");
    std::fs::write(&srt, SRT).expect("srt");
    let out = dir.join("movtext.mp4");
    let mut args = PICTURE.to_vec();
    args.extend(["-i", srt.to_str().expect("utf-8"), "-map", "0", "-map", "1", "-map", "2"]);
    args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-c:s", "mov_text"]);
    args.extend(["-metadata:s:s:0", "language=eng", "-metadata:s:s:0", "handler_name=English"]);
    args.extend(["-metadata:s:s:0", "title=English", out.to_str().expect("utf-8")]);
    ffmpeg(&args);
    out
}

/// A Matroska file with a SubRip track in French and an ASS track in German, `seconds` long
/// with a keyframe every second.
fn mkv_with_srt_and_ass(dir: &Path, seconds: u32) -> PathBuf {
    let (srt, ass) = (dir.join("fr.srt"), dir.join("de.ass"));
    std::fs::write(&srt, SRT).expect("srt");
    std::fs::write(&ass, ASS).expect("ass");
    let out = dir.join(format!("tracks-{seconds}.mkv"));
    let picture = format!("testsrc2=size=320x180:rate=25:duration={seconds}");
    let sound = format!("sine=duration={seconds}");
    let mut args = vec!["-f", "lavfi", "-i", &picture, "-f", "lavfi", "-i", &sound];
    args.extend(["-i", srt.to_str().expect("utf-8"), "-i", ass.to_str().expect("utf-8")]);
    args.extend(["-map", "0", "-map", "1", "-map", "2", "-map", "3", "-c:v", "libx264", "-preset", "ultrafast"]);
    args.extend(["-g", "25", "-c:a", "aac", "-c:s:0", "srt", "-c:s:1", "ass"]);
    args.extend(["-metadata:s:s:0", "language=fre", "-metadata:s:s:1", "language=ger", out.to_str().expect("utf-8")]);
    ffmpeg(&args);
    out
}

/// The CEA-608 byte pair of `a`, `b` with odd parity.
fn pair(a: u8, b: u8) -> [u8; 2] {
    let parity = |x: u8| if x.count_ones().is_multiple_of(2) { x | 0x80 } else { x };
    [parity(a), parity(b)]
}

/// An H.264 MP4 whose SEI carries CEA-608 captions (ATSC A/53 `GA94` user data) on channel 1:
/// the pop-on caption "HELLO" shown from frame 20 (0.8 s, its end-of-caption) to frame 50
/// (2.0 s, erase displayed memory). x264's Annex B stream gets one SEI before each frame.
fn mp4_with_closed_captions(dir: &Path) -> PathBuf {
    let raw = dir.join("plain.h264");
    let mut args = PICTURE[..4].to_vec();
    args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-bsf:v", "h264_mp4toannexb", "-f", "h264"]);
    args.push(raw.to_str().expect("utf-8"));
    ffmpeg(&args);
    let data = std::fs::read(&raw).expect("h264");
    let mut commands: Vec<(usize, [u8; 2])> =
        vec![(10, pair(0x14, 0x20)), (11, pair(0x14, 0x2E)), (12, pair(0x14, 0x70))];
    commands.extend([(13, pair(b'H', b'E')), (14, pair(b'L', b'L')), (15, pair(b'O', 0))]);
    commands.extend([(20, pair(0x14, 0x2F)), (50, pair(0x14, 0x2C))]);
    let sei = |frame: usize| {
        let [b1, b2] = commands.iter().find(|(f, _)| *f == frame).map_or([0x80, 0x80], |(_, p)| *p);
        let payload = [0xB5, 0x00, 0x31, b'G', b'A', b'9', b'4', 0x03, 0x41, 0xFF, 0xFC, b1, b2, 0xFF];
        let mut nal = vec![0, 0, 0, 1, 0x06, 4, payload.len() as u8];
        nal.extend(payload);
        nal.push(0x80);
        nal
    };
    let starts: Vec<usize> = (0..data.len().saturating_sub(3)).filter(|&i| data[i..i + 3] == [0, 0, 1]).collect();
    let mut out = Vec::new();
    let mut frame = 0;
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |next| if data[next - 1] == 0 { next - 1 } else { *next });
        let nal = &data[start..end];
        if matches!(nal[3] & 0x1f, 1 | 5) {
            out.extend(sei(frame));
            frame += 1;
        }
        out.push(0);
        out.extend_from_slice(nal);
    }
    let captioned = dir.join("cc.h264");
    std::fs::write(&captioned, out).expect("write");
    let mp4 = dir.join("cc.mp4");
    let mut args = vec!["-r", "25", "-i", captioned.to_str().expect("utf-8")];
    args.extend(&PICTURE[4..]);
    args.extend(["-map", "0", "-map", "1", "-c:v", "copy", "-c:a", "aac", mp4.to_str().expect("utf-8")]);
    ffmpeg(&args);
    mp4
}

/// A WebVTT file's cues: (start, end, text), times in seconds.
fn cues(vtt: &str) -> Vec<(f64, f64, String)> {
    let seconds = |t: &str| -> f64 {
        t.trim().split(':').fold(0.0, |total, part| total * 60.0 + part.parse::<f64>().expect("a time"))
    };
    vtt.split("\n\n")
        .filter_map(|block| {
            let mut lines = block.lines().skip_while(|l| !l.contains("-->"));
            let (start, end) = lines.next()?.split_once("-->")?;
            let end = end.split_whitespace().next()?;
            Some((seconds(start), seconds(end), lines.collect::<Vec<_>>().join("\n")))
        })
        .collect()
}

fn assert_cues(vtt: &str, expected: &[(f64, f64, &str)]) {
    assert!(vtt.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"), "{vtt}");
    let got = cues(vtt);
    assert_eq!(got.len(), expected.len(), "{vtt}");
    for ((start, end, text), (s, e, t)) in got.iter().zip(expected) {
        assert!((start - s).abs() <= FRAME && (end - e).abs() <= FRAME, "{start}-{end} against {s}-{e}: {vtt}");
        assert_eq!(text, t, "{vtt}");
    }
    assert!(!vtt.contains('{') && !vtt.contains('\\'), "no ASS tags: {vtt}");
}

/// Every file of the `cmaf` output of `job`, by name (the folder is flat in single-file mode).
async fn cmaf_files(d: &Deployment, job: &str) -> (Value, PathBuf) {
    let manifest = manifest(d, &finished(d, job).await).await;
    let output = manifest["outputs"].as_array().and_then(|o| o.iter().find(|o| o["preset"] == "cmaf")).expect("cmaf");
    let dir = d.path(job);
    for file in output["files"].as_array().expect("files") {
        let key = file.as_str().expect("a key");
        let Some((_, name)) = key.split_once("/cmaf/") else { continue };
        let target = dir.join(name);
        std::fs::create_dir_all(target.parent().expect("a folder")).expect("mkdir");
        d.storage().get_to_file(key, &target).await.expect("download");
    }
    (output.clone(), dir)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn embedded_text_tracks_become_webvtt_renditions() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let sources = d.path("sources");
    std::fs::create_dir_all(&sources).expect("mkdir");
    let jobs = [
        ("movtext", mp4_with_mov_text(&sources), None),
        ("tracks", mkv_with_srt_and_ass(&sources, 4), None),
        ("no-tracks", sources.join("tracks-4.mkv"), Some(false)),
        ("closed", mp4_with_closed_captions(&sources), None),
    ];
    for (job, file, embedded) in &jobs {
        let key = format!("uploads/c/{job}.{}", file.extension().and_then(|e| e.to_str()).expect("extension"));
        d.upload(&key, file).await;
        let output = OutputRequest { embedded_captions: *embedded, ..OutputRequest::new(Preset::Cmaf) };
        submit(&d, &key, job, vec![output], None).await;
    }
    d.drain_with(&[CHEAP_DEFAULTS]).await;

    // mov_text: English, named by its handler.
    let (output, dir) = cmaf_files(&d, "movtext").await;
    let master = read(&dir, "master.m3u8");
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subtitles\",NAME=\"English\",LANGUAGE=\"en\""),
        "{master}"
    );
    assert!(master.contains("URI=\"captions-en_s2.m3u8\""), "{master}");
    let mpd = read(&dir, "manifest.mpd");
    assert!(mpd.contains("contentType=\"text\"") && mpd.contains("lang=\"en\""), "{mpd}");
    assert_cues(&read(&dir, "captions-en_s2.vtt"), &SRT_CUES);
    let note = output["note"].as_str().unwrap_or_default();
    assert!(note.contains("captions: en (source stream 2)"), "{note}");

    // SubRip and ASS in Matroska: French and German, the italics kept as WebVTT's.
    let (output, dir) = cmaf_files(&d, "tracks").await;
    let master = read(&dir, "master.m3u8");
    for (name, language) in [("French", "fr"), ("German", "de")] {
        let line = format!("TYPE=SUBTITLES,GROUP-ID=\"subtitles\",NAME=\"{name}\",LANGUAGE=\"{language}\"");
        assert!(master.contains(&line), "{master}");
    }
    let mpd = read(&dir, "manifest.mpd");
    assert!(mpd.contains("lang=\"fr\"") && mpd.contains("lang=\"de\""), "{mpd}");
    assert_cues(&read(&dir, "captions-fr_s2.vtt"), &SRT_CUES);
    assert_cues(&read(&dir, "captions-de_s3.vtt"), &ASS_CUES);
    let note = output["note"].as_str().unwrap_or_default();
    assert!(note.contains("fr (source stream 2), de (source stream 3)"), "{note}");

    // Asked not to: no subtitles group at all.
    let (_, dir) = cmaf_files(&d, "no-tracks").await;
    let master = read(&dir, "master.m3u8");
    assert!(!master.contains("TYPE=SUBTITLES") && !dir.join("captions-fr_s2.vtt").exists(), "{master}");

    // CEA-608 in the SEI: the pop-on caption from its end-of-caption to its erase.
    let (output, dir) = cmaf_files(&d, "closed").await;
    let master = read(&dir, "master.m3u8");
    assert!(master.contains("NAME=\"Closed captions\",LANGUAGE=\"und\""), "{master}");
    let vtt = read(&dir, "captions-und_cc1.vtt");
    assert_cues(&vtt, &[(0.8, 2.0, "HELLO")]);
    let note = output["note"].as_str().unwrap_or_default();
    assert!(note.contains("und (source CEA-608)"), "{note}");
}

/// A split job's `cmaf` ladder takes its captions from the whole source, not the segments.
#[tokio::test]
async fn a_split_cmaf_ladder_keeps_the_sources_tracks() {
    require!(media_tools());
    let d = Deployment::new(Kind::Local).await;
    let sources = d.path("sources");
    std::fs::create_dir_all(&sources).expect("mkdir");
    let source = mkv_with_srt_and_ass(&sources, 8);
    d.upload("uploads/c/split.mkv", &source).await;
    submit(&d, "uploads/c/split.mkv", "split", vec![OutputRequest::new(Preset::Cmaf)], None).await;
    let split = [CHEAP_DEFAULTS, ("MEDIA_SPLIT_MIN_DURATION", "4s"), ("MEDIA_SEGMENT_DURATION", "2s")];
    d.drain_with(&split).await;
    let (output, dir) = cmaf_files(&d, "split").await;
    let manifest = manifest(&d, &finished(&d, "split").await).await;
    assert!(manifest["split"]["segments"].as_u64().is_some_and(|n| n >= 3), "a split job: {}", manifest["split"]);
    let note = output["note"].as_str().unwrap_or_default();
    assert!(note.contains("captions: fr (source stream 2), de (source stream 3); stitched from"), "{note}");
    let master = read(&dir, "master.m3u8");
    assert!(master.contains("NAME=\"French\",LANGUAGE=\"fr\"") && master.contains("NAME=\"German\""), "{master}");
    assert_cues(&read(&dir, "captions-fr_s2.vtt"), &SRT_CUES);
    assert_cues(&read(&dir, "captions-de_s3.vtt"), &ASS_CUES);
}
