//! What an HLS master playlist announces of each rung: its `BANDWIDTH` (the peak bitrate of a
//! segment) and `AVERAGE-BANDWIDTH`, measured from the segments written. A CRF encode has no
//! target bitrate, and ffmpeg's muxer announces the rate cap instead, well above what most
//! content needs; players then pick lower rungs than the viewer's link carries. A stitched
//! ladder has no bitrate at all to announce. Both are measured here, the same way.

use std::path::Path;

use super::JobError;
use crate::domain::split::{playlist_segments, set_bandwidths};

/// A rung's (peak, average) bits per second, from its playlist's segment lengths and the sizes
/// of its segment files in `folder`.
async fn measure(folder: &Path, playlist: &str) -> (u64, u64) {
    let (mut peak, mut bits, mut seconds) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (file, duration) in playlist_segments(playlist) {
        let size = tokio::fs::metadata(folder.join(&file)).await.map(|m| m.len()).unwrap_or(0) as f64 * 8.0;
        if duration > 0.0 {
            peak = peak.max(size / duration);
        }
        bits += size;
        seconds += duration;
    }
    let average = if seconds > 0.0 { bits / seconds } else { 0.0 };
    (peak.ceil() as u64, average.ceil() as u64)
}

/// Rewrites `<hls>/master.m3u8` with each rung's measured bandwidths; the rungs are the
/// folders under `hls` that hold their `index.m3u8`.
pub(super) async fn announce_bandwidths(hls: &Path, rungs: &[String]) -> Result<(), JobError> {
    let mut measured = Vec::new();
    for rung in rungs {
        let folder = hls.join(rung);
        let playlist = tokio::fs::read_to_string(folder.join("index.m3u8"))
            .await
            .map_err(|e| JobError::scratch("read a variant playlist", &e))?;
        let (peak, average) = measure(&folder, &playlist).await;
        measured.push((rung.clone(), peak, average));
    }
    let master = hls.join("master.m3u8");
    let text =
        tokio::fs::read_to_string(&master).await.map_err(|e| JobError::scratch("read the master playlist", &e))?;
    tokio::fs::write(&master, set_bandwidths(&text, &measured))
        .await
        .map_err(|e| JobError::scratch("write the master playlist", &e))
}
