//! DASH MPD.
