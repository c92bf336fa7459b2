//! How many messages the intake may take in one receive: the rule, without I/O.
//!
//! A worker has `MEDIA_CONCURRENCY` transcode slots and `MEDIA_PREFETCH` more job permits: a
//! job taken ahead downloads and probes while the others transcode. A split job's segment is
//! different: every worker can encode any of them, so one taken ahead of a free slot only waits
//! there while another worker runs out of them at the job's end. So a receive never takes more
//! than the slots free now, one more ahead only while the worker holds no segment, and nothing
//! at all while it holds a segment and no slot is free: it then waits for a slot.

use crate::queue::MAX_BATCH;

/// How many messages the next receive may take, given the free job permits, the free
/// transcode slots and the segments the worker holds.
pub fn receive_limit(free_permits: usize, free_slots: usize, segments_in_hand: usize) -> usize {
    let ahead = usize::from(free_slots == 0 && segments_in_hand == 0);
    free_permits.min(free_slots.max(ahead)).min(MAX_BATCH)
}

/// Whether the intake must wait for a transcode slot before its next receive: it has permits
/// to spare, but holds a segment and no slot is free.
pub fn waits_for_slot(free_slots: usize, segments_in_hand: usize) -> bool {
    free_slots == 0 && segments_in_hand > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_takes_no_more_than_the_free_slots_and_one_ahead_only_without_a_segment() {
        // (free permits, free slots, segments in hand) -> limit, waits for a slot
        let cases = [
            ((2, 1, 0), 1, false), // idle, concurrency 1, prefetch 1: one now
            ((1, 0, 0), 1, false), // a job transcoding: one job ahead
            ((1, 0, 1), 0, true),  // a segment transcoding: nothing ahead, wait for its slot
            ((2, 1, 1), 1, false), // a segment uploading, its slot free: the next one starts
            ((3, 2, 0), 2, false), // concurrency 2: as many as slots
            ((0, 0, 0), 0, false), // no permit: nothing (the loop waits for one)
            ((20, 16, 0), MAX_BATCH, false),
        ];
        for ((permits, slots, in_hand), limit, waits) in cases {
            assert_eq!(receive_limit(permits, slots, in_hand), limit, "{permits} {slots} {in_hand}");
            assert_eq!(waits_for_slot(slots, in_hand), waits, "{slots} {in_hand}");
        }
    }
}
