//! ffmpeg argument helpers shared by the unsplit plan ([`crate::domain::plan`]) and the split
//! job's commands ([`crate::domain::split`]): both must encode, scale and mux alike, or a split
//! job's outputs would differ from the same job's unsplit ones.

use std::ffi::OsString;
use std::path::Path;

/// Seconds between forced keyframes of H.264 video: HLS segments (and a split job's segments)
/// cut on this clock in every rung.
pub const KEYFRAME_INTERVAL: u32 = 2;

/// An output block ends with its output's path.
pub fn finish_block(mut block: Vec<OsString>, output: OsString) -> Vec<OsString> {
    block.push(output);
    block
}

/// Owned arguments from string literals.
pub fn strings(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

/// Seconds as ffmpeg reads them, to the millisecond.
pub fn seconds(value: f64) -> String {
    format!("{:.3}", value.max(0.0))
}

/// A scale filter that fits the short side to `cap` (never upscaling) and keeps both
/// dimensions even, as H.264 in 4:2:0 needs. Rotation is already applied by ffmpeg's autorotate.
pub fn fit(cap: Option<u32>) -> String {
    match cap {
        None => "scale=trunc(iw/2)*2:trunc(ih/2)*2".to_string(),
        Some(h) => {
            format!("scale=w='if(gte(iw,ih),-2,trunc(min(iw,{h})/2)*2)':h='if(gte(iw,ih),trunc(min(ih,{h})/2)*2,-2)'")
        }
    }
}

/// The H.264 encoder every H.264 output uses: its CRF, and a peak rate with a two-second buffer.
pub fn x264(crf: u32, maxrate_kbps: u32) -> Vec<OsString> {
    let mut args = strings(&["-c:v", "libx264", "-preset", "fast", "-profile:v", "high", "-pix_fmt", "yuv420p"]);
    args.extend(strings(&["-crf", &crf.to_string()]));
    args.extend(strings(&["-maxrate", &format!("{maxrate_kbps}k"), "-bufsize", &format!("{}k", maxrate_kbps * 2)]));
    args
}

/// Every frame of the source at its own time, in every video encode: no frame repeated or
/// dropped to hold a constant rate. A phone's variable-rate video, or a source with a gap in
/// its timestamps, keeps its frames as they are, a split job's segments time them the same
/// way, and frame `i` of a rendition stays frame `i` of the source, which is how the scoring
/// pairs them ([`crate::media::quality`]). ffmpeg's default for MP4 and HLS is a constant
/// rate, and its encoder clock ticks once a nominal frame (the stream's guessed rate), so a
/// variable-rate source lost or gained frames even with `-fps_mode vfr`; the 90 kHz clock (the
/// MPEG-TS clock) keeps every frame apart.
pub fn source_frame_times() -> Vec<OsString> {
    strings(&["-fps_mode", "vfr", "-enc_time_base:v", "1/90000"])
}

/// The AAC encoder every MP4 and HLS output uses: stereo at 128 kb/s.
pub fn aac() -> Vec<OsString> {
    strings(&["-c:a", "aac", "-b:a", "128k", "-ac", "2"])
}

/// The audio filter of an output block that encodes audio (`-af`, applied to each of its
/// audio streams); nothing without one.
pub fn audio_filter(filter: Option<&str>) -> Vec<OsString> {
    filter.map(|f| strings(&["-af", f])).unwrap_or_default()
}

/// A filter graph feeding one decode of the first video stream to several scales: output `i`
/// (labelled `[<out>i]`) fits the short side to `caps[i]`. `input`: the picture's pad
/// (`0:v:0`, or a watermarked branch); `split` names the intermediate pads.
pub fn fan_out(input: &str, caps: &[Option<u32>], split: &str, out: &str) -> String {
    let n = caps.len();
    let mut graph = if n == 1 {
        format!("[{input}]null[{split}0];")
    } else {
        format!("[{input}]split={n}{};", (0..n).map(|i| format!("[{split}{i}]")).collect::<String>())
    };
    let chains: Vec<String> =
        caps.iter().enumerate().map(|(i, cap)| format!("[{split}{i}]{}[{out}{i}]", fit(*cap))).collect();
    graph.push_str(&chains.join(";"));
    graph
}

/// The HLS muxer's part of an output block: variant playlists `hls/<rung>/index.m3u8` with
/// their segments and `hls/master.m3u8`; video stream `i` (and audio stream `i`) is rung `i`.
pub fn hls_muxer(names: &[String], audio: bool, out_dir: &Path) -> Vec<OsString> {
    let mut block = Vec::new();
    let map: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| if audio { format!("v:{i},a:{i},name:{name}") } else { format!("v:{i},name:{name}") })
        .collect();
    block.extend(strings(&[
        "-f",
        "hls",
        "-hls_time",
        "6",
        "-hls_playlist_type",
        "vod",
        "-hls_flags",
        "independent_segments",
    ]));
    block.extend(strings(&["-hls_segment_type", "mpegts", "-hls_segment_filename"]));
    block.push(out_dir.join("hls/%v/segment_%05d.ts").into_os_string());
    block.extend(strings(&["-master_pl_name", "master.m3u8", "-var_stream_map", &map.join(" ")]));
    finish_block(block, out_dir.join("hls/%v/index.m3u8").into_os_string())
}
