//! The RTP leg: a caller that speaks RTP with SDP (a SIP endpoint, or any
//! caller whose offer came through the API). Its RTP session (rtpbin), its
//! receive chains (depayload, decode, handed to the seat) and its send
//! chains (mix-minus encode, composite payload), plus the statistics the
//! API shows.
//!
//! ```text
//!  udpsrc ─► source check ─► rtpbin ─► funnel ─► depay ─► decoder ─► seat (picture)
//!                                  └► funnel ─► depay ─► decoder ─► seat (into the mix)
//!  seat (mix-minus) ─► convert ─► resample ─► encoder ─► pay ─► rtpbin ─► udpsink
//!  seat [composite] (from a shared encoder) ─────────────► pay ─► rtpbin ─► udpsink
//! ```
//! An SRTP caller's media is decrypted inside rtpbin and encrypted after it
//! ([`crate::media::srtp`]).

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use serde::Serialize;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::media::flow::{FlowCounter, Measure, count_on};
use crate::media::mixer;
use crate::media::opus::ShareKey;
use crate::media::part::{add_chain, request_keyframe_upstream, stamp_earlier};
use crate::media::profiles::Profiles;
use crate::media::seat::SeatBuilder;
use crate::media::source_guard::{ReceiveGuard, Routing, guard_socket};
use crate::media::srtp::{self, Packets, SrtpSession};
use crate::media::{MediaError, make};
use crate::model::codec::{AudioCodec, Codec, MediaKind, VideoCodec};
use crate::model::dtmf::{self, KeyReceiver};
use crate::model::ids::ParticipantId;
use crate::model::h264::FrameSize;
use crate::model::sdp::{Canvas, NegotiatedMedia};
use crate::model::source_check::{Channel, SourceCheck, SourceCheckMode};
use crate::ports::{PortLease, PortPair};

/// rtpbin session numbers: fixed per medium so pad names say what they carry.
pub const AUDIO_SESSION: u32 = 0;
pub const VIDEO_SESSION: u32 = 1;
/// The shortest interval between RTCP reports (see `report_often`).
const RTCP_MIN_INTERVAL: Duration = Duration::from_millis(500);

pub fn session_for(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => AUDIO_SESSION,
        MediaKind::Video => VIDEO_SESSION,
    }
}

/// A caller's negotiated medium with the sockets Tutti answered with.
pub struct JoiningMedium {
    pub negotiated: NegotiatedMedia,
    pub ports: PortPair,
}

/// What an RTP leg needs from its composition.
pub struct RtpContext {
    pub jitter_buffer: Duration,
    pub source_check: SourceCheckMode,
    /// Told each DTMF key the caller sends as RFC 4733 `telephone-event`.
    pub on_key: KeyHandler,
}

/// Called with each key a caller presses, from its socket's thread.
pub type KeyHandler = Arc<dyn Fn(char) + Send + Sync>;

/// A caller's RTP session, its sockets and what is needed to report on it.
pub struct RtpLeg {
    id: ParticipantId,
    bin: gst::Bin,
    rtpbin: gst::Element,
    pub audio: Option<MediumState>,
    pub video: Option<MediumState>,
    /// How its sockets check senders, again when a re-offer moves the caller.
    source_check: SourceCheckMode,
    /// Asks for a keyframe of the composite it is sent (after a hold).
    composite_in: Option<gst::Pad>,
    _leases: Vec<PortLease>,
}

