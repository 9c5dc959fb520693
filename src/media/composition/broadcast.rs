//! The broadcast encode of a composition: one part, `comp-{id}-broadcast`,
//! whose encoded video and audio every output shares.
//!
//! ```text
//!  [video] (canvas) ─► queue ─► encoder (h264) ─► h264parse ─► tee ─┬─► appsink ─► Feed ─┬─► RTMP publisher (per output, own queue)
//!  appsrc (full mix) ─► queue ─► convert ─► encoder (broadcast-aac) ─► tee ─┤                └─► embedded RTMP server (rtmp://…/live/{id})
//!                                                                           └─► [out-…] (HLS, recordings: outputs.rs; H.264 callers)
//! ```
//!
//! An RTMP output is only a consumer of the feed; HLS and recordings are
//! parts of their own fed through the two tees. A slow or dead destination
//! is isolated by its publisher's bounded queue or its branch's leaky queue.
//!
//! The encoders are fed only while something takes what they make (see
//! [`Demand`]): an idle composition's x264 and AAC were 0.09 of its
//! 0.13 CPU s/s, for nobody.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::super::mixer::AudioMix;
use super::super::part::{Fanout, add_chain, expose_input, stamp_earlier};
use super::super::profiles::{EncoderSettings, Profiles};
use super::super::{DROP_IN_SINK_PROBE, MediaError, make};
use crate::model::codec::VideoCodec;
use crate::model::composition::CompositionConfig;
use crate::model::ids::OutputId;
use crate::rtmp::{MediaFrame, PublisherHandle, PublisherState, StreamFeed, StreamHeaders, StreamMetadata};

/// AAC bitrate of the broadcast encode (what CDN ingest guides recommend).
const BROADCAST_AUDIO_KBPS: u32 = 128;
const BROADCAST_AUDIO_RATE: u32 = 48000;

/// Where the broadcast frames go outside GStreamer.
pub(super) enum FeedTarget {
    /// `was_live` remembers the publisher's last state seen by the feed, to
    /// notice when it (re)connects.
    Publisher { handle: PublisherHandle, was_live: bool },
    Player(StreamFeed),
}

impl FeedTarget {
    fn set_headers(&self, headers: StreamHeaders) {
        match self {
            FeedTarget::Publisher { handle, .. } => handle.set_headers(headers),
            FeedTarget::Player(p) => p.set_headers(headers),
        }
    }

    fn push(&self, frame: MediaFrame) {
        // Neither blocks: each has its own bounded queue and drops GOPs when full.
        match self {
            FeedTarget::Publisher { handle, .. } => drop(handle.push(frame)),
            FeedTarget::Player(p) => drop(p.push(frame)),
        }
    }

    /// True when a publisher has just gone live: it starts at the next
    /// keyframe, so the encoder should make one now.
    fn just_went_live(&mut self) -> bool {
        let FeedTarget::Publisher { handle, was_live } = self else { return false };
        let live = matches!(*handle.state().borrow(), PublisherState::Live);
        let rising = live && !*was_live;
        *was_live = live;
        rising
    }
}

/// Who receives the feed: an output, or the embedded server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FeedKey {
    Output(OutputId),
    EmbeddedServer,
}

/// Fans the encoded frames out of the two appsinks to every RTMP consumer.
pub(super) struct Feed {
    metadata: StreamMetadata,
    video_sink: AppSink,
    audio_sink: AppSink,
    headers: Mutex<Option<StreamHeaders>>,
    targets: Mutex<Vec<(FeedKey, FeedTarget)>>,
}

impl Feed {
    pub(super) fn add(&self, key: FeedKey, target: FeedTarget) {
        if let Some(headers) = self.headers.lock().expect("feed lock").clone() {
            target.set_headers(headers);
        }
        self.targets.lock().expect("feed lock").push((key, target));
    }

    /// Whether a player of the embedded server is watching.
    fn has_players(&self) -> bool {
        let targets = self.targets.lock().expect("feed lock");
        targets.iter().any(|(_, target)| matches!(target, FeedTarget::Player(p) if p.players() > 0))
    }

