//! The publisher leg: a publisher (OBS, ffmpeg, a hardware encoder) that
//! sends H.264 and AAC with its stream key, in FLV to the embedded RTMP
//! server ([`crate::rtmp::ingest`]) or in MPEG-TS over SRT to its own
//! listener ([`crate::srt`]); both hand over the same [`IngestEvent`]s. It is
//! seen and heard; it hears and sees nothing back (it can watch the
//! programme on an output).
//!
//! ```text
//!  RTMP connection task ┐
//!  SRT listener ────────┴► IngestEvent ─► appsrc (H.264, AVC) ─► h264parse ─► decoder ─────────────────────────────► seat (picture)
//!                                     ├─► appsrc (AAC, raw) ──► aacparse ──► decoder ─┬► funnel ─► identity (sync) ─► seat (into the mix)
//!                                     └─► appsrc (Opus) ──────────────────► decoder ─┘
//! ```
//!
//! Both audio branches are built, and the publisher's `AudioConfig` says
//! which one its frames go to: a publisher that comes back with the other
//! codec needs no rebuilding.
//!
//! The publisher's timestamps keep its sound with its picture; they are
//! placed on the pipeline's running time by a [`Timeline`], as late as the
//! latest arrival so far says, then a playout delay (the composition's
//! jitter buffer) later, as an RTP caller's jitter buffer does. TCP delivers in bursts:
//! the compositor waits for a frame's time by itself, and the decoded audio
//! waits for its own (`identity sync=true`) so that it reaches the mixer as
//! evenly as an RTP caller's from its jitter buffer, whatever the bursts.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::rtp::{MediumStats, ParticipantStats};
use crate::media::flow::FlowCounter;
use crate::media::part::add_chain;
use crate::media::profiles::Profiles;
use crate::media::seat::SeatBuilder;
use crate::media::{MediaError, make};
use crate::model::codec::{AudioCodec, MediaKind, VideoCodec};
use crate::model::ingest::{AudioConfig, IngestEvent, IngestSink};
use super::timeline::{Timeline, live_source};

/// Frames an appsrc holds before it drops the oldest: a second of video,
/// two of AAC. Only a stuck decoder fills it; the publisher never waits.
const QUEUED_FRAMES: u64 = 30;
const QUEUED_AUDIO_FRAMES: u64 = 96;

/// What the publisher leg tells its composition about its publisher.
#[derive(Clone, Debug, PartialEq)]
pub enum PublisherChange {
    /// A publisher (from this address) started, or came back.
    Publishing(SocketAddr),
    Ended,
    Refused(String),
}

/// Called with each change of the publisher, from its transport's thread or task.
pub type PublisherHandler = Arc<dyn Fn(PublisherChange) + Send + Sync>;

/// The flows of one medium from the publisher: frames and their bytes.
#[derive(Clone, Default)]
struct Received {
    frames: Arc<FlowCounter>,
    bytes: Arc<FlowCounter>,
}

/// A publisher's leg: what arrives, and whether someone publishes now.
pub struct PublisherLeg {
    /// Whether its video is decoded (not in an audio-only composition).
    takes_video: bool,
    audio: Received,
    video: Received,
    /// The publisher's audio codec, once it said (`aac`, `opus`).
    audio_codec: Arc<Mutex<Option<&'static str>>>,
    publishing: Arc<AtomicBool>,
    /// When the current publisher started, and the bytes received before
    /// it: its average bitrate.
    started: Arc<Mutex<Option<Start>>>,
}

impl PublisherLeg {
    /// Builds the leg in the participant's bin; the sink it returns takes
    /// what its transport (the RTMP server, an SRT listener) takes apart.
    pub fn build(
        bin: &gst::Bin,
        seat: &mut SeatBuilder,
        profiles: &Profiles,
        playout_delay: Duration,
        on_change: PublisherHandler,
    ) -> Result<(PublisherLeg, IngestSink), MediaError> {
        let prefix = bin.name();
        let n = |role: &str| format!("{prefix}-{role}");
        // An audio-only composition takes only the publisher's sound.
        let video_in = if seat.shows_pictures() {
            let video_in = live_source(&n("vin"), QUEUED_FRAMES)?;
            let parse = make("h264parse", &n("vparse"))?;
            let decoder = profiles.video_decoder(VideoCodec::H264 { packetization_mode: 1 }, &n("vdec"))?.upcast::<gst::Element>();
            add_chain(bin, &[video_in.upcast_ref(), &parse, &decoder])?;
            seat.video_from(&decoder)?;
            Some(video_in)
        } else {
            None
        };

        let audio_joined = make("funnel", &n("ajoin"))?;
        let audio_paced = make("identity", &n("apace"))?;
        audio_paced.set_property("sync", true);
        add_chain(bin, &[&audio_joined, &audio_paced])?;
        let aac_in = live_source(&n("ain-aac"), QUEUED_AUDIO_FRAMES)?;
        let aac_parse = make("aacparse", &n("aparse"))?;
        let aac_decoder = profiles.aac_decoder(&n("adec-aac"))?.upcast::<gst::Element>();
        add_chain(bin, &[aac_in.upcast_ref(), &aac_parse, &aac_decoder])?;
        aac_decoder.link(&audio_joined)?;
        let opus_in = live_source(&n("ain-opus"), QUEUED_AUDIO_FRAMES)?;
        let opus_decoder = profiles.audio_decoder(AudioCodec::Opus { stereo: true }, &n("adec-opus"))?.upcast::<gst::Element>();
        add_chain(bin, &[opus_in.upcast_ref(), &opus_decoder])?;
        opus_decoder.link(&audio_joined)?;
        seat.audio_from(&audio_paced)?;

        let leg = PublisherLeg {
            takes_video: video_in.is_some(),
            audio: Received::default(),
            video: Received::default(),
            audio_codec: Arc::default(),
            publishing: Arc::default(),
            started: Arc::default(),
        };
        let feed = Feed {
            video: video_in,
            aac: aac_in,
            opus: opus_in,
            audio: Mutex::default(),
            audio_codec: leg.audio_codec.clone(),
            timeline: Mutex::new(Timeline::default()),
            playout_delay: gst::ClockTime::from_nseconds(playout_delay.as_nanos() as u64),
            video_configured: AtomicBool::new(false),
            video_received: leg.video.clone(),
            audio_received: leg.audio.clone(),
            publishing: leg.publishing.clone(),
            started: leg.started.clone(),
            on_change,
        };
        Ok((leg, Arc::new(move |event| feed.take(event))))
    }