/// Per-medium facts: what was negotiated, and what flows each way.
pub struct MediumState {
    pub negotiated: NegotiatedMedia,
    /// The source check on its sockets, with what it accepted and rejected.
    pub guard: Arc<ReceiveGuard>,
    /// RTP packets from the caller that left the jitter buffer.
    pub received: Arc<FlowCounter>,
    /// RTP packets Tutti sent to the caller.
    pub sent: Arc<FlowCounter>,
    /// Their bytes, RTP headers included.
    pub sent_bytes: Arc<FlowCounter>,
    /// Its SRTP elements, on an encrypted m-line.
    pub srtp: Option<SrtpSession>,
    /// Whether what the send chain makes goes out: a caller that puts the
    /// call on hold gets nothing, without its chain being torn down.
    sending: Arc<AtomicBool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MediumStats {
    /// `h264`, `vp8`, `opus`, `pcmu`, `pcma` or `g722`.
    pub codec: &'static str,
    /// H.264 only: 0 or 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packetization_mode: Option<u8>,
    /// Opus only: whether Tutti sends the caller stereo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stereo: Option<bool>,
    /// RTP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_type: Option<u8>,
    pub direction: &'static str,
    /// RTP packets taken as the caller's (after the source check); only grows.
    pub packets_received: u64,
    /// Their bytes, RTP headers included.
    pub bytes_received: u64,
    pub packets_lost: u64,
    /// Datagrams at the caller's ports that the source check dropped.
    pub packets_rejected: u64,
    /// SRTP only: the suite, e.g. `AES_CM_128_HMAC_SHA1_80`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtp_suite: Option<&'static str>,
    /// SRTP only: packets past the source check that failed SRTP
    /// authentication (plain RTP, a wrong key, garbage) or replay
    /// protection, and were dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_unauthenticated: Option<u64>,
    pub jitter_ms: f64,
    pub bitrate_kbps: f64,
    /// RFC 3339 time of the last packet received, if any.
    pub last_packet_at: Option<String>,
    /// RTP packets Tutti sent to the caller (its mix-minus, or the composite).
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// RFC 3339 time of the last packet sent, if any.
    pub last_sent_at: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ParticipantStats {
    pub audio: Option<MediumStats>,
    pub video: Option<MediumStats>,
    /// A WebRTC guest only: NACKs, retransmissions, keyframe requests, bandwidth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webrtc: Option<super::webrtc::WebRtcStats>,
}

impl RtpLeg {
    /// Builds a caller's RTP leg in its bin `caller-{id}`, handing its
    /// decoded media to `seat` and taking its mix-minus and composite from it.
    pub fn build(
        bin: &gst::Bin,
        id: &ParticipantId,
        seat: &mut SeatBuilder,
        (audio, video): (Option<JoiningMedium>, Option<JoiningMedium>),
        profiles: &Profiles,
        context: &RtpContext,
    ) -> Result<RtpLeg, MediaError> {
        let prefix = bin.name();
        let n = |role: &str| format!("{prefix}-{role}");
        let rtpbin = make("rtpbin", &n("rtpbin"))?;
        rtpbin.set_property("latency", context.jitter_buffer.as_millis() as u32);
        // AVPF timing lets a PLI leave at once rather than at the next regular RTCP report.
        rtpbin.set_property_from_str("rtp-profile", "avpf");
        rtpbin.set_property("do-lost", true);
        bin.add(&rtpbin)?;

        let mut leg = RtpLeg {
            id: id.clone(),
            bin: bin.clone(),
            rtpbin: rtpbin.clone(),
            audio: None,
            video: None,
            source_check: context.source_check,
            composite_in: None,
            _leases: Vec::new(),
        };
        let mut funnels: [Option<gst::Element>; 2] = [None, None];
        let srtp_session = |medium: &Option<JoiningMedium>, tag: &str| {
            let keys = medium.as_ref().and_then(|m| m.negotiated.srtp.as_ref());
            keys.map(|keys| SrtpSession::build(keys, bin, &n(tag))).transpose()
        };
        let mut audio_srtp = srtp_session(&audio, "a")?;
        let mut video_srtp = srtp_session(&video, "v")?;
        if audio_srtp.is_some() || video_srtp.is_some() {
            srtp::attach_decoders(&rtpbin, [audio_srtp.as_ref(), video_srtp.as_ref()]);
        }

        for medium in [audio, video].into_iter().flatten() {
            let JoiningMedium { negotiated, ports } = medium;
            let kind = negotiated.kind();
            let session = session_for(kind);
            let tag = match kind {
                MediaKind::Audio => "a",
                MediaKind::Video => "v",
            };
            let rtp_socket = gio_socket(ports.rtp.into())?;
            let rtcp_socket = if negotiated.rtcp_mux { rtp_socket.clone() } else { gio_socket(ports.rtcp.into())? };
            leg._leases.push(ports.lease);
            let check = SourceCheck::new(context.source_check, negotiated.remote_rtp.ip(), negotiated.remote_rtcp.ip(), &accepted_types(&negotiated));
            let guard = Arc::new(ReceiveGuard::new(check));
            let srtp = match kind {
                MediaKind::Audio => audio_srtp.take(),
                MediaKind::Video => video_srtp.take(),
            };
            let sending = Arc::new(AtomicBool::new(negotiated.direction.sends()));
            let state = MediumState {
                negotiated,
                guard,
                received: Arc::default(),
                sent: Arc::default(),
                sent_bytes: Arc::default(),
                srtp,
                sending,
            };
            let negotiated = &state.negotiated;

            // Receive: RTP (and muxed RTCP) on the RTP socket, RTCP on its own;
            // each socket behind the source check.
            let receives = negotiated.direction.receives();
            let mut rtp_in_caps = rtp_caps(negotiated);
            let mut rtcp_caps = gst::Caps::new_empty_simple("application/x-rtcp");
            if state.srtp.is_some() {
                // What srtpdec takes; it hands rtpbin the same caps as plain RTP(C)P.
                rtp_in_caps.make_mut().structure_mut(0).expect("RTP caps have a structure").set_name("application/x-srtp");
                rtcp_caps = gst::Caps::new_empty_simple("application/x-srtcp");
            }
            let rtcp_in = if receives || negotiated.rtcp_mux {
                let src = udp_source(&n(&format!("{tag}rtp-in")), &rtp_socket, &rtp_in_caps)?;
                bin.add(&src)?;
                link_to_request(&src, &rtpbin, &format!("recv_rtp_sink_{session}"))?;
                if negotiated.rtcp_mux {
                    let appsrc = make("appsrc", &n(&format!("{tag}rtcp-demux")))?;
                    appsrc.set_property("caps", &rtcp_caps);
                    appsrc.set_property("is-live", true);
                    appsrc.set_property("do-timestamp", true);
                    appsrc.set_property_from_str("format", "time");
                    let rtcp_to = appsrc.clone().downcast::<gstreamer_app::AppSrc>().expect("appsrc element is an AppSrc");
                    let routing = Routing { channel: Channel::Muxed, keep_rtp: receives, rtcp_to: Some(rtcp_to) };
                    guard_socket(&src, state.guard.clone(), routing);
                    listen_for_keys(&src, state.srtp.as_ref(), negotiated, &context.on_key);
                    appsrc
                } else {
                    guard_socket(&src, state.guard.clone(), Routing { channel: Channel::Rtp, keep_rtp: true, rtcp_to: None });
                    listen_for_keys(&src, state.srtp.as_ref(), negotiated, &context.on_key);
                    udp_source(&n(&format!("{tag}rtcp-in")), &rtcp_socket, &rtcp_caps)?
                }
            } else {
                udp_source(&n(&format!("{tag}rtcp-in")), &rtcp_socket, &rtcp_caps)?
            };
            if !negotiated.rtcp_mux {
                guard_socket(&rtcp_in, state.guard.clone(), Routing { channel: Channel::Rtcp, keep_rtp: false, rtcp_to: None });
            }
            bin.add(&rtcp_in)?;
            link_to_request(&rtcp_in, &rtpbin, &format!("recv_rtcp_sink_{session}"))?;

            if receives {
                let funnel = make("funnel", &n(&format!("{tag}funnel")))?;
                let depay = depayloader(negotiated.codec, &n(&format!("{tag}depay")))?;
                funnels[session as usize] = Some(funnel.clone());
                match negotiated.codec {
                    Codec::Video(codec) => {
                        let decoder = profiles.video_decoder(codec, &n("vdec"))?.upcast::<gst::Element>();
                        add_chain(bin, &[&funnel, &depay, &decoder])?;
                        seat.video_from(&decoder)?;
                    }
                    Codec::Audio(codec) => {
                        let decoder = profiles.audio_decoder(codec, &n("adec"))?.upcast::<gst::Element>();
                        add_chain(bin, &[&funnel, &depay, &decoder])?;
                        seat.audio_from(&decoder)?;
                    }
                }
            }

            // Send: the composite or the mix-minus, to the offer's address.
            if negotiated.direction.sends() {
                let pay = payloader(negotiated.codec, negotiated.payload_type, &n(&format!("{tag}pay")))?;
                match negotiated.codec {
                    Codec::Video(codec) => {
                        bin.add(&pay)?;
                        leg.composite_in = Some(seat.composite_to(codec, &pay)?);
                    }
                    Codec::Audio(codec) => {
                        let mut chain = encoded_mix_minus(seat, profiles, codec, &n(""))?;
                        chain.push(pay.clone());
                        add_chain(bin, &chain.iter().collect::<Vec<_>>())?;
                    }
                }
                gate(&pay, state.sending.clone());
                if kind == MediaKind::Video {
                    gate(&pay, seat.admitted());
                }
                link_to_request(&pay, &rtpbin, &format!("send_rtp_sink_{session}"))?;
                let sink = udp_sink(&n(&format!("{tag}rtp-out")), &rtp_socket, negotiated.remote_rtp)?;
                bin.add(&sink)?;
                let sink_pad = sink.static_pad("sink").expect("udpsink has a sink pad");
                count_on(&sink_pad, state.sent.clone(), Measure::Buffers);
                count_on(&sink_pad, state.sent_bytes.clone(), Measure::Bytes);
                let rtp_out = rtpbin
                    .static_pad(&format!("send_rtp_src_{session}"))
                    .ok_or_else(|| MediaError::Gst(format!("rtpbin has no send_rtp_src_{session}")))?;
                encrypted(state.srtp.as_ref(), rtp_out, Packets::Rtp, session)?.link(&sink_pad)?;
            }

            let rtcp_out = udp_sink(&n(&format!("{tag}rtcp-out")), &rtcp_socket, negotiated.remote_rtcp)?;
            bin.add(&rtcp_out)?;
            let rtcp_from_rtpbin = rtpbin
                .request_pad_simple(&format!("send_rtcp_src_{session}"))
                .ok_or_else(|| MediaError::Gst(format!("rtpbin refused send_rtcp_src_{session}")))?;
            encrypted(state.srtp.as_ref(), rtcp_from_rtpbin, Packets::Rtcp, session)?
                .link(&rtcp_out.static_pad("sink").expect("udpsink has a sink pad"))?;
            report_often(&rtpbin, session);

            match kind {
                MediaKind::Audio => leg.audio = Some(state),
                MediaKind::Video => leg.video = Some(state),
            }
        }

        route_incoming_streams(&rtpbin, funnels, [&leg.audio, &leg.video].map(|m| m.as_ref().map(|m| m.received.clone())));
        Ok(leg)
    }

    pub fn stats(&self) -> ParticipantStats {
        ParticipantStats {
            audio: self.audio.as_ref().map(|m| self.medium_stats(m)),
            video: self.video.as_ref().map(|m| self.medium_stats(m)),
            webrtc: None,
        }
    }

    /// RTP packets carried one way on `kind` so far.
    pub fn count(&self, kind: MediaKind, way: super::Way) -> u64 {
        let medium = match kind {
            MediaKind::Audio => self.audio.as_ref(),
            MediaKind::Video => self.video.as_ref(),
        };
        medium.map_or(0, |m| match way {
            super::Way::FromCaller => m.received.count(),
            super::Way::ToCaller => m.sent.count(),
        })
    }

    /// Time since the last packet on any medium this caller sends us;
    /// `None` if it sends nothing or nothing has arrived yet.
    pub fn last_media_age(&self) -> Option<Duration> {
        [&self.audio, &self.video]
            .into_iter()
            .flatten()
            .filter_map(|m| m.received.last())
            .max()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    /// Whether this caller was negotiated to send us any media at all.
    pub fn expects_media(&self) -> bool {
        self.media().any(|m| m.negotiated.direction.receives())
    }

    /// Whether it sends us video (else its slate is its picture).
    pub fn sends_video(&self) -> bool {
        self.video.as_ref().is_some_and(|v| v.negotiated.direction.receives())
    }

    /// Its negotiated media.
    pub fn media(&self) -> impl Iterator<Item = &MediumState> {
        [&self.audio, &self.video].into_iter().flatten()
    }

    /// The size of composite the caller can decode, if smaller than
    /// `canvas` (see [`NegotiatedMedia::return_size`]).
    pub fn composite_size(&self, canvas: Canvas) -> Option<FrameSize> {
        self.video.as_ref().and_then(|v| v.negotiated.return_size(canvas))
    }

    /// Follows a re-offer on one medium, which the model checked against
    /// what this leg was built for: where Tutti sends, and whether it sends.
    /// An unspecified address (`c=0.0.0.0`, a hold) keeps the last one.
    pub fn follow(&mut self, mut next: NegotiatedMedia) {
        let kind = next.kind();
        let (tag, medium) = match kind {
            MediaKind::Audio => ("a", self.audio.as_mut()),
            MediaKind::Video => ("v", self.video.as_mut()),
        };
        let Some(medium) = medium else { return };
        if next.remote_rtp.ip().is_unspecified() {
            next.remote_rtp = medium.negotiated.remote_rtp;
            next.remote_rtcp = medium.negotiated.remote_rtcp;
        }
        let moved = (next.remote_rtp, next.remote_rtcp) != (medium.negotiated.remote_rtp, medium.negotiated.remote_rtcp);
        if moved {
            for (role, to) in [("rtp-out", next.remote_rtp), ("rtcp-out", next.remote_rtcp)] {
                if let Some(sink) = self.bin.by_name(&format!("caller-{}-{tag}{role}", self.id)) {
                    // udpsink swaps its one destination under its own lock, live.
                    sink.set_property("host", to.ip().to_string());
                    sink.set_property("port", i32::from(to.port()));
                }
            }
            let check = SourceCheck::new(self.source_check, next.remote_rtp.ip(), next.remote_rtcp.ip(), &accepted_types(&next));
            medium.guard.follow(check);
        }
        let sent_before = medium.sending.swap(next.direction.sends(), Ordering::SeqCst);
        let resumes = next.direction.sends() && !sent_before;
        tracing::debug!(participant = %self.id, %kind, sends = next.direction.sends(), moved, to = %next.remote_rtp, "caller media follows a re-offer");
        medium.negotiated = next;
        if resumes
            && kind == MediaKind::Video
            && let Some(pad) = &self.composite_in
        {
            // What it gets first after a hold must be decodable on its own.
            request_keyframe_upstream(pad);
        }
    }

    fn medium_stats(&self, medium: &MediumState) -> MediumStats {
        let n = &medium.negotiated;
        let mut stats = MediumStats {
            codec: n.codec.name(),
            packetization_mode: match n.codec {
                Codec::Video(VideoCodec::H264 { packetization_mode }) => Some(packetization_mode),
                _ => None,
            },
            stereo: match n.codec {
                Codec::Audio(AudioCodec::Opus { stereo }) => Some(stereo),
                _ => None,
            },
            payload_type: Some(n.payload_type),
            direction: n.direction.as_attribute(),
            packets_received: medium.guard.accepted.count(),
            bytes_received: medium.guard.accepted_bytes.count(),
            packets_lost: 0,
            packets_rejected: medium.guard.rejected.count(),
            srtp_suite: medium.srtp.as_ref().map(|s| s.suite.name()),
            packets_unauthenticated: medium.srtp.as_ref().map(SrtpSession::dropped_packets),
            jitter_ms: 0.0,
            bitrate_kbps: 0.0,
            last_packet_at: medium.received.last().map(rfc3339),
            packets_sent: medium.sent.count(),
            bytes_sent: medium.sent_bytes.count(),
            last_sent_at: medium.sent.last().map(rfc3339),
        };
        let session = self.rtpbin.emit_by_name::<Option<glib::Object>>("get-session", &[&session_for(n.kind())]);
        let Some(session) = session else { return stats };
        let all: gst::Structure = session.property("stats");
        let Ok(sources) = all.get::<glib::ValueArray>("source-stats") else { return stats };
        // Sum over the caller's sources (more than one if it changed SSRC).
        // Not filtered on `is-sender`, which turns false after a sender
        // timeout and would make the sums jump down.
        for source in sources.iter().filter_map(|v| v.get::<gst::Structure>().ok()) {
            if source.get::<bool>("internal") != Ok(false) {
                continue;
            }
            // RFC 3550 6.4.1's cumulative loss is expected minus received,
            // which duplicates (and the first packet's sequence bookkeeping)
            // make negative; a count of lost packets cannot be.
            stats.packets_lost += u64::try_from(source.get::<i32>("packets-lost").unwrap_or(0)).unwrap_or(0);
            let clock_rate = f64::from(n.codec.clock_rate());
            stats.jitter_ms = stats.jitter_ms.max(f64::from(source.get::<u32>("jitter").unwrap_or(0)) * 1000.0 / clock_rate);
            if source.get::<bool>("is-sender") == Ok(true) {
                stats.bitrate_kbps += source.get::<u64>("bitrate").unwrap_or(0) as f64 / 1000.0;
            }
        }
        stats
    }
}

/// `t` as the API shows times.
pub(super) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// RTCP reports about every half second (RFC 3550 spreads each interval
/// over 0.5-1.5 times it) rather than every 5 s: a caller lines our audio up
/// with our video only once it has had a sender report for each, which took
/// 5-10 s after a join. And in between, a jitter buffer that follows a step
/// in our audio's timing (a joining caller's picture settling into its
/// slot moves its sound by a frame) drifts from the last report: GStreamer's
/// followed a 33 ms step over about 2.5 s, so that a return stream read up
/// to +17 ms with a report every second (`bench/latency.py`'s lip sync),
/// and up to +12 ms with one every half second. RFC 3550 §6.2 allows a
/// shorter minimum at this bandwidth, and AVPF drops the minimum.
fn report_often(rtpbin: &gst::Element, session: u32) {
    let internal = rtpbin.emit_by_name::<Option<glib::Object>>("get-internal-session", &[&session]);
    if let Some(internal) = internal {
        internal.set_property("rtcp-min-interval", RTCP_MIN_INTERVAL.as_nanos() as u64);
    }
}

/// The participant's mix-minus, encoded in `codec`: its live source, then
/// convert, resample and the encoder, for the leg to link in order and
/// put its payloader or sink after. Callers whose encoders share a key
/// share one encode while they are silent (see [`ShareKey`]).
pub(super) fn encoded_mix_minus(seat: &SeatBuilder, profiles: &Profiles, codec: AudioCodec, prefix: &str) -> Result<Vec<gst::Element>, MediaError> {
    let encode = audio_encode_chain(profiles, codec, prefix)?;
    let encoder = encode.last().and_then(|e| e.downcast_ref::<gst::Bin>());
    let share = encoder.and_then(|bin| ShareKey::of(bin, codec.raw_format().1, mixer::BLOCK));
    let mut chain = vec![seat.mix_minus(share)?];
    chain.extend(encode);
    Ok(chain)
}

/// Mix format → the codec's rate and channels → encoder bin.
pub(crate) fn audio_encode_chain(profiles: &Profiles, codec: AudioCodec, prefix: &str) -> Result<Vec<gst::Element>, MediaError> {
    let (rate, channels) = codec.raw_format();
    let convert = make("audioconvert", &format!("{prefix}aenc-conv"))?;
    let resample = make("audioresample", &format!("{prefix}aenc-resample"))?;
    let caps = make("capsfilter", &format!("{prefix}aenc-caps"))?;
    caps.set_property(
        "caps",
        gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("rate", rate as i32)
            .field("channels", channels as i32)
            .build(),
    );
    let encoder = profiles.audio_encoder(codec, &format!("{prefix}aenc"))?.upcast::<gst::Element>();
    stamp_earlier(&encoder, profiles.audio_priming(codec))?;
    Ok(vec![convert, resample, caps, encoder])
}

/// `pad` itself on a plain m-line; through the medium's srtpenc on an SRTP one.
fn encrypted(srtp: Option<&SrtpSession>, pad: gst::Pad, packets: Packets, session: u32) -> Result<gst::Pad, MediaError> {
    match srtp {
        Some(srtp) => srtp.encrypt(&pad, packets, session),
        None => Ok(pad),
    }
}

/// The payload types a caller may send on a medium: its codec's, and its
/// `telephone-event`'s (DTMF), which [`listen_for_keys`] takes out.
fn accepted_types(negotiated: &NegotiatedMedia) -> Vec<u8> {
    std::iter::once(negotiated.payload_type).chain(negotiated.telephone_event.as_ref().map(|e| e.payload_type)).collect()
}

/// Reads the caller's DTMF keys out of its RTP (RFC 4733), where they are
/// plain: on the socket, or past SRTP's decryption. The `telephone-event`
/// packets stop there: the jitter buffer and the decoder expect the codec only.
fn listen_for_keys(udpsrc: &gst::Element, srtp: Option<&SrtpSession>, negotiated: &NegotiatedMedia, on_key: &KeyHandler) {
    let Some(event) = &negotiated.telephone_event else { return };
    let pad = match srtp {
        Some(srtp) => srtp.decrypted_rtp(),
        None => udpsrc.static_pad("src").expect("udpsrc has a src pad"),
    };
    let (payload_type, on_key) = (event.payload_type, on_key.clone());
    let receiver = std::sync::Mutex::new(KeyReceiver::default());
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else { return gst::PadProbeReturn::Ok };
        let Ok(map) = buffer.map_readable() else { return gst::PadProbeReturn::Ok };
        match dtmf::rtp_parts(&map) {
            Some((pt, timestamp, payload)) if pt == payload_type => {
                let key = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).packet(timestamp, payload);
                if let Some(key) = key {
                    on_key(key);
                }
                gst::PadProbeReturn::Drop
            }
            _ => gst::PadProbeReturn::Ok,
        }
    });
}

