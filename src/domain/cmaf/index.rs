//! Turning a fragmented file's top-level boxes, met in order, into its [`TrackIndex`].
//!
//! The I/O layer reads each box header with [`super::box_header`], hands over the payload of
//! the few boxes [`IndexBuilder::wants_payload`] names (`moov`, `moof`, `sidx`: small) and
//! seeks past the rest, so a file of any size is indexed reading a few kilobytes per fragment.
//! Layout accepted: `ftyp`, `moov`, an optional `sidx` for the whole file, then fragments,
//! each any `styp`/`prft`/`emsg`/`sidx` boxes, a `moof` and its `mdat`; `free`, `skip`,
//! `mfra`, `udta` and `meta` anywhere are skipped.

use super::boxes::{BoxHeader, kind_name, parse_moof};
use super::{ByteRange, CmafError, Fragment, FragmentTiming, TrackIndex, TrackInfo, parse_init};
use crate::domain::isobmff::u16_at;

/// The largest payload the builder asks for: a `moov` or `moof` beyond it is not ours.
pub const MAX_PAYLOAD: u64 = 64 << 20;

#[derive(Debug, Default)]
pub struct IndexBuilder {
    ftyp_at: Option<u64>,
    init: Option<ByteRange>,
    info: Option<TrackInfo>,
    sidx: Option<(ByteRange, u16)>,
    prefix_at: Option<u64>,
    pending: Option<(u64, FragmentTiming)>,
    fragments: Vec<Fragment>,
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`IndexBuilder::push`] needs this box's payload.
    pub fn wants_payload(header: &BoxHeader) -> bool {
        matches!(&header.kind, b"moov" | b"moof" | b"sidx")
    }

    /// Takes the next top-level box at `offset`, with its payload when it is wanted.
    pub fn push(&mut self, offset: u64, header: &BoxHeader, payload: Option<&[u8]>) -> Result<(), CmafError> {
        let range = ByteRange { offset, size: header.size };
        let payload = |name| {
            if header.size - header.header_len > MAX_PAYLOAD {
                return Err(CmafError::Layout(format!("{name} of {} bytes", header.size)));
            }
            payload.ok_or(CmafError::Missing(name))
        };
        match &header.kind {
            b"ftyp" if self.info.is_none() => self.ftyp_at = Some(offset),
            b"moov" if self.info.is_none() => {
                let start = self.ftyp_at.ok_or(CmafError::Missing("ftyp"))?;
                self.info = Some(parse_init(payload("moov")?)?);
                self.init = Some(ByteRange { offset: start, size: range.end() - start });
            }
            b"sidx" if self.fragments.is_empty() && self.pending.is_none() && self.prefix_at.is_none() => {
                self.track()?;
                let body = payload("sidx")?;
                let at = if body.first() == Some(&0) { 20 } else { 28 };
                let count = u16_at(body, at + 2).ok_or(CmafError::Malformed("sidx"))?;
                self.sidx = Some((range, count));
            }
            b"styp" | b"prft" | b"emsg" | b"sidx" => {
                self.track()?;
                self.prefix_at.get_or_insert(offset);
            }
            b"moof" => {
                let timing = parse_moof(payload("moof")?, &self.track()?.trex)?;
                if self.pending.is_some() {
                    return Err(CmafError::Layout("moof without its mdat".into()));
                }
                self.pending = Some((self.prefix_at.take().unwrap_or(offset), timing));
            }
            b"mdat" => {
                let (start, timing) = self.pending.take().ok_or(CmafError::Layout("mdat before any moof".into()))?;
                self.fragments.push(Fragment { range: ByteRange { offset: start, size: range.end() - start }, timing });
            }
            b"free" | b"skip" | b"mfra" | b"udta" | b"meta" => {}
            other => return Err(CmafError::Layout(format!("unexpected top-level box {:?}", kind_name(other)))),
        }
        Ok(())
    }

    fn track(&self) -> Result<&TrackInfo, CmafError> {
        self.info.as_ref().ok_or(CmafError::Missing("moov"))
    }

    /// The index, once every box has been pushed. A `sidx` that does not reference every
    /// fragment (a per-fragment one) is not reported as the file's index.
    pub fn finish(self) -> Result<TrackIndex, CmafError> {
        let (Some(info), Some(init)) = (self.info, self.init) else {
            return Err(CmafError::Missing("moov"));
        };
        if self.pending.is_some() {
            return Err(CmafError::Layout("last moof without its mdat".into()));
        }
        if self.fragments.is_empty() {
            return Err(CmafError::Empty("no fragments"));
        }
        let sidx = self.sidx.filter(|(_, count)| usize::from(*count) == self.fragments.len()).map(|(range, _)| range);
        Ok(TrackIndex { init, sidx, info, fragments: self.fragments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cmaf::box_header;
    use crate::domain::cmaf::boxes::tests::{avc_moov, boxed, moof};

    fn feed(file: &[u8]) -> Result<TrackIndex, CmafError> {
        let mut builder = IndexBuilder::new();
        let mut at = 0usize;
        while at < file.len() {
            let h = box_header(&file[at..(at + 16).min(file.len())], (file.len() - at) as u64)?;
            let end = at + h.size as usize;
            let body = IndexBuilder::wants_payload(&h).then(|| &file[at + h.header_len as usize..end]);
            builder.push(at as u64, &h, body)?;
            at = end;
        }
        builder.finish()
    }

    fn sidx(count: u16) -> Vec<u8> {
        let mut body = vec![0u8; 24];
        body[22..24].copy_from_slice(&count.to_be_bytes());
        body.extend(vec![0; 12 * usize::from(count)]);
        boxed(b"sidx", &body)
    }

    fn file(global_sidx: bool) -> Vec<u8> {
        let mut out = [boxed(b"ftyp", b"iso6cmfc"), boxed(b"moov", &avc_moov())].concat();
        if global_sidx {
            out.extend(sidx(2));
        }
        for n in 0..2u64 {
            out.extend(boxed(b"styp", b"msdh"));
            out.extend(boxed(b"moof", &moof(n * 30720, 0x001, 0, 60, &[0])));
            out.extend(boxed(b"mdat", &vec![7; 1000 + n as usize]));
        }
        out.extend(boxed(b"mfra", &[0; 8]));
        out
    }

    #[test]
    fn ranges_cover_init_and_every_fragment() {
        let index = feed(&file(false)).unwrap();
        let init_len = 16 + 8 + avc_moov().len() as u64;
        assert_eq!(index.init, ByteRange { offset: 0, size: init_len });
        assert_eq!(index.sidx, None);
        assert_eq!(index.fragments.len(), 2);
        let first = index.fragments[0].range;
        assert_eq!(first.offset, init_len);
        assert_eq!(index.fragments[1].range.offset, first.end());
        assert_eq!(index.fragments[1].timing.decode_time, 30720);
        assert_eq!(index.fragments[0].timing.duration, 60 * 512);
        assert_eq!(index.frame_rate(), Some((30, 1)));
    }

    #[test]
    fn a_global_sidx_is_the_index_range() {
        let index = feed(&file(true)).unwrap();
        assert_eq!(index.sidx.map(|r| r.offset), Some(index.init.end()));
        assert_eq!(index.fragments[0].range.offset, index.sidx.unwrap().end());
    }

    #[test]
    fn bad_layouts_are_errors() {
        let f = file(false);
        let moov_end = 16 + 8 + avc_moov().len();
        // No ftyp; mdat without moof; truncated file; unknown box.
        assert!(feed(&f[16..]).is_err());
        let broken = [&f[..moov_end], &boxed(b"mdat", &[0; 4])[..]].concat();
        assert!(feed(&broken).is_err());
        assert!(feed(&f[..f.len() - 20]).is_err());
        assert!(feed(&[&f[..], &boxed(b"junk", &[])[..]].concat()).is_err());
        assert!(matches!(feed(&f[..moov_end]), Err(CmafError::Empty(_))));
    }
}
