//! The WebRTC leg: a browser guest. The WebRTC adapter ([`crate::webrtc`])
//! hands over its frames depacketized and takes ours whole; this leg decodes
//! the guest's camera and microphone into its seat and gives the adapter the
//! composite (from the shared encoder of its codec) and its mix-minus
//! (encoded in Opus). No RTP is made or read here: str0m packetizes.
//!
//! ```text
//!  socket task ─► PeerEvent::MediaIn ─► appsrc (VP8 | H.264) ─► [h264parse] ─► decoder ─────────────────► seat (picture)
//!                                    └► appsrc (Opus) ─► decoder ─► identity (sync) ──────────────────► seat (into the mix)
//!  seat [composite] (shared encoder) ─► appsink ─► Peer::write_video ─► socket task
//!  seat (mix-minus) ─► convert ─► resample ─► Opus encoder ─► appsink ─► Peer::write_audio ─► socket task
//! ```
//!
//! The guest's frames come stamped with its RTP time, each kind from its own
//! first frame; a [`Timeline`] per kind places them on the running time at
//! their earliest arrival plus the playout delay (the composition's jitter
//! buffer), and the decoded sound waits for its time as an RTP caller's
//! does leaving its jitter buffer: str0m holds frames back to reorder and
//! repair them, and releases them in bursts.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::rtp::{MediumStats, ParticipantStats, encoded_mix_minus, rfc3339};
use super::timeline::{Timeline, live_source};
use super::{Flow, Way};
use crate::media::flow::FlowCounter;
use crate::media::part::{add_chain, request_keyframe_upstream};
use crate::media::profiles::Profiles;
use crate::media::seat::SeatBuilder;
use crate::media::{MediaError, make};
use crate::model::codec::{AudioCodec, MediaKind, VideoCodec};
use crate::webrtc::{Peer, PeerEvent, PeerHandler};

/// Frames an appsrc holds before it drops the oldest: a second of video,
/// two of Opus. Only a stuck decoder fills it; the socket task never waits.
const QUEUED_FRAMES: u64 = 30;
const QUEUED_AUDIO_FRAMES: u64 = 100;
/// What the guest is sent: mono, as a browser's microphone sends. A browser
/// plays stereo only when its answer asks for it (`stereo=1`).
pub(crate) const SENT_AUDIO: AudioCodec = AudioCodec::Opus { stereo: false };

/// Which ways one medium flows, as the guest's offer settled it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directions {
    pub from_guest: bool,
    pub to_guest: bool,
}

/// What a guest's offer settled, for its leg to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMedia {
    pub audio: Directions,
    pub video: Directions,
    /// The one video codec both ways (the guest sends what it is sent).
    pub video_codec: VideoCodec,
}

/// What the WebRTC leg tells its composition about its guest.
#[derive(Clone, Debug, PartialEq)]
pub enum GuestChange {
    /// ICE and DTLS are up, from this address.
    Connected(SocketAddr),
    /// The browser left, went silent or never connected; the reason says which.
    Disconnected(String),
}

/// Called with each change of the guest, from the WebRTC socket task.
pub type GuestHandler = Arc<dyn Fn(GuestChange) + Send + Sync>;

/// The guest's peer, once the adapter answered its offer: the leg is built
/// first, because the adapter needs its handler to answer.
type PeerSlot = Arc<OnceLock<Peer>>;

/// A guest's leg.
pub struct WebRtcLeg {
    media: GuestMedia,
    /// Whether its video is decoded and it is sent the composite (not in an
    /// audio-only composition).
    takes_video: bool,
    peer: PeerSlot,
    /// Frames from the guest pushed to its decoders.
    audio_in: Arc<FlowCounter>,
    video_in: Arc<FlowCounter>,
    /// Frames handed to its peer: when the last one was (`last_sent_at`).
    audio_out: Arc<FlowCounter>,
    video_out: Arc<FlowCounter>,
    connected_at: Arc<Mutex<Option<Instant>>>,
    /// What str0m's estimator says we may send it, bits per second.
    bandwidth: Arc<AtomicU64>,
}

