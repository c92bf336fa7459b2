use super::*;
use crate::domain::cmaf::segments::tests::index;
use crate::domain::cmaf::segments_at;

#[test]
fn segmented_media_playlist() {
    let video = index(&[(2000, 100), (2000, 100), (2000, 100), (1500, 50)]);
    let segments = segments_at(&video, &[0.0, 6.0]).unwrap();
    let text = media_playlist(&segmented_playlist(&video, &segments)).unwrap();
    let expected = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:1\n\
        #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXTINF:6.000,\nsegment_00001.m4s\n#EXTINF:1.500,\nsegment_00002.m4s\n#EXT-X-ENDLIST\n";
    assert_eq!(text, expected);
}

#[test]
fn single_file_media_playlist_uses_byte_ranges() {
    let video = index(&[(2002, 100), (2002, 300)]);
    let segments = segments_at(&video, &[0.0, 2.0]).unwrap();
    let text = media_playlist(&single_file_playlist("v.mp4", &video, &segments)).unwrap();
    assert!(text.contains("#EXT-X-TARGETDURATION:3\n"));
    assert!(text.contains("#EXT-X-MAP:URI=\"v.mp4\",BYTERANGE=\"100@0\"\n"));
    assert!(text.contains(
        "#EXTINF:2.002,\n#EXT-X-BYTERANGE:100@100\nv.mp4\n#EXTINF:2.002,\n#EXT-X-BYTERANGE:300@200\nv.mp4\n"
    ));
    assert!(media_playlist(&MediaPlaylist { map_uri: "i".into(), map_range: None, segments: vec![] }).is_err());
}

fn variant(uri: &str, codec: &str, peak: u64) -> Variant {
    Variant {
        uri: uri.into(),
        codec: codec.into(),
        width: 1280,
        height: 720,
        frame_rate: 30000.0 / 1001.0,
        bandwidth: Bandwidth { peak, average: peak / 2 },
        audio_group: Some("aac".into()),
        subtitles_group: Some("subs".into()),
    }
}

fn audio(name: &str, lang: &str) -> AudioRendition {
    AudioRendition {
        group_id: "aac".into(),
        name: name.into(),
        language: Some(lang.into()),
        default: true,
        autoselect: false,
        channels: 2,
        uri: "audio/index.m3u8".into(),
        codec: "mp4a.40.2".into(),
        bandwidth: Bandwidth { peak: 130_000, average: 128_000 },
    }
}

fn subtitles(name: &str) -> SubtitleRendition {
    SubtitleRendition {
        group_id: "subs".into(),
        name: name.into(),
        language: Some("en".into()),
        default: false,
        autoselect: true,
        uri: "subs/en.m3u8".into(),
    }
}

#[test]
fn multivariant_playlist_with_groups() {
    let variants =
        [variant("720/index.m3u8", "avc1.64001f", 3_000_000), variant("hevc/index.m3u8", "hvc1.1.6.L93.B0", 1_800_000)];
    let text = multivariant_playlist(&variants, &[audio("English", "en")], &[subtitles("English")]).unwrap();
    let expected = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"\n\
        #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=NO,AUTOSELECT=YES,URI=\"subs/en.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=3130000,AVERAGE-BANDWIDTH=1628000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.970,AUDIO=\"aac\",SUBTITLES=\"subs\",CLOSED-CAPTIONS=NONE\n720/index.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=1930000,AVERAGE-BANDWIDTH=1028000,CODECS=\"hvc1.1.6.L93.B0,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.970,AUDIO=\"aac\",SUBTITLES=\"subs\",CLOSED-CAPTIONS=NONE\nhevc/index.m3u8\n";
    assert_eq!(text, expected);
}

#[test]
fn unsafe_text_and_unknown_groups_are_refused() {
    let v = [variant("a.m3u8", "avc1.64001f", 1)];
    for bad in ["Eng\"lish", "Eng\nlish", "", "x\r"] {
        let err = multivariant_playlist(&v, &[audio(bad, "en")], &[subtitles("s")]).unwrap_err();
        assert!(matches!(err, CmafError::UnsafeText(_)), "{bad:?}");
    }
    assert!(multivariant_playlist(&v, &[audio("a", "en\",X=1")], &[subtitles("s")]).is_err());
    assert!(multivariant_playlist(&v, &[audio("a", "en")], &[subtitles("s\n#EXT")]).is_err());
    assert!(matches!(multivariant_playlist(&v, &[], &[subtitles("s")]), Err(CmafError::Layout(_))));
    assert!(matches!(multivariant_playlist(&v, &[audio("a", "en")], &[]), Err(CmafError::Layout(_))));
    assert!(multivariant_playlist(&[variant("a\nb", "avc1", 1)], &[audio("a", "en")], &[subtitles("s")]).is_err());
    assert!(multivariant_playlist(&[], &[], &[]).is_err());
}

#[test]
fn webvtt_playlist_is_one_segment() {
    let text = webvtt_playlist("en.vtt", 61.25).unwrap();
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:62\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXTINF:61.250,\nen.vtt\n#EXT-X-ENDLIST\n"
    );
    assert!(webvtt_playlist("a\"b", 1.0).is_err());
}
