//! The plain values that cross the adapter's boundary: media kinds, codecs and
//! what a peer reports ([`PeerEvent`]). No str0m type leaves this module tree.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Audio or video: the model's own, a plain value every adapter shares.
pub use crate::model::codec::MediaKind;

/// The video codecs Tutti negotiates with browsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    /// Constrained Baseline (42e01f), packetization-mode 1: what every browser
    /// decodes, and the profile Tutti's encoders make for RTP callers already.
    H264,
}

/// The audio codecs Tutti negotiates with browsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// 48 kHz, with in-band FEC (`useinbandfec=1`).
    Opus,
}

/// Any codec a frame can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Vp8,
    H264,
    Opus,
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Vp8 | Codec::H264 => MediaKind::Video,
            Codec::Opus => MediaKind::Audio,
        }
    }
}

impl From<VideoCodec> for Codec {
    fn from(codec: VideoCodec) -> Codec {
        match codec {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::H264 => Codec::H264,
        }
    }
}

impl From<AudioCodec> for Codec {
    fn from(codec: AudioCodec) -> Codec {
        match codec {
            AudioCodec::Opus => Codec::Opus,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Vp8 => "VP8",
            Codec::H264 => "H.264",
            Codec::Opus => "Opus",
        })
    }
}

/// What happens to a peer, reported from the socket task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media can flow. `peer` is the browser's address
    /// as the socket sees it.
    Connected { peer: SocketAddr },
    /// One frame (video) or packet (audio) from the browser, depacketized:
    /// a VP8 frame, an H.264 access unit as an Annex-B byte stream, or one
    /// Opus packet. `timestamp` is its RTP time, unwrapped, from the first
    /// frame of that kind. `contiguous` is false for the first frame after a
    /// loss NACK could not repair: a decoder may show damage until the next
    /// keyframe (already requested with a PLI). Video starts at a keyframe:
    /// delta frames before the first one are dropped, and one is requested.
    MediaIn {
        kind: MediaKind,
        codec: Codec,
        timestamp: Duration,
        keyframe: bool,
        contiguous: bool,
        data: Bytes,
    },
    /// The browser lost our video (PLI or FIR), or frames we were given had to
    /// be dropped: the next video frame written should be a keyframe.
    KeyframeRequested,
    /// How much we may send to this browser (str0m's bandwidth estimate).
    BandwidthEstimate { bps: u64 },
    /// The peer is gone and its state freed; nothing follows this event.
    Disconnected { reason: String },
}

/// Called from the socket task for every event of one peer, in order. It
/// must return quickly (hand the event to a channel): every peer of the
/// server waits while it runs.
pub type PeerHandler = Arc<dyn Fn(PeerEvent) + Send + Sync>;