impl WebRtcLeg {
    /// Builds the leg in the participant's bin. The handler it returns is the
    /// one to answer the guest's offer with; the peer that answer makes is
    /// then given to [`WebRtcLeg::attach`].
    pub fn build(
        bin: &gst::Bin,
        seat: &mut SeatBuilder,
        profiles: &Profiles,
        media: GuestMedia,
        playout_delay: Duration,
        on_change: GuestHandler,
    ) -> Result<(WebRtcLeg, PeerHandler), MediaError> {
        let prefix = bin.name();
        let n = |role: &str| format!("{prefix}-{role}");
        let takes_video = seat.shows_pictures();
        let peer = PeerSlot::default();
        let leg = WebRtcLeg {
            media,
            takes_video,
            peer: peer.clone(),
            audio_in: Arc::default(),
            video_in: Arc::default(),
            audio_out: Arc::default(),
            video_out: Arc::default(),
            connected_at: Arc::default(),
            bandwidth: Arc::default(),
        };

        let video_in = if takes_video && media.video.from_guest {
            let source = live_source(&n("vin"), QUEUED_FRAMES)?;
            source.set_caps(Some(&encoded_caps(media.video_codec)));
            let decoder = profiles.video_decoder(media.video_codec, &n("vdec"))?.upcast::<gst::Element>();
            let mut chain = vec![source.clone().upcast::<gst::Element>()];
            if let VideoCodec::H264 { .. } = media.video_codec {
                chain.push(make("h264parse", &n("vparse"))?);
            }
            chain.push(decoder.clone());
            add_chain(bin, &chain.iter().collect::<Vec<_>>())?;
            seat.video_from(&decoder)?;
            Some(source)
        } else {
            None
        };
        let audio_in = if media.audio.from_guest {
            let source = live_source(&n("ain"), QUEUED_AUDIO_FRAMES)?;
            source.set_caps(Some(
                &gst::Caps::builder("audio/x-opus")
                    .field("channel-mapping-family", 0i32)
                    .field("channels", 1i32)
                    .field("rate", 48_000i32)
                    .build(),
            ));
            let decoder = profiles.audio_decoder(SENT_AUDIO, &n("adec"))?.upcast::<gst::Element>();
            let paced = make("identity", &n("apace"))?;
            paced.set_property("sync", true);
            add_chain(bin, &[source.upcast_ref(), &decoder, &paced])?;
            seat.audio_from(&paced)?;
            Some(source)
        } else {
            None
        };

        let composite_in = if takes_video && media.video.to_guest {
            let (peer, handed) = (peer.clone(), leg.video_out.clone());
            let sink = frame_sink(&n("vout"), move |frame, time, keyframe| {
                // Before the peer is attached there is nobody to send to.
                if let Some(peer) = peer.get() {
                    peer.write_video(frame, time, keyframe);
                    handed.add(1);
                }
            })?;
            bin.add(&sink)?;
            Some(seat.composite_to(media.video_codec, &sink)?)
        } else {
            None
        };
        if media.audio.to_guest {
            let mut chain = encoded_mix_minus(seat, profiles, SENT_AUDIO, &n(""))?;
            let (peer, handed) = (peer.clone(), leg.audio_out.clone());
            chain.push(frame_sink(&n("aout"), move |packet, time, _| {
                if let Some(peer) = peer.get() {
                    peer.write_audio(packet, time);
                    handed.add(1);
                }
            })?);
            add_chain(bin, &chain.iter().collect::<Vec<_>>())?;
        }

        let inbound = Inbound {
            video: video_in,
            audio: audio_in,
            video_timeline: Mutex::default(),
            audio_timeline: Mutex::default(),
            playout_delay: gst::ClockTime::from_nseconds(playout_delay.as_nanos() as u64),
            video_received: leg.video_in.clone(),
            audio_received: leg.audio_in.clone(),
            composite_in,
            connected_at: leg.connected_at.clone(),
            bandwidth: leg.bandwidth.clone(),
            on_change,
        };
        Ok((leg, Arc::new(move |event| inbound.take(event))))
    }

    /// Gives the leg the peer the adapter answered with; from now on what the
    /// leg makes goes to the guest.
    pub fn attach(&self, peer: Peer) {
        let _ = self.peer.set(peer);
    }

    /// The flows it was built to carry.
    pub fn flows(&self) -> Vec<Flow> {
        [(MediaKind::Audio, self.media.audio), (MediaKind::Video, self.video())]
            .into_iter()
            .flat_map(|(kind, d)| {
                [(d.from_guest, Way::FromCaller), (d.to_guest, Way::ToCaller)].into_iter().filter_map(move |(carried, way)| carried.then_some(Flow { kind, way }))
            })
            .collect()
    }

