//! A safe wrapper around libvmaf (through `vmaf-head-sys`, which builds its vendored C source):
//! the one place in the crate with `unsafe`.
//!
//! A [`Scorer`] holds a libvmaf context with the built-in VMAF model
//! ([`VMAF_MODEL`](crate::domain::quality::VMAF_MODEL)) and the `psnr` extractor. It takes
//! pairs of 8-bit yuv420p pictures, in order, and gives each scored frame's VMAF, luma PSNR and
//! SSIM when finished. SSIM is ours ([`super::ssim`], ffmpeg's integer SSIM), not libvmaf's
//! `float_ssim`, which took a third of libvmaf's time. Everything it allocated is freed when it
//! is dropped, finished or not.
//!
//! Subsampling is libvmaf's own (`n_subsample`): every picture is still read, so the motion
//! feature (which compares each picture with the one before) sees every frame, while the
//! costly features (VIF, ADM), PSNR, SSIM and the model run on every `n`-th frame only.

use std::ffi::CStr;
use std::ptr::{self, NonNull};

use vmaf_head_sys as sys;

/// libvmaf's features read for each frame, by their names in libvmaf.
const PSNR_FEATURE: &CStr = c"psnr";
const PSNR_Y: &CStr = c"psnr_y";

#[derive(Debug, thiserror::Error)]
pub enum VmafError {
    /// A picture size libvmaf cannot score (zero, or too large for a frame in memory).
    #[error("cannot score pictures of {width}x{height}")]
    Size { width: u32, height: u32 },
    #[error("a picture of {got} bytes is not a {width}x{height} yuv420p picture ({expected} bytes)")]
    Picture { width: u32, height: u32, expected: usize, got: usize },
    /// A libvmaf call failed; `code` is its negative errno.
    #[error("libvmaf's {call} failed with error {code}")]
    Call { call: &'static str, code: i32 },
    #[error("the scorer was given no pictures")]
    Empty,
}

/// How a [`Scorer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmafConfig {
    /// libvmaf's worker threads (0: extract on the calling thread).
    pub threads: u32,
    /// Score every `subsample`-th frame (1: every frame).
    pub subsample: u32,
}

/// One scored frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameScore {
    /// The frame's index among the pictures given.
    pub index: u32,
    pub vmaf: f64,
    pub psnr_y: f64,
    pub ssim: f64,
}

/// The bytes of one 8-bit yuv420p picture of `width`x`height`, planes packed without padding
/// (as ffmpeg's rawvideo writes it): chroma planes are half the size, rounded up.
pub fn yuv420p_size(width: u32, height: u32) -> Option<usize> {
    let (w, h) = (usize::try_from(width).ok()?, usize::try_from(height).ok()?);
    let luma = w.checked_mul(h)?;
    let chroma = w.div_ceil(2).checked_mul(h.div_ceil(2))?;
    luma.checked_add(chroma.checked_mul(2)?)
}

/// Fails with the call's name when libvmaf returns an error.
fn check(call: &'static str, code: i32) -> Result<(), VmafError> {
    if code == 0 { Ok(()) } else { Err(VmafError::Call { call, code }) }
}

/// A libvmaf context with the model and extractors loaded; see the module's documentation.
pub struct Scorer {
    context: NonNull<sys::VmafContext>,
    model: NonNull<sys::VmafModel>,
    width: u32,
    height: u32,
    frame_bytes: usize,
    subsample: u32,
    /// Pictures read so far (the next picture's index).
    read: u32,
    /// The SSIM of each scored frame so far, in order.
    ssim: Vec<f64>,
}

