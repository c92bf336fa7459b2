//! Where each output's picture comes from: the source's first video stream as it is, or, for
//! a job with a watermark, that picture with the image drawn on it once, split among every
//! output that encodes video.
//!
//! ffmpeg 5.1 connects a filter graph's inputs to input streams only, never to another
//! graph's outputs, so a watermarked command has ONE `-filter_complex`: the overlay, a `split`
//! into one branch per consumer, each output's own filter (what a plain command gives it in
//! `-vf`) on its branch, and the ladders' graphs reading their branch. A command without a
//! watermark is left exactly as it was: `-map 0:v:0 -vf <filter>`, and one graph per ladder.

use std::ffi::OsString;
use std::path::Path;

use crate::domain::args::strings;
use crate::domain::watermark::Overlay;

/// The watermark image's input in the command: the second `-i`.
const IMAGE_PAD: &str = "1:v:0";
/// The source's picture.
const SOURCE_PAD: &str = "0:v:0";

/// The picture every output block reads, and the filter graph that feeds them.
pub(super) struct VideoFeed<'a> {
    watermark: Option<(&'a Overlay, &'a Path)>,
    /// Branches of the watermarked picture handed out so far.
    branches: usize,
    /// Chains and graphs, in the order the outputs asked for them.
    graphs: Vec<String>,
}

impl<'a> VideoFeed<'a> {
    pub(super) fn new(watermark: Option<(&'a Overlay, &'a Path)>) -> Self {
        Self { watermark, branches: 0, graphs: Vec::new() }
    }

    /// Whether the outputs' picture carries a watermark.
    pub(super) fn watermarked(&self) -> bool {
        self.watermark.is_some()
    }

    /// The pad a ladder's graph reads the picture from (without brackets).
    pub(super) fn pad(&mut self) -> String {
        if self.watermark.is_none() {
            return SOURCE_PAD.into();
        }
        self.branches += 1;
        format!("wv{}", self.branches - 1)
    }

    /// A ladder's filter graph (reading a [`VideoFeed::pad`]).
    pub(super) fn graph(&mut self, graph: String) {
        self.graphs.push(graph);
    }

    /// The video of an output block whose picture goes through `filter`: its `-map`, and its
    /// `-vf` (empty when the filter is a chain of the shared graph).
    pub(super) fn simple(&mut self, filter: &str) -> (Vec<OsString>, Vec<OsString>) {
        if self.watermark.is_none() {
            return (strings(&["-map", SOURCE_PAD]), strings(&["-vf", filter]));
        }
        let pad = self.pad();
        let out = format!("wo{}", self.branches - 1);
        self.graphs.push(format!("[{pad}]{filter}[{out}]"));
        (strings(&["-map", &format!("[{out}]")]), Vec::new())
    }

    /// The image's input (after the source's), and the global options: the filter graphs.
    pub(super) fn finish(self) -> Vec<OsString> {
        let mut args = Vec::new();
        let Some((overlay, image)) = self.watermark.filter(|_| self.branches > 0) else {
            for graph in &self.graphs {
                args.extend(strings(&["-filter_complex", graph]));
            }
            return args;
        };
        args.extend(strings(&["-protocol_whitelist", "file", "-i"]));
        args.push(image.as_os_str().to_owned());
        let branches: String = (0..self.branches).map(|i| format!("[wv{i}]")).collect();
        let mut chains = vec![overlay.filter(SOURCE_PAD, IMAGE_PAD, "wmv", 0.0)];
        chains.push(if self.branches == 1 {
            format!("[wmv]null{branches}")
        } else {
            format!("[wmv]split={}{branches}", self.branches)
        });
        chains.extend(self.graphs);
        args.extend(strings(&["-filter_complex", &chains.join(";")]));
        args
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Decisions, plan_with};
    use crate::domain::job::OutputRequest;
    use crate::domain::preset::Preset;
    use crate::domain::probe::MediaInfo;
    use crate::domain::watermark::WatermarkSettings;

    fn media(codec: &str) -> MediaInfo {
        let mut media = MediaInfo::sample(1280, 720, 60.0);
        if let Some(video) = media.video.as_mut() {
            video.codec = codec.into();
        }
        media
    }

    fn argv(presets: &[Preset], codec: &str) -> (String, Vec<Option<String>>) {
        let overlay = WatermarkSettings::new("uploads/logo.png").overlay(&media(codec)).unwrap();
        let decisions =
            Decisions { ladders: &[], audio_filter: None, watermark: Some((&overlay, Path::new("/s/watermark.img"))) };
        let outputs: Vec<OutputRequest> = presets.iter().map(|p| OutputRequest::new(*p)).collect();
        let plan = plan_with(&outputs, &media(codec), Path::new("/s/source"), Path::new("/s/out"), &decisions).unwrap();
        let args: Vec<&str> = plan.args.iter().map(|a| a.to_str().unwrap()).collect();
        (args.join(" "), plan.outputs.iter().map(|o| o.note.clone()).collect())
    }

    #[test]
    fn one_graph_draws_the_image_once_for_every_output() {
        let (args, _) = argv(&[Preset::Mp4H264_720, Preset::Hls, Preset::Thumbnail], "h264");
        let expected_head = "-hide_banner -nostdin -y -protocol_whitelist file -i /s/source \
            -protocol_whitelist file -i /s/watermark.img -filter_complex \
            [1:v:0]trim=end_frame=1,scale=w=128:h=-1,format=rgba[wmimg];\
            [0:v:0][wmimg]overlay=x=main_w-overlay_w-26:y=main_h-overlay_h-26[wmv];\
            [wmv]split=3[wv0][wv1][wv2];\
            [wv0]scale=w='if(gte(iw,ih),-2,trunc(min(iw,720)/2)*2)':h='if(gte(iw,ih),trunc(min(ih,720)/2)*2,-2)'[wo0];\
            [wv1]split=3[hs0][hs1][hs2];";
        assert!(args.starts_with(expected_head), "{args}");
        assert_eq!(args.matches("-filter_complex").count(), 1, "{args}");
        assert_eq!(args.matches("overlay=").count(), 1, "{args}");
        assert!(args.contains("[wv2]select='gte(t,6.000)',scale="), "{args}");
        assert!(args.contains("-map_metadata -1 -map_chapters -1 -map [wo0] -map 0:a:0? -c:v libx264"), "{args}");
        assert!(args.contains("-map [wo2] -frames:v 1"), "{args}");
        assert!(!args.contains("-vf "), "every picture filter is in the graph: {args}");
        assert!(!args.contains("0:v:0 "), "no output reads the unmarked picture: {args}");
    }

    #[test]
    fn copied_video_and_audio_only_outputs_read_no_image() {
        let (args, notes) = argv(&[Preset::RemuxMp4, Preset::Mp3], "h264");
        assert!(!args.contains("watermark.img") && !args.contains("-filter_complex"), "{args}");
        assert_eq!(notes[0].as_deref(), Some("video copied (h264), no watermark, audio copied (aac)"));
        let (args, _) = argv(&[Preset::RemuxMp4, Preset::Cmaf], "mpeg4");
        assert!(args.contains("[wmv]split=2[wv0][wv1];[wv0]scale=trunc(iw/2)*2:trunc(ih/2)*2[wo0];[wv1]"), "{args}");
        assert!(!args.contains("-map [wo0] -map 0:a:0? -vf"), "{args}");
    }
}
