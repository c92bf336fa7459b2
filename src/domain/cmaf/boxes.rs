//! The boxes of a fragmented MP4 that packaging reads: a top-level box header (so a big file
//! can be walked with seeks), `moov` (the track) and `moof` (one fragment's timing).
//!
//! Box walking reuses [`crate::domain::isobmff`]'s reader; every field read is bounds-checked.

use super::codec::sample_entry;
use super::{CmafError, FragmentTiming, TrackInfo, TrexDefaults};
use crate::domain::isobmff::{boxes, child, u32_at, u64_at};

/// A top-level box header: its type, header length (8, or 16 with a 64-bit size) and total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxHeader {
    pub kind: [u8; 4],
    pub header_len: u64,
    /// Header plus payload, in bytes; a size-0 box ("to the end of the file") is resolved.
    pub size: u64,
}

/// The most bytes [`box_header`] ever needs.
pub const MAX_HEADER: usize = 16;

/// Reads a box header from up to [`MAX_HEADER`] bytes at the box's start; `remaining` is how
/// many bytes the file has from there on. A size below the header or past the end is an error.
pub fn box_header(bytes: &[u8], remaining: u64) -> Result<BoxHeader, CmafError> {
    let size = u32_at(bytes, 0).ok_or(CmafError::Malformed("box header"))?;
    let kind: [u8; 4] = bytes.get(4..8).and_then(|k| k.try_into().ok()).ok_or(CmafError::Malformed("box header"))?;
    let (header_len, size) = match size {
        1 => (16, u64_at(bytes, 8).ok_or(CmafError::Malformed("box header"))?),
        0 => (8, remaining),
        n => (8, u64::from(n)),
    };
    if size < header_len || size > remaining {
        return Err(CmafError::Layout(format!("box {:?} of {size} bytes with {remaining} left", kind_name(&kind))));
    }
    Ok(BoxHeader { kind, header_len, size })
}

pub(crate) fn kind_name(kind: &[u8; 4]) -> String {
    kind.iter().map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '?' }).collect()
}

fn need<'a>(data: &'a [u8], kind: &[u8; 4], name: &'static str) -> Result<&'a [u8], CmafError> {
    let list = boxes(data).ok_or(CmafError::Malformed(name))?;
    list.into_iter().find(|(k, _)| k == kind).map(|(_, body)| body).ok_or(CmafError::Missing(name))
}

fn field(data: &[u8], at: usize, name: &'static str) -> Result<u32, CmafError> {
    u32_at(data, at).ok_or(CmafError::Malformed(name))
}

/// The track of a fragmented file from its `moov` payload: exactly one `trak`, video or audio,
/// with `mvex`/`trex` defaults.
pub fn parse_init(moov: &[u8]) -> Result<TrackInfo, CmafError> {
    let list = boxes(moov).ok_or(CmafError::Malformed("moov"))?;
    let traks: Vec<&[u8]> = list.iter().filter(|(k, _)| k == b"trak").map(|(_, b)| *b).collect();
    let [trak] = traks[..] else {
        return Err(CmafError::UnsupportedTrack(format!("{} tracks in one file", traks.len())));
    };
    let tkhd = need(trak, b"tkhd", "tkhd")?;
    let track_id = match tkhd.first() {
        Some(0) => field(tkhd, 12, "tkhd")?,
        Some(1) => field(tkhd, 20, "tkhd")?,
        _ => return Err(CmafError::Malformed("tkhd")),
    };
    let mdia = need(trak, b"mdia", "mdia")?;
    let mdhd = need(mdia, b"mdhd", "mdhd")?;
    let timescale = match mdhd.first() {
        Some(0) => field(mdhd, 12, "mdhd")?,
        Some(1) => field(mdhd, 20, "mdhd")?,
        _ => return Err(CmafError::Malformed("mdhd")),
    };
    if timescale == 0 {
        return Err(CmafError::Malformed("mdhd"));
    }
    let handler: [u8; 4] =
        need(mdia, b"hdlr", "hdlr")?.get(8..12).and_then(|h| h.try_into().ok()).ok_or(CmafError::Malformed("hdlr"))?;
    let stbl = need(need(mdia, b"minf", "minf")?, b"stbl", "stbl")?;
    let stsd = need(stbl, b"stsd", "stsd")?;
    let entries = boxes(stsd.get(8..).ok_or(CmafError::Malformed("stsd"))?).ok_or(CmafError::Malformed("stsd"))?;
    let [(fourcc, entry)] = entries[..] else {
        return Err(CmafError::UnsupportedTrack(format!("{} sample entries", entries.len())));
    };
    let (kind, codec) = sample_entry(&handler, &fourcc, entry)?;
    let trex = trex(moov, track_id)?;
    Ok(TrackInfo { track_id, kind, timescale, trex, codec })
}

/// The `trex` of the track inside `mvex`: a fragmented file has one.
fn trex(moov: &[u8], track_id: u32) -> Result<TrexDefaults, CmafError> {
    let mvex = need(moov, b"mvex", "mvex")?;
    for (kind, body) in boxes(mvex).ok_or(CmafError::Malformed("mvex"))? {
        if &kind == b"trex" && field(body, 4, "trex")? == track_id {
            return Ok(TrexDefaults {
                sample_duration: field(body, 12, "trex")?,
                sample_size: field(body, 16, "trex")?,
                sample_flags: field(body, 20, "trex")?,
            });
        }
    }
    Err(CmafError::Missing("trex"))
}

/// `tfhd` defaults that override `trex`'s.
struct TrackFragmentDefaults {
    duration: u32,
    flags: u32,
}