impl Scorer {
    /// A scorer for pictures of `width`x`height`.
    pub fn new(width: u32, height: u32, config: VmafConfig) -> Result<Self, VmafError> {
        let frame_bytes = match yuv420p_size(width, height) {
            Some(bytes) if width > 0 && height > 0 => bytes,
            _ => return Err(VmafError::Size { width, height }),
        };
        let subsample = config.subsample.max(1);
        let cfg = sys::VmafConfiguration {
            log_level: sys::VmafLogLevel_VMAF_LOG_LEVEL_NONE,
            n_threads: config.threads,
            n_subsample: subsample,
            cpumask: 0,
            gpumask: 0,
        };
        let mut context = ptr::null_mut();
        // SAFETY: `context` is a valid place for libvmaf to write the new context's pointer;
        // `cfg` is passed by value.
        check("vmaf_init", unsafe { sys::vmaf_init(&mut context, cfg) })?;
        let context = NonNull::new(context).ok_or(VmafError::Call { call: "vmaf_init", code: 0 })?;
        let mut model_cfg = sys::VmafModelConfig {
            name: VMAF_MODEL_NAME.as_ptr(),
            flags: u64::from(sys::VmafModelFlags_VMAF_MODEL_FLAGS_DEFAULT),
        };
        let mut model = ptr::null_mut();
        // SAFETY: `model` is a valid place for the new model's pointer; `model_cfg` and the
        // version are valid C strings for the call (libvmaf copies what it keeps).
        let loaded = unsafe { sys::vmaf_model_load(&mut model, &mut model_cfg, VMAF_MODEL_VERSION.as_ptr()) };
        let Some(model) = NonNull::new(model).filter(|_| loaded == 0) else {
            // SAFETY: the context was opened above and is not used again.
            let _ = unsafe { sys::vmaf_close(context.as_ptr()) };
            return Err(VmafError::Call { call: "vmaf_model_load", code: loaded });
        };
        // From here the scorer owns both, and dropping it frees them.
        let scorer = Scorer { context, model, width, height, frame_bytes, subsample, read: 0, ssim: Vec::new() };
        // SAFETY: both pointers are live (owned by `scorer`).
        check("vmaf_use_features_from_model", unsafe {
            sys::vmaf_use_features_from_model(scorer.context.as_ptr(), scorer.model.as_ptr())
        })?;
        // SAFETY: the context is live, the name a valid C string; no options (null).
        check("vmaf_use_feature", unsafe {
            sys::vmaf_use_feature(scorer.context.as_ptr(), PSNR_FEATURE.as_ptr(), ptr::null_mut())
        })?;
        Ok(scorer)
    }

    /// The bytes of one picture this scorer takes ([`yuv420p_size`]).
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Reads the next pair of pictures, each a whole yuv420p picture of the scorer's size.
    pub fn push(&mut self, reference: &[u8], distorted: &[u8]) -> Result<(), VmafError> {
        let scored = self.read.is_multiple_of(self.subsample);
        let ssim = if scored { self.ssim_of(reference, distorted)? } else { f64::NAN };
        let mut reference = self.picture(reference)?;
        let mut distorted = self.picture(distorted)?;
        // SAFETY: the context is live and both pictures were allocated by libvmaf at the size
        // the context scores. On success libvmaf takes both references (and clears the
        // structs, so `Picture`'s drop does nothing); on failure they are still ours and
        // `Picture`'s drop releases them.
        let code =
            unsafe { sys::vmaf_read_pictures(self.context.as_ptr(), &mut reference.0, &mut distorted.0, self.read) };
        check("vmaf_read_pictures", code)?;
        if scored {
            self.ssim.push(ssim);
        }
        self.read += 1;
        Ok(())
    }

    /// Flushes libvmaf and returns the scores of every scored frame (every `subsample`-th of
    /// those read), in order.
    pub fn finish(self) -> Result<Vec<FrameScore>, VmafError> {
        if self.read == 0 {
            return Err(VmafError::Empty);
        }
        // SAFETY: the context is live; null pictures ask libvmaf to flush its extractors.
        check("vmaf_read_pictures (flush)", unsafe {
            sys::vmaf_read_pictures(self.context.as_ptr(), ptr::null_mut(), ptr::null_mut(), 0)
        })?;
        let step = usize::try_from(self.subsample).unwrap_or(1);
        (0..self.read).step_by(step).map(|index| self.frame(index)).collect()
    }

    /// The scores of the frame at `index` (a scored one), after the flush.
    fn frame(&self, index: u32) -> Result<FrameScore, VmafError> {
        let mut vmaf = f64::NAN;
        // SAFETY: context and model are live; `vmaf` is a valid place for the score.
        check("vmaf_score_at_index", unsafe {
            sys::vmaf_score_at_index(self.context.as_ptr(), self.model.as_ptr(), &mut vmaf, index)
        })?;
        let ssim = usize::try_from(index / self.subsample).ok().and_then(|i| self.ssim.get(i)).copied();
        let ssim = ssim.ok_or(VmafError::Call { call: "ssim", code: -22 })?;
        Ok(FrameScore { index, vmaf, psnr_y: self.feature(PSNR_Y, index)?, ssim })
    }

