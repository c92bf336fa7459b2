//! Luma SSIM of two 8-bit pictures, computed as ffmpeg's `ssim` filter (and x264) compute it:
//! sums over 4x4 blocks, combined into 8x8 windows every 4 pixels, integer statistics and the
//! usual constants for 8-bit samples; before that, both pictures are shrunk by the factor of
//! SSIM's authors for viewing distance, as libvmaf's `float_ssim` does (a 720p picture by 3).
//! No Gaussian weighting and a small picture: a fraction of a millisecond where `float_ssim`
//! (an 11x11 Gaussian window on every pixel, in floating point) took about 18 ms at 720p, for a
//! score within a few thousandths of it (docs/quality.md, "SSIM"). Pure arithmetic, no I/O.

/// `C1 = (0.01 * 255)^2` and `C2 = (0.03 * 255)^2`, scaled as the sums of a 64-pixel window
/// are (ffmpeg's `ssim_end1` for 8 bits).
const C1: i64 = 416; // (.01*.01*255*255*64 + .5)
const C2: i64 = 235_963; // (.03*.03*255*255*64*63 + .5)

/// Sums of one 4x4 block: reference, distorted, both squared, their product.
type BlockSums = [u32; 4];

/// The SSIM of the first `width * height` bytes of each picture (the luma plane of a packed
/// yuv420p picture) as a viewer sees them: shrunk by [`viewing_factor`] first, as libvmaf's
/// `float_ssim` does. 1 for identical pictures, lower the less alike. Pictures smaller than two
/// blocks on a side are compared as one window. `None` if either is shorter than the plane.
pub fn ssim_luma(reference: &[u8], distorted: &[u8], width: usize, height: usize) -> Option<f64> {
    ssim_scaled(reference, distorted, width, height, viewing_factor(width, height))
}

/// [`ssim_luma`] after averaging the planes over `factor`x`factor` boxes (1: at full size,
/// exactly ffmpeg's `ssim` filter's luma score).
pub fn ssim_scaled(reference: &[u8], distorted: &[u8], width: usize, height: usize, factor: usize) -> Option<f64> {
    let pixels = width.checked_mul(height)?;
    let (reference, distorted) = (reference.get(..pixels)?, distorted.get(..pixels)?);
    if factor > 1 {
        let (reference, w, h) = downsample(reference, width, height, factor);
        let (distorted, _, _) = downsample(distorted, width, height, factor);
        return ssim_plane(&reference, &distorted, w, h);
    }
    ssim_plane(reference, distorted, width, height)
}

/// The factor SSIM's authors (and libvmaf's `float_ssim`) shrink a picture by before comparing:
/// a viewer sees a picture of 256 lines or more from a distance where finer detail blurs.
pub fn viewing_factor(width: usize, height: usize) -> usize {
    ((width.min(height) as f64 / 256.0).round() as usize).max(1)
}

/// The plane averaged over `factor`x`factor` boxes (the rest of a row or column dropped).
fn downsample(plane: &[u8], width: usize, height: usize, factor: usize) -> (Vec<u8>, usize, usize) {
    let (w, h) = (width / factor, height / factor);
    let area = (factor * factor) as u32;
    let mut out = vec![0u8; w * h];
    // Each output row: the columns summed over `factor` lines (a loop the compiler
    // vectorises), then `factor` neighbouring column sums per output pixel.
    let mut columns = vec![0u32; w * factor];
    for (y, out_row) in out.chunks_exact_mut(w.max(1)).enumerate().take(h) {
        columns.fill(0);
        for line in y * factor..(y + 1) * factor {
            let row = &plane[line * width..line * width + w * factor];
            for (column, &value) in columns.iter_mut().zip(row) {
                *column += u32::from(value);
            }
        }
        for (o, chunk) in out_row.iter_mut().zip(columns.chunks_exact(factor)) {
            *o = ((chunk.iter().sum::<u32>() + area / 2) / area) as u8;
        }
    }
    (out, w, h)
}

fn ssim_plane(reference: &[u8], distorted: &[u8], width: usize, height: usize) -> Option<f64> {
    let (blocks_wide, blocks_high) = (width / 4, height / 4);
    if blocks_wide < 2 || blocks_high < 2 {
        return Some(whole_picture(reference, distorted));
    }
    let mut above = vec![[0u32; 4]; blocks_wide];
    let mut below = vec![[0u32; 4]; blocks_wide];
    block_row(reference, distorted, width, 0, &mut above);
    let mut total = 0.0f64;
    for row in 1..blocks_high {
        block_row(reference, distorted, width, row, &mut below);
        total += f64::from(window_row(&above, &below));
        std::mem::swap(&mut above, &mut below);
    }
    // Both counts are at least 1 here.
    Some(total / ((blocks_high - 1) * (blocks_wide - 1)) as f64)
}

