//! Reading an MP4/MOV file's shape from its `moov` box, without starting ffprobe.
//!
//! Starting ffprobe costs 30-60 ms of CPU (Debian's build links some 200 libraries), as much as
//! a tenth of a short clip's whole encode; every job probes its source and its outputs. Most
//! sources, and every MP4 the worker writes, are the plainest ISO-BMFF there is: H.264 plus
//! AAC-LC, unrotated, not fragmented. For exactly those this module gives the same
//! [`MediaInfo`] ffprobe would (format name, duration to the microsecond, codec names, sizes
//! from the SPS, pixel format, average frame rate as libavformat computes it, channels and
//! sample rate from the AAC config); a test checks it against ffprobe on real files.
//!
//! Invariant: it answers `None` for anything else (another codec, a rotation matrix, an edit
//! it does not model, a fragmented file, a box it cannot read, a disagreement between the
//! sample entry and the SPS), and the caller asks ffprobe. It never guesses. It reads bytes
//! only: every length is checked, nothing panics on hostile input.

use super::probe::{AudioStream, MediaInfo, VideoStream};

/// ffprobe's name for the ISO-BMFF family, whatever the brand.
pub const FORMAT_NAME: &str = "mov,mp4,m4a,3gp,3g2,mj2";

/// The identity display matrix of `tkhd`/`mvhd` (16.16 and 2.30 fixed point).
const IDENTITY: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// Sampling rates by AAC `samplingFrequencyIndex`.
const AAC_RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// Describes a file from the payload of its top-level `moov` box, or `None` (see the module).
pub fn describe_moov(moov: &[u8]) -> Option<MediaInfo> {
    let mut movie_duration = None;
    let mut videos = Vec::new();
    let mut audios = Vec::new();
    for (kind, body) in boxes(moov)? {
        match &kind {
            b"mvhd" => movie_duration = Some(mvhd(body)?),
            b"trak" => match trak(body)? {
                Track::Video(v) => videos.push(v),
                Track::Audio(a) => audios.push(a),
            },
            // Fragmented files carry their samples (and often their duration) outside `moov`.
            b"mvex" => return None,
            _ => {}
        }
    }
    let (timescale, duration) = movie_duration?;
    if timescale == 0 || duration == 0 || (videos.is_empty() && audios.is_empty()) {
        return None;
    }
    // libavformat rescales to microseconds, rounding to nearest; ffprobe prints that.
    let micros = (u128::from(duration) * 1_000_000 + u128::from(timescale) / 2) / u128::from(timescale);
    Some(MediaInfo {
        format: FORMAT_NAME.into(),
        duration_seconds: Some(micros as f64 / 1e6),
        video_streams: u32::try_from(videos.len()).ok()?,
        audio_streams: u32::try_from(audios.len()).ok()?,
        subtitles: Vec::new(),
        video: videos.into_iter().next(),
        audio: audios.into_iter().next(),
    })
}

enum Track {
    Video(VideoStream),
    Audio(AudioStream),
}

/// The children of a box payload as (type, payload); `None` when a size runs past the end.
/// Shared with `cmaf`, which reads the fragmented files this module declines.
pub(crate) fn boxes(mut data: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let size = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as u64;
        let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
        let (header, size) = match size {
            1 => (16, u64::from_be_bytes(data.get(8..16)?.try_into().ok()?)),
            0 => (8, data.len() as u64),
            n => (8, n),
        };
        let size = usize::try_from(size).ok()?;
        if size < header {
            return None;
        }
        out.push((kind, data.get(header..size)?));
        data = &data[size..];
    }
    Some(out)
}

pub(crate) fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data)?.into_iter().find(|(k, _)| k == kind).map(|(_, body)| body)
}

pub(crate) fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// `mvhd` (or `mdhd`, laid out the same up to the duration): (timescale, duration).
fn mvhd(body: &[u8]) -> Option<(u32, u64)> {
    match body.first()? {
        0 => Some((u32_at(body, 12)?, u64::from(u32_at(body, 16)?))),
        1 => Some((u32_at(body, 20)?, u64_at(body, 24)?)),
        _ => None,
    }
}

fn trak(body: &[u8]) -> Option<Track> {
    let tkhd = child(body, b"tkhd")?;
    let matrix_at = match tkhd.first()? {
        0 => 40,
        1 => 52,
        _ => return None,
    };
    let matrix: Vec<u32> = (0..9).map(|i| u32_at(tkhd, matrix_at + 4 * i)).collect::<Option<_>>()?;
    if matrix != IDENTITY {
        return None;
    }
    let mdia = child(body, b"mdia")?;
    let (timescale, _) = mvhd(child(mdia, b"mdhd")?)?;
    let handler: [u8; 4] = child(mdia, b"hdlr")?.get(8..12)?.try_into().ok()?;
    let stbl = child(child(mdia, b"minf")?, b"stbl")?;
    let stsd = child(stbl, b"stsd")?;
    if u32_at(stsd, 4)? != 1 {
        return None;
    }
    let [(entry_kind, entry)] = boxes(stsd.get(8..)?)?[..] else { return None };
    match (&handler, &entry_kind) {
        (b"vide", b"avc1" | b"avc3") => {
            let (frames, ticks) = stts(child(stbl, b"stts")?)?;
            avc_video(entry, timescale, frames, ticks).map(Track::Video)
        }
        (b"soun", b"mp4a") => aac_audio(entry).map(Track::Audio),
        _ => None,
    }
}