    /// Frames carried one way on `kind` so far: from the guest into its
    /// decoder, or to the guest as far as str0m (not those its queue dropped,
    /// nor those made before it connected): what the watchdogs see stop.
    pub fn count(&self, kind: MediaKind, way: Way) -> u64 {
        match (way, kind) {
            (Way::FromCaller, MediaKind::Audio) => self.audio_in.count(),
            (Way::FromCaller, MediaKind::Video) => self.video_in.count(),
            (Way::ToCaller, kind) => self.peer.get().map_or(0, |peer| {
                let stats = peer.stats();
                match kind {
                    MediaKind::Audio => stats.audio.frames_out,
                    MediaKind::Video => stats.video.frames_out,
                }
            }),
        }
    }

    pub fn expects_media(&self) -> bool {
        self.media.audio.from_guest || self.media.video.from_guest
    }

    pub fn sends_video(&self) -> bool {
        self.video().from_guest
    }

    /// Its video's ways; none in an audio-only composition.
    fn video(&self) -> Directions {
        if self.takes_video { self.media.video } else { Directions::default() }
    }

    /// Time since the last frame from the guest; `None` before the first.
    pub fn last_media_age(&self) -> Option<Duration> {
        [&self.audio_in, &self.video_in]
            .into_iter()
            .filter_map(|c| c.last())
            .max()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    pub fn stats(&self) -> ParticipantStats {
        let peer = self.peer.get().map(Peer::stats).unwrap_or_default();
        let connected_for = (*self.connected_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner())).map(|at| at.elapsed().as_secs_f64());
        let medium = |kind: MediaKind, directions: Directions, codec: &'static str| {
            let (moved, received, sent) = match kind {
                MediaKind::Audio => (peer.audio, &self.audio_in, &self.audio_out),
                MediaKind::Video => (peer.video, &self.video_in, &self.video_out),
            };
            MediumStats {
                codec,
                packetization_mode: matches!(self.media.video_codec, VideoCodec::H264 { .. }).then_some(1).filter(|_| kind == MediaKind::Video),
                stereo: (kind == MediaKind::Audio).then_some(false),
                payload_type: None,
                direction: match (directions.from_guest, directions.to_guest) {
                    (true, true) => "sendrecv",
                    (true, false) => "recvonly",
                    (false, true) => "sendonly",
                    (false, false) => "inactive",
                },
                packets_received: moved.packets_in,
                bytes_received: moved.bytes_in,
                packets_lost: 0,
                packets_rejected: 0,
                srtp_suite: None,
                packets_unauthenticated: None,
                jitter_ms: 0.0,
                bitrate_kbps: connected_for.filter(|s| *s > 0.0).map_or(0.0, |s| moved.bytes_in as f64 * 8.0 / 1000.0 / s),
                last_packet_at: received.last().map(rfc3339),
                packets_sent: moved.packets_out,
                bytes_sent: moved.bytes_out,
                last_sent_at: sent.last().map(rfc3339),
            }
        };
        let video_codec = match self.media.video_codec {
            VideoCodec::H264 { .. } => "h264",
            VideoCodec::Vp8 => "vp8",
        };
        let video = self.video();
        let carries = |d: Directions| d.from_guest || d.to_guest;
        ParticipantStats {
            audio: carries(self.media.audio).then(|| medium(MediaKind::Audio, self.media.audio, "opus")),
            video: carries(video).then(|| medium(MediaKind::Video, video, video_codec)),
            webrtc: Some(WebRtcStats {
                nacks_sent: peer.nacks_sent,
                nacks_received: peer.nacks_received,
                retransmissions_received: peer.rtx_in,
                retransmissions_sent: peer.rtx_out,
                keyframe_requests_received: peer.keyframe_requests_in,
                keyframe_requests_sent: peer.keyframe_requests_out,
                frames_dropped: peer.audio.frames_dropped + peer.video.frames_dropped,
                bandwidth_estimate_kbps: self.bandwidth.load(Ordering::Relaxed) / 1000,
            }),
        }
    }
}

