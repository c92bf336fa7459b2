//! Where the split pass cuts: equal pieces of at most `segment_duration`, then a short tail.
//!
//! Every free worker takes the next piece from the ready queue, in order. With pieces of one
//! length, the last round leaves workers idle while the others finish whole segments: with two
//! workers and six pieces, one worker's last segment is the job's tail. So the last
//! `segment_duration` of the source is cut finer, in halves and quarters (`S/2, S/4, S/4`):
//! the pieces offered last are the shortest, and whoever finishes early takes them. A tail
//! piece is never shorter than [`MIN_TAIL_PIECE`]: each piece costs a download, an encoder's
//! start, an upload and a checkpoint, which a shorter one would not repay. The body before the
//! tail is cut into equal pieces, none longer than `segment_duration`, so no long piece comes
//! late. Cuts are requested times; the split pass cuts on the first keyframe at or after each.

/// Shortest tail piece, in seconds.
pub const MIN_TAIL_PIECE: f64 = 5.0;

/// The lengths of the pieces, in order (they add up to `duration`). One piece means the source
/// is not split: it is shorter than one and a half segments.
pub fn piece_lengths(duration: f64, segment: f64) -> Vec<f64> {
    if !(duration.is_finite() && segment > 0.0 && segment * 1.5 < duration) {
        return vec![duration];
    }
    let tail: &[f64] = if segment / 4.0 >= MIN_TAIL_PIECE {
        &[0.5, 0.25, 0.25]
    } else if segment / 2.0 >= MIN_TAIL_PIECE {
        &[0.5, 0.5]
    } else {
        &[]
    };
    let mut tail: Vec<f64> = tail.iter().map(|share| share * segment).collect();
    let mut body = duration - tail.iter().sum::<f64>();
    if body < segment {
        tail.clear();
        body = duration;
    }
    // Equal pieces, none longer than a segment (a little slack for floating point).
    let count = (body / segment - 1e-9).ceil().max(1.0);
    let mut lengths = vec![body / count; count as usize];
    lengths.extend(tail);
    lengths
}

/// Where to ask the split pass to cut: the ends of every piece but the last.
pub fn cut_times(duration: f64, segment: f64) -> Vec<f64> {
    let lengths = piece_lengths(duration, segment);
    let mut at = 0.0;
    let mut times = Vec::with_capacity(lengths.len().saturating_sub(1));
    for length in &lengths[..lengths.len() - 1] {
        at += length;
        times.push(at);
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn a_short_tail_follows_equal_pieces() {
        let cases: &[(f64, f64, &[f64])] = &[
            (180.0, 30.0, &[30.0, 30.0, 30.0, 30.0, 30.0, 15.0, 7.5, 7.5]),
            (120.0, 15.0, &[15.0, 15.0, 15.0, 15.0, 15.0, 15.0, 15.0, 7.5, 7.5]),
            (60.0, 20.0, &[20.0, 20.0, 10.0, 5.0, 5.0]),
            // Quarters of 5 s segments would be too short: no tail.
            (40.0, 5.0, &[5.0; 8]),
            (24.0, 4.0, &[4.0; 6]),
            // The body is cut equally, none longer than a segment.
            (75.0, 20.0, &[18.333333333333332, 18.333333333333332, 18.333333333333332, 10.0, 5.0, 5.0]),
            // Too short for a tail and a whole segment before it.
            (35.0, 20.0, &[17.5, 17.5]),
            (25.0, 20.0, &[25.0]),
        ];
        for &(duration, segment, expected) in cases {
            let lengths = piece_lengths(duration, segment);
            assert!(close(&lengths, expected), "{duration} s in {segment} s segments: {lengths:?}");
            assert!((lengths.iter().sum::<f64>() - duration).abs() < 1e-9);
            assert!(lengths.iter().all(|&l| l <= segment + 1e-9 || lengths.len() == 1));
        }
    }

    #[test]
    fn cuts_are_the_ends_of_every_piece_but_the_last() {
        assert!(close(&cut_times(60.0, 20.0), &[20.0, 40.0, 50.0, 55.0]));
        assert!(close(&cut_times(40.0, 20.0), &[20.0, 30.0, 35.0]));
        assert!(cut_times(25.0, 20.0).is_empty());
        assert!(cut_times(f64::NAN, 20.0).is_empty());
    }
}
