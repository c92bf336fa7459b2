//! The ffmpeg commands of a split job: the split pass, the segment encode, the audio and the
//! stitch (the module's steps 1 to 4), and the piece list the split pass writes.

use std::ffi::OsString;
use std::path::Path;

use super::{CmafRung, Piece, Rendition, is_stitched};
use crate::domain::args::{
    KEYFRAME_INTERVAL, aac, audio_filter, fan_out, hls_muxer, source_frame_times, strings, x264,
};
use crate::domain::job::OutputRequest;
use crate::domain::keys::piece_file;
use crate::domain::plan::{CMAF_FOLDER, cmaf_fragmenting};
use crate::domain::preset::Preset;
use crate::domain::watermark::Overlay;

/// Seconds added to every segment timestamp (see the module's invariants).
const TS_OFFSET: u32 = 10;

/// The split pass: video only, stream copy, into `dir/piece-%05d.nut` (NUT keeps the source's
/// time base), with the pieces' start and end times in `dir/pieces.csv`.
pub fn split_args(source: &Path, dir: &Path, cuts: &[f64]) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-i"]);
    args.push(source.as_os_str().to_owned());
    let times: Vec<String> = cuts.iter().map(|t| format!("{t:.3}")).collect();
    args.extend(strings(&["-map", "0:v:0", "-c", "copy", "-map_metadata", "-1", "-f", "segment"]));
    args.extend(strings(&["-segment_times", &times.join(","), "-reset_timestamps", "0", "-segment_format", "nut"]));
    args.extend(strings(&["-segment_list_type", "csv", "-segment_list"]));
    args.push(dir.join("pieces.csv").into_os_string());
    args.push(dir.join("piece-%05d.nut").into_os_string());
    args
}

/// The pieces named in the split pass's CSV list (`piece-00000.nut,0.000000,11.640000`).
pub fn parse_pieces(csv: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    for (line_no, line) in csv.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let mut fields = line.rsplitn(3, ',');
        let end = fields.next().and_then(|f| f.trim().parse::<f64>().ok());
        let start = fields.next().and_then(|f| f.trim().parse::<f64>().ok());
        let name = fields.next().unwrap_or_default();
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!("line {} of the piece list is not `name,start,end`", line_no + 1));
        };
        let expected = piece_file(u32::try_from(line_no).unwrap_or(u32::MAX));
        if !(name.ends_with(&expected) && start.is_finite() && end.is_finite() && end > start) {
            return Err(format!("line {} of the piece list names an unexpected piece", line_no + 1));
        }
        pieces.push(Piece { index: u32::try_from(line_no).unwrap_or(u32::MAX), start, end });
    }
    Ok(pieces)
}

/// Forced keyframes of a segment: its first frame, then the shared clock's ticks inside it.
fn keyframe_times(piece: &Piece) -> String {
    let mut times = vec![format!("{:.6}", piece.start)];
    let step = f64::from(KEYFRAME_INTERVAL);
    let mut tick = (piece.start / step).floor() * step + step;
    while tick < piece.end {
        times.push(format!("{tick:.6}"));
        tick += step;
    }
    times.join(",")
}