fn tfhd(body: &[u8], trex: &TrexDefaults) -> Result<TrackFragmentDefaults, CmafError> {
    let flags = field(body, 0, "tfhd")? & 0x00ff_ffff;
    let mut at = 8; // version/flags, track_ID
    if flags & 0x01 != 0 {
        at += 8; // base_data_offset
    }
    if flags & 0x02 != 0 {
        at += 4; // sample_description_index
    }
    let mut out = TrackFragmentDefaults { duration: trex.sample_duration, flags: trex.sample_flags };
    if flags & 0x08 != 0 {
        out.duration = field(body, at, "tfhd")?;
        at += 4;
    }
    if flags & 0x10 != 0 {
        at += 4; // default_sample_size
    }
    if flags & 0x20 != 0 {
        out.flags = field(body, at, "tfhd")?;
    }
    Ok(out)
}

/// Running totals over a fragment's `trun`s.
#[derive(Default)]
struct Samples {
    count: u32,
    duration: u64,
    first_offset: Option<i64>,
    first_flags: Option<u32>,
    shared_duration: Option<Option<u32>>,
}

impl Samples {
    fn add_duration(&mut self, d: u32, n: u32) {
        self.duration = self.duration.saturating_add(u64::from(d).saturating_mul(u64::from(n)));
        self.shared_duration = match self.shared_duration {
            None => Some(Some(d)),
            Some(Some(s)) if s == d => Some(Some(s)),
            _ => Some(None),
        };
    }
}

fn trun(body: &[u8], defaults: &TrackFragmentDefaults, out: &mut Samples) -> Result<(), CmafError> {
    let word = field(body, 0, "trun")?;
    let (version, flags) = (word >> 24, word & 0x00ff_ffff);
    let count = field(body, 4, "trun")?;
    let mut at = 8;
    if flags & 0x001 != 0 {
        at += 4; // data_offset
    }
    let first_flags = if flags & 0x004 != 0 {
        at += 4;
        Some(field(body, at - 4, "trun")?)
    } else {
        None
    };
    let fields = [0x100, 0x200, 0x400, 0x800].iter().filter(|&&f| flags & f != 0).count();
    let per_sample = 4 * fields;
    let table = body.len().checked_sub(at).ok_or(CmafError::Malformed("trun"))?;
    if (count as usize).saturating_mul(per_sample) > table {
        return Err(CmafError::Malformed("trun"));
    }
    if flags & 0x100 == 0 {
        out.add_duration(defaults.duration, count);
    }
    for i in 0..count as usize {
        let mut slot = at + i * per_sample;
        if flags & 0x100 != 0 {
            out.add_duration(field(body, slot, "trun")?, 1);
            slot += 4;
        }
        if flags & 0x200 != 0 {
            slot += 4;
        }
        let sample_flags = if flags & 0x400 != 0 {
            slot += 4;
            Some(field(body, slot - 4, "trun")?)
        } else {
            None
        };
        let offset = if flags & 0x800 != 0 {
            let raw = field(body, slot, "trun")?;
            if version == 0 { i64::from(raw) } else { i64::from(raw as i32) }
        } else {
            0
        };
        if out.first_offset.is_none() {
            out.first_offset = Some(offset);
            out.first_flags = Some(first_flags.or(sample_flags).unwrap_or(defaults.flags));
        }
        if per_sample == 0 {
            break;
        }
    }
    if out.first_offset.is_none() && count > 0 {
        out.first_offset = Some(0);
        out.first_flags = Some(first_flags.unwrap_or(defaults.flags));
    }
    out.count = out.count.checked_add(count).ok_or(CmafError::Malformed("trun"))?;
    Ok(())
}

/// One fragment's timing from its `moof` payload: its one `traf`'s `tfdt`, `tfhd` and `trun`s.
pub fn parse_moof(moof: &[u8], trex: &TrexDefaults) -> Result<FragmentTiming, CmafError> {
    let list = boxes(moof).ok_or(CmafError::Malformed("moof"))?;
    let trafs: Vec<&[u8]> = list.iter().filter(|(k, _)| k == b"traf").map(|(_, b)| *b).collect();
    let [traf] = trafs[..] else {
        return Err(CmafError::UnsupportedTrack(format!("{} track fragments in one moof", trafs.len())));
    };
    let defaults = tfhd(need(traf, b"tfhd", "tfhd")?, trex)?;
    let tfdt = child(traf, b"tfdt").ok_or(CmafError::Missing("tfdt"))?;
    let decode_time = match tfdt.first() {
        Some(0) => u64::from(field(tfdt, 4, "tfdt")?),
        Some(1) => u64_at(tfdt, 4).ok_or(CmafError::Malformed("tfdt"))?,
        _ => return Err(CmafError::Malformed("tfdt")),
    };
    let mut samples = Samples::default();
    for (kind, body) in boxes(traf).ok_or(CmafError::Malformed("traf"))? {
        if &kind == b"trun" {
            trun(body, &defaults, &mut samples)?;
        }
    }
    if samples.count == 0 {
        return Err(CmafError::Missing("trun"));
    }
    let start = i64::try_from(decode_time).map_err(|_| CmafError::Malformed("tfdt"))?;
    Ok(FragmentTiming {
        decode_time,
        duration: samples.duration,
        earliest_presentation_time: start + samples.first_offset.unwrap_or(0),
        // sample_is_non_sync_sample is bit 16 of the sample flags.
        sync: samples.first_flags.is_some_and(|f| f & 0x0001_0000 == 0),
        sample_count: samples.count,
        sample_duration: samples.shared_duration.flatten(),
    })
}

#[cfg(test)]
#[path = "tests/boxes.rs"]
pub(crate) mod tests;
