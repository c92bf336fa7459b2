use super::*;
use crate::domain::cmaf::TrackKind;

pub(crate) fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn be(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// A one-track H.264 `moov` payload: 320x180, timescale 15360, trex default duration 512.
pub(crate) fn avc_moov() -> Vec<u8> {
    let mut tkhd = vec![0u8; 84];
    tkhd[12..16].copy_from_slice(&1u32.to_be_bytes());
    let mut mdhd = vec![0u8; 24];
    mdhd[12..16].copy_from_slice(&15360u32.to_be_bytes());
    let hdlr = [&[0u8; 8][..], b"vide", &[0; 13]].concat();
    let mut entry = vec![0u8; 78];
    entry[24..26].copy_from_slice(&320u16.to_be_bytes());
    entry[26..28].copy_from_slice(&180u16.to_be_bytes());
    entry.extend(boxed(b"avcC", &[1, 0x64, 0, 0x1e, 0xff, 0xe0]));
    let stsd = [be(&[0, 1]), boxed(b"avc1", &entry)].concat();
    let stbl = boxed(b"stbl", &boxed(b"stsd", &stsd));
    let mdia = [boxed(b"mdhd", &mdhd), boxed(b"hdlr", &hdlr), boxed(b"minf", &stbl)].concat();
    let trak = boxed(b"trak", &[boxed(b"tkhd", &tkhd), boxed(b"mdia", &mdia)].concat());
    let trex = boxed(b"trex", &be(&[0, 1, 1, 512, 0, 0x0101_0000]));
    [boxed(b"mvhd", &[0; 100]), trak, boxed(b"mvex", &trex)].concat()
}

/// A `moof` payload: tfdt, tfhd without defaults, one trun with the given flags and words.
pub(crate) fn moof(decode_time: u64, trun_flags: u32, version: u8, count: u32, table: &[u32]) -> Vec<u8> {
    let tfhd = boxed(b"tfhd", &be(&[0x0002_0000, 1]));
    let tfdt = boxed(b"tfdt", &[&[1u8, 0, 0, 0][..], &decode_time.to_be_bytes()].concat());
    let trun = boxed(b"trun", &[be(&[(u32::from(version) << 24) | trun_flags, count]), be(table)].concat());
    let traf = boxed(b"traf", &[tfhd, tfdt, trun].concat());
    [boxed(b"mfhd", &be(&[0, 1])), traf].concat()
}

#[test]
fn init_gives_track_timescale_trex_and_codec() {
    let info = parse_init(&avc_moov()).unwrap();
    assert_eq!(info.track_id, 1);
    assert_eq!(info.kind, TrackKind::Video { width: 320, height: 180 });
    assert_eq!(info.timescale, 15360);
    assert_eq!(info.trex, TrexDefaults { sample_duration: 512, sample_size: 0, sample_flags: 0x0101_0000 });
    assert_eq!(info.codec, "avc1.64001e");
}

#[test]
fn moof_with_per_sample_durations_and_signed_offsets() {
    // data offset, first-sample flags (sync), per-sample duration + composition offset (v1).
    let flags = 0x001 | 0x004 | 0x100 | 0x800;
    let table = [100, 0x0200_0000, 512, (-1024i32) as u32, 512, 0, 1024, 512];
    let t = parse_moof(&moof(30720, flags, 1, 3, &table), &TrexDefaults::default()).unwrap();
    assert_eq!(t.decode_time, 30720);
    assert_eq!(t.duration, 2048);
    assert_eq!(t.earliest_presentation_time, 30720 - 1024);
    assert!(t.sync);
    assert_eq!(t.sample_count, 3);
    assert_eq!(t.sample_duration, None);
}

#[test]
fn moof_falls_back_on_trex_defaults() {
    let trex = TrexDefaults { sample_duration: 1024, sample_size: 0, sample_flags: 0x0001_0000 };
    let t = parse_moof(&moof(0, 0x001, 0, 60, &[8]), &trex).unwrap();
    assert_eq!((t.duration, t.sample_count, t.sample_duration), (61440, 60, Some(1024)));
    // trex says non-sync; version 0 offsets are unsigned.
    assert!(!t.sync);
    let t = parse_moof(&moof(0, 0x800, 0, 1, &[0xffff_fc00]), &trex).unwrap();
    assert_eq!(t.earliest_presentation_time, 0xffff_fc00);
}

#[test]
fn box_headers() {
    let h = box_header(&[0, 0, 0, 16, b'm', b'o', b'o', b'f'], 100).unwrap();
    assert_eq!((h.kind, h.header_len, h.size), (*b"moof", 8, 16));
    let large = [&[0, 0, 0, 1][..], b"mdat", &(1u64 << 33).to_be_bytes()].concat();
    let h = box_header(&large, 1 << 34).unwrap();
    assert_eq!((h.header_len, h.size), (16, 1 << 33));
    assert!(box_header(&large, 1 << 32).is_err());
    assert_eq!(box_header(&[0, 0, 0, 0, b'm', b'd', b'a', b't'], 77).unwrap().size, 77);
    assert!(box_header(&[0, 0, 0, 4, b'f', b'r', b'e', b'e'], 77).is_err());
    assert!(box_header(&large[..12], 1 << 34).is_err());
    assert!(box_header(&[0, 0], 10).is_err());
}

#[test]
fn hostile_init_and_moof_never_panic() {
    let trex = TrexDefaults::default();
    for bytes in [avc_moov(), moof(5, 0xf05, 1, 2, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])] {
        for cut in 0..bytes.len() {
            let _ = parse_init(&bytes[..cut]);
            let _ = parse_moof(&bytes[..cut], &trex);
        }
        for at in 0..bytes.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] = value;
                let _ = parse_init(&b);
                let _ = parse_moof(&b, &trex);
            }
        }
    }
    // A sample count far beyond the table is refused, not looped over.
    assert!(parse_moof(&moof(0, 0x100, 0, u32::MAX, &[1]), &trex).is_err());
}

#[test]
fn more_than_one_track_is_refused() {
    let moov = avc_moov();
    let trak_at = 108;
    let size = u32::from_be_bytes(moov[trak_at..trak_at + 4].try_into().unwrap()) as usize;
    let trak = moov[trak_at..trak_at + size].to_vec();
    let two = [moov.clone(), trak].concat();
    assert!(matches!(parse_init(&two), Err(CmafError::UnsupportedTrack(_))));
}
