//! What an HLS master playlist announces of each rung: its `BANDWIDTH` (the peak bitrate of a
//! segment) and `AVERAGE-BANDWIDTH`, measured from the segments written. A CRF encode has no
//! target bitrate, and ffmpeg's muxer announces the rate cap instead, well above what most
//! content needs; players then pick lower rungs than the viewer's link carries. A stitched
//! ladder has no bitrate at all to announce. Both are measured here, the same way.
//!
//! The variant playlists' segment lengths are set here too, from the segments' first frame
//! times ([`retime_variants`]): a stream copy only guesses them, and ffmpeg 5.1's HLS muxer
//! counts the last segment of a variable-rate rung as its frames times the nominal frame
//! length (3.44 s for 3.96 s of a 25 fps source missing every 7th frame).

use std::path::Path;

use super::JobError;
use crate::domain::split::{first_video_pts, playlist_segments, retime_playlist, set_bandwidths};

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

/// Finishes a ladder ffmpeg wrote or a stitch copied into `hls`: each variant playlist's
/// segment lengths from its segments ([`retime_variants`], when the video's `length` is known),
/// then the master playlist's measured bandwidths. `rungs`: the folders under `hls` that hold
/// their `index.m3u8`.
pub(super) async fn finish_ladder(hls: &Path, rungs: &[String], length: Option<f64>) -> Result<(), JobError> {
    if let Some(length) = length.filter(|l| *l > 0.0) {
        retime_variants(hls, rungs, length).await?;
    }
    announce_bandwidths(hls, rungs).await
}

/// Rewrites `<hls>/master.m3u8` with each rung's measured bandwidths.
async fn announce_bandwidths(hls: &Path, rungs: &[String]) -> Result<(), JobError> {
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

/// Sets each variant playlist's `#EXTINF`s from its segments' first video frame times, the last
/// one ending `length` seconds (the video's) after the first segment's start. A playlist whose
/// segments do not all show a frame time is left as it is.
async fn retime_variants(hls: &Path, rungs: &[String], length: f64) -> Result<(), JobError> {
    // The first video frame time sits in a segment's first packets: its head is enough.
    let mut head = vec![0u8; 64 * 1024];
    for rung in rungs {
        let folder = hls.join(rung);
        let index = folder.join("index.m3u8");
        let playlist =
            tokio::fs::read_to_string(&index).await.map_err(|e| JobError::scratch("read a variant playlist", &e))?;
        let mut starts = Vec::new();
        for (file, _) in playlist_segments(&playlist) {
            let read = async {
                let mut f = tokio::fs::File::open(folder.join(&file)).await?;
                let n = tokio::io::AsyncReadExt::read(&mut f, &mut head).await?;
                Ok::<usize, std::io::Error>(n)
            };
            let n = read.await.map_err(|e| JobError::scratch("read an HLS segment", &e))?;
            starts.push(first_video_pts(&head[..n]));
        }
        if let Some(starts) = starts.into_iter().collect::<Option<Vec<f64>>>()
            && let Some(first) = starts.first()
        {
            let retimed = retime_playlist(&playlist, &starts, first + length);
            tokio::fs::write(&index, retimed).await.map_err(|e| JobError::scratch("write a variant playlist", &e))?;
        }
    }
    Ok(())
}