/// Drops what `pad` carries while `sending` is off (the caller holds).
fn gate(element: &gst::Element, sending: Arc<AtomicBool>) {
    let pad = element.static_pad("src").expect("a payloader has a src pad");
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
        if sending.load(Ordering::Relaxed) { gst::PadProbeReturn::Ok } else { gst::PadProbeReturn::Drop }
    });
}

fn udp_source(name: &str, socket: &gio::Socket, caps: &gst::Caps) -> Result<gst::Element, MediaError> {
    let src = make("udpsrc", name)?;
    src.set_property("socket", socket);
    src.set_property("close-socket", false);
    src.set_property("caps", caps);
    Ok(src)
}

fn udp_sink(name: &str, socket: &gio::Socket, to: std::net::SocketAddr) -> Result<gst::Element, MediaError> {
    let sink = make("udpsink", name)?;
    sink.set_property("socket", socket);
    sink.set_property("close-socket", false);
    sink.set_property("host", to.ip().to_string());
    sink.set_property("port", i32::from(to.port()));
    // The compositor and mixers already pace the media; the network must not wait.
    sink.set_property("sync", false);
    sink.set_property("async", false);
    Ok(sink)
}

fn gio_socket(fd: OwnedFd) -> Result<gio::Socket, MediaError> {
    gio::Socket::from_fd(fd).map_err(|e| MediaError::Gst(format!("socket: {e}")))
}