    pub(super) fn remove(&self, key: &FeedKey) -> Option<FeedTarget> {
        let mut targets = self.targets.lock().expect("feed lock");
        let index = targets.iter().position(|(k, _)| k == key)?;
        Some(targets.remove(index).1)
    }

    /// Headers come from the negotiated caps (`codec_data`) of both sinks;
    /// they are (re)sent whenever they change.
    fn refresh_headers(&self) -> bool {
        let (Some(avc), Some(asc)) = (codec_data(&self.video_sink), codec_data(&self.audio_sink)) else {
            return false;
        };
        let headers = StreamHeaders {
            metadata: self.metadata.clone(),
            avc_decoder_config: Some(avc),
            aac_audio_specific_config: Some(asc),
        };
        let mut current = self.headers.lock().expect("feed lock");
        if current.as_ref() != Some(&headers) {
            for (_, target) in self.targets.lock().expect("feed lock").iter() {
                target.set_headers(headers.clone());
            }
            *current = Some(headers);
        }
        true
    }

    fn deliver(&self, sample: &gst::Sample, video: bool) {
        if !self.refresh_headers() {
            return;
        }
        let (Some(buffer), Some(segment)) = (sample.buffer(), sample.segment()) else { return };
        let Some(segment) = segment.downcast_ref::<gst::ClockTime>() else { return };
        // Running time: the one clock both tracks share (x264enc's own
        // segment starts 1000 h in, so buffer timestamps do not line up).
        let running_ms = |t: gst::ClockTime| segment.to_running_time(t).map(|t| t.mseconds());
        let Some(pts_ms) = buffer.pts().and_then(running_ms) else { return };
        let Ok(map) = buffer.map_readable() else { return };
        let data = Bytes::copy_from_slice(&map);
        let frame = if video {
            MediaFrame::Video {
                pts_ms,
                dts_ms: buffer.dts().and_then(running_ms).unwrap_or(pts_ms),
                keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                data,
            }
        } else {
            MediaFrame::Audio { pts_ms, data }
        };
        let mut wants_keyframe = false;
        for (_, target) in self.targets.lock().expect("feed lock").iter_mut() {
            target.push(frame.clone());
            wants_keyframe |= video && target.just_went_live();
        }
        if wants_keyframe {
            self.request_keyframe();
        }
    }

    /// A new output starts at a keyframe: ask for one now rather than wait a GOP.
    pub(super) fn request_keyframe(&self) {
        if let Some(pad) = self.video_sink.static_pad("sink") {
            super::super::part::request_keyframe_upstream(&pad);
        }
    }
}

fn codec_data(sink: &AppSink) -> Option<Bytes> {
    let caps = sink.static_pad("sink")?.current_caps()?;
    let data = caps.structure(0)?.get::<gst::Buffer>("codec_data").ok()?;
    Some(Bytes::copy_from_slice(&data.map_readable().ok()?))
}

/// Whether anything takes the broadcast encode: the consumers the
/// composition counts (its outputs, and its callers sharing the encode), or
/// a player of the embedded server, who comes and goes on its own.
pub(super) struct Demand {
    consumers: AtomicUsize,
    /// Whether canvas frames reach the encoder now.
    video_flowing: AtomicBool,
    /// Whether full-mix blocks reach the encoder now.
    audio_flowing: AtomicBool,
    /// The timestamp (ns) of the first block after the audio last resumed,
    /// [`NEVER_RESUMED`] before that (see [`drop_stale`]).
    audio_resumed_at: AtomicU64,
}

const NEVER_RESUMED: u64 = u64::MAX;

impl Default for Demand {
    fn default() -> Self {
        Demand {
            consumers: AtomicUsize::new(0),
            video_flowing: AtomicBool::new(false),
            audio_flowing: AtomicBool::new(false),
            audio_resumed_at: AtomicU64::new(NEVER_RESUMED),
        }
    }
}

impl Demand {
    fn wanted(&self, feed: &Feed) -> bool {
        self.consumers.load(Ordering::SeqCst) > 0 || feed.has_players()
    }
}

