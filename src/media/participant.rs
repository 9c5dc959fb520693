//! One caller's share of a composition pipeline: its RTP session (rtpbin),
//! its receive chains (depayload, decode) and its send chains (mix-minus
//! encode, composite payload), plus the statistics the API shows.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{MediaError, make};
use crate::model::codec::{AudioCodec, Codec, MediaKind, VideoCodec};
use crate::model::ids::ParticipantId;
use crate::model::sdp::NegotiatedMedia;
use crate::ports::PortLease;

/// rtpbin session numbers: fixed per medium so pad names say what they carry.
pub const AUDIO_SESSION: u32 = 0;
pub const VIDEO_SESSION: u32 = 1;

pub fn session_for(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => AUDIO_SESSION,
        MediaKind::Video => VIDEO_SESSION,
    }
}

/// A caller's elements and what is needed to report on them.
pub struct ParticipantMedia {
    pub id: ParticipantId,
    pub rtpbin: gst::Element,
    pub elements: Vec<gst::Element>,
    /// Where this caller shows on the canvas (its picture, or its slate).
    pub cell: Option<CellLink>,
    /// The composite's encoder this caller is fed from.
    pub video_encoder: Option<VideoCodec>,
    pub audio: Option<MediumState>,
    pub video: Option<MediumState>,
    pub _leases: Vec<PortLease>,
}

/// A caller's place in the compositor: the pad, and the capsfilter that
/// sets the size its picture is scaled to.
pub struct CellLink {
    pub pad: gst::Pad,
    pub size: gst::Element,
}

