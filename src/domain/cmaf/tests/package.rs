use super::*;
use crate::domain::cmaf::dash::TimelineEntry;
use crate::domain::cmaf::{Bandwidth, ByteRange};

/// A two-rung H.264 ladder with audio, single-file addressing for one rung and templates for
/// the other, and no captions.
fn package() -> Package {
    let variant = |name: &str, height: u32, peak: u64| Variant {
        uri: format!("{name}/index.m3u8"),
        codec: "avc1.64001f".into(),
        width: height * 16 / 9,
        height,
        frame_rate: 25.0,
        bandwidth: Bandwidth { peak, average: peak * 3 / 4 },
        audio_group: Some("audio".into()),
        subtitles_group: None,
    };
    let audio = AudioRendition {
        group_id: "audio".into(),
        name: "Audio".into(),
        language: None,
        default: true,
        autoselect: true,
        channels: 2,
        uri: "audio/index.m3u8".into(),
        codec: "mp4a.40.2".into(),
        bandwidth: Bandwidth { peak: 131_000, average: 128_000 },
    };
    let template = Addressing::Template {
        initialization: "h264-720p/init.mp4".into(),
        media: "h264-720p/segment_$Number%05d$.m4s".into(),
        timeline: vec![TimelineEntry { start: 0, duration: 6144 }, TimelineEntry { start: 6144, duration: 2048 }],
        presentation_time_offset: 0,
    };
    let video = |id: &str, height: u32, addressing: Addressing| Representation {
        id: id.into(),
        codec: "avc1.64001f".into(),
        bandwidth: 2_000_000,
        timescale: 1024,
        media: Media::Video { width: height * 16 / 9, height, frame_rate: (25, 1) },
        addressing,
    };
    let base = Addressing::Base {
        url: "h264-360p.mp4".into(),
        init: ByteRange { offset: 0, size: 800 },
        index: ByteRange { offset: 800, size: 52 },
    };
    let sets = vec![AdaptationSet {
        content: ContentType::Video,
        lang: None,
        representations: vec![video("h264-720p", 720, template), video("h264-360p", 360, base)],
    }];
    Package {
        version: PACKAGE_VERSION,
        variants: vec![variant("h264-720p", 720, 2_000_000), variant("h264-360p", 360, 700_000)],
        audio: vec![audio],
        subtitles: Vec::new(),
        mpd: Mpd { duration_seconds: 8.0, min_buffer_seconds: 6.0, adaptation_sets: sets },
        seconds: 8.0,
        caption_mpegts: 0,
        captions: Vec::new(),
    }
}

#[test]
fn the_description_round_trips_and_renders_the_same_text() {
    let mut original = package();
    original.add_caption("en", "English", "captions-en.vtt");
    let json = original.to_json().unwrap();
    let back = Package::from_json(&json).unwrap();
    assert_eq!(back, original);
    assert_eq!(back.master().unwrap(), original.master().unwrap());
    assert_eq!(back.manifest().unwrap(), original.manifest().unwrap());

    let mut newer: serde_json::Value = serde_json::from_slice(&json).unwrap();
    newer["version"] = serde_json::json!(2);
    assert!(Package::from_json(newer.to_string().as_bytes()).is_err(), "an unknown version is refused");
    assert!(Package::from_json(b"{\"version\":1}").is_err());
}

#[test]
fn an_added_track_is_announced_by_both_manifests() {
    let mut package = package();
    let before = package.master().unwrap();
    assert!(!before.contains("SUBTITLES"));
    package.add_caption("fr", "Français", "captions-fr.vtt");

    let master = package.master().unwrap();
    assert!(master.contains(
        "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subtitles\",NAME=\"Français\",LANGUAGE=\"fr\",DEFAULT=NO,\
         AUTOSELECT=YES,URI=\"captions-fr.m3u8\"\n"
    ));
    let variants: Vec<&str> = master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert_eq!(variants.len(), 2);
    for line in &variants {
        assert!(line.contains(",SUBTITLES=\"subtitles\","), "{line}");
    }
    // Each variant is the line the package had, naming the group.
    for (old, new) in before.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF")).zip(&variants) {
        assert_eq!(new.replace(",SUBTITLES=\"subtitles\"", ""), old);
    }

    let mpd = package.manifest().unwrap();
    assert!(mpd.contains(
        "    <AdaptationSet id=\"1\" contentType=\"text\" mimeType=\"text/vtt\" lang=\"fr\">\n      \
         <Role schemeIdUri=\"urn:mpeg:dash:role:2011\" value=\"subtitle\"/>\n      \
         <Representation id=\"captions-fr\" bandwidth=\"1000\">\n        <BaseURL>captions-fr.vtt</BaseURL>\n"
    ));
    assert_eq!(package.captions[0].playlist, "captions-fr.m3u8");
    let playlist = package.caption_media_playlist("captions-fr.vtt").unwrap();
    assert!(playlist.contains("#EXTINF:8.000,\ncaptions-fr.vtt\n"));
}

#[test]
fn tracks_may_share_a_language_and_are_removed_by_it() {
    let mut package = package();
    package.add_caption("en", "English", "captions-en.vtt");
    package.add_caption("fr", "Français", "captions-fr_s3.vtt");
    assert!(package.has_language("EN"));
    package.add_caption("en", "English (SDH)", "captions-en_s2.vtt");
    assert_eq!(package.captions.len(), 3);
    let master = package.master().unwrap();
    assert_eq!(master.matches("TYPE=SUBTITLES").count(), 3);
    assert!(master.contains("NAME=\"English (SDH)\"") && master.contains("NAME=\"English\""));
    assert_eq!(package.manifest().unwrap().matches("contentType=\"text\"").count(), 3);

    let english = package.remove_captions("EN");
    let files: Vec<&str> = english.iter().map(|c| c.vtt.as_str()).collect();
    assert_eq!(files, ["captions-en.vtt", "captions-en_s2.vtt"]);
    assert_eq!(package.master().unwrap().matches("TYPE=SUBTITLES").count(), 1);
    // With no track left, the variants name no subtitles group.
    let removed = package.remove_captions("fr");
    assert_eq!(removed[0].playlist, "captions-fr_s3.m3u8");
    assert!(package.remove_captions("fr").is_empty());
    assert_eq!(package.master().unwrap(), self::package().master().unwrap());
    assert_eq!(package.manifest().unwrap(), self::package().manifest().unwrap());
}

#[test]
fn caption_files_are_named_by_language() {
    assert_eq!(caption_file("pt-BR"), "captions-pt-br.vtt");
    assert_eq!(caption_playlist("captions-pt-br.vtt"), "captions-pt-br.m3u8");
}