    /// Whether its video is decoded (not in an audio-only composition).
    pub fn takes_video(&self) -> bool {
        self.takes_video
    }

    /// Whether a publisher is connected and publishing now.
    pub fn publishing(&self) -> bool {
        self.publishing.load(Ordering::SeqCst)
    }

    pub fn received(&self, kind: MediaKind) -> u64 {
        self.medium(kind).frames.count()
    }

    /// Time since the last frame on either medium; `None` before the first.
    pub fn last_media_age(&self) -> Option<Duration> {
        [&self.audio, &self.video]
            .into_iter()
            .filter_map(|m| m.frames.last())
            .max()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    pub fn stats(&self) -> ParticipantStats {
        // The average over the current publisher's time; nothing between publishers.
        let started = (*self.started.lock().unwrap_or_else(|poisoned| poisoned.into_inner())).filter(|_| self.publishing());
        let stats = |kind: MediaKind, codec: &'static str| {
            let medium = self.medium(kind);
            let bytes = medium.bytes.count();
            let bitrate_kbps = started.map_or(0.0, |start| {
                let sent = bytes.saturating_sub(start.bytes_before(kind)) as f64;
                let seconds = start.at.elapsed().as_secs_f64();
                if seconds > 0.0 { sent * 8.0 / 1000.0 / seconds } else { 0.0 }
            });
            MediumStats {
                codec,
                packetization_mode: None,
                stereo: None,
                payload_type: None,
                direction: "recvonly",
                packets_received: medium.frames.count(),
                bytes_received: bytes,
                packets_lost: 0,
                packets_rejected: 0,
                srtp_suite: None,
                packets_unauthenticated: None,
                jitter_ms: 0.0,
                bitrate_kbps,
                last_packet_at: medium.frames.last().map(super::rtp::rfc3339),
                packets_sent: 0,
                bytes_sent: 0,
                last_sent_at: None,
            }
        };
        let audio_codec = (*self.audio_codec.lock().unwrap_or_else(|poisoned| poisoned.into_inner())).unwrap_or("aac");
        ParticipantStats { audio: Some(stats(MediaKind::Audio, audio_codec)), video: self.takes_video.then(|| stats(MediaKind::Video, "h264")), webrtc: None }
    }

    fn medium(&self, kind: MediaKind) -> &Received {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }
}

/// When a publisher started, and the bytes of each medium received before it.
#[derive(Clone, Copy)]
struct Start {
    at: Instant,
    audio_bytes_before: u64,
    video_bytes_before: u64,
}

impl Start {
    fn bytes_before(&self, kind: MediaKind) -> u64 {
        match kind {
            MediaKind::Audio => self.audio_bytes_before,
            MediaKind::Video => self.video_bytes_before,
        }
    }
}

/// What the publisher's connection task pushes into.
struct Feed {
    /// `None` in an audio-only composition.
    video: Option<gst_app::AppSrc>,
    aac: gst_app::AppSrc,
    opus: gst_app::AppSrc,
    /// The audio branch the publisher's `AudioConfig` chose; `None` before.
    audio: Mutex<Option<gst_app::AppSrc>>,
    audio_codec: Arc<Mutex<Option<&'static str>>>,
    timeline: Mutex<Timeline>,
    /// How long after its placed time a frame is played (see the module doc).
    playout_delay: gst::ClockTime,
    /// Whether the video appsrc has its caps from a sequence header: a frame
    /// before that would stop it for good (not negotiated), so it is
    /// dropped. (Audio frames wait for their branch to be chosen.)
    video_configured: AtomicBool,
    video_received: Received,
    audio_received: Received,
    publishing: Arc<AtomicBool>,
    started: Arc<Mutex<Option<Start>>>,
    on_change: PublisherHandler,
}

