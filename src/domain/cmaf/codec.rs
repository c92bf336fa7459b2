//! RFC 6381 codec strings from a sample entry's configuration box, and the entry's picture
//! size or audio layout.
//!
//! Rules: AVC `avc1.PPCCLL` (RFC 6381 3.3: profile_idc, constraint flags, level_idc in hex);
//! HEVC ISO/IEC 14496-15 Annex E (`hvc1.1.6.L93.B0`: profile space letter and profile_idc,
//! compatibility flags bit-reversed in hex, tier L/H and level_idc, constraint bytes in hex
//! with trailing zero bytes dropped); AV1 the ISOBMFF binding's "Codecs Parameter String"
//! (`av01.P.LLT.DD`, the short form with its defaults left out); AAC `mp4a.40.AOT`.
//! The string keeps the sample entry's own four-character code (`avc3`, `hev1`), as RFC 6381
//! asks: a player treats in-band parameter sets differently. Anything else is an error.

use super::{CmafError, TrackKind};
use crate::domain::isobmff::{aac_config, child, u16_at, u32_at};

/// The kind and codec string of a sample entry (its four-character code and payload) under
/// the track's handler (`vide`/`soun`).
pub fn sample_entry(handler: &[u8; 4], fourcc: &[u8; 4], entry: &[u8]) -> Result<(TrackKind, String), CmafError> {
    match (handler, fourcc) {
        (b"vide", b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"av01") => {
            // VisualSampleEntry: 78 bytes of fields, width and height at 24 and 26, then boxes.
            let width = u32::from(u16_at(entry, 24).ok_or(CmafError::Malformed("VisualSampleEntry"))?);
            let height = u32::from(u16_at(entry, 26).ok_or(CmafError::Malformed("VisualSampleEntry"))?);
            let boxes = entry.get(78..).ok_or(CmafError::Malformed("VisualSampleEntry"))?;
            let name = four(fourcc);
            let codec = match fourcc {
                b"avc1" | b"avc3" => avc(&name, config(boxes, b"avcC", "avcC")?)?,
                b"hvc1" | b"hev1" => hevc(&name, config(boxes, b"hvcC", "hvcC")?)?,
                _ => av1(config(boxes, b"av1C", "av1C")?)?,
            };
            Ok((TrackKind::Video { width, height }, codec))
        }
        (b"soun", b"mp4a") => {
            // AudioSampleEntry v0: channelcount at 16, samplerate (16.16) at 24, boxes at 28.
            let channels = u32::from(u16_at(entry, 16).ok_or(CmafError::Malformed("AudioSampleEntry"))?);
            let sample_rate = u32_at(entry, 24).ok_or(CmafError::Malformed("AudioSampleEntry"))? >> 16;
            let boxes = entry.get(28..).ok_or(CmafError::Malformed("AudioSampleEntry"))?;
            let esds = config(boxes, b"esds", "esds")?;
            let codec = aac(esds)?;
            Ok((TrackKind::Audio { channels, sample_rate }, codec))
        }
        _ => Err(CmafError::UnsupportedCodec(format!("{}/{}", four(handler), four(fourcc)))),
    }
}

fn four(code: &[u8; 4]) -> String {
    code.iter().map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '?' }).collect()
}

fn config<'a>(boxes: &'a [u8], kind: &[u8; 4], name: &'static str) -> Result<&'a [u8], CmafError> {
    let list = crate::domain::isobmff::boxes(boxes).ok_or(CmafError::Malformed(name))?;
    if !list.iter().any(|(k, _)| k == kind) {
        return Err(CmafError::Missing(name));
    }
    child(boxes, kind).ok_or(CmafError::Malformed(name))
}

/// `avcC`: configurationVersion 1, then profile_idc, constraint flags, level_idc.
pub fn avc(fourcc: &str, avcc: &[u8]) -> Result<String, CmafError> {
    match avcc {
        [1, profile, flags, level, ..] => Ok(format!("{fourcc}.{profile:02x}{flags:02x}{level:02x}")),
        _ => Err(CmafError::Malformed("avcC")),
    }
}