/// Sample count and summed durations of `stts`: libavformat's `avg_frame_rate` is their ratio.
fn stts(body: &[u8]) -> Option<(u64, u64)> {
    let entries = u32_at(body, 4)? as usize;
    let (mut frames, mut ticks) = (0u64, 0u64);
    for i in 0..entries {
        let count = u64::from(u32_at(body, 8 + 8 * i)?);
        let delta = u64::from(u32_at(body, 12 + 8 * i)?);
        frames = frames.checked_add(count)?;
        ticks = ticks.checked_add(count.checked_mul(delta)?)?;
    }
    Some((frames, ticks))
}

fn avc_video(entry: &[u8], timescale: u32, frames: u64, ticks: u64) -> Option<VideoStream> {
    // VisualSampleEntry: 78 bytes of fields, width and height at 24 and 26, then boxes.
    let (width, height) = (u32::from(u16_at(entry, 24)?), u32::from(u16_at(entry, 26)?));
    let avcc = child(entry.get(78..)?, b"avcC")?;
    if avcc.first()? != &1 || avcc.get(5)? & 0x1f == 0 {
        return None;
    }
    let length = usize::from(u16_at(avcc, 6)?);
    let sps = Sps::parse(avcc.get(8..8 + length)?)?;
    if (sps.width, sps.height) != (width, height) || width == 0 || height == 0 {
        return None;
    }
    let frame_rate =
        (frames > 0 && ticks > 0 && timescale > 0).then(|| frames as f64 * f64::from(timescale) / ticks as f64);
    Some(VideoStream {
        codec: "h264".into(),
        width,
        height,
        pix_fmt: Some(if sps.full_range { "yuvj420p" } else { "yuv420p" }.into()),
        frame_rate,
        rotation: 0,
        closed_captions: false,
    })
}

fn aac_audio(entry: &[u8]) -> Option<AudioStream> {
    // AudioSampleEntry version 0: 28 bytes of fields, then boxes. QuickTime's versions 1 and 2
    // add fields (and usually wrap `esds` in `wave`): left to ffprobe.
    if u16_at(entry, 8)? != 0 {
        return None;
    }
    let esds = child(entry.get(28..)?, b"esds")?;
    let config = aac_config(esds.get(4..)?)?;
    // Byte 0-1: audioObjectType (5 bits), samplingFrequencyIndex (4), channelConfiguration (4).
    let bits = u16_at(config, 0)?;
    let (object_type, rate_index, channel_config) = (bits >> 11, (bits >> 7) & 0xf, (bits >> 3) & 0xf);
    // AAC-LC only: HE-AAC's SBR doubles the rate the decoder reports, which the config hides.
    if object_type != 2 {
        return None;
    }
    let channels = match channel_config {
        1..=6 => u32::from(channel_config),
        7 => 8,
        _ => return None,
    };
    Some(AudioStream {
        codec: "aac".into(),
        channels: Some(channels),
        sample_rate: Some(*AAC_RATES.get(usize::from(rate_index))?),
    })
}

/// The AudioSpecificConfig inside an `esds` ES_Descriptor, if it is MPEG-4 audio (0x40).
pub(crate) fn aac_config(data: &[u8]) -> Option<&[u8]> {
    let (tag, es, _) = descriptor(data)?;
    if tag != 0x03 {
        return None;
    }
    let flags = *es.get(2)?;
    let mut at = 3;
    if flags & 0x80 != 0 {
        at += 2;
    }
    if flags & 0x40 != 0 {
        at += 1 + usize::from(*es.get(at)?);
    }
    if flags & 0x20 != 0 {
        at += 2;
    }
    let (tag, decoder_config, _) = descriptor(es.get(at..)?)?;
    if tag != 0x04 || decoder_config.first()? != &0x40 {
        return None;
    }
    let (tag, specific, _) = descriptor(decoder_config.get(13..)?)?;
    (tag == 0x05).then_some(specific)
}