/// The segment encode: one decode of the piece, split into every rendition, each written as
/// `out_dir/<rendition file>` with the source's timestamps (plus [`TS_OFFSET`]): MPEG-TS, or
/// for a `cmaf` rung fragmented MP4 (see [`cmaf_segment`]). With the job's watermark (and its
/// image's local path), the picture is drawn on first, in source time (`-copyts` keeps the
/// piece's timestamps), so each segment carries what the whole job's frames at the same
/// instants carry.
pub fn segment_args(
    piece_path: &Path,
    piece: &Piece,
    renditions: &[Rendition],
    out_dir: &Path,
    watermark: Option<(&Overlay, &Path)>,
) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-copyts", "-i"]);
    args.push(piece_path.as_os_str().to_owned());
    let caps: Vec<Option<u32>> = renditions.iter().map(|r| r.cap).collect();
    let graph = match watermark {
        None => fan_out("0:v:0", &caps, "s", "r"),
        Some((overlay, image)) => {
            args.extend(strings(&["-protocol_whitelist", "file", "-i"]));
            args.push(image.as_os_str().to_owned());
            format!("{};{}", overlay.filter("0:v:0", "1:v:0", "wmv", piece.start), fan_out("wmv", &caps, "s", "r"))
        }
    };
    args.extend(strings(&["-filter_complex", &graph]));
    let keyframes = keyframe_times(piece);
    for (i, rendition) in renditions.iter().enumerate() {
        args.extend(strings(&["-map", &format!("[r{i}]")]));
        if let Some(rung) = rendition.cmaf {
            args.extend(cmaf_segment(rendition, rung));
        } else {
            let encode = rendition.encode();
            args.extend(x264(encode.crf, encode.maxrate_kbps));
            args.extend(strings(&["-force_key_frames:v", &keyframes]));
            args.extend(source_frame_times());
            args.extend(strings(&["-output_ts_offset", &TS_OFFSET.to_string(), "-f", "mpegts"]));
        }
        args.push(out_dir.join(rendition.file_name()).into_os_string());
    }
    args
}

/// A `cmaf` rung's block of the segment encode, up to its file: the codec's encoder with a
/// keyframe every `gop_frames` frames from the segment's first, fragmented at every keyframe.
/// `+frag_discont` makes each fragment's `tfdt` the source's decode time (plus [`TS_OFFSET`])
/// instead of the time since the segment's start, so the segments' fragments follow one
/// another when joined; `+cmaf` keeps negative composition offsets, so ffmpeg shifts no
/// timestamp.
fn cmaf_segment(rendition: &Rendition, rung: CmafRung) -> Vec<OsString> {
    let mut args = rung.codec.segment_encoder_args(rendition.crf, rendition.maxrate_kbps, rung.gop_frames);
    args.extend(source_frame_times());
    args.extend(strings(&["-output_ts_offset", &TS_OFFSET.to_string()]));
    args.extend(strings(&["-movflags", "+frag_keyframe+empty_moov+default_base_moof+cmaf+frag_discont", "-f", "mp4"]));
    args
}

/// The whole source's audio, once: AAC in MP4, as the unsplit outputs encode it, through the
/// job's loudness filter (`af`), so every segment of every output gets the same gain.
pub fn audio_args(source: &Path, out: &Path, af: Option<&str>) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file", "-i"]);
    args.push(source.as_os_str().to_owned());
    args.extend(strings(&["-map", "0:a:0", "-vn", "-map_metadata", "-1"]));
    args.extend(aac());
    args.extend(audio_filter(af));
    args.extend(strings(&["-f", "mp4"]));
    args.push(out.as_os_str().to_owned());
    args
}

