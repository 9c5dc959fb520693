//! One SRT participant's listener: its own port, its stream key as the only
//! stream id let in, and the MPEG-TS it receives taken apart into
//! [`IngestEvent`]s.
//!
//! ```text
//!  publisher ─SRT─► srtsrc (listener; stream id checked) ─► tsdemux ─┬─► h264parse (to AVC) ─► appsink ─► VideoConfig, Video
//!                                                                     ├─► aacparse (to raw) ──► appsink ─► AudioConfig, Audio
//!                                                                     └─► opusparse ───────────► appsink ─► AudioConfig, Audio
//! ```
//!
//! The pipeline is the listener's own, not the composition's: it only
//! demuxes and parses (no clock, no sync), and the publisher leg places the
//! frames on the composition's time as it does an RTMP publisher's. When a
//! publisher leaves (or is sent away for a codec Tutti does not take), the
//! pipeline goes back to NULL and starts again, so the next publisher meets
//! a fresh demuxer rather than one still holding the last stream's clock.

use bytes::Bytes;
use gio::prelude::*;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use subtle::ConstantTimeEq;

use crate::model::ingest::{AudioConfig, IngestEvent, IngestSink, Passphrase};
use crate::ports::PortLease;

/// How often the watcher looks at the bus and at whether it should stop.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// SRT's receive latency (its buffer against loss and jitter): libsrt's
/// default, about four round trips of a continental link. The publisher may
/// ask for more; the larger of the two applies.
const SRT_LATENCY_MS: i32 = 125;
/// The name of the bus message that asks the watcher to send the current
/// publisher away and listen afresh.
const RESTART: &str = "tutti-srt-restart";

/// Where a participant's SRT publisher connects, and what lets it in.
pub struct SrtListenerConfig {
    pub bind: IpAddr,
    /// Its port, kept from other listeners until this one has let it go.
    pub port: PortLease,
    /// The stream id a publisher must give; a secret.
    pub stream_key: String,
    /// SRT's own encryption: a publisher must give the same one.
    pub passphrase: Option<Passphrase>,
}

