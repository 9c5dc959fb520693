//! The broadcast encode of a composition and its live outputs.
//!
//! ```text
//!  canvas tee ─► queue ─► encoder (h264) ─► h264parse ─► tee ─┬─► appsink ─► Feed ─┬─► RTMP publisher (per output, own queue)
//!  full mix tee ─► queue ─► convert ─► encoder (broadcast-aac) ─► tee ──┤                     └─► embedded RTMP server (rtmp://…/live/{id})
//!                                                                       ├─► queue ─► h264parse(byte-stream) ─► hlssink2
//!                                                                       └─► queue ─► mux (mkv / fragmented mp4) ─► filesink
//! ```
//!
//! One encode per composition, shared by every output: an RTMP output is
//! only a consumer of the feed, HLS and recordings are tee branches. A slow
//! or dead destination is isolated by its publisher's bounded queue.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{CompositionMedia, link_request};
use crate::media::profiles::EncoderSettings;
use crate::media::topology::Owner;
use crate::media::{MediaError, make};
use crate::model::codec::VideoCodec;
use crate::model::output::{RecordFormat, ValidOutput};
use crate::rtmp::{MediaFrame, PublisherHandle, PublisherState, StreamFeed, StreamHeaders, StreamMetadata};

/// AAC bitrate of the broadcast encode (what CDN ingest guides recommend).
pub const BROADCAST_AUDIO_KBPS: u32 = 128;
/// HLS playlist window, in segments; older segments are deleted.
const HLS_PLAYLIST_SEGMENTS: u32 = 6;
/// How long a recording may take to write its last data when it stops.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Identifies an output inside its composition (the API's output id).
pub type OutputKey = String;

/// Where the broadcast frames go outside GStreamer.
enum FeedTarget {
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

/// Fans the encoded frames out of the two appsinks to every RTMP consumer.
struct Feed {
    metadata: StreamMetadata,
    video_sink: AppSink,
    audio_sink: AppSink,
    headers: Mutex<Option<StreamHeaders>>,
    targets: Mutex<Vec<(OutputKey, FeedTarget)>>,
}

impl Feed {
    fn add(&self, key: OutputKey, target: FeedTarget) {
        if let Some(headers) = self.headers.lock().expect("feed lock").clone() {
            target.set_headers(headers);
        }
        self.targets.lock().expect("feed lock").push((key, target));
    }