/// The stitch: for every stitched output, the joined renditions (`joined/<rendition file>`)
/// and the audio muxed by stream copy into `out_dir`, as the unsplit plan names the files.
pub fn stitch_args(
    outputs: &[OutputRequest],
    renditions: &[Rendition],
    joined: &Path,
    audio: Option<&Path>,
    out_dir: &Path,
) -> Vec<OsString> {
    let mut args = strings(&["-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file"]);
    for rendition in renditions {
        args.push("-i".into());
        args.push(joined.join(rendition.file_name()).into_os_string());
    }
    let audio_input = renditions.len();
    if let Some(audio) = audio {
        args.push("-i".into());
        args.push(audio.as_os_str().to_owned());
    }
    let input_of = |name: &str| renditions.iter().position(|r| r.name == name);
    for output in outputs.iter().filter(|o| is_stitched(o.preset)) {
        let mut block = strings(&["-map_metadata", "-1", "-map_chapters", "-1"]);
        if output.preset == Preset::Hls {
            let names: Vec<String> =
                renditions.iter().filter_map(|r| r.name.strip_prefix("hls-").map(str::to_string)).collect();
            for name in &names {
                if let Some(i) = input_of(&format!("hls-{name}")) {
                    block.extend(strings(&["-map", &format!("{i}:v:0")]));
                }
            }
            if audio.is_some() {
                for _ in &names {
                    block.extend(strings(&["-map", &format!("{audio_input}:a:0")]));
                }
            }
            block.extend(strings(&["-c", "copy"]));
            block.extend(hls_muxer(&names, audio.is_some(), out_dir));
        } else if output.preset == Preset::Cmaf {
            block = cmaf_blocks(output, renditions, audio.is_some().then_some(audio_input), out_dir);
        } else {
            let Some(i) = input_of(output.preset.name()) else { continue };
            block.extend(strings(&["-map", &format!("{i}:v:0")]));
            if audio.is_some() {
                block.extend(strings(&["-map", &format!("{audio_input}:a:0")]));
            }
            block.extend(strings(&["-c", "copy", "-movflags", "+faststart", "-f", "mp4"]));
            block.push(out_dir.join(output.preset.file_name()).into_os_string());
        }
        args.extend(block);
    }
    args
}