    /// The luma SSIM of a pair (checked to be whole pictures of the scorer's size).
    fn ssim_of(&self, reference: &[u8], distorted: &[u8]) -> Result<f64, VmafError> {
        let (width, height) = (self.width as usize, self.height as usize);
        for got in [reference.len(), distorted.len()] {
            if got != self.frame_bytes {
                let (width, height, expected) = (self.width, self.height, self.frame_bytes);
                return Err(VmafError::Picture { width, height, expected, got });
            }
        }
        super::ssim::ssim_luma(reference, distorted, width, height)
            .ok_or(VmafError::Size { width: self.width, height: self.height })
    }

    fn feature(&self, name: &CStr, index: u32) -> Result<f64, VmafError> {
        let mut score = f64::NAN;
        // SAFETY: the context is live, `name` a valid C string, `score` a valid place.
        check("vmaf_feature_score_at_index", unsafe {
            sys::vmaf_feature_score_at_index(self.context.as_ptr(), name.as_ptr(), &mut score, index)
        })?;
        Ok(score)
    }

    /// A libvmaf picture holding `bytes` (a packed yuv420p picture), copied row by row into
    /// libvmaf's padded planes.
    fn picture(&self, bytes: &[u8]) -> Result<Picture, VmafError> {
        if bytes.len() != self.frame_bytes {
            return Err(VmafError::Picture {
                width: self.width,
                height: self.height,
                expected: self.frame_bytes,
                got: bytes.len(),
            });
        }
        let picture = Picture::alloc(self.width, self.height)?;
        let mut offset = 0;
        for plane in 0..3 {
            let (width, height, stride) = picture.plane(plane);
            let end = offset + width * height;
            if width > stride || end > bytes.len() || picture.0.data[plane].is_null() {
                return Err(VmafError::Call { call: "vmaf_picture_alloc", code: -22 });
            }
            let data = picture.0.data[plane].cast::<u8>();
            for row in 0..height {
                let source = &bytes[offset..offset + width];
                // SAFETY: libvmaf allocated `height` rows of `stride` bytes for this plane, and
                // `stride >= width` was checked; `source` is `width` bytes of `bytes`, which does
                // not overlap libvmaf's buffer.
                unsafe { ptr::copy_nonoverlapping(source.as_ptr(), data.add(row * stride), width) };
                offset += width;
            }
        }
        Ok(picture)
    }
}

/// The model's name in libvmaf's scores, and the built-in model it loads.
const VMAF_MODEL_NAME: &CStr = c"vmaf";
const VMAF_MODEL_VERSION: &CStr = c"vmaf_v0.6.1";

impl Drop for Scorer {
    fn drop(&mut self) {
        // SAFETY: both were created in `new`, are owned by this scorer only, and are not used
        // after this. The context is closed first: it may still read the model's features.
        unsafe {
            let _ = sys::vmaf_close(self.context.as_ptr());
            sys::vmaf_model_destroy(self.model.as_ptr());
        }
    }
}

/// A libvmaf picture this side still holds a reference to (released on drop); libvmaf clears
/// the struct when it takes the reference over.
struct Picture(sys::VmafPicture);

impl Picture {
    fn alloc(width: u32, height: u32) -> Result<Self, VmafError> {
        // SAFETY: an all-zero VmafPicture is libvmaf's empty picture (null pointers, zero
        // sizes); it is only read after `vmaf_picture_alloc` filled it.
        let mut picture: sys::VmafPicture = unsafe { std::mem::zeroed() };
        // SAFETY: `picture` is a valid place for libvmaf to fill.
        let code = unsafe {
            sys::vmaf_picture_alloc(&mut picture, sys::VmafPixelFormat_VMAF_PIX_FMT_YUV420P, 8, width, height)
        };
        check("vmaf_picture_alloc", code)?;
        Ok(Picture(picture))
    }

