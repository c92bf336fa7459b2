//! HLS playlists.