/// A stitched `cmaf` ladder's blocks: each rung, and the audio, copied into its own fragmented
/// MP4 (`cmaf/<codec>-<rung>.mp4`, `cmaf/audio.mp4`), for the worker to package. The copy
/// fragments a rung at its keyframes as the segments did, and indexes it in single-file mode.
fn cmaf_blocks(
    output: &OutputRequest,
    renditions: &[Rendition],
    audio: Option<usize>,
    out_dir: &Path,
) -> Vec<OsString> {
    let packaging = output.packaging.unwrap_or_default();
    let mut blocks = Vec::new();
    let mut copy = |map: String, audio: bool, file: String| {
        blocks.extend(strings(&["-map_metadata", "-1", "-map_chapters", "-1", "-map", &map, "-c", "copy"]));
        blocks.extend(cmaf_fragmenting(packaging, audio));
        blocks.push(out_dir.join(format!("{CMAF_FOLDER}/{file}")).into_os_string());
    };
    for (i, rendition) in renditions.iter().enumerate() {
        if let Some(file) = rendition.cmaf_file() {
            copy(format!("{i}:v:0"), false, file);
        }
    }
    if let Some(input) = audio {
        copy(format!("{input}:a:0"), true, "audio.mp4".into());
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::VideoCodec;

    fn outputs(presets: &[Preset]) -> Vec<OutputRequest> {
        presets.iter().map(|p| OutputRequest::new(*p)).collect()
    }

    #[test]
    fn the_audio_is_encoded_once_through_the_loudness_filter() {
        let join =
            |args: Vec<OsString>| args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        let plain = join(audio_args(Path::new("/s/src"), Path::new("/s/a.m4a"), None));
        assert_eq!(
            plain,
            "-hide_banner -nostdin -y -protocol_whitelist file -i /s/src -map 0:a:0 -vn -map_metadata -1 \
             -c:a aac -b:a 128k -ac 2 -f mp4 /s/a.m4a"
        );
        let gained = join(audio_args(Path::new("/s/src"), Path::new("/s/a.m4a"), Some("volume=-3.00dB")));
        assert!(gained.ends_with("-c:a aac -b:a 128k -ac 2 -af volume=-3.00dB -f mp4 /s/a.m4a"), "{gained}");
    }

    #[test]
    fn piece_list() {
        let csv = "piece-00000.nut,0.000000,11.640000\npiece-00001.nut,11.640000,19.400000\n";
        let pieces = parse_pieces(csv).unwrap();
        assert_eq!(
            pieces,
            vec![Piece { index: 0, start: 0.0, end: 11.64 }, Piece { index: 1, start: 11.64, end: 19.4 }]
        );
        assert!(parse_pieces("piece-00001.nut,0,1\n").is_err());
        assert!(parse_pieces("piece-00000.nut,2,1\n").is_err());
        assert!(parse_pieces("piece-00000.nut,x,1\n").is_err());
    }

    #[test]
    fn keyframes_on_the_shared_clock() {
        assert_eq!(
            keyframe_times(&Piece { index: 1, start: 11.64, end: 17.0 }),
            "11.640000,12.000000,14.000000,16.000000"
        );
        assert_eq!(keyframe_times(&Piece { index: 0, start: 0.0, end: 4.0 }), "0.000000,2.000000");
    }

    fn cmaf_rung(name: &str, codec: VideoCodec, crf: u32, maxrate_kbps: u32) -> Rendition {
        let cmaf = Some(CmafRung { codec, gop_frames: 50 });
        Rendition { name: name.into(), cap: Some(360), crf, maxrate_kbps, cmaf }
    }

    /// Every codec's rung of a segment: its encoder counting 50 frames between keyframes from
    /// the segment's first, fragmented MP4 with the source's decode times.
    #[test]
    fn cmaf_rungs_of_every_codec_are_fragmented_mp4() {
        let renditions = [
            cmaf_rung("cmaf-h264-360p", VideoCodec::H264, 23, 800),
            cmaf_rung("cmaf-hevc-360p", VideoCodec::Hevc, 25, 520),
            cmaf_rung("cmaf-av1-360p", VideoCodec::Av1, 33, 440),
        ];
        let piece = Piece { index: 1, start: 4.08, end: 8.08 };
        let args: Vec<String> = segment_args(Path::new("/s/p.nut"), &piece, &renditions, Path::new("/s/o"), None)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let scale = "scale=w='if(gte(iw,ih),-2,trunc(min(iw,360)/2)*2)':h='if(gte(iw,ih),trunc(min(ih,360)/2)*2,-2)'";
        let muxer = "-fps_mode vfr -enc_time_base:v 1/90000 -output_ts_offset 10 \
            -movflags +frag_keyframe+empty_moov+default_base_moof+cmaf+frag_discont -f mp4";
        let expected = format!(
            "-hide_banner -nostdin -y -protocol_whitelist file -copyts -i /s/p.nut \
            -filter_complex [0:v:0]split=3[s0][s1][s2];[s0]{scale}[r0];[s1]{scale}[r1];[s2]{scale}[r2] \
            -map [r0] -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 800k \
            -bufsize 1600k -force_key_frames:v expr:not(mod(n,50)) {muxer} /s/o/cmaf-h264-360p.mp4 \
            -map [r1] -c:v libx265 -preset fast -profile:v main -pix_fmt yuv420p -crf 25 -maxrate 520k \
            -bufsize 1040k -force_key_frames:v expr:not(mod(n,50)) -forced-idr 1 \
            -x265-params log-level=error:open-gop=0 -tag:v hvc1 {muxer} /s/o/cmaf-hevc-360p.mp4 \
            -map [r2] -c:v libsvtav1 -preset 8 -pix_fmt yuv420p -crf 33 -g 50 -svtav1-params scd=0:mbr=440 \
            {muxer} /s/o/cmaf-av1-360p.mp4"
        );
        assert_eq!(args.join(" "), expected);
    }

    #[test]
    fn exact_argv() {
        let renditions = vec![
            Rendition { name: "mp4-h264".into(), cap: None, crf: 23, maxrate_kbps: 8000, cmaf: None },
            Rendition { name: "hls-360p".into(), cap: Some(360), crf: 23, maxrate_kbps: 800, cmaf: None },
        ];
        let piece = Piece { index: 2, start: 4.0, end: 6.5 };
        let args: Vec<String> = segment_args(Path::new("/s/p.nut"), &piece, &renditions, Path::new("/s/o"), None)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let expected = "-hide_banner -nostdin -y -protocol_whitelist file -copyts -i /s/p.nut \
            -filter_complex [0:v:0]split=2[s0][s1];[s0]scale=trunc(iw/2)*2:trunc(ih/2)*2[r0];\
            [s1]scale=w='if(gte(iw,ih),-2,trunc(min(iw,360)/2)*2)':h='if(gte(iw,ih),trunc(min(ih,360)/2)*2,-2)'[r1] \
            -map [r0] -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 8000k -bufsize 16000k \
            -force_key_frames:v 4.000000,6.000000 -fps_mode vfr -enc_time_base:v 1/90000 -output_ts_offset 10 -f mpegts /s/o/mp4-h264.ts \
            -map [r1] -c:v libx264 -preset fast -profile:v high -pix_fmt yuv420p -crf 23 -maxrate 800k -bufsize 1600k \
            -force_key_frames:v 4.000000,6.000000 -fps_mode vfr -enc_time_base:v 1/90000 -output_ts_offset 10 -f mpegts /s/o/hls-360p.ts";
        assert_eq!(args.join(" "), expected);

        let outputs = outputs(&[Preset::Mp4H264, Preset::Hls, Preset::Thumbnail]);
        let args: Vec<String> =
            stitch_args(&outputs, &renditions, Path::new("/j"), Some(Path::new("/j/audio.m4a")), Path::new("/o"))
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
        let expected = "-hide_banner -nostdin -y -protocol_whitelist file -i /j/mp4-h264.ts -i /j/hls-360p.ts \
            -i /j/audio.m4a -map_metadata -1 -map_chapters -1 -map 0:v:0 -map 2:a:0 -c copy -movflags +faststart \
            -f mp4 /o/mp4-h264.mp4 -map_metadata -1 -map_chapters -1 -map 1:v:0 -map 2:a:0 -c copy -f hls -hls_time 6 \
            -hls_playlist_type vod -hls_flags independent_segments -hls_segment_type mpegts -hls_segment_filename \
            /o/hls/%v/segment_%05d.ts -master_pl_name master.m3u8 -var_stream_map v:0,a:0,name:360p \
            /o/hls/%v/index.m3u8";
        assert_eq!(args.join(" "), expected);

        let cmaf = [OutputRequest::new(Preset::Cmaf)];
        let rungs = [
            cmaf_rung("cmaf-h264-360p", VideoCodec::H264, 23, 800),
            cmaf_rung("cmaf-av1-360p", VideoCodec::Av1, 33, 440),
        ];
        let args: Vec<String> =
            stitch_args(&cmaf, &rungs, Path::new("/j"), Some(Path::new("/j/a.m4a")), Path::new("/o"))
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
        assert_eq!(
            args.join(" "),
            "-hide_banner -nostdin -y -protocol_whitelist file -i /j/cmaf-h264-360p.mp4 -i /j/cmaf-av1-360p.mp4 \
             -i /j/a.m4a -map_metadata -1 -map_chapters -1 -map 0:v:0 -c copy \
             -movflags +frag_keyframe+empty_moov+default_base_moof+cmaf -f mp4 /o/cmaf/h264-360p.mp4 \
             -map_metadata -1 -map_chapters -1 -map 1:v:0 -c copy \
             -movflags +frag_keyframe+empty_moov+default_base_moof+cmaf -f mp4 /o/cmaf/av1-360p.mp4 \
             -map_metadata -1 -map_chapters -1 -map 2:a:0 -c copy -frag_duration 2000000 \
             -movflags +empty_moov+default_base_moof+cmaf -f mp4 /o/cmaf/audio.mp4"
        );

        let args: Vec<String> = split_args(Path::new("/s/source"), Path::new("/s/p"), &[20.0, 40.0])
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "-hide_banner -nostdin -y -protocol_whitelist file -i /s/source -map 0:v:0 -c copy -map_metadata -1 \
             -f segment -segment_times 20.000,40.000 -reset_timestamps 0 -segment_format nut -segment_list_type csv \
             -segment_list /s/p/pieces.csv /s/p/piece-%05d.nut"
        );
    }
}