/// Lets buffers through `pad` (a sink pad) only while the encode is wanted. The first
/// buffer after a pause is marked as a discontinuity, so the encoder takes
/// its time afresh; for video it also asks for a keyframe, since the frames
/// a new consumer could start from went by unencoded.
fn gate(pad: &gst::Pad, demand: Arc<Demand>, feed: std::sync::Weak<Feed>, video: bool) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(feed) = feed.upgrade() else { return DROP_IN_SINK_PROBE };
        let wanted = demand.wanted(&feed);
        let flowing = if video { &demand.video_flowing } else { &demand.audio_flowing };
        let was_flowing = flowing.swap(wanted, Ordering::SeqCst);
        if !wanted {
            return DROP_IN_SINK_PROBE;
        }
        if !was_flowing {
            if let Some(buffer) = info.buffer_mut() {
                let buffer = buffer.make_mut();
                buffer.set_flags(gst::BufferFlags::DISCONT);
                if !video && let Some(pts) = buffer.pts() {
                    demand.audio_resumed_at.store(pts.nseconds(), Ordering::SeqCst);
                }
            }
            if video {
                feed.request_keyframe();
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Drops what the audio encoder still held when its input paused, which
/// comes out stamped with its old time once the input resumes: a recording
/// started after the pause began with two frames 1.2 s before its picture.
/// A frame is stale when it starts more than `slack` (the encoder's own
/// delay, by which the fresh frames are stamped early) before the block
/// that resumed the input.
fn drop_stale(pad: &gst::Pad, demand: Arc<Demand>, slack: gst::ClockTime) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let resumed_at = demand.audio_resumed_at.load(Ordering::SeqCst);
        let stale = info.buffer().and_then(|b| b.pts()).is_some_and(|pts| resumed_at != NEVER_RESUMED && pts.nseconds() + slack.nseconds() < resumed_at);
        if stale { gst::PadProbeReturn::Drop } else { gst::PadProbeReturn::Ok }
    });
}

/// The shared encode: its part, its two output fanouts and the RTMP feed.
pub(super) struct Broadcast {
    pub(super) bin: gst::Bin,
    /// The canvas comes in here.
    pub(super) input: gst::Pad,
    /// H.264, AVC, whole access units.
    pub(super) video: Fanout,
    /// The canvas frames waiting for the video encoder.
    pub(super) video_queue: gst::Element,
    /// AAC.
    pub(super) audio: Fanout,
    pub(super) feed: Arc<Feed>,
    demand: Arc<Demand>,
}

impl Broadcast {
    /// Builds the broadcast part (not yet in the pipeline); `player` is the
    /// embedded server's feed for this composition, if the server runs.
    pub(super) fn build(
        prefix: &str,
        config: &CompositionConfig,
        profiles: &Profiles,
        mix: &AudioMix,
        player: Option<StreamFeed>,
    ) -> Result<Broadcast, MediaError> {
        let n = |role: &str| format!("{prefix}-{role}");
        let bin = gst::Bin::with_name(&n("broadcast"));
        let v = &config.video;
        let settings = EncoderSettings {
            bitrate_kbps: Some(v.bitrate_kbps),
            keyframe_interval_frames: Some(v.fps * v.keyframe_interval_secs),
        };

        let vqueue = leaky_queue(&n("vqueue"))?;
        // The same profile as callers on H.264 packetization-mode 1, who share this encode.
        let vencoder = profiles.video_encoder(VideoCodec::H264 { packetization_mode: 1 }, &n("venc"), settings)?.upcast::<gst::Element>();
        let vparse = make("h264parse", &n("vparse"))?;
        // SPS/PPS in-band before every IDR: HLS segments and late players start clean.
        vparse.set_property("config-interval", -1i32);
        let vcaps = make("capsfilter", &n("vcaps"))?;
        vcaps.set_property(
            "caps",
            gst::Caps::builder("video/x-h264").field("stream-format", "avc").field("alignment", "au").build(),
        );
        add_chain(&bin, &[&vqueue, &vencoder, &vparse, &vcaps])?;
        let video = Fanout::new(&bin, &n("video"))?;
        vcaps.link(video.tee())?;

        let full_mix = mix.full_mix(&n("amix"))?;
        let aqueue = leaky_queue(&n("aqueue"))?;
        let aconvert = make("audioconvert", &n("aconv"))?;
        let aresample = make("audioresample", &n("aresample"))?;
        let acaps = make("capsfilter", &n("acaps"))?;
        acaps.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw").field("rate", BROADCAST_AUDIO_RATE as i32).field("channels", 2).build(),
        );
        let aencoder = profiles.broadcast_audio_encoder(&n("aenc"), BROADCAST_AUDIO_KBPS)?.upcast::<gst::Element>();
        let priming = profiles.broadcast_audio_priming(BROADCAST_AUDIO_RATE);
        stamp_earlier(&aencoder, priming)?;
        let aparse = make("aacparse", &n("aparse"))?;
        add_chain(&bin, &[&full_mix, &aqueue, &aconvert, &aresample, &acaps, &aencoder, &aparse])?;
        let audio = Fanout::new(&bin, &n("audio"))?;
        aparse.link(audio.tee())?;