    /// A plane's width and height in bytes and its stride.
    fn plane(&self, plane: usize) -> (usize, usize, usize) {
        let p = &self.0;
        // u32 and a positive isize fit in usize on every target libvmaf builds for.
        (p.w[plane] as usize, p.h[plane] as usize, p.stride[plane].unsigned_abs())
    }
}

impl Drop for Picture {
    fn drop(&mut self) {
        if !self.0.ref_.is_null() {
            // SAFETY: the picture was allocated by libvmaf and this side still holds its
            // reference (libvmaf clears `ref_` when it takes it).
            let _ = unsafe { sys::vmaf_picture_unref(&mut self.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::quality::VMAF_MODEL;

    const W: u32 = 160;
    const H: u32 = 120;

    /// A picture of moving stripes and mid-grey chroma; `block` > 1 flattens it into blocks of
    /// that many pixels (a heavy compression's look).
    fn picture(shift: u32, block: u32) -> Vec<u8> {
        let mut bytes = vec![128u8; yuv420p_size(W, H).unwrap()];
        for y in 0..H {
            for x in 0..W {
                let (bx, by) = (x - x % block, y - y % block);
                let value = ((bx + shift) * 7 + by * 3) % 200 + 28;
                bytes[(y * W + x) as usize] = value as u8;
            }
        }
        bytes
    }

    fn config(subsample: u32) -> VmafConfig {
        VmafConfig { threads: 1, subsample }
    }

    #[test]
    fn the_model_loaded_is_the_one_reported() {
        assert_eq!(VMAF_MODEL_VERSION.to_str().unwrap(), VMAF_MODEL);
    }

    #[test]
    fn sizes_of_yuv420p_pictures() {
        assert_eq!(yuv420p_size(1920, 1080), Some(1920 * 1080 * 3 / 2));
        assert_eq!(yuv420p_size(3, 3), Some(9 + 2 * 4));
        assert!(matches!(Scorer::new(0, 10, config(1)), Err(VmafError::Size { .. })));
    }

    #[test]
    fn identical_pictures_score_high_and_blocks_lower_every_score() {
        let mut same = Scorer::new(W, H, config(1)).unwrap();
        let mut noisy = Scorer::new(W, H, config(1)).unwrap();
        for shift in 0..6 {
            same.push(&picture(shift, 1), &picture(shift, 1)).unwrap();
            noisy.push(&picture(shift, 1), &picture(shift, 8)).unwrap();
        }
        let same = same.finish().unwrap();
        let noisy = noisy.finish().unwrap();
        assert_eq!(same.len(), 6);
        for (a, b) in same.iter().zip(&noisy) {
            assert_eq!(a.psnr_y, 60.0, "libvmaf caps 8-bit PSNR at 60 dB");
            assert!((a.ssim - 1.0).abs() < 1e-9, "{a:?}");
            assert!(a.vmaf > 90.0, "{a:?}");
            assert!(b.vmaf < a.vmaf - 5.0 && b.psnr_y < 40.0 && b.ssim < a.ssim, "{a:?} {b:?}");
        }
    }

    #[test]
    fn subsampling_scores_every_nth_frame() {
        let mut scorer = Scorer::new(W, H, config(3)).unwrap();
        for shift in 0..7 {
            scorer.push(&picture(shift, 1), &picture(shift, 2)).unwrap();
        }
        let indices: Vec<u32> = scorer.finish().unwrap().iter().map(|f| f.index).collect();
        assert_eq!(indices, [0, 3, 6]);
    }

    #[test]
    fn wrong_sizes_and_empty_runs_are_errors() {
        let mut scorer = Scorer::new(W, H, config(1)).unwrap();
        let short = vec![0u8; 10];
        assert!(matches!(scorer.push(&short, &short), Err(VmafError::Picture { got: 10, .. })));
        assert!(matches!(scorer.finish(), Err(VmafError::Empty)));
        // Dropped unfinished, with pictures read and libvmaf extracting on its own thread.
        let mut scorer = Scorer::new(W, H, VmafConfig { threads: 2, subsample: 1 }).unwrap();
        scorer.push(&picture(0, 1), &picture(0, 1)).unwrap();
        drop(scorer);
    }
}