impl std::fmt::Debug for SrtListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key and the passphrase are secrets: never in a log line.
        f.debug_struct("SrtListenerConfig").field("bind", &self.bind).field("port", &self.port.port()).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SrtError {
    #[error("element {0} is not installed (Debian: gstreamer1.0-plugins-bad)")]
    MissingElement(&'static str),
    #[error("SRT listener on {0}: {1}")]
    Start(SocketAddr, String),
}

/// A running listener. Dropping it disconnects its publisher and frees the
/// port, off the caller's thread.
pub struct SrtListener {
    stop: Arc<AtomicBool>,
}

impl Drop for SrtListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl SrtListener {
    /// Listens on the configured port; what publishers send goes to `sink`.
    pub fn start(config: SrtListenerConfig, sink: IngestSink) -> Result<SrtListener, SrtError> {
        let address = SocketAddr::new(config.bind, config.port.port());
        let shared = Arc::new(Shared { sink, publishing: AtomicBool::new(false), video: Mutex::default(), audio: Mutex::default() });
        let pipeline = build(&config, &shared)?;
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            let _ = pipeline.set_state(gst::State::Null);
            SrtError::Start(address, "could not listen (is the port taken?)".into())
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let watching = stop.clone();
        let encrypted = config.passphrase.is_some();
        let lease = config.port;
        thread::Builder::new()
            .name(format!("srt-{}", address.port()))
            .spawn(move || {
                watch(pipeline, shared, watching, address);
                // Free for another listener only once libsrt let it go.
                drop(lease);
            })
            .map_err(|e| SrtError::Start(address, e.to_string()))?;
        tracing::info!(%address, encrypted, "SRT listener waits for its publisher");
        Ok(SrtListener { stop })
    }
}

/// What the pipeline's callbacks and the watcher share.
struct Shared {
    sink: IngestSink,
    /// Whether a publisher was announced and not yet ended.
    publishing: AtomicBool,
    /// The last decoder configuration handed on, per medium.
    video: Mutex<Option<Bytes>>,
    audio: Mutex<Option<AudioConfig>>,
}

impl Shared {
    fn started(&self, peer: SocketAddr) {
        *self.video.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.audio.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.publishing.store(true, Ordering::SeqCst);
        (self.sink)(IngestEvent::Publishing { peer });
    }

    /// Ends the current publisher, once.
    fn ended(&self) {
        if self.publishing.swap(false, Ordering::SeqCst) {
            (self.sink)(IngestEvent::Ended);
        }
    }

    fn refused(&self, reason: String) {
        if self.publishing.swap(false, Ordering::SeqCst) {
            (self.sink)(IngestEvent::Refused { reason });
        }
    }

    /// Hands on a new decoder configuration when it differs from the last.
    fn configure<T: Clone + PartialEq>(&self, last: &Mutex<Option<T>>, config: T, event: fn(T) -> IngestEvent) {
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(&config) {
            *last = Some(config.clone());
            (self.sink)(event(config));
        }
    }
}

fn make(factory: &'static str) -> Result<gst::Element, SrtError> {
    gst::ElementFactory::make(factory).build().map_err(|_| SrtError::MissingElement(factory))
}

fn build(config: &SrtListenerConfig, shared: &Arc<Shared>) -> Result<gst::Pipeline, SrtError> {
    let port = config.port.port();
    let address = SocketAddr::new(config.bind, port);
    let pipeline = gst::Pipeline::with_name(&format!("srt-{port}"));
    let source = make("srtsrc")?;
    source.set_property_from_str("mode", "listener");
    source.set_property("localaddress", config.bind.to_string());
    source.set_property("localport", u32::from(port));
    source.set_property("latency", SRT_LATENCY_MS);
    // A publisher that leaves ends this run; the watcher starts a fresh one.
    source.set_property("keep-listening", false);
    source.set_property("authentication", true);
    if let Some(passphrase) = &config.passphrase {
        source.set_property("passphrase", passphrase.as_str());
    }
    let key = config.stream_key.clone();
    let connecting = shared.clone();
    source.connect("caller-connecting", false, move |values| {
        let stream_id = values.get(2).and_then(|v| v.get::<Option<String>>().ok()).flatten().unwrap_or_default();
        let peer = || values.get(1).and_then(|v| v.get::<gio::SocketAddress>().ok()).and_then(|a| socket_addr(&a));
        let refusal = if !bool::from(stream_id.as_bytes().ct_eq(key.as_bytes())) {
            Some("wrong stream id")
        } else if connecting.publishing.load(Ordering::SeqCst) {
            // srtsrc would take it and read nothing of it: refused, it knows.
            // A publisher reconnecting while its old connection lingers gets
            // in once libsrt has given that one up (5 s without a packet).
            Some("the participant has a publisher already")
        } else {
            None
        };
        if let Some(reason) = refusal {
            tracing::warn!(peer = ?peer(), "SRT publisher refused: {reason}");
        }
        Some(refusal.is_none().to_value())
    });
    let on_added = shared.clone();
    source.connect("caller-added", false, move |values| {
        if let Some(peer) = values.get(2).and_then(|v| v.get::<gio::SocketAddress>().ok()).and_then(|a| socket_addr(&a)) {
            on_added.started(peer);
        }
        None
    });

    // The run ends when the source does: the pipeline's own end of stream
    // waits for every sink, and a sink whose stream the publisher does not
    // send (a video-only publisher's audio) never gets one.
    let ending = pipeline.downgrade();
    source.static_pad("src").expect("srtsrc has a src pad").add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && event.type_() == gst::EventType::Eos
        {
            restart(&ending);
        }
        gst::PadProbeReturn::Ok
    });

    let demux = make("tsdemux")?;
    let video_parse = make("h264parse")?;
    let video_out = appsink(gst::Caps::builder("video/x-h264").field("stream-format", "avc").field("alignment", "au").build());
    let audio_parse = make("aacparse")?;
    let audio_out = appsink(gst::Caps::builder("audio/mpeg").field("stream-format", "raw").build());
    // The parsers also stamp what tsdemux leaves unstamped: only the first
    // Opus packet of each PES carries a time.
    let opus_parse = make("opusparse")?;
    let opus_out = appsink(gst::Caps::builder("audio/x-opus").field("channel-mapping-family", 0i32).build());
    pipeline
        .add_many([&source, &demux, &video_parse, video_out.upcast_ref(), &audio_parse, audio_out.upcast_ref(), &opus_parse, opus_out.upcast_ref()])
        .map_err(|e| SrtError::Start(address, e.to_string()))?;
    let linked = source
        .link(&demux)
        .and_then(|_| video_parse.link(&video_out))
        .and_then(|_| audio_parse.link(&audio_out))
        .and_then(|_| opus_parse.link(&opus_out));
    linked.map_err(|e| SrtError::Start(address, e.to_string()))?;

    let pipeline_weak = pipeline.downgrade();
    let refusing = shared.clone();
    demux.connect_pad_added(move |_, pad| {
        let Some(caps) = pad.current_caps().or_else(|| Some(pad.query_caps(None))) else { return };
        let Some(structure) = caps.structure(0) else { return };
        tracing::debug!(pad = %pad.name(), %caps, "SRT stream found");
        let target = match stream_kind(structure) {
            Stream::H264 => &video_parse,
            Stream::Aac => &audio_parse,
            Stream::Opus => &opus_parse,
            Stream::Other => return,
            Stream::Unsupported(codec) => {
                refusing.refused(format!("the publisher sent {codec}; Tutti takes H.264 video and AAC or Opus audio over SRT"));
                restart(&pipeline_weak);
                return;
            }
        };
        let Some(sink_pad) = target.static_pad("sink") else { return };
        if !sink_pad.is_linked() {
            let _ = pad.link(&sink_pad);
        }
    });

    let video = shared.clone();
    video_out.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(config) = codec_data(&sample) {
                    video.configure(&video.video, config, IngestEvent::VideoConfig);
                }
                if let Some((buffer, pts, dts)) = timed(&sample)
                    && let Ok(map) = buffer.map_readable()
                {
                    (video.sink)(IngestEvent::Video {
                        dts_ms: dts.mseconds() as u32,
                        pts_ms: pts.mseconds() as i64,
                        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                        data: Bytes::copy_from_slice(&map),
                    });
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    audio_out.set_callbacks(audio_callbacks(shared.clone(), |sample| codec_data(sample).map(AudioConfig::Aac)));
    opus_out.set_callbacks(audio_callbacks(shared.clone(), |sample| {
        let channels = sample.caps()?.structure(0)?.get::<i32>("channels").ok()?;
        Some(AudioConfig::Opus { channels: u8::try_from(channels).ok()? })
    }));
    Ok(pipeline)
}