impl Feed {
    fn take(&self, event: IngestEvent) {
        match event {
            IngestEvent::Publishing { peer } => {
                // A publisher that comes back starts its timestamps afresh,
                // and says again how its audio is coded.
                *self.timeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Timeline::default();
                *self.audio.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                let start = Start { at: Instant::now(), audio_bytes_before: self.audio_received.bytes.count(), video_bytes_before: self.video_received.bytes.count() };
                *self.started.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(start);
                self.publishing.store(true, Ordering::SeqCst);
                (self.on_change)(PublisherChange::Publishing(peer));
            }
            IngestEvent::VideoConfig(record) => {
                let Some(video) = &self.video else { return };
                // An AVCDecoderConfigurationRecord: version 1, then at least
                // profile, compatibility, level, NAL length size and the SPS count.
                if record.len() < 7 || record[0] != 1 {
                    tracing::debug!(bytes = record.len(), "publisher's AVC configuration is not one; ignored");
                    return;
                }
                let caps = gst::Caps::builder("video/x-h264")
                    .field("stream-format", "avc")
                    .field("alignment", "au")
                    .field("codec_data", gst::Buffer::from_slice(record))
                    .build();
                video.set_caps(Some(&caps));
                self.video_configured.store(true, Ordering::SeqCst);
            }
            IngestEvent::AudioConfig(config) => {
                let (source, caps) = match &config {
                    // An AudioSpecificConfig is at least the object type, rate and channels.
                    AudioConfig::Aac(specific) if specific.len() < 2 => {
                        tracing::debug!(bytes = specific.len(), "publisher's AAC configuration is not one; ignored");
                        return;
                    }
                    AudioConfig::Aac(specific) => (
                        &self.aac,
                        gst::Caps::builder("audio/mpeg")
                            .field("mpegversion", 4i32)
                            .field("stream-format", "raw")
                            .field("codec_data", gst::Buffer::from_slice(specific.clone()))
                            .build(),
                    ),
                    AudioConfig::Opus { channels } => (
                        &self.opus,
                        gst::Caps::builder("audio/x-opus")
                            .field("channel-mapping-family", 0i32)
                            .field("channels", i32::from(*channels))
                            .field("rate", 48_000i32)
                            .build(),
                    ),
                };
                source.set_caps(Some(&caps));
                *self.audio_codec.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(config.codec());
                *self.audio.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source.clone());
            }
            IngestEvent::Video { dts_ms, pts_ms, keyframe, data } => {
                let Some(video) = &self.video else { return };
                if !self.video_configured.load(Ordering::SeqCst) {
                    return;
                }
                let Some(dts) = self.place(video, i64::from(dts_ms)) else { return };
                let pts = dts + gst::ClockTime::from_mseconds((pts_ms - i64::from(dts_ms)).max(0) as u64);
                let Received { frames, bytes } = &self.video_received;
                bytes.add(data.len() as u64);
                let mut buffer = gst::Buffer::from_slice(data);
                let buffer_mut = buffer.get_mut().expect("a new buffer is writable");
                buffer_mut.set_dts(dts);
                buffer_mut.set_pts(pts);
                if !keyframe {
                    buffer_mut.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
                frames.add(1);
                let _ = video.push_buffer(buffer);
            }
            IngestEvent::Audio { pts_ms, data } => {
                let Some(audio) = self.audio.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone() else { return };
                let Some(pts) = self.place(&audio, i64::from(pts_ms)) else { return };
                let Received { frames, bytes } = &self.audio_received;
                bytes.add(data.len() as u64);
                let mut buffer = gst::Buffer::from_slice(data);
                buffer.get_mut().expect("a new buffer is writable").set_pts(pts);
                frames.add(1);
                let _ = audio.push_buffer(buffer);
            }
            IngestEvent::Refused { reason } => {
                self.publishing.store(false, Ordering::SeqCst);
                (self.on_change)(PublisherChange::Refused(reason));
            }
            IngestEvent::Ended => {
                self.publishing.store(false, Ordering::SeqCst);
                (self.on_change)(PublisherChange::Ended);
            }
        }
    }

    /// When a frame stamped `ms` by the publisher is played, on the running
    /// time; `None` before the pipeline runs.
    fn place(&self, source: &gst_app::AppSrc, ms: i64) -> Option<gst::ClockTime> {
        let now = source.current_running_time()?;
        let placed = self.timeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).place(ms, now);
        Some(placed + self.playout_delay)
    }
}

/// What the API shows of a publisher participant's ingest.
#[derive(Clone, Debug, Serialize)]
pub struct IngestView {
    /// Where the publisher sends (its stream key goes after it).
    pub url: String,
    /// The stream key: whole in the answer to the POST that made it, masked after.
    pub stream_key: String,
    /// Whether a publisher is connected and publishing now.
    pub publishing: bool,
    /// Whether an SRT publisher must give the participant's passphrase
    /// (SRT's own encryption); false over RTMP.
    pub encrypted: bool,
}
