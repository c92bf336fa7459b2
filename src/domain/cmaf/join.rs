//! Joining a rung's segments, each a fragmented MP4 of its own, into one file: the first
//! segment's init segment, then every segment's fragments in order.
//!
//! A split job encodes each segment of a `cmaf` rung into its own fragmented MP4 whose `tfdt`s
//! are the source's decode times (plus a constant offset), so the fragments of consecutive
//! segments already follow one another and the join copies their bytes. Two fields are
//! rewritten on the way, in place and without changing any size, so the joined file is what
//! one encode of the whole title would have written: `mfhd`'s sequence number counts the
//! fragments of the whole file (each segment counts from 1), and every `tfdt` is lowered by
//! the first fragment's, so the title decodes from time 0 like the audio beside it (the
//! constant offset goes). The `trun` data offsets count from their own `moof`
//! (`default_base_moof`), so moving a fragment leaves them right.
//!
//! Every segment must carry the same init segment, byte for byte: it holds the encoder's
//! configuration (`avcC`, `hvcC`, `av1C`: profile, level, parameter sets), and a player
//! decodes every fragment with the first one's. A segment encoded with another configuration
//! (another encoder version on one worker, say) fails the join with
//! [`CmafError::InitMismatch`] rather than making a file that plays wrong.

use super::CmafError;
use super::boxes::{BoxHeader, MAX_HEADER, box_header};

/// The join of one rung, fed part by part: [`Join::init`] with each part's init segment, then
/// [`Join::fragment`] with each of its fragments' bytes, in order.
#[derive(Debug, Default)]
pub struct Join {
    init: Option<Vec<u8>>,
    parts: usize,
    /// The next fragment's `mfhd` sequence number, from 1.
    sequence: u32,
    /// The first fragment's `tfdt`, taken off every fragment's.
    shift: Option<u64>,
}

impl Join {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next part's init segment (`ftyp` and `moov`): the first part's is to be
    /// written (answered `true`), every later part's must equal it (answered `false`).
    pub fn init(&mut self, init: &[u8]) -> Result<bool, CmafError> {
        let part = self.parts;
        self.parts += 1;
        match &self.init {
            None => {
                self.init = Some(init.to_vec());
                Ok(true)
            }
            Some(first) if first.as_slice() == init => Ok(false),
            Some(_) => Err(CmafError::InitMismatch(part)),
        }
    }

    /// Rewrites the next fragment's bytes (any `styp`/`prft`/`emsg`/`sidx` boxes, its `moof`
    /// and its `mdat`) for its place in the joined file.
    pub fn fragment(&mut self, bytes: &mut [u8]) -> Result<(), CmafError> {
        if self.init.is_none() {
            return Err(CmafError::Layout("a fragment before any init segment".into()));
        }
        self.sequence = self.sequence.checked_add(1).ok_or(CmafError::Malformed("mfhd"))?;
        let (at, moof) =
            children(bytes)?.into_iter().find(|(_, h)| &h.kind == b"moof").ok_or(CmafError::Missing("moof"))?;
        let body = body_range(at, &moof);
        let moof_body = &mut bytes[body];
        let mut tfdt = None;
        for (at, child) in children(moof_body)? {
            match &child.kind {
                b"mfhd" => {
                    let field = at + header_len(&child) + 4;
                    write(moof_body, field, &self.sequence.to_be_bytes(), "mfhd")?;
                }
                b"traf" => {
                    let traf = body_range(at, &child);
                    for (inner, grandchild) in children(&moof_body[traf.clone()])? {
                        if &grandchild.kind == b"tfdt" {
                            tfdt = Some(traf.start + inner + header_len(&grandchild));
                        }
                    }
                }
                _ => {}
            }
        }
        let tfdt = tfdt.ok_or(CmafError::Missing("tfdt"))?;
        self.rebase(moof_body, tfdt)
    }

    /// Lowers the `tfdt` whose payload starts at `at` by the first fragment's.
    fn rebase(&mut self, moof: &mut [u8], at: usize) -> Result<(), CmafError> {
        let wide = match moof.get(at) {
            Some(1) => true,
            Some(0) => false,
            _ => return Err(CmafError::Malformed("tfdt")),
        };
        let field = at + 4;
        let time = if wide {
            read::<8>(moof, field).map(u64::from_be_bytes)
        } else {
            read::<4>(moof, field).map(|b| u64::from(u32::from_be_bytes(b)))
        }
        .ok_or(CmafError::Malformed("tfdt"))?;
        let shift = *self.shift.get_or_insert(time);
        let rebased = time
            .checked_sub(shift)
            .ok_or_else(|| CmafError::Layout("a fragment decodes before the joined file's first".into()))?;
        if wide {
            write(moof, field, &rebased.to_be_bytes(), "tfdt")
        } else {
            let narrow = u32::try_from(rebased).map_err(|_| CmafError::Malformed("tfdt"))?;
            write(moof, field, &narrow.to_be_bytes(), "tfdt")
        }
    }
}