/// Asks the watcher to end this run and listen afresh.
fn restart(pipeline: &glib::WeakRef<gst::Pipeline>) {
    if let Some(pipeline) = pipeline.upgrade() {
        let _ = pipeline.post_message(gst::message::Application::new(gst::Structure::new_empty(RESTART)));
    }
}

/// Hands on an audio appsink's frames, after the configuration `config`
/// reads from its caps.
fn audio_callbacks(shared: Arc<Shared>, config: fn(&gst::Sample) -> Option<AudioConfig>) -> gst_app::AppSinkCallbacks {
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            if let Some(config) = config(&sample) {
                shared.configure(&shared.audio, config, IngestEvent::AudioConfig);
            }
            if let Some((buffer, pts, _)) = timed(&sample)
                && let Ok(map) = buffer.map_readable()
            {
                (shared.sink)(IngestEvent::Audio { pts_ms: pts.mseconds() as u32, data: Bytes::copy_from_slice(&map) });
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

/// A sample's buffer with its presentation and decoding times, on the
/// running time of its segment (the demuxer's: the same for every stream).
fn timed(sample: &gst::Sample) -> Option<(&gst::BufferRef, gst::ClockTime, gst::ClockTime)> {
    let buffer = sample.buffer()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let pts = segment.to_running_time(buffer.pts()?)?;
    let dts = buffer.dts().and_then(|t| segment.to_running_time(t)).unwrap_or(pts);
    Some((buffer, pts, dts))
}

/// An appsink that takes frames as fast as they come: the publisher leg
/// does the pacing. Not async: tsdemux pushes every stream from one
/// thread, and a sink waiting in preroll for the pipeline to play would
/// hold that thread while the other sink, which has nothing yet, keeps the
/// pipeline from playing.
fn appsink(caps: gst::Caps) -> gst_app::AppSink {
    gst_app::AppSink::builder().caps(&caps).sync(false).async_(false).build()
}

/// What an elementary stream of the transport stream is to Tutti.
#[derive(Debug, PartialEq)]
enum Stream {
    H264,
    Aac,
    Opus,
    /// Audio or video Tutti does not take, named for the publisher's operator.
    Unsupported(String),
    /// Not audio or video (KLV, SCTE-35, subtitles): left alone.
    Other,
}

fn stream_kind(structure: &gst::StructureRef) -> Stream {
    let name = structure.name().as_str();
    match name {
        "video/x-h264" => Stream::H264,
        "audio/mpeg" => match structure.get::<i32>("mpegversion") {
            Ok(2 | 4) => Stream::Aac,
            Ok(1) => Stream::Unsupported("MPEG-1 audio (MP2 or MP3)".into()),
            _ => Stream::Unsupported(name.into()),
        },
        "video/x-h265" => Stream::Unsupported("HEVC (H.265) video".into()),
        "audio/x-opus" => match structure.get::<i32>("channel-mapping-family") {
            Ok(0) | Err(_) => Stream::Opus,
            Ok(_) => Stream::Unsupported("multichannel Opus audio".into()),
        },
        "audio/x-ac3" | "audio/x-eac3" => Stream::Unsupported("AC-3 audio".into()),
        _ if name.starts_with("video/") || name.starts_with("audio/") => Stream::Unsupported(name.into()),
        _ => Stream::Other,
    }
}

fn codec_data(sample: &gst::Sample) -> Option<Bytes> {
    let caps = sample.caps()?;
    let buffer = caps.structure(0)?.get::<gst::Buffer>("codec_data").ok()?;
    let map = buffer.map_readable().ok()?;
    Some(Bytes::copy_from_slice(&map))
}

fn socket_addr(address: &gio::SocketAddress) -> Option<SocketAddr> {
    let inet = address.downcast_ref::<gio::InetSocketAddress>()?;
    let ip: IpAddr = inet.address().to_str().parse().ok()?;
    Some(SocketAddr::new(ip, inet.port()))
}

/// Runs until the listener is dropped: a run ends when its publisher leaves
/// (end of stream), fails, or is sent away; the next one listens afresh.
fn watch(pipeline: gst::Pipeline, shared: Arc<Shared>, stop: Arc<AtomicBool>, address: SocketAddr) {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    while !stop.load(Ordering::SeqCst) {
        let Some(message) = bus.timed_pop(gst::ClockTime::from_nseconds(WATCH_INTERVAL.as_nanos() as u64)) else { continue };
        let again = match message.view() {
            gst::MessageView::Error(error) => {
                tracing::warn!(%address, "SRT listener: {}", error.error());
                true
            }
            gst::MessageView::Application(app) => app.structure().is_some_and(|s| s.name() == RESTART),
            _ => false,
        };
        if again {
            let _ = pipeline.set_state(gst::State::Null);
            shared.ended();
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if pipeline.set_state(gst::State::Playing).is_err() {
                tracing::warn!(%address, "SRT listener could not listen again; its participant gets no publisher");
                break;
            }
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    shared.ended();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(caps: &str) -> Stream {
        let caps: gst::Caps = caps.parse().unwrap();
        stream_kind(caps.structure(0).unwrap())
    }

    #[test]
    fn h264_and_aac_are_taken_and_other_codecs_named() {
        gst::init().unwrap();
        assert_eq!(kind("video/x-h264, stream-format=byte-stream"), Stream::H264);
        assert_eq!(kind("audio/mpeg, mpegversion=4, stream-format=adts"), Stream::Aac);
        assert_eq!(kind("audio/mpeg, mpegversion=2, stream-format=adts"), Stream::Aac);
        assert_eq!(kind("audio/mpeg, mpegversion=1"), Stream::Unsupported("MPEG-1 audio (MP2 or MP3)".into()));
        assert_eq!(kind("audio/x-opus, channel-mapping-family=0, channels=2"), Stream::Opus);
        assert_eq!(kind("audio/x-opus, channel-mapping-family=1, channels=6"), Stream::Unsupported("multichannel Opus audio".into()));
        assert_eq!(kind("video/x-h265"), Stream::Unsupported("HEVC (H.265) video".into()));
        assert_eq!(kind("video/mpeg, mpegversion=2"), Stream::Unsupported("video/mpeg".into()));
        assert_eq!(kind("meta/x-klv"), Stream::Other);
    }
}
