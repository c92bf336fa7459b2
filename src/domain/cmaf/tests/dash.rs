use super::*;
use crate::domain::cmaf::segments::tests::index;
use crate::domain::cmaf::{cut_times, segments_at};

fn video(id: &str, addressing: Addressing) -> Representation {
    Representation {
        id: id.into(),
        codec: "hvc1.1.6.L93.B0".into(),
        bandwidth: 1_500_000,
        timescale: 1000,
        media: Media::Video { width: 1280, height: 720, frame_rate: (30000, 1001) },
        addressing,
    }
}

fn audio(addressing: Addressing) -> Representation {
    Representation {
        id: "audio".into(),
        codec: "mp4a.40.2".into(),
        bandwidth: 130_000,
        timescale: 1000,
        media: Media::Audio { sample_rate: 48000, channels: 2 },
        addressing,
    }
}

fn text() -> AdaptationSet {
    AdaptationSet {
        content: ContentType::Text,
        lang: Some("en".into()),
        representations: vec![Representation {
            id: "sub-en".into(),
            codec: String::new(),
            bandwidth: 256,
            timescale: 1000,
            media: Media::Text,
            addressing: Addressing::File { url: "subs/en.vtt".into() },
        }],
    }
}

#[test]
fn segmented_mpd_with_template_and_timeline() {
    let track = index(&[(2000, 100), (2000, 100), (2000, 100), (2000, 100), (1500, 50)]);
    let segments = segments_at(&track, &cut_times(&track, 4.0)).unwrap();
    let v = video("hevc-720", template_addressing("hevc/720/", &segments).unwrap());
    let a = audio(template_addressing("audio/", &segments).unwrap());
    let mpd = Mpd {
        duration_seconds: 9.5,
        min_buffer_seconds: 4.0,
        adaptation_sets: vec![
            AdaptationSet { content: ContentType::Video, lang: None, representations: vec![v] },
            AdaptationSet { content: ContentType::Audio, lang: Some("en".into()), representations: vec![a] },
            text(),
        ],
    };
    let text = super::mpd(&mpd).unwrap();
    let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT9.500S" minBufferTime="PT4.000S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" maxWidth="1280" maxHeight="720">
      <Representation id="hevc-720" bandwidth="1500000" codecs="hvc1.1.6.L93.B0" width="1280" height="720" frameRate="30000/1001" sar="1:1">
        <SegmentTemplate timescale="1000" initialization="hevc/720/init.mp4" media="hevc/720/segment_$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline>
            <S t="0" d="4000" r="1"/>
            <S d="1500"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="en" segmentAlignment="true" startWithSAP="1">
      <Representation id="audio" bandwidth="130000" codecs="mp4a.40.2" audioSamplingRate="48000">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <SegmentTemplate timescale="1000" initialization="audio/init.mp4" media="audio/segment_$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline>
            <S t="0" d="4000" r="1"/>
            <S d="1500"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="text" mimeType="text/vtt" lang="en">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="subtitle"/>
      <Representation id="sub-en" bandwidth="256">
        <BaseURL>subs/en.vtt</BaseURL>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;
    assert_eq!(text, expected);
}

#[test]
fn single_file_with_sidx_is_on_demand_segment_base() {
    let mut track = index(&[(2000, 100), (2000, 100)]);
    track.sidx = Some(ByteRange { offset: 100, size: 44 });
    let segments = segments_at(&track, &[0.0, 2.0]).unwrap();
    let v = video("v", single_file_addressing("v&1.mp4", &track, &segments));
    let mpd = Mpd {
        duration_seconds: 4.0,
        min_buffer_seconds: 2.0,
        adaptation_sets: vec![AdaptationSet { content: ContentType::Video, lang: None, representations: vec![v] }],
    };
    let text = super::mpd(&mpd).unwrap();
    assert!(text.contains("profiles=\"urn:mpeg:dash:profile:isoff-on-demand:2011\""));
    assert!(text.contains(
        "<BaseURL>v&amp;1.mp4</BaseURL>\n        <SegmentBase timescale=\"1000\" indexRange=\"100-143\">\n          \
         <Initialization range=\"0-99\"/>\n        </SegmentBase>\n"
    ));
}

#[test]
fn single_file_without_sidx_is_a_segment_list() {
    let mut track = index(&[(2000, 100), (2000, 300)]);
    for f in &mut track.fragments {
        f.timing.earliest_presentation_time += 66;
    }
    let segments = segments_at(&track, &[0.0, 2.0]).unwrap();
    let mpd = Mpd {
        duration_seconds: 4.0,
        min_buffer_seconds: 2.0,
        adaptation_sets: vec![AdaptationSet {
            content: ContentType::Audio,
            lang: None,
            representations: vec![audio(single_file_addressing("a.mp4", &track, &segments))],
        }],
    };
    let text = super::mpd(&mpd).unwrap();
    assert!(text.contains("profiles=\"urn:mpeg:dash:profile:full:2011\""));
    assert!(text.contains("<SegmentList timescale=\"1000\" presentationTimeOffset=\"66\">"));
    assert!(text.contains("<Initialization range=\"0-99\"/>"));
    assert!(text.contains("<S t=\"66\" d=\"2000\" r=\"1\"/>"));
    assert!(text.contains("<SegmentURL mediaRange=\"100-199\"/>\n          <SegmentURL mediaRange=\"200-499\"/>"));
}

#[test]
fn escaping_and_refusals() {
    assert_eq!(escape("a<b>&\"c'\n"), "a&lt;b&gt;&amp;&quot;c&apos;&#xA;");
    assert!(template_addressing("a$Number$/", &[]).is_err());
    let mut set = text();
    set.lang = Some("en\" x=\"".into());
    let mpd = Mpd { duration_seconds: 1.0, min_buffer_seconds: 1.0, adaptation_sets: vec![set] };
    assert!(matches!(super::mpd(&mpd), Err(CmafError::UnsafeText(_))));
    let empty = Mpd { duration_seconds: 1.0, min_buffer_seconds: 1.0, adaptation_sets: vec![] };
    assert!(super::mpd(&empty).is_err());
}