fn header_len(header: &BoxHeader) -> usize {
    usize::try_from(header.header_len).unwrap_or(usize::MAX)
}

/// The byte range of a box's payload, the box starting at `at`.
fn body_range(at: usize, header: &BoxHeader) -> std::ops::Range<usize> {
    let size = usize::try_from(header.size).unwrap_or(usize::MAX);
    at.saturating_add(header_len(header))..at.saturating_add(size)
}

/// The boxes that fill `data`, each with its offset.
fn children(data: &[u8]) -> Result<Vec<(usize, BoxHeader)>, CmafError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        let header = box_header(&rest[..rest.len().min(MAX_HEADER)], rest.len() as u64)?;
        out.push((at, header));
        at += usize::try_from(header.size).map_err(|_| CmafError::Malformed("box size"))?;
    }
    Ok(out)
}

fn read<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn write(data: &mut [u8], at: usize, value: &[u8], name: &'static str) -> Result<(), CmafError> {
    let end = at.checked_add(value.len()).ok_or(CmafError::Malformed(name))?;
    data.get_mut(at..end).ok_or(CmafError::Malformed(name))?.copy_from_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cmaf::boxes::tests::{avc_moov, boxed, moof};
    use crate::domain::cmaf::parse_moof;
    use crate::domain::cmaf::{TrexDefaults, parse_init};

    fn fragment(decode_time: u64) -> Vec<u8> {
        [boxed(b"moof", &moof(decode_time, 0x001, 0, 60, &[0])), boxed(b"mdat", &[7; 100])].concat()
    }

    /// The sequence number and decode time of a fragment, read back.
    fn read_back(bytes: &[u8], trex: &TrexDefaults) -> (u32, u64) {
        let moof = &bytes[8..u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize];
        let sequence = u32::from_be_bytes(moof[12..16].try_into().unwrap());
        (sequence, parse_moof(moof, trex).unwrap().decode_time)
    }

    #[test]
    fn fragments_are_numbered_through_and_decode_from_zero() {
        let init = [boxed(b"ftyp", b"iso6cmfc"), boxed(b"moov", &avc_moov())].concat();
        let trex = parse_init(&avc_moov()).unwrap().trex;
        let mut join = Join::new();
        let mut out = Vec::new();
        // Two segments of two fragments, each numbered from 1, timed from 10 s on.
        for part in [[153_600u64, 184_320], [215_040, 245_760]] {
            assert_eq!(join.init(&init).unwrap(), out.is_empty());
            for time in part {
                let mut bytes = [boxed(b"styp", b"msdh"), fragment(time)].concat();
                let mdat = bytes[bytes.len() - 100..].to_vec();
                join.fragment(&mut bytes).unwrap();
                assert_eq!(&bytes[bytes.len() - 100..], &mdat[..], "the media is untouched");
                out.push(read_back(&bytes[12..], &trex));
            }
        }
        assert_eq!(out, [(1, 0), (2, 30_720), (3, 61_440), (4, 92_160)]);
    }

    #[test]
    fn another_init_or_a_broken_fragment_is_refused() {
        let init = [boxed(b"ftyp", b"iso6cmfc"), boxed(b"moov", &avc_moov())].concat();
        let mut join = Join::new();
        assert!(join.fragment(&mut fragment(0)).is_err(), "a fragment before its init");
        assert!(join.init(&init).unwrap());
        let mut other = init.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        assert_eq!(join.init(&other), Err(CmafError::InitMismatch(1)));
        join.fragment(&mut fragment(5_000)).unwrap();
        assert!(join.fragment(&mut fragment(4_000)).is_err(), "before the first fragment");
        let mut no_moof = boxed(b"mdat", &[0; 8]);
        assert_eq!(join.fragment(&mut no_moof), Err(CmafError::Missing("moof")));
        let mut truncated = fragment(6_000);
        truncated.truncate(40);
        assert!(join.fragment(&mut truncated).is_err());
    }
}