/// The sums of every 4x4 block of block row `row`.
fn block_row(reference: &[u8], distorted: &[u8], width: usize, row: usize, sums: &mut [BlockSums]) {
    sums.fill([0; 4]);
    for line in 4 * row..4 * row + 4 {
        let start = line * width;
        let a_line = &reference[start..start + 4 * sums.len()];
        let b_line = &distorted[start..start + 4 * sums.len()];
        for ((block, a), b) in sums.iter_mut().zip(a_line.chunks_exact(4)).zip(b_line.chunks_exact(4)) {
            for (&a, &b) in a.iter().zip(b) {
                let (a, b) = (u32::from(a), u32::from(b));
                block[0] += a;
                block[1] += b;
                block[2] += a * a + b * b;
                block[3] += a * b;
            }
        }
    }
}

/// The sum of the SSIM of the 8x8 windows made of two rows of blocks, one window per pair of
/// neighbouring blocks (ffmpeg's `ssim_endn`, accumulated in single precision as there).
fn window_row(above: &[BlockSums], below: &[BlockSums]) -> f32 {
    let mut sum = 0.0f32;
    for i in 0..above.len() - 1 {
        let s = |k: usize| i64::from(above[i][k] + above[i + 1][k] + below[i][k] + below[i + 1][k]);
        sum += window(s(0), s(1), s(2), s(3));
    }
    sum
}

/// The SSIM of one 64-pixel window from its sums.
fn window(s1: i64, s2: i64, ss: i64, s12: i64) -> f32 {
    let variances = ss * 64 - s1 * s1 - s2 * s2;
    let covariance = s12 * 64 - s1 * s2;
    // As ffmpeg: each factor rounded to single precision.
    ((2 * s1 * s2 + C1) as f32 * (2 * covariance + C2) as f32)
        / ((s1 * s1 + s2 * s2 + C1) as f32 * (variances + C2) as f32)
}

/// The SSIM of the whole picture as one window (pictures too small for 8x8 windows).
fn whole_picture(reference: &[u8], distorted: &[u8]) -> f64 {
    let n = reference.len() as f64;
    if n == 0.0 {
        return 1.0;
    }
    let (mut s1, mut s2, mut ss1, mut ss2, mut s12) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&a, &b) in reference.iter().zip(distorted) {
        let (a, b) = (f64::from(a), f64::from(b));
        (s1, s2, ss1, ss2, s12) = (s1 + a, s2 + b, ss1 + a * a, ss2 + b * b, s12 + a * b);
    }
    let (m1, m2) = (s1 / n, s2 / n);
    let (v1, v2, cov) = (ss1 / n - m1 * m1, ss2 / n - m2 * m2, s12 / n - m1 * m2);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    ((2.0 * m1 * m2 + c1) * (2.0 * cov + c2)) / ((m1 * m1 + m2 * m2 + c1) * (v1 + v2 + c2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripes(width: usize, height: usize, shift: usize) -> Vec<u8> {
        (0..width * height).map(|i| (((i % width + shift) * 7 + (i / width) * 3) % 200 + 28) as u8).collect()
    }

    #[test]
    fn identical_pictures_score_one() {
        let a = stripes(64, 48, 0);
        assert!((ssim_luma(&a, &a, 64, 48).unwrap() - 1.0).abs() < 1e-6);
        let tiny = stripes(6, 5, 0);
        assert!((ssim_luma(&tiny, &tiny, 6, 5).unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn worse_pictures_score_lower() {
        let a = stripes(64, 48, 0);
        let slightly: Vec<u8> = a.iter().enumerate().map(|(i, &v)| v.saturating_add((i % 3) as u8)).collect();
        let shifted = stripes(64, 48, 5);
        let (near, far) = (ssim_luma(&a, &slightly, 64, 48).unwrap(), ssim_luma(&a, &shifted, 64, 48).unwrap());
        assert!(near < 1.0 && far < near, "{near} {far}");
    }

    #[test]
    fn short_pictures_are_refused() {
        assert_eq!(ssim_luma(&[0; 10], &[0; 16], 4, 4), None);
    }
}
