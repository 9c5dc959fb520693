//! What a user (or the engine) sets: the server's socket and limits
//! ([`WebRtcConfig`]), and what one peer exchanges ([`PeerConfig`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::media::VideoCodec;

/// The UDP port `--webrtc-udp` will default to: the one str0m's examples and
/// many WebRTC servers use, outside the ephemeral range.
pub const DEFAULT_UDP_PORT: u16 = 8189;
/// From the answer to a working ICE + DTLS connection. A browser on a working
/// path connects in well under a second; 15 s covers slow TURN-less retries
/// while freeing a peer whose browser went away before connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Peers one server takes at once: every peer costs a str0m instance (a few
/// hundred kB of buffers), and the socket task serves them all on one core.
pub const DEFAULT_MAX_PEERS: usize = 256;
/// Frames a peer's outbox holds between a writer (a GStreamer streaming
/// thread) and the socket task: about a second of 30 fps video with 20 ms
/// Opus packets. The task drains it in microseconds, so it only fills when
/// the task is stalled, and then dropping is better than blocking GStreamer.
pub const DEFAULT_OUTBOX_FRAMES: usize = 128;

/// The server: one UDP socket shared by every peer.
#[derive(Clone, Debug)]
pub struct WebRtcConfig {
    /// Where the socket binds, e.g. `0.0.0.0:8189`.
    pub bind: SocketAddr,
    /// The address browsers reach us at, announced as the only ICE candidate
    /// (ICE-lite: we never probe, the browser does). Its port is the bound
    /// port unless `advertised` says otherwise.
    pub public_ip: IpAddr,
    /// Announce this address instead of `public_ip` and the bound port: a
    /// 1:1 NAT or port forward, or a test relay standing in front of us.
    pub advertised: Option<SocketAddr>,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_MAX_PEERS`].
    pub max_peers: usize,
    /// See [`DEFAULT_OUTBOX_FRAMES`].
    pub outbox_frames: usize,
}

impl WebRtcConfig {
    pub fn new(bind: SocketAddr, public_ip: IpAddr) -> Self {
        WebRtcConfig {
            bind,
            public_ip,
            advertised: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_peers: DEFAULT_MAX_PEERS,
            outbox_frames: DEFAULT_OUTBOX_FRAMES,
        }
    }
}

/// What Tutti exchanges with one peer, each direction of each kind on its own:
/// a guest sends and receives both, a WHIP publisher only sends to us, a WHEP
/// viewer only receives from us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub receive_audio: bool,
    pub receive_video: bool,
    pub send_audio: bool,
    pub send_video: bool,
    /// The video codecs we take, most preferred first. Only these are
    /// negotiated; the first one the offer also has is the one we send.
    pub video_codecs: Vec<VideoCodec>,
    /// What the video we send targets, kbit/s: the bandwidth estimator
    /// probes for room above it. `None`: a 720p composite's 2.5 Mbit/s.
    pub video_bitrate_kbps: Option<u32>,
}

impl PeerConfig {
    /// Both directions of audio and video: a guest in a composition.
    pub fn guest() -> Self {
        PeerConfig {
            receive_audio: true,
            receive_video: true,
            send_audio: true,
            send_video: true,
            video_codecs: vec![VideoCodec::Vp8, VideoCodec::H264],
            video_bitrate_kbps: None,
        }
    }

    /// Only what the browser sends: a WHIP publisher.
    pub fn publisher() -> Self {
        PeerConfig {
            send_audio: false,
            send_video: false,
            ..PeerConfig::guest()
        }
    }

    /// Only what we send: a WHEP viewer.
    pub fn viewer() -> Self {
        PeerConfig {
            receive_audio: false,
            receive_video: false,
            ..PeerConfig::guest()
        }
    }

    pub fn with_video_codecs(mut self, codecs: &[VideoCodec]) -> Self {
        self.video_codecs = codecs.to_vec();
        self
    }

    pub fn with_video_bitrate_kbps(mut self, kbps: u32) -> Self {
        self.video_bitrate_kbps = Some(kbps);
        self
    }
}