    fn remove(&self, key: &str) -> Option<FeedTarget> {
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

    fn request_keyframe(&self) {
        if let Some(pad) = self.video_sink.static_pad("sink") {
            pad.push_event(gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build());
        }
    }
}

fn codec_data(sink: &AppSink) -> Option<Bytes> {
    let caps = sink.static_pad("sink")?.current_caps()?;
    let data = caps.structure(0)?.get::<gst::Buffer>("codec_data").ok()?;
    Some(Bytes::copy_from_slice(&data.map_readable().ok()?))
}

/// The shared encode: its elements, its two output tees and the RTMP feed.
pub struct Broadcast {
    elements: Vec<gst::Element>,
    video_out: gst::Element,
    audio_out: gst::Element,
    feed: Arc<Feed>,
    outputs: HashMap<OutputKey, OutputMedia>,
}

enum OutputMedia {
    Rtmp(PublisherHandle),
    Hls { elements: Vec<gst::Element>, dir: PathBuf },
    Record { elements: Vec<gst::Element>, inputs: Vec<gst::Pad>, sink: gst::Element, path: PathBuf },
}

/// What the API shows of an HLS or recording output (RTMP ones report
/// through their publisher).
#[derive(Clone, Debug, Default)]
pub struct FileOutputStatus {
    pub bytes_written: u64,
    pub live: bool,
}

impl CompositionMedia {
    /// Builds the broadcast encode; `player` is the embedded server's feed
    /// for this composition, if the server runs.
    pub(super) fn build_broadcast(&mut self, player: Option<StreamFeed>) -> Result<(), MediaError> {
        let n = |role: &str| format!("comp-{}-bc-{role}", self.id);
        let v = self.config.video.clone();
        let settings = EncoderSettings {
            bitrate_kbps: Some(v.bitrate_kbps),
            keyframe_interval_frames: Some(v.fps * v.keyframe_interval_secs),
        };

        let vqueue = leaky_queue(&n("vqueue"))?;
        // The same profile as callers on H.264 packetization-mode 1, who share this encode.
        let vencoder = self.profiles.video_encoder(VideoCodec::H264 { packetization_mode: 1 }, &n("venc"), settings)?.upcast::<gst::Element>();
        let vparse = make("h264parse", &n("vparse"))?;
        // SPS/PPS in-band before every IDR: HLS segments and late players start clean.
        vparse.set_property("config-interval", -1i32);
        let vcaps = make("capsfilter", &n("vcaps"))?;
        vcaps.set_property(
            "caps",
            gst::Caps::builder("video/x-h264").field("stream-format", "avc").field("alignment", "au").build(),
        );
        let video_out = tee(&n("video"))?;

        let full_mix = self.mix.full_mix(&n("amix"))?;
        let aqueue = leaky_queue(&n("aqueue"))?;
        let aconvert = make("audioconvert", &n("aconv"))?;
        let aresample = make("audioresample", &n("aresample"))?;
        let acaps = make("capsfilter", &n("acaps"))?;
        acaps.set_property("caps", gst::Caps::builder("audio/x-raw").field("rate", 48000).field("channels", 2).build());
        let aencoder = self.profiles.broadcast_audio_encoder(&n("aenc"), BROADCAST_AUDIO_KBPS)?.upcast::<gst::Element>();
        let aparse = make("aacparse", &n("aparse"))?;
        let audio_out = tee(&n("audio"))?;

        let video_sink = app_sink(&n("vfeed"))?;
        let audio_sink = app_sink(&n("afeed"))?;
        let elements = vec![
            vqueue.clone(), vencoder, vparse, vcaps, video_out.clone(),
            full_mix, aqueue.clone(), aconvert, aresample, acaps, aencoder, aparse, audio_out.clone(),
            video_sink.clone().upcast(), audio_sink.clone().upcast(),
        ];
        self.pipeline.add_many(&elements)?;
        gst::Element::link_many(&elements[0..5])?;
        gst::Element::link_many(&elements[5..13])?;
        link_request(&video_out, video_sink.upcast_ref())?;
        link_request(&audio_out, audio_sink.upcast_ref())?;

        let feed = Arc::new(Feed {
            metadata: StreamMetadata {
                width: v.width,
                height: v.height,
                frame_rate: f64::from(v.fps),
                video_bitrate_kbps: v.bitrate_kbps,
                audio_bitrate_kbps: BROADCAST_AUDIO_KBPS,
                audio_sample_rate: 48000,
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
            feed.add("embedded-rtmp-server".into(), FeedTarget::Player(player));
        }
        for element in &elements {
            element.sync_state_with_parent()?;
        }
        // Only now that the branch plays: a running tee pushing into an
        // element in NULL would get FLUSHING back and stop the compositor.
        link_request(&self.video_core()?.tee, &vqueue)?;
        self.broadcast = Some(Broadcast { elements, video_out, audio_out, feed, outputs: HashMap::new() });
        Ok(())
    }

    /// The broadcast's encoded video (H.264, AVC, whole access units).
    pub(super) fn broadcast_video(&self) -> Option<gst::Element> {
        self.broadcast.as_ref().map(|b| b.video_out.clone())
    }

    /// Starts an output on the broadcast encode.
    pub fn add_output(&mut self, key: OutputKey, output: &ValidOutput, paths: &OutputPaths, publisher: Option<PublisherHandle>) -> Result<(), MediaError> {
        let broadcast = self.broadcast.as_ref().ok_or_else(|| MediaError::Gst("no broadcast encode".into()))?;
        let (video_out, audio_out, feed) = (broadcast.video_out.clone(), broadcast.audio_out.clone(), broadcast.feed.clone());
        let n = |role: &str| format!("out-{key}-{role}");
        let media = match output {
            ValidOutput::Rtmp(_) => {
                let publisher = publisher.ok_or_else(|| MediaError::Gst("an RTMP output needs its publisher".into()))?;
                feed.add(key.clone(), FeedTarget::Publisher { handle: publisher.clone(), was_live: false });
                OutputMedia::Rtmp(publisher)
            }
            ValidOutput::Hls => {
                let dir = paths.hls_dir.join(self.id.as_str());
                std::fs::create_dir_all(&dir).map_err(|e| MediaError::Gst(format!("HLS directory {}: {e}", dir.display())))?;
                let vqueue = output_queue(&n("vqueue"))?;
                let parse = make("h264parse", &n("parse"))?;
                let bytestream = make("capsfilter", &n("bytestream"))?;
                bytestream.set_property(
                    "caps",
                    gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build(),
                );
                let aqueue = output_queue(&n("aqueue"))?;
                let sink = make("hlssink2", &n("hls"))?;
                sink.set_property("location", dir.join("segment%05d.ts").to_string_lossy().as_ref());
                sink.set_property("playlist-location", dir.join("index.m3u8").to_string_lossy().as_ref());
                sink.set_property("target-duration", self.config.video.keyframe_interval_secs);
                sink.set_property("playlist-length", HLS_PLAYLIST_SEGMENTS);
                sink.set_property("max-files", HLS_PLAYLIST_SEGMENTS + 2);
                let elements = vec![vqueue.clone(), parse.clone(), bytestream.clone(), aqueue.clone(), sink.clone()];
                self.pipeline.add_many(&elements)?;
                gst::Element::link_many([&vqueue, &parse, &bytestream])?;
                link_pads(&bytestream, "src", &sink, "video")?;
                link_pads(&aqueue, "src", &sink, "audio")?;
                self.link_output_branch(&video_out, &vqueue, &key)?;
                self.link_output_branch(&audio_out, &aqueue, &key)?;
                start(&elements)?;
                OutputMedia::Hls { elements, dir }
            }
            ValidOutput::Record { relative_path, format } => {
                let path = paths.recordings_dir.join(relative_path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| MediaError::Gst(format!("recording directory {}: {e}", parent.display())))?;
                }
                let vqueue = output_queue(&n("vqueue"))?;
                let aqueue = output_queue(&n("aqueue"))?;
                let mux = match format {
                    RecordFormat::Matroska => make("matroskamux", &n("mux"))?,
                    RecordFormat::FragmentedMp4 => {
                        let mux = make("mp4mux", &n("mux"))?;
                        // A fragment a second: a killed recording loses at most that.
                        mux.set_property("fragment-duration", 1000u32);
                        mux
                    }
                };
                let sink = make("filesink", &n("file"))?;
                sink.set_property("location", path.to_string_lossy().as_ref());
                sink.set_property("async", false);
                let elements = vec![vqueue.clone(), aqueue.clone(), mux.clone(), sink.clone()];
                self.pipeline.add_many(&elements)?;
                link_pads(&vqueue, "src", &mux, "video_%u")?;
                link_pads(&aqueue, "src", &mux, "audio_%u")?;
                mux.link(&sink)?;
                self.link_output_branch(&video_out, &vqueue, &key)?;
                self.link_output_branch(&audio_out, &aqueue, &key)?;
                start(&elements)?;
                let inputs = vec![vqueue.static_pad("sink").expect("queue sink"), aqueue.static_pad("sink").expect("queue sink")];
                OutputMedia::Record { elements, inputs, sink, path }
            }
        };
        self.topology.link_pending(&Owner::Output(key.clone()))?;
        // A new output starts at a keyframe: ask for one now rather than wait a GOP.
        feed.request_keyframe();
        self.broadcast.as_mut().expect("checked above").outputs.insert(key, media);
        Ok(())
    }

    fn link_output_branch(&mut self, tee: &gst::Element, queue: &gst::Element, key: &str) -> Result<(), MediaError> {
        let src = tee.request_pad_simple("src_%u").ok_or_else(|| MediaError::Gst("tee refused a pad".into()))?;
        let fuse = self.fuses.lock().expect("fuses lock").entry(key.to_string()).or_default().clone();
        src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
            if fuse.load(std::sync::atomic::Ordering::SeqCst) { gst::PadProbeReturn::Drop } else { gst::PadProbeReturn::Ok }
        });
        let sink = queue.static_pad("sink").expect("queue has a sink pad");
        self.topology.link(&src, &sink, Owner::Core, Owner::Output(key.to_string()))?;
        Ok(())
    }

