//! Fragmented MP4 I/O.