/// Per-medium facts: what was negotiated, and when media last arrived.
pub struct MediumState {
    pub negotiated: NegotiatedMedia,
    /// Milliseconds since the Unix epoch of the last RTP packet that left
    /// the jitter buffer; 0 before the first one. Written from a pad probe.
    pub last_packet_ms: Arc<AtomicU64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MediumStats {
    pub codec: String,
    pub payload_type: u8,
    pub direction: &'static str,
    pub packets_received: u64,
    pub packets_lost: i64,
    pub jitter_ms: f64,
    pub bitrate_kbps: f64,
    /// RFC 3339 time of the last packet received, if any.
    pub last_packet_at: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ParticipantStats {
    pub audio: Option<MediumStats>,
    pub video: Option<MediumStats>,
}

impl ParticipantMedia {
    pub fn stats(&self) -> ParticipantStats {
        ParticipantStats {
            audio: self.audio.as_ref().map(|m| self.medium_stats(m)),
            video: self.video.as_ref().map(|m| self.medium_stats(m)),
        }
    }

    /// Time since the last packet on any medium this caller sends us;
    /// `None` if it sends nothing or nothing has arrived yet.
    pub fn last_media_age(&self) -> Option<Duration> {
        [&self.audio, &self.video]
            .into_iter()
            .flatten()
            .filter_map(|m| last_packet_time(&m.last_packet_ms))
            .max()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    /// Whether this caller was negotiated to send us any media at all.
    pub fn expects_media(&self) -> bool {
        [&self.audio, &self.video].into_iter().flatten().any(|m| m.negotiated.direction.receives())
    }

    fn medium_stats(&self, medium: &MediumState) -> MediumStats {
        let n = &medium.negotiated;
        let mut stats = MediumStats {
            codec: n.codec.to_string(),
            payload_type: n.payload_type,
            direction: n.direction.as_attribute(),
            packets_received: 0,
            packets_lost: 0,
            jitter_ms: 0.0,
            bitrate_kbps: 0.0,
            last_packet_at: last_packet_time(&medium.last_packet_ms).map(|t| {
                time::OffsetDateTime::from(t)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            }),
        };
        let session = self.rtpbin.emit_by_name::<Option<glib::Object>>("get-session", &[&session_for(n.kind())]);
        let Some(session) = session else { return stats };
        let all: gst::Structure = session.property("stats");
        let Ok(sources) = all.get::<glib::ValueArray>("source-stats") else { return stats };
        // Sum over the caller's remote senders (more than one if it changed SSRC).
        for source in sources.iter().filter_map(|v| v.get::<gst::Structure>().ok()) {
            let remote_sender = source.get::<bool>("internal") == Ok(false) && source.get::<bool>("is-sender") == Ok(true);
            if !remote_sender {
                continue;
            }
            stats.packets_received += source.get::<u64>("packets-received").unwrap_or(0);
            stats.packets_lost += i64::from(source.get::<i32>("packets-lost").unwrap_or(0));
            let clock_rate = f64::from(n.codec.clock_rate());
            stats.jitter_ms = stats.jitter_ms.max(f64::from(source.get::<u32>("jitter").unwrap_or(0)) * 1000.0 / clock_rate);
            stats.bitrate_kbps += source.get::<u64>("bitrate").unwrap_or(0) as f64 / 1000.0;
        }
        stats
    }
}

fn last_packet_time(last_packet_ms: &AtomicU64) -> Option<SystemTime> {
    match last_packet_ms.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

pub fn mark_packet(last_packet_ms: &AtomicU64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    last_packet_ms.store(now.as_millis() as u64, Ordering::Relaxed);
}

/// RTP caps for rtpbin's receive side (what `request-pt-map` would return).
/// For video, the `rtcp-fb-*` fields are what makes rtpsession turn a
/// decoder's keyframe request into a PLI (or a FIR, if the caller offered
/// `ccm fir`). PLI goes even to callers that did not declare it: a device
/// that does not understand it ignores it, and most room systems do.
pub fn rtp_caps(negotiated: &NegotiatedMedia) -> gst::Caps {
    let codec = negotiated.codec;
    let media = codec.kind().to_string();
    let mut caps = gst::Caps::builder("application/x-rtp")
        .field("media", media.as_str())
        .field("clock-rate", codec.clock_rate() as i32)
        .field("encoding-name", codec.encoding_name())
        .field("payload", i32::from(negotiated.payload_type));
    if let Codec::Video(video) = codec {
        caps = caps.field("rtcp-fb-nack-pli", true);
        if negotiated.feedback.iter().any(|fb| fb == "ccm fir") {
            caps = caps.field("rtcp-fb-ccm-fir", true);
        }
        if let VideoCodec::H264 { packetization_mode } = video {
            caps = caps.field("packetization-mode", packetization_mode.to_string());
        }
    }
    caps.build()
}

pub fn depayloader(codec: Codec, name: &str) -> Result<gst::Element, MediaError> {
    let factory = match codec {
        Codec::Audio(AudioCodec::Opus { .. }) => "rtpopusdepay",
        Codec::Audio(AudioCodec::Pcmu) => "rtppcmudepay",
        Codec::Audio(AudioCodec::Pcma) => "rtppcmadepay",
        Codec::Audio(AudioCodec::G722) => "rtpg722depay",
        Codec::Video(VideoCodec::H264 { .. }) => "rtph264depay",
        Codec::Video(VideoCodec::Vp8) => "rtpvp8depay",
    };
    let depay = make(factory, name)?;
    // Ask the caller for a keyframe (PLI) as soon as a packet is lost, and
    // show nothing broken meanwhile: the composite heals at the next keyframe.
    for flag in ["request-keyframe", "wait-for-keyframe"] {
        if depay.find_property(flag).is_some() {
            depay.set_property(flag, true);
        }
    }
    Ok(depay)
}

/// Path MTU budget for RTP payloads: leaves room for IP/UDP/RTP headers and
/// the tunnels room systems often sit behind.
const RTP_MTU: u32 = 1200;

pub fn payloader(codec: Codec, payload_type: u8, name: &str) -> Result<gst::Element, MediaError> {
    let factory = match codec {
        Codec::Audio(AudioCodec::Opus { .. }) => "rtpopuspay",
        Codec::Audio(AudioCodec::Pcmu) => "rtppcmupay",
        Codec::Audio(AudioCodec::Pcma) => "rtppcmapay",
        Codec::Audio(AudioCodec::G722) => "rtpg722pay",
        Codec::Video(VideoCodec::H264 { .. }) => "rtph264pay",
        Codec::Video(VideoCodec::Vp8) => "rtpvp8pay",
    };
    let pay = make(factory, name)?;
    pay.set_property("pt", u32::from(payload_type));
    pay.set_property("mtu", RTP_MTU);
    if let Codec::Video(VideoCodec::H264 { packetization_mode }) = codec {
        // SPS/PPS come in-band before every IDR from the shared encoder's
        // h264parse. STAP-A aggregation exists only in packetization mode 1.
        if packetization_mode == 1 {
            pay.set_property_from_str("aggregate-mode", "zero-latency");
        }
    }
    if let Codec::Video(VideoCodec::Vp8) = codec {
        pay.set_property_from_str("picture-id-mode", "15-bit");
    }
    Ok(pay)
}