    /// Stops an output. A recording is finalized first (its muxer writes
    /// its last data), so the file is complete.
    pub fn remove_output(&mut self, key: &str) {
        let Some(broadcast) = self.broadcast.as_mut() else { return };
        let Some(media) = broadcast.outputs.remove(key) else { return };
        let failed = self.fuses.lock().expect("fuses lock").remove(key).is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
        let owner = Owner::Output(key.to_string());
        match media {
            OutputMedia::Rtmp(publisher) => {
                broadcast.feed.remove(key);
                publisher.stop();
            }
            OutputMedia::Hls { elements, dir } => {
                self.topology.remove(&owner, &self.pipeline, &elements);
                let _ = std::fs::remove_dir_all(dir);
            }
            OutputMedia::Record { elements, inputs, sink, path } => {
                // A branch that failed cannot carry EOS to its file any more.
                if !failed {
                    finalize(&inputs, &sink, &path);
                }
                self.topology.remove(&owner, &self.pipeline, &elements);
            }
        }
    }

    /// Before the whole pipeline stops: recordings are finalized and
    /// publishers closed; HLS branches simply stop with the pipeline.
    pub(super) fn stop_outputs(&mut self) {
        let Some(broadcast) = self.broadcast.as_mut() else { return };
        for (key, media) in broadcast.outputs.drain() {
            match media {
                OutputMedia::Rtmp(publisher) => publisher.stop(),
                OutputMedia::Hls { .. } => {}
                OutputMedia::Record { inputs, sink, path, .. } => {
                    let failed = self.fuses.lock().expect("fuses lock").get(&key).is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
                    if !failed {
                        finalize(&inputs, &sink, &path);
                    }
                }
            }
        }
    }

