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
    /// Which encode of the composite it is sent.
    picture: Arc<PictureSwitch>,
    link_window: Mutex<LinkWindow>,
}

/// What a guest's link is measured over: a GOP's big keyframe and a second
/// of small frames are one rate.
const LINK_WINDOW: Duration = Duration::from_secs(1);

/// The last full [`LINK_WINDOW`] of a guest's link, and where the current one started.
#[derive(Clone, Copy)]
struct LinkWindow {
    started: Instant,
    bytes_at_start: u64,
    nacks_at_start: u64,
    sent_kbps: u64,
    nacks: u64,
}

/// A guest's link as the picture ladder (`model::ladder`) reads it.
#[derive(Clone, Copy, Debug)]
pub struct GuestLink {
    /// The estimator's figure, kbit/s; 0 until known.
    pub estimate_kbps: u64,
    /// Its picture as sent over the last second, kbit/s.
    pub sent_kbps: u64,
    /// NACKs it sent over the last second: packets of ours it lost.
    pub nacks: u64,
    pub connected_for: Duration,
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
        let video_out = Arc::new(FlowCounter::default());
        let leg = WebRtcLeg {
            media,
            takes_video,
            peer: peer.clone(),
            audio_in: Arc::default(),
            video_in: Arc::default(),
            audio_out: Arc::default(),
            video_out: video_out.clone(),
            connected_at: Arc::default(),
            bandwidth: Arc::default(),
            picture: Arc::new(PictureSwitch::new(peer.clone(), video_out)),
            link_window: Mutex::new(LinkWindow { started: Instant::now(), bytes_at_start: 0, nacks_at_start: 0, sent_kbps: 0, nacks: 0 }),
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
            let picture = leg.picture.clone();
            let sink = frame_sink(&n("vout"), move |frame, time, keyframe, wallclock| {
                picture.deliver(OWN_ENCODE, frame, time, keyframe, wallclock)
            })?;
            bin.add(&sink)?;
            Some(seat.composite_to(media.video_codec, &sink)?)
        } else {
            None
        };
        if media.audio.to_guest {
            let mut chain = encoded_mix_minus(seat, profiles, SENT_AUDIO, &n(""))?;
            let (peer, handed) = (peer.clone(), leg.audio_out.clone());
            chain.push(frame_sink(&n("aout"), move |packet, time, _, wallclock| {
                if let Some(peer) = peer.get() {
                    peer.write_audio(packet, time, wallclock);
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
            picture: leg.picture.clone(),
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

    /// Which encode of the composite it is sent, and the move to another.
    pub fn picture(&self) -> &Arc<PictureSwitch> {
        &self.picture
    }

    /// Its link as last measured; `None` before it connected.
    pub fn link(&self) -> Option<GuestLink> {
        let connected_for = (*self.connected_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))?.elapsed();
        let (bytes, nacks) = (self.picture.bytes_sent(), self.peer.get().map_or(0, |peer| peer.stats().nacks_received));
        let mut window = self.link_window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = window.started.elapsed();
        if elapsed >= LINK_WINDOW {
            let sent_kbps = (bytes - window.bytes_at_start) * 8 / elapsed.as_millis().max(1) as u64;
            let nacks_in_window = nacks.saturating_sub(window.nacks_at_start);
            *window = LinkWindow { started: Instant::now(), bytes_at_start: bytes, nacks_at_start: nacks, sent_kbps, nacks: nacks_in_window };
        }
        Some(GuestLink { estimate_kbps: self.bandwidth.load(Ordering::Relaxed) / 1000, sent_kbps: window.sent_kbps, nacks: window.nacks, connected_for })
    }

    /// The video codec it is sent.
    pub fn video_codec(&self) -> Option<VideoCodec> {
        (self.takes_video && self.media.video.to_guest).then_some(self.media.video_codec)
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
                // The composition knows its rungs: it fills this in.
                picture: None,
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
    /// The composite as it is sent now: the composition's bitrate and size,
    /// or less on a link that carries less. Absent when it is sent no picture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<SentPicture>,
}

/// What a guest is sent of the composite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SentPicture {
    pub bitrate_kbps: u32,
    pub width: u32,
    pub height: u32,
    /// Lower than the composition's: its link carries no more.
    pub reduced: bool,
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
/// timestamp, whether it is a keyframe, when its running time was on the
/// clock), for WebRTC peers to send.
pub(crate) fn frame_sink(
    name: &str,
    deliver: impl Fn(Bytes, Duration, bool, Instant) + Send + Sync + 'static,
) -> Result<gst::Element, MediaError> {
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
                let running = sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>()?.to_running_time(buffer.pts()));
                let wallclock = live_at(sink.upcast_ref(), running);
                let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let Ok(mapped) = buffer.into_mapped_buffer_readable() else { return Ok(gst::FlowSuccess::Ok) };
                deliver(Bytes::from_owner(mapped), time, keyframe, wallclock);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(sink.upcast())
}

/// When `running` (a running time of `element`'s pipeline) was, or will be,
/// on its clock, as an [`Instant`]; now when that is not known. What a peer's
/// sender reports map RTP times to: a frame's own moment, the same for the
/// sound and the picture of one instant however long each took to encode.
fn live_at(element: &gst::Element, running: Option<gst::ClockTime>) -> Instant {
    let now = Instant::now();
    let (Some(clock), Some(base), Some(running)) = (element.clock(), element.base_time(), running) else { return now };
    match clock.time().checked_sub(base + running) {
        Some(behind) => now.checked_sub(Duration::from_nanos(behind.nseconds())).unwrap_or(now),
        // Not yet: str0m takes no wallclock from the future.
        None => now,
    }
}

/// The guest's own encode of the composite (what a guest whose link carries
/// the composition's bitrate is sent), as a [`PictureSwitch`] source.
pub const OWN_ENCODE: usize = 0;

/// Which encode of the composite a guest's peer is sent: its own (the
/// composition's bitrate), or one of the lower ones that guests on poor
/// links share (`model::ladder`; each source is its rung's index). A move
/// takes effect at the new encode's next keyframe, so the guest's decoder
/// never gets a frame referring to a picture it has not seen; until then it
/// keeps getting the old one.
pub struct PictureSwitch {
    peer: PeerSlot,
    handed: Arc<FlowCounter>,
    state: Mutex<SwitchState>,
}

struct SwitchState {
    current: usize,
    wanted: usize,
    /// Where the wanted encode's keyframes are asked for; `None`: its own.
    keyframe_source: Option<gst::Pad>,
    /// The last frame's time as sent, and the step before it: the first
    /// frame of a new encode follows on.
    last_time: Duration,
    last_step: Duration,
    /// What is added to the current encode's times, nanoseconds.
    offset_ns: i128,
    /// When it was last moved (or built).
    moved_at: Instant,
    /// Bytes of picture handed to the peer.
    bytes_sent: u64,
    /// What the bandwidth estimator is to be told when the move is made
    /// (see [`Peer::retarget_bandwidth_estimate`]): a restart counts the
    /// losses of the old bitrate only until the new one is on the wire.
    retarget: Option<(Option<u64>, u64)>,
}

impl PictureSwitch {
    fn new(peer: PeerSlot, handed: Arc<FlowCounter>) -> PictureSwitch {
        let state = SwitchState {
            current: OWN_ENCODE,
            wanted: OWN_ENCODE,
            keyframe_source: None,
            last_time: Duration::ZERO,
            last_step: Duration::ZERO,
            offset_ns: 0,
            moved_at: Instant::now(),
            bytes_sent: 0,
            retarget: None,
        };
        PictureSwitch { peer, handed, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SwitchState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the guest to `source`, whose keyframes are asked for at
    /// `keyframe_source` (`None` for its own encode).
    pub fn want(&self, source: usize, keyframe_source: Option<gst::Pad>) {
        let mut state = self.lock();
        state.wanted = source;
        state.keyframe_source = keyframe_source;
        state.moved_at = Instant::now();
    }

    /// Time since it was last moved (or built).
    pub fn moved_for(&self) -> Duration {
        self.lock().moved_at.elapsed()
    }

    /// Sets what the peer's bandwidth estimator probes towards and, with
    /// `from_kbps`, restarts it there: once the move asked for is made, or
    /// now if there is none (the guest was wanted back where it is).
    pub fn retarget_on_move(&self, from_kbps: Option<u64>, probe_to_kbps: u64) {
        let mut state = self.lock();
        if state.current != state.wanted {
            state.retarget = Some((from_kbps, probe_to_kbps));
            return;
        }
        state.retarget = None;
        drop(state);
        if let Some(peer) = self.peer.get() {
            peer.retarget_bandwidth_estimate(from_kbps, probe_to_kbps);
        }
    }

    fn bytes_sent(&self) -> u64 {
        self.lock().bytes_sent
    }

    /// The source it is sent now, and the one it is moving to.
    pub fn sources(&self) -> (usize, usize) {
        let state = self.lock();
        (state.current, state.wanted)
    }

    fn keyframe_source(&self) -> Option<gst::Pad> {
        self.lock().keyframe_source.clone()
    }

    /// A frame of encode `source`: sent if that is the guest's, or if it is
    /// the one it moves to and this is its keyframe.
    pub fn deliver(&self, source: usize, frame: Bytes, time: Duration, keyframe: bool, wallclock: Instant) {
        let (time, retarget) = {
            let mut state = self.lock();
            let mut retarget = None;
            if source == state.wanted && source != state.current && keyframe {
                state.current = source;
                // Encodes stamp on their own timebases (the broadcast's
                // differs from the canvas's by seconds): the guest's clock
                // goes on one frame after the last one it got.
                let next = state.last_time + state.last_step;
                state.offset_ns = next.as_nanos() as i128 - time.as_nanos() as i128;
                retarget = state.retarget.take();
            }
            if source != state.current {
                return;
            }
            let time = Duration::from_nanos((time.as_nanos() as i128 + state.offset_ns).max(0) as u64);
            if time > state.last_time {
                state.last_step = time - state.last_time;
            }
            state.last_time = time;
            state.bytes_sent += frame.len() as u64;
            (time, retarget)
        };
        // Before the peer is attached there is nobody to send to.
        if let Some(peer) = self.peer.get() {
            if let Some((from_kbps, probe_to_kbps)) = retarget {
                peer.retarget_bandwidth_estimate(from_kbps, probe_to_kbps);
            }
            peer.write_video(frame, time, keyframe, wallclock);
            self.handed.add(1);
        }
    }
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
    /// Where a keyframe of the composite is asked for when the guest lost
    /// ours, while it is sent its own encode.
    composite_in: Option<gst::Pad>,
    picture: Arc<PictureSwitch>,
    connected_at: Arc<Mutex<Option<Instant>>>,
    bandwidth: Arc<AtomicU64>,
    on_change: GuestHandler,
}

impl Inbound {
    fn request_composite_keyframe(&self) {
        if let Some(pad) = self.picture.keyframe_source().as_ref().or(self.composite_in.as_ref()) {
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
            PeerEvent::BandwidthEstimate { bps } => {
                tracing::debug!(kbps = bps / 1000, "guest's bandwidth estimate");
                self.bandwidth.store(bps, Ordering::Relaxed)
            }
            PeerEvent::Disconnected { reason } => (self.on_change)(GuestChange::Disconnected(reason)),
        }
    }
}