        let video_sink = app_sink(&n("vfeed"))?;
        let audio_sink = app_sink(&n("afeed"))?;
        bin.add_many([video_sink.upcast_ref::<gst::Element>(), audio_sink.upcast_ref()])?;
        video.tee().link(&video_sink)?;
        audio.tee().link(&audio_sink)?;
        let feed = Arc::new(Feed {
            metadata: StreamMetadata {
                width: v.width,
                height: v.height,
                frame_rate: f64::from(v.fps),
                video_bitrate_kbps: v.bitrate_kbps,
                audio_bitrate_kbps: BROADCAST_AUDIO_KBPS,
                audio_sample_rate: BROADCAST_AUDIO_RATE,
                audio_channels: 2,
            },
            video_sink: video_sink.clone(),
            audio_sink: audio_sink.clone(),
            headers: Mutex::new(None),
            targets: Mutex::new(Vec::new()),
        });
        for (sink, video) in [(&video_sink, true), (&audio_sink, false)] {
            let feed = Arc::downgrade(&feed);
            sink.set_callbacks(
                gstreamer_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(feed) = feed.upgrade() {
                            feed.deliver(&sample, video);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        if let Some(player) = player {
            feed.add(FeedKey::EmbeddedServer, FeedTarget::Player(player));
        }
        let demand = Arc::new(Demand::default());
        for (queue, video) in [(&vqueue, true), (&aqueue, false)] {
            let pad = queue.static_pad("sink").expect("a queue has a sink pad");
            gate(&pad, demand.clone(), Arc::downgrade(&feed), video);
        }
        drop_stale(&aparse.static_pad("src").expect("aacparse has a src pad"), demand.clone(), priming);
        let input = expose_input(&bin, &vqueue, "sink", "video")?;
        Ok(Broadcast { bin, input, video, audio, feed, video_queue: vqueue, demand })
    }

    /// Says how many of the composition's parts take the encode now.
    pub(super) fn set_consumers(&self, consumers: usize) {
        self.demand.consumers.store(consumers, Ordering::SeqCst);
    }

    /// Whether the encoders are being fed: something takes the encode.
    pub(super) fn encoding(&self) -> bool {
        self.demand.video_flowing.load(Ordering::SeqCst)
    }

    /// The encoders it runs, (video, audio): one each however many outputs there are.
    pub(super) fn encoders(&self) -> (usize, usize) {
        let count = |class: &str| {
            self.bin
                .iterate_recurse()
                .into_iter()
                .flatten()
                .filter(|e| e.factory().is_some_and(|f| f.klass().contains(class)))
                .count()
        };
        (count("Encoder/Video"), count("Encoder/Audio"))
    }
}

/// A queue that drops old frames rather than hold up the compositor or mixer.
fn leaky_queue(name: &str) -> Result<gst::Element, MediaError> {
    let queue = make("queue", name)?;
    queue.set_property("max-size-buffers", 3u32);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-time", 0u64);
    queue.set_property_from_str("leaky", "downstream");
    Ok(queue)
}

fn app_sink(name: &str) -> Result<AppSink, MediaError> {
    let sink = make("appsink", name)?.downcast::<AppSink>().expect("appsink is an AppSink");
    // The feed pushes into bounded queues; the sink itself never waits on the clock.
    sink.set_sync(false);
    sink.set_property("async", false);
    sink.set_max_buffers(60);
    sink.set_drop(true);
    Ok(sink)
}