    pub fn file_output_status(&self, key: &str) -> Option<FileOutputStatus> {
        let media = self.broadcast.as_ref()?.outputs.get(key)?;
        let status = match media {
            OutputMedia::Rtmp(_) => return None,
            OutputMedia::Hls { dir, .. } => {
                let bytes = std::fs::read_dir(dir)
                    .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                    .unwrap_or(0);
                FileOutputStatus { bytes_written: bytes, live: dir.join("index.m3u8").exists() }
            }
            OutputMedia::Record { path, .. } => {
                let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                FileOutputStatus { bytes_written: bytes, live: bytes > 0 }
            }
        };
        Some(status)
    }

    /// The encoders the broadcast runs, (video, audio): one each however
    /// many outputs there are.
    pub fn broadcast_encoders(&self) -> (usize, usize) {
        let Some(broadcast) = &self.broadcast else { return (0, 0) };
        let count = |class: &str| {
            broadcast
                .elements
                .iter()
                .filter_map(|e| e.downcast_ref::<gst::Bin>())
                .flat_map(|bin| bin.iterate_recurse().into_iter().flatten())
                .filter(|e| e.factory().is_some_and(|f| f.klass().contains(class)))
                .count()
        };
        (count("Encoder/Video"), count("Encoder/Audio"))
    }
}

/// Sends EOS into a recording's inputs and waits (bounded) for it to reach
/// the file, so the muxer writes its index/last fragment.
fn finalize(inputs: &[gst::Pad], sink: &gst::Element, path: &Path) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sink_pad = sink.static_pad("sink").expect("filesink has a sink pad");
    sink_pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && event.type_() == gst::EventType::Eos
        {
            let _ = done_tx.send(());
        }
        gst::PadProbeReturn::Ok
    });
    for pad in inputs {
        // Stop the tee feeding it first, then end the stream.
        if let Some(peer) = pad.peer() {
            peer.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| gst::PadProbeReturn::Drop);
        }
        pad.send_event(gst::event::Eos::new());
    }
    if done_rx.recv_timeout(FINALIZE_TIMEOUT).is_err() {
        tracing::warn!(path = %path.display(), "recording did not finalize in time; the file is still playable up to its last fragment");
    }
}

fn tee(name: &str) -> Result<gst::Element, MediaError> {
    let tee = make("tee", name)?;
    tee.set_property("allow-not-linked", true);
    Ok(tee)
}

/// A queue that drops old frames rather than hold up the compositor or mixer.
/// The queue at the head of a file output's branch. Leaky: a muxer that
/// stops taking data (splitmuxsink inside hlssink2 holds one stream back
/// until the other catches up, and has been seen to hold it for good) must
/// cost that output frames, never block the tee and freeze the shared
/// encode for every caller and output. Two seconds ride out normal waits.
fn output_queue(name: &str) -> Result<gst::Element, MediaError> {
    let queue = make("queue", name)?;
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-time", gst::ClockTime::from_seconds(2).nseconds());
    queue.set_property_from_str("leaky", "downstream");
    Ok(queue)
}

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

fn link_pads(src: &gst::Element, src_pad: &str, sink: &gst::Element, sink_template: &str) -> Result<(), MediaError> {
    let src = src.static_pad(src_pad).ok_or_else(|| MediaError::Gst(format!("{} has no {src_pad} pad", src.name())))?;
    let sink = sink
        .request_pad_simple(sink_template)
        .ok_or_else(|| MediaError::Gst(format!("{} refused a {sink_template} pad", sink.name())))?;
    src.link(&sink)?;
    Ok(())
}

fn start(elements: &[gst::Element]) -> Result<(), MediaError> {
    for element in elements.iter().rev() {
        element.sync_state_with_parent()?;
    }
    Ok(())
}

/// Where file outputs go.
#[derive(Clone, Debug)]
pub struct OutputPaths {
    pub hls_dir: PathBuf,
    pub recordings_dir: PathBuf,
}
