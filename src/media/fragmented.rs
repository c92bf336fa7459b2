//! Reading and cutting the fragmented MP4s of a CMAF output on disk.
//!
//! [`index_file`] walks the file's top-level boxes with seeks, reading only box headers and the
//! small `moov`/`moof`/`sidx` payloads (a few kilobytes per two-second fragment), so a long
//! rendition is indexed without reading its media. [`write_segments`] copies the init and
//! segment byte ranges into separate files for segmented delivery. [`JoinedFile`] joins a
//! split job's fragmented segments of one rung into one file. The rules live in
//! `domain::cmaf`; this file only moves bytes.

use std::path::{Path, PathBuf};

use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, SeekFrom};

use crate::domain::cmaf::index::MAX_PAYLOAD;
use crate::domain::cmaf::join::Join;
use crate::domain::cmaf::{
    ByteRange, CmafError, INIT_FILE_NAME, IndexBuilder, Segment, TrackIndex, box_header, segment_file_name,
};

/// The largest fragment a join holds in memory: one GOP of one rung, a few megabytes.
const MAX_FRAGMENT: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FragmentedError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Cmaf { path: PathBuf, source: CmafError },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FragmentedError + '_ {
    move |source| FragmentedError::Io { path: path.to_path_buf(), source }
}

fn cmaf(path: &Path) -> impl FnOnce(CmafError) -> FragmentedError + '_ {
    move |source| FragmentedError::Cmaf { path: path.to_path_buf(), source }
}

/// The init range, track and every fragment of a one-track fragmented MP4.
pub async fn index_file(path: &Path) -> Result<TrackIndex, FragmentedError> {
    let mut file = File::open(path).await.map_err(io(path))?;
    let len = file.metadata().await.map_err(io(path))?.len();
    let mut builder = IndexBuilder::new();
    let mut at = 0u64;
    while at < len {
        let mut head = [0u8; 16];
        let want = usize::try_from((len - at).min(16)).unwrap_or(16);
        file.seek(SeekFrom::Start(at)).await.map_err(io(path))?;
        file.read_exact(&mut head[..want]).await.map_err(io(path))?;
        let header = box_header(&head[..want], len - at).map_err(cmaf(path))?;
        let payload = if IndexBuilder::wants_payload(&header) {
            let size = header.size - header.header_len;
            if size > MAX_PAYLOAD {
                return Err(cmaf(path)(CmafError::Layout(format!("a {size}-byte box where a small one belongs"))));
            }
            let mut body = vec![0u8; usize::try_from(size).unwrap_or(0)];
            file.seek(SeekFrom::Start(at + header.header_len)).await.map_err(io(path))?;
            file.read_exact(&mut body).await.map_err(io(path))?;
            Some(body)
        } else {
            None
        };
        builder.push(at, &header, payload.as_deref()).map_err(cmaf(path))?;
        at += header.size;
    }
    builder.finish().map_err(cmaf(path))
}

/// Copies the init range into `out_dir/init.mp4` and each segment's bytes into
/// `out_dir/segment_00001.m4s`...; answers the paths written, init first.
pub async fn write_segments(
    path: &Path,
    index: &TrackIndex,
    segments: &[Segment],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, FragmentedError> {
    let mut source = File::open(path).await.map_err(io(path))?;
    let mut written = Vec::with_capacity(segments.len() + 1);
    let jobs = std::iter::once((INIT_FILE_NAME.to_string(), index.init))
        .chain(segments.iter().map(|s| (segment_file_name(s.number), s.range)));
    for (name, range) in jobs {
        let target = out_dir.join(name);
        copy_range(&mut source, path, range, &target).await?;
        written.push(target);
    }
    Ok(written)
}

/// One rung's fragmented segments joined into one file, part by part, as
/// [`crate::domain::cmaf::join`] says: the first part's init segment, then every part's
/// fragments, renumbered and timed from zero. A part whose init differs fails the join.
pub struct JoinedFile {
    join: Join,
    out: File,
    path: PathBuf,
}

impl JoinedFile {
    pub async fn create(path: &Path) -> Result<Self, FragmentedError> {
        let out = File::create(path).await.map_err(io(path))?;
        Ok(Self { join: Join::new(), out, path: path.to_path_buf() })
    }

    /// Appends the next part: its init segment (written for the first part, checked for every
    /// later one) and its fragments.
    pub async fn append(&mut self, part: &Path) -> Result<(), FragmentedError> {
        let index = index_file(part).await?;
        let mut source = File::open(part).await.map_err(io(part))?;
        let init = read_range(&mut source, part, index.init).await?;
        if self.join.init(&init).map_err(cmaf(part))? {
            self.out.write_all(&init).await.map_err(io(&self.path))?;
        }
        for fragment in &index.fragments {
            let mut bytes = read_range(&mut source, part, fragment.range).await?;
            self.join.fragment(&mut bytes).map_err(cmaf(part))?;
            self.out.write_all(&bytes).await.map_err(io(&self.path))?;
        }
        Ok(())
    }

    /// Flushes the joined file.
    pub async fn finish(mut self) -> Result<(), FragmentedError> {
        self.out.flush().await.map_err(io(&self.path))
    }
}

/// The bytes of `range` in `source`, read whole (at most [`MAX_FRAGMENT`]).
async fn read_range(source: &mut File, path: &Path, range: ByteRange) -> Result<Vec<u8>, FragmentedError> {
    if range.size > MAX_FRAGMENT {
        return Err(cmaf(path)(CmafError::Layout(format!("a {}-byte fragment", range.size))));
    }
    source.seek(SeekFrom::Start(range.offset)).await.map_err(io(path))?;
    let mut bytes = vec![0u8; usize::try_from(range.size).unwrap_or(0)];
    source.read_exact(&mut bytes).await.map_err(io(path))?;
    Ok(bytes)
}

async fn copy_range(source: &mut File, path: &Path, range: ByteRange, target: &Path) -> Result<(), FragmentedError> {
    source.seek(SeekFrom::Start(range.offset)).await.map_err(io(path))?;
    let mut out = File::create(target).await.map_err(io(target))?;
    let copied = tokio::io::copy(&mut (&mut *source).take(range.size), &mut out).await.map_err(io(target))?;
    if copied != range.size {
        let short = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shorter than its index");
        return Err(io(path)(short));
    }
    out.flush().await.map_err(io(target))?;
    Ok(())
}

#[cfg(test)]
#[path = "fragmented/tests.rs"]
mod tests;