/// What only a WebRTC guest has to show: how its connection repairs itself.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WebRtcStats {
    /// NACKs Tutti sent for the guest's lost packets, and received for its own.
    pub nacks_sent: u64,
    pub nacks_received: u64,
    /// RTX packets each way: retransmissions, and bandwidth probes.
    pub retransmissions_received: u64,
    pub retransmissions_sent: u64,
    /// PLIs and FIRs: the guest asking for a keyframe of the composite, and Tutti of its camera.
    pub keyframe_requests_received: u64,
    pub keyframe_requests_sent: u64,
    /// Frames made for the guest that were dropped before its socket: it was
    /// not connected yet, or its queue was full.
    pub frames_dropped: u64,
    /// What Tutti may send it, by the bandwidth estimator (0 until known).
    pub bandwidth_estimate_kbps: u64,
}

/// The caps of a browser's video frames as the adapter hands them over.
fn encoded_caps(codec: VideoCodec) -> gst::Caps {
    match codec {
        VideoCodec::Vp8 => gst::Caps::new_empty_simple("video/x-vp8"),
        VideoCodec::H264 { .. } => {
            gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build()
        }
    }
}

/// An appsink that hands each encoded frame to `deliver` (the frame, its
/// running time, whether it is a keyframe), for WebRTC peers to send.
pub(crate) fn frame_sink(name: &str, deliver: impl Fn(Bytes, Duration, bool) + Send + Sync + 'static) -> Result<gst::Element, MediaError> {
    let sink = make("appsink", name)?.downcast::<gst_app::AppSink>().expect("appsink is an AppSink");
    // The compositor and the mixer already pace what comes; the network must not wait.
    sink.set_sync(false);
    sink.set_async(false);
    sink.set_property("enable-last-sample", false);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer_owned() else { return Ok(gst::FlowSuccess::Ok) };
                let time = Duration::from_nanos(buffer.pts().unwrap_or_default().nseconds());
                let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let Ok(mapped) = buffer.into_mapped_buffer_readable() else { return Ok(gst::FlowSuccess::Ok) };
                deliver(Bytes::from_owner(mapped), time, keyframe);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(sink.upcast())
}

/// What the socket task pushes into, for one guest.
struct Inbound {
    /// `None` when it sends no video, or the composition shows none.
    video: Option<gst_app::AppSrc>,
    audio: Option<gst_app::AppSrc>,
    video_timeline: Mutex<Timeline>,
    audio_timeline: Mutex<Timeline>,
    /// How long after its placed time a frame is played (see the module doc).
    playout_delay: gst::ClockTime,
    video_received: Arc<FlowCounter>,
    audio_received: Arc<FlowCounter>,
    /// Where a keyframe of the composite is asked for when the guest lost ours.
    composite_in: Option<gst::Pad>,
    connected_at: Arc<Mutex<Option<Instant>>>,
    bandwidth: Arc<AtomicU64>,
    on_change: GuestHandler,
}

impl Inbound {
    fn request_composite_keyframe(&self) {
        if let Some(pad) = &self.composite_in {
            request_keyframe_upstream(pad);
        }
    }

    fn take(&self, event: PeerEvent) {
        match event {
            PeerEvent::Connected { peer } => {
                *self.connected_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
                // What was made before went nowhere: it starts at a keyframe now, not at the next GOP.
                self.request_composite_keyframe();
                (self.on_change)(GuestChange::Connected(peer));
            }
            PeerEvent::MediaIn { kind, timestamp, keyframe, contiguous, data, .. } => {
                let (source, timeline, received) = match kind {
                    MediaKind::Video => (&self.video, &self.video_timeline, &self.video_received),
                    MediaKind::Audio => (&self.audio, &self.audio_timeline, &self.audio_received),
                };
                let Some(source) = source else { return };
                let Some(now) = source.current_running_time() else { return };
                let placed = timeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).place(timestamp.as_millis() as i64, now);
                let mut buffer = gst::Buffer::from_slice(data);
                let buffer_mut = buffer.get_mut().expect("a new buffer is writable");
                buffer_mut.set_pts(placed + self.playout_delay);
                if !keyframe && kind == MediaKind::Video {
                    buffer_mut.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
                if !contiguous {
                    // Lost packets NACK could not repair: the decoder conceals.
                    buffer_mut.set_flags(gst::BufferFlags::DISCONT);
                }
                received.add(1);
                let _ = source.push_buffer(buffer);
            }
            PeerEvent::KeyframeRequested => self.request_composite_keyframe(),
            PeerEvent::BandwidthEstimate { bps } => self.bandwidth.store(bps, Ordering::Relaxed),
            PeerEvent::Disconnected { reason } => (self.on_change)(GuestChange::Disconnected(reason)),
        }
    }
}
