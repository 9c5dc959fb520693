//! SRT: publishers (OBS, ffmpeg, hardware encoders) send MPEG-TS with H.264
//! and AAC to a participant's own SRT port, with its stream key as the SRT
//! stream id. [`listener`] takes the stream apart into the same plain
//! values an RTMP publisher's become ([`crate::model::ingest::IngestEvent`]),
//! so the media side has one publisher leg for both.
//!
//! libsrt comes through GStreamer's `srtsrc` (Debian's gstreamer1.0-plugins-bad):
//! it is SRT's reference implementation, and `srtsrc` already offers what a
//! listener needs here (the stream id at connection time, a passphrase,
//! listening again after a publisher leaves).

pub mod listener;

pub use listener::{SrtListener, SrtListenerConfig};
