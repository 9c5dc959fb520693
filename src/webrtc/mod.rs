//! WebRTC: browsers join compositions as guests (and later publish over WHIP
//! and watch over WHEP). This adapter only moves encoded frames between
//! browsers and Tutti; the media side decodes and encodes them.
//!
//! ```text
//!                       ┌──────────────── one tokio task ────────────────┐
//!  browser ◄─UDP─► one socket ─► demux ─► PeerSession (str0m Rtc) ×N     │
//!                       └──────────────────────┬────────────────▲────────┘
//!                             PeerEvent (handler)│                │ Peer: write_video/audio,
//!                    Connected, MediaIn{VP8|H.264|Opus}, ...      │ request_keyframe, close
//!                                                ▼                │
//!                                   engine / media (GStreamer appsrc, appsink)
//! ```
//!
//! Built on str0m, a sans-IO WebRTC stack: ICE-lite (we never probe, we only
//! answer the browser's checks at our one host candidate), DTLS-SRTP, RTCP
//! mux, NACK/RTX, PLI/FIR and TWCC bandwidth estimation. Plain values cross
//! the boundary ([`PeerEvent`], [`Peer`], [`PeerConfig`]); no str0m type
//! leaves this module.
//!
//! - Pure, tested in memory: [`offer`] (is it a WebRTC offer, what flows
//!   which way, which codecs), [`clock`] (RTP time to media time),
//!   [`outbox`] (the bounded queue writers feed), [`datagram`] and [`demux`]
//!   (which peer a datagram is for).
//! - str0m: `negotiate` (the answer), `session` (one peer's instance driven
//!   by input and time), [`server`] (the socket task).

pub mod clock;
pub mod config;
pub mod datagram;
pub mod demux;
pub mod media;
mod negotiate;
pub mod offer;
pub mod outbox;
pub mod peer;
pub mod server;
mod session;

pub use config::{DEFAULT_UDP_PORT, PeerConfig, WebRtcConfig};
pub use media::{AudioCodec, Codec, MediaKind, PeerEvent, PeerHandler, VideoCodec};
pub use offer::OfferError;
pub use peer::{KindStats, Peer, PeerId, PeerStats};
pub use server::{StartError, WebRtcServer};
