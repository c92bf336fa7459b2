//! A file's video packets (time, size, keyframe or not), listed by ffprobe: a rendition's for
//! its bitrate, the source's for where it is hardest to encode (the per-title sample).

use std::path::Path;
use std::time::Duration;

use tokio::io::BufReader;

use super::QualityError;
use super::decoder::{read_line, spawn_piped};

/// One video packet: its time in seconds (its presentation time, else its decoding time; NaN
/// if neither), its size in bytes, and whether it is a keyframe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Packet {
    pub time: f64,
    pub bytes: u64,
    pub key: bool,
}

/// The first video stream's packets in `path` (a file, or an HLS playlist of local segments):
/// each one's time and size in bytes, in file order. For [`crate::domain::quality::bitrate`]:
/// the sizes are the video stream's own, without the container's overhead or the audio.
pub async fn packet_sizes(path: &Path, timeout: Duration) -> Result<Vec<(f64, u64)>, QualityError> {
    Ok(video_packets(path, timeout).await?.into_iter().map(|p| (p.time, p.bytes)).collect())
}

/// The first video stream's packets in `path`, in file order.
pub async fn video_packets(path: &Path, timeout: Duration) -> Result<Vec<Packet>, QualityError> {
    let mut args: Vec<std::ffi::OsString> =
        ["-v", "error", "-protocol_whitelist", "file", "-select_streams", "v:0", "-show_entries"]
            .into_iter()
            .chain(["packet=pts_time,dts_time,size,flags", "-of", "compact=p=0"])
            .map(Into::into)
            .collect();
    args.push(path.as_os_str().to_owned());
    let (mut child, stdout, stderr) = spawn_piped("ffprobe", args)?;
    let run = async {
        let packets = async {
            let mut reader = BufReader::new(stdout);
            let (mut line, mut packets) = (Vec::new(), Vec::new());
            while read_line(&mut reader, &mut line).await? {
                packets.extend(parse_packet(&String::from_utf8_lossy(&line)));
            }
            Ok::<_, std::io::Error>(packets)
        };
        let errors = async {
            let (mut reader, mut line, mut last) = (BufReader::new(stderr), Vec::new(), String::new());
            while read_line(&mut reader, &mut line).await? {
                last = String::from_utf8_lossy(&line).trim().to_string();
            }
            Ok::<_, std::io::Error>(last)
        };
        let (packets, last) = tokio::try_join!(packets, errors)?;
        Ok::<_, std::io::Error>((child.wait().await?, packets, last))
    };
    let (status, packets, last) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| QualityError::Timeout(timeout))?
        .map_err(|e| QualityError::Packets(e.to_string()))?;
    if !status.success() {
        let reason = if last.is_empty() { format!("ffprobe exited with {status}") } else { last };
        return Err(QualityError::Packets(reason.replace(&path.display().to_string(), "input")));
    }
    Ok(packets)
}

/// One line of ffprobe's `compact=p=0` packets
/// (`pts_time=0.040000|dts_time=0.000000|size=123|flags=K__`); `None` for a line without a
/// size (a blank line).
pub(super) fn parse_packet(line: &str) -> Option<Packet> {
    let (mut pts, mut dts, mut size, mut key) = (None, None, None, false);
    // Fields other than `key=value` (a trailing `|`, a side data section) are ignored.
    for (name, value) in line.split('|').filter_map(|field| field.split_once('=')) {
        match name {
            "pts_time" => pts = value.parse::<f64>().ok(),
            "dts_time" => dts = value.parse::<f64>().ok(),
            "size" => size = value.parse::<u64>().ok(),
            "flags" => key = value.starts_with('K'),
            _ => {}
        }
    }
    Some(Packet { time: pts.or(dts).unwrap_or(f64::NAN), bytes: size?, key })
}