/// One MPEG-4 descriptor: (tag, payload, rest), its length in up to four 7-bit groups.
pub(crate) fn descriptor(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let mut length = 0usize;
    let mut at = 1;
    loop {
        let byte = *data.get(at)?;
        at += 1;
        length = (length << 7) | usize::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    let end = at.checked_add(length)?;
    Some((tag, data.get(at..end)?, data.get(end..)?))
}

/// What the sequence parameter set says of the picture: its cropped size and range.
struct Sps {
    width: u32,
    height: u32,
    full_range: bool,
}

impl Sps {
    /// 8-bit 4:2:0 streams only (the others have other pixel formats), without scaling lists.
    fn parse(nal: &[u8]) -> Option<Sps> {
        let rbsp = unescape(nal.get(1..)?);
        let mut r = Bits::new(&rbsp);
        let profile = r.bits(8)?;
        r.bits(16)?; // constraint flags, level
        r.ue()?; // seq_parameter_set_id
        if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
            let chroma = r.ue()?;
            let (luma_depth, chroma_depth) = (r.ue()?, r.ue()?);
            r.bit()?; // qpprime_y_zero_transform_bypass
            let scaling_lists = r.bit()?;
            if chroma != 1 || luma_depth != 0 || chroma_depth != 0 || scaling_lists {
                return None;
            }
        }
        r.ue()?; // log2_max_frame_num_minus4
        match r.ue()? {
            0 => {
                r.ue()?;
            }
            1 => {
                r.bit()?;
                r.se()?;
                r.se()?;
                for _ in 0..r.ue()?.min(256) {
                    r.se()?;
                }
            }
            2 => {}
            _ => return None,
        }
        r.ue()?; // max_num_ref_frames
        r.bit()?; // gaps_in_frame_num_value_allowed
        let width_mbs = r.ue()?.checked_add(1)?;
        let height_units = r.ue()?.checked_add(1)?;
        let frame_mbs_only = r.bit()?;
        if !frame_mbs_only {
            r.bit()?;
        }
        r.bit()?; // direct_8x8_inference
        let (mut crop_x, mut crop_y) = (0, 0);
        if r.bit()? {
            let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
            crop_x = 2 * left.checked_add(right)?;
            crop_y = 2 * (2 - u32::from(frame_mbs_only)) * top.checked_add(bottom)?;
        }
        let width = width_mbs.checked_mul(16)?.checked_sub(crop_x)?;
        let height = height_units.checked_mul(16 * (2 - u32::from(frame_mbs_only)))?.checked_sub(crop_y)?;
        let mut full_range = false;
        if r.bit()? {
            if r.bit()? && r.bits(8)? == 255 {
                r.bits(32)?;
            }
            if r.bit()? {
                r.bit()?;
            }
            if r.bit()? {
                r.bits(3)?;
                full_range = r.bit()?;
            }
        }
        Some(Sps { width, height, full_range })
    }
}

/// Drops the emulation-prevention byte of every `00 00 03`.
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &byte in data {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// A big-endian bit reader with Exp-Golomb codes.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, at: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = self.data.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1 == 1;
        self.at += 1;
        Some(bit)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | u32::from(self.bit()?)))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        ((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)).try_into().ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        // 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = Bits::new(&data);
        assert_eq!((r.ue(), r.ue(), r.ue(), r.ue()), (Some(0), Some(1), Some(2), Some(3)));
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }

    #[test]
    fn descriptors_with_long_lengths() {
        let data = [0x05, 0x80, 0x80, 0x02, 0x12, 0x10, 0xff];
        assert_eq!(descriptor(&data), Some((0x05, &[0x12, 0x10][..], &[0xff][..])));
        assert_eq!(descriptor(&[0x05, 0x80, 0x80, 0x80, 0x80, 0x01]), None);
    }

    #[test]
    fn declines_what_it_does_not_model() {
        // No tracks; an `mvex` (fragmented); a box running past its parent.
        let mvhd = boxed(b"mvhd", &[0; 100]);
        assert_eq!(describe_moov(&mvhd), None);
        let fragmented = [mvhd.clone(), boxed(b"mvex", &[])].concat();
        assert_eq!(describe_moov(&fragmented), None);
        let mut broken = mvhd;
        broken[3] = 200;
        assert_eq!(describe_moov(&broken), None);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Every prefix and every single-byte corruption of a plausible moov: no panic, and
        // whatever is answered has non-zero sizes.
        let moov = boxed(b"trak", &[boxed(b"tkhd", &[0; 84]), boxed(b"mdia", &[1; 64])].concat());
        let moov = [boxed(b"mvhd", &[0; 100]), moov].concat();
        for cut in 0..moov.len() {
            let _ = describe_moov(&moov[..cut]);
        }
        for at in 0..moov.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bytes = moov.clone();
                bytes[at] = value;
                if let Some(info) = describe_moov(&bytes) {
                    assert!(info.video.is_none_or(|v| v.width > 0 && v.height > 0));
                }
            }
        }
    }
}