fn link_to_request(upstream: &gst::Element, rtpbin: &gst::Element, pad_name: &str) -> Result<(), MediaError> {
    let sink = rtpbin.request_pad_simple(pad_name).ok_or_else(|| MediaError::Gst(format!("rtpbin refused {pad_name}")))?;
    upstream.static_pad("src").expect("source element has a src pad").link(&sink)?;
    Ok(())
}

/// Links each stream rtpbin finds (one per SSRC) into the medium's funnel,
/// so a caller that restarts with a new SSRC keeps its decoder and cell.
fn route_incoming_streams(rtpbin: &gst::Element, funnels: [Option<gst::Element>; 2], received: [Option<Arc<FlowCounter>>; 2]) {
    // Weak: rtpbin owns this handler, and the funnels live in the same bin.
    let funnels = funnels.map(|f| f.map(|f| f.downgrade()));
    rtpbin.connect_pad_added(move |_, pad| {
        let name = pad.name();
        let Some(session) = name.strip_prefix("recv_rtp_src_").and_then(|rest| rest.split('_').next()).and_then(|s| s.parse::<usize>().ok()) else {
            return;
        };
        let Some(Some(funnel)) = funnels.get(session).map(|f| f.as_ref().and_then(|f| f.upgrade())) else { return };
        let Some(sink) = funnel.request_pad_simple("sink_%u") else { return };
        if pad.link(&sink).is_err() {
            return;
        }
        if let Some(Some(counter)) = received.get(session) {
            count_on(pad, counter.clone(), Measure::Buffers);
        }
        if session == VIDEO_SESSION as usize {
            // A new video stream: ask its sender for a keyframe now rather
            // than waiting for its next scheduled one.
            request_keyframe_upstream(&sink);
        }
    });
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
