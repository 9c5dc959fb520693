//! Legs: how a participant's media arrives and leaves. A leg decodes what
//! its caller sends into the participant's seat ([`super::seat`]) and takes
//! the seat's mix-minus and composite to the caller in its transport's
//! format; the mixer and the compositor never see which transport it is.
//! - [`rtp`]: plain RTP (or SRTP) with SDP, from the API or over SIP.
//! - [`publisher`]: a publisher (OBS, ffmpeg) sending H.264 and AAC with a
//!   stream key over RTMP or SRT; it is sent nothing back.
//! - [`webrtc`]: a browser guest, whose frames the WebRTC adapter
//!   ([`crate::webrtc`]) packetizes and depacketizes.

pub mod publisher;
pub mod rtp;
mod timeline;
pub mod webrtc;

use std::time::Duration;

use crate::model::codec::MediaKind;
use crate::model::h264::FrameSize;
use crate::model::sdp::Canvas;
use publisher::PublisherLeg;
use rtp::{ParticipantStats, RtpLeg};
use webrtc::WebRtcLeg;

pub enum Leg {
    Rtp(Box<RtpLeg>),
    Publisher(PublisherLeg),
    WebRtc(WebRtcLeg),
}

/// Which way a participant's media goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    FromCaller,
    ToCaller,
}

/// One way of one medium a leg carries: what the watchdogs watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub kind: MediaKind,
    pub way: Way,
}

impl Leg {
    /// The flows it was built to carry.
    pub fn flows(&self) -> Vec<Flow> {
        match self {
            Leg::Rtp(leg) => leg
                .media()
                .flat_map(|m| {
                    let (kind, direction) = (m.negotiated.kind(), m.negotiated.direction);
                    [(direction.receives(), Way::FromCaller), (direction.sends(), Way::ToCaller)]
                        .into_iter()
                        .filter_map(move |(carried, way)| carried.then_some(Flow { kind, way }))
                })
                .collect(),
            Leg::Publisher(leg) => {
                let kinds = if leg.takes_video() { &[MediaKind::Audio, MediaKind::Video][..] } else { &[MediaKind::Audio][..] };
                kinds.iter().map(|&kind| Flow { kind, way: Way::FromCaller }).collect()
            }
            Leg::WebRtc(leg) => leg.flows(),
        }
    }

    /// Packets (RTP) or frames (publishers) carried so far one way; only grows.
    pub fn count(&self, flow: Flow) -> u64 {
        match (self, flow.way) {
            (Leg::Rtp(leg), way) => leg.count(flow.kind, way),
            (Leg::Publisher(leg), Way::FromCaller) => leg.received(flow.kind),
            (Leg::Publisher(_), Way::ToCaller) => 0,
            (Leg::WebRtc(leg), way) => leg.count(flow.kind, way),
        }
    }

    /// Whether the caller was meant to send any media at all.
    pub fn expects_media(&self) -> bool {
        match self {
            Leg::Rtp(leg) => leg.expects_media(),
            Leg::Publisher(_) => true,
            Leg::WebRtc(leg) => leg.expects_media(),
        }
    }

    /// Time since the last packet or frame from the caller; `None` before the first.
    pub fn last_media_age(&self) -> Option<Duration> {
        match self {
            Leg::Rtp(leg) => leg.last_media_age(),
            Leg::Publisher(leg) => leg.last_media_age(),
            Leg::WebRtc(leg) => leg.last_media_age(),
        }
    }

    /// Whether it sends video (else its slate is its picture).
    pub fn sends_video(&self) -> bool {
        match self {
            Leg::Rtp(leg) => leg.sends_video(),
            Leg::Publisher(leg) => leg.takes_video(),
            Leg::WebRtc(leg) => leg.sends_video(),
        }
    }

    pub fn stats(&self) -> ParticipantStats {
        match self {
            Leg::Rtp(leg) => leg.stats(),
            Leg::Publisher(leg) => leg.stats(),
            Leg::WebRtc(leg) => leg.stats(),
        }
    }

    /// The size of composite the caller can decode, if smaller than `canvas`.
    pub fn composite_size(&self, canvas: Canvas) -> Option<FrameSize> {
        match self {
            Leg::Rtp(leg) => leg.composite_size(canvas),
            // Browsers decode the whole canvas.
            Leg::Publisher(_) | Leg::WebRtc(_) => None,
        }
    }
}
