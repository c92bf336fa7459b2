//! Editing what the stitch made by stream copy: HLS playlists, whose lengths and bandwidths
//! ffmpeg cannot know without encoding, and the first frame time of an MPEG-TS segment.

/// A stream-copied HLS master playlist cannot know its variants' bitrates; this sets each
/// `BANDWIDTH` (peak) and `AVERAGE-BANDWIDTH` from the measured segments: per variant name,
/// (peak bits per second, average bits per second).
pub fn set_bandwidths(master: &str, measured: &[(String, u64, u64)]) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = master.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let uri = lines.get(i + 1).copied().unwrap_or_default();
        let found = measured.iter().find(|(name, _, _)| uri.starts_with(&format!("{name}/")));
        match (line.strip_prefix("#EXT-X-STREAM-INF:"), found) {
            (Some(attributes), Some((_, peak, average))) => {
                let kept: Vec<&str> = split_attributes(attributes)
                    .into_iter()
                    .filter(|a| !a.starts_with("BANDWIDTH=") && !a.starts_with("AVERAGE-BANDWIDTH="))
                    .collect();
                let mut attrs = vec![format!("BANDWIDTH={peak}"), format!("AVERAGE-BANDWIDTH={average}")];
                attrs.extend(kept.iter().map(|a| a.to_string()));
                out.push_str(&format!("#EXT-X-STREAM-INF:{}\n", attrs.join(",")));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Attribute list items, keeping quoted commas (`CODECS="avc1.64001f,mp4a.40.2"`) inside.
fn split_attributes(list: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in list.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < list.len() {
        items.push(&list[start..]);
    }
    items
}

/// The segments of a variant playlist: (file, seconds) per `#EXTINF`.
pub fn playlist_segments(playlist: &str) -> Vec<(String, f64)> {
    let mut segments = Vec::new();
    let mut pending: Option<f64> = None;
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            pending = rest.split(',').next().and_then(|d| d.trim().parse().ok());
        } else if !line.starts_with('#')
            && !line.trim().is_empty()
            && let Some(seconds) = pending.take()
        {
            segments.push((line.trim().to_string(), seconds));
        }
    }
    segments
}

/// The presentation time (seconds) of the first video frame in an MPEG-TS file's first bytes:
/// the first PES packet of a video stream (id `0xE0`-`0xEF`) that carries a PTS.
pub fn first_video_pts(ts: &[u8]) -> Option<f64> {
    for packet in ts.chunks_exact(188) {
        if packet[0] != 0x47 || packet[1] & 0x40 == 0 {
            continue;
        }
        let payload = match (packet[3] >> 4) & 0b11 {
            0b01 => 4,
            0b11 => 5 + usize::from(packet[4]),
            _ => continue,
        };
        let pes = packet.get(payload..)?;
        if pes.len() < 14 || pes[..3] != [0, 0, 1] || !(0xE0..=0xEF).contains(&pes[3]) || pes[7] & 0x80 == 0 {
            continue;
        }
        let b = &pes[9..14];
        let pts = (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1);
        return Some(pts as f64 / 90_000.0);
    }
    None
}

/// A variable-rate source's stream-copied playlist has its segment lengths guessed at the
/// average frame rate (MPEG-TS stores no frame durations). This sets each `#EXTINF` from the
/// segments' first frame times (`starts`, one per segment) and the video's `end`, and the
/// target duration from the longest.
pub fn retime_playlist(playlist: &str, starts: &[f64], end: f64) -> String {
    let mut lengths = starts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<f64>>();
    if let Some(last) = starts.last() {
        lengths.push(end - last);
    }
    let longest = lengths.iter().copied().fold(0.0_f64, f64::max);
    let mut next = lengths.iter();
    let mut out = String::new();
    for line in playlist.lines() {
        if line.starts_with("#EXTINF:")
            && let Some(length) = next.next()
        {
            out.push_str(&format!("#EXTINF:{:.6},\n", length.max(0.0)));
        } else if line.starts_with("#EXT-X-TARGETDURATION:") {
            out.push_str(&format!("#EXT-X-TARGETDURATION:{}\n", longest.round().max(1.0) as u64));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_lengths_from_frame_times() {
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:8\n#EXTINF:8.640000,\ns0.ts\n#EXTINF:3.440000,\ns1.ts\n#EXTINF:3.360000,\ns2.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            retime_playlist(playlist, &[1.4, 10.04, 13.48], 17.4),
            "#EXTM3U\n#EXT-X-TARGETDURATION:9\n#EXTINF:8.640000,\ns0.ts\n#EXTINF:3.440000,\ns1.ts\n#EXTINF:3.920000,\ns2.ts\n#EXT-X-ENDLIST\n"
        );
        // A TS packet with a video PES whose PTS is 90000 * 1.5.
        let mut packet = vec![0x47, 0x41, 0x00, 0x10, 0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        let pts: u64 = 135_000;
        packet.extend([
            0x21 | (((pts >> 30) as u8 & 0x07) << 1),
            (pts >> 22) as u8,
            (((pts >> 15) as u8) << 1) | 1,
            (pts >> 7) as u8,
            ((pts as u8) << 1) | 1,
        ]);
        packet.resize(188, 0xFF);
        let mut file = vec![0x47, 0x01, 0x00, 0x10];
        file.resize(188, 0xFF);
        file.extend(&packet);
        assert_eq!(first_video_pts(&file), Some(1.5));
        assert_eq!(first_video_pts(&file[..188]), None);
        assert_eq!(first_video_pts(b"garbage"), None);
    }

    #[test]
    fn master_playlist_bandwidths() {
        let master = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=103568,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n\n";
        let fixed = set_bandwidths(master, &[("360p".into(), 900_000, 700_000)]);
        assert_eq!(
            fixed,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n\n"
        );
        let playlist = "#EXTM3U\n#EXTINF:6.000000,\nsegment_00000.ts\n#EXTINF:4.5,\nsegment_00001.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            playlist_segments(playlist),
            vec![("segment_00000.ts".to_string(), 6.0), ("segment_00001.ts".to_string(), 4.5)]
        );
    }
}