/// `hvcC` (ISO/IEC 14496-15 8.3.3): byte 1 profile space/tier/profile_idc, 2-5 compatibility
/// flags, 6-11 constraint flags, 12 level_idc.
pub fn hevc(fourcc: &str, hvcc: &[u8]) -> Result<String, CmafError> {
    let head = hvcc.get(..13).ok_or(CmafError::Malformed("hvcC"))?;
    if head[0] != 1 {
        return Err(CmafError::Malformed("hvcC"));
    }
    let space = ["", "A", "B", "C"][usize::from(head[1] >> 6)];
    let tier = if head[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile = head[1] & 0x1f;
    let compatibility = u32::from_be_bytes([head[2], head[3], head[4], head[5]]).reverse_bits();
    let mut out = format!("{fourcc}.{space}{profile}.{compatibility:X}.{tier}{}", head[12]);
    let constraints = &head[6..12];
    let kept = constraints.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    for byte in &constraints[..kept] {
        out.push_str(&format!(".{byte:X}"));
    }
    Ok(out)
}

/// `av1C` (AV1 ISOBMFF binding 2.3): marker+version, then seq_profile(3) seq_level_idx_0(5),
/// then seq_tier_0, high_bitdepth, twelve_bit, ...
pub fn av1(av1c: &[u8]) -> Result<String, CmafError> {
    let [marker, profile_level, flags, ..] = av1c else {
        return Err(CmafError::Malformed("av1C"));
    };
    if *marker != 0x81 {
        return Err(CmafError::Malformed("av1C"));
    }
    let (profile, level) = (profile_level >> 5, profile_level & 0x1f);
    let tier = if flags & 0x80 != 0 { 'H' } else { 'M' };
    let (high, twelve) = (flags & 0x40 != 0, flags & 0x20 != 0);
    let depth = match (profile, high, twelve) {
        (2, true, true) => 12,
        (_, true, _) => 10,
        _ => 8,
    };
    Ok(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

/// `esds`: MPEG-4 audio (objectTypeIndication 0x40) and the AudioSpecificConfig's object type
/// (5 bits; 31 escapes to 32 + the next 6 bits).
pub fn aac(esds: &[u8]) -> Result<String, CmafError> {
    let body = esds.get(4..).ok_or(CmafError::Malformed("esds"))?;
    let config = aac_config(body).ok_or_else(|| CmafError::UnsupportedCodec("mp4a (not MPEG-4 audio)".into()))?;
    let first = *config.first().ok_or(CmafError::Malformed("esds"))?;
    let mut object_type = u16::from(first >> 3);
    if object_type == 31 {
        let second = *config.get(1).ok_or(CmafError::Malformed("esds"))?;
        object_type = 32 + ((u16::from(first & 0x07) << 3) | u16::from(second >> 5));
    }
    if object_type == 0 {
        return Err(CmafError::Malformed("esds"));
    }
    Ok(format!("mp4a.40.{object_type}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_strings() {
        assert_eq!(avc("avc1", &[1, 0x64, 0x00, 0x1e, 0xff]).unwrap(), "avc1.64001e");
        assert_eq!(avc("avc3", &[1, 0x42, 0xc0, 0x0d]).unwrap(), "avc3.42c00d");
        assert!(avc("avc1", &[1, 0x64]).is_err());
        assert!(avc("avc1", &[0, 0x64, 0, 0x1e]).is_err());
    }

    #[test]
    fn hevc_strings() {
        // Main, compatibility flags 0x60000000 (profiles 1 and 2), main tier level 3.1,
        // progressive + frame-only constraints.
        let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
        assert_eq!(hevc("hvc1", &hvcc).unwrap(), "hvc1.1.6.L93.90");
        hvcc[6] = 0xb0;
        assert_eq!(hevc("hvc1", &hvcc).unwrap(), "hvc1.1.6.L93.B0");
        // Main 10, high tier, level 5.1, a zero byte kept before a non-zero one.
        let hvcc = [1, 0x22, 0x20, 0, 0, 0, 0xb0, 0, 0x08, 0, 0, 0, 153];
        assert_eq!(hevc("hev1", &hvcc).unwrap(), "hev1.2.4.H153.B0.0.8");
        // Profile space 1, no constraints at all.
        let hvcc = [1, 0x41, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 120];
        assert_eq!(hevc("hvc1", &hvcc).unwrap(), "hvc1.A1.6.L120");
        assert!(hevc("hvc1", &hvcc[..12]).is_err());
    }

    #[test]
    fn av1_strings() {
        assert_eq!(av1(&[0x81, 0x04, 0x0c, 0]).unwrap(), "av01.0.04M.08");
        assert_eq!(av1(&[0x81, 0x0d, 0x4c, 0]).unwrap(), "av01.0.13M.10");
        assert_eq!(av1(&[0x81, 0x48, 0xe0]).unwrap(), "av01.2.08H.12");
        assert!(av1(&[0x01, 0x04, 0x0c]).is_err());
        assert!(av1(&[0x81]).is_err());
    }

    fn esds(asc: &[u8], oti: u8) -> Vec<u8> {
        let specific = [&[0x05, asc.len() as u8][..], asc].concat();
        let decoder = [&[0x04, (13 + specific.len()) as u8, oti][..], &[0; 12], &specific].concat();
        let es = [&[0x03, (3 + decoder.len()) as u8, 0, 1, 0][..], &decoder].concat();
        [&[0, 0, 0, 0][..], &es].concat()
    }

    #[test]
    fn aac_strings() {
        assert_eq!(aac(&esds(&[0x11, 0x90], 0x40)).unwrap(), "mp4a.40.2");
        assert_eq!(aac(&esds(&[0x2b, 0x8a], 0x40)).unwrap(), "mp4a.40.5");
        // Escape: 31 then 6 bits = 10 -> object type 42 (USAC).
        assert_eq!(aac(&esds(&[0xf9, 0x40], 0x40)).unwrap(), "mp4a.40.42");
        assert!(matches!(aac(&esds(&[0x11, 0x90], 0x6b)), Err(CmafError::UnsupportedCodec(_))));
        assert!(aac(&[0, 0, 0]).is_err());
    }

    #[test]
    fn unknown_entries_are_errors() {
        let entry = [0u8; 100];
        assert!(matches!(sample_entry(b"vide", b"vp09", &entry), Err(CmafError::UnsupportedCodec(_))));
        assert!(matches!(sample_entry(b"text", b"wvtt", &entry), Err(CmafError::UnsupportedCodec(_))));
        assert!(matches!(sample_entry(b"vide", b"avc1", &entry), Err(CmafError::Missing("avcC"))));
        assert!(sample_entry(b"vide", b"avc1", &entry[..20]).is_err());
    }
}
